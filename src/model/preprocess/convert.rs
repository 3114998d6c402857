//! Decoded samples → packed 8-bit RGB with alpha flattened on white, in place where the samples
//! are at least as large, then the EXIF orientation; no step holds two full copies unless a
//! rotation needs them.

use image::metadata::Orientation;
use image::{ColorType, RgbImage, imageops};

use super::PreprocessError;
use super::resize::{out_of_memory, zeroed};

/// `buf` holds `pixels` packed pixels of `color`, as `ImageDecoder::read_image` writes them
/// (native-endian 16-bit and f32 samples). Returns packed RGB.
///
/// 16-bit samples keep their high byte, as PIL does when it opens 16-bit PNG and TIFF images;
/// floats are clamped to 0..=1 and rounded as `image` converts them.
pub(super) fn to_rgb8_on_white(
    buf: Vec<u8>,
    color: ColorType,
    pixels: usize,
) -> Result<Vec<u8>, PreprocessError> {
    let hi = |s: &[u8]| (u16::from_ne_bytes([s[0], s[1]]) >> 8) as u8;
    let f = |s: &[u8]| float_to_u8(f32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
    Ok(match color {
        ColorType::Rgb8 => buf,
        ColorType::Rgba8 => in_place::<4>(buf, pixels, |p| flatten([p[0], p[1], p[2]], p[3])),
        ColorType::L8 => grown::<1>(&buf, pixels, |p| [p[0]; 3])?,
        ColorType::La8 => grown::<2>(&buf, pixels, |p| flatten([p[0]; 3], p[1]))?,
        ColorType::L16 => grown::<2>(&buf, pixels, |p| [hi(p); 3])?,
        ColorType::La16 => in_place::<4>(buf, pixels, |p| flatten([hi(p); 3], hi(&p[2..]))),
        ColorType::Rgb16 => in_place::<6>(buf, pixels, |p| [hi(p), hi(&p[2..]), hi(&p[4..])]),
        ColorType::Rgba16 => in_place::<8>(buf, pixels, |p| {
            flatten([hi(p), hi(&p[2..]), hi(&p[4..])], hi(&p[6..]))
        }),
        ColorType::Rgb32F => in_place::<12>(buf, pixels, |p| [f(p), f(&p[4..]), f(&p[8..])]),
        ColorType::Rgba32F => in_place::<16>(buf, pixels, |p| {
            flatten([f(p), f(&p[4..]), f(&p[8..])], f(&p[12..]))
        }),
        other => {
            return Err(PreprocessError::UnsupportedFeature(format!(
                "images decoded as {other:?} are not supported"
            )));
        }
    })
}

/// Converts pixels of `N ≥ 3` bytes to 3 bytes front to back in the same buffer: pixel `i` is
/// written at `3i`, never past the start `N·i` of the pixels still to read.
fn in_place<const N: usize>(
    mut buf: Vec<u8>,
    pixels: usize,
    convert: impl Fn(&[u8; N]) -> [u8; 3],
) -> Vec<u8> {
    for i in 0..pixels {
        let px: [u8; N] = buf[N * i..N * i + N].try_into().expect("N bytes");
        buf[3 * i..3 * i + 3].copy_from_slice(&convert(&px));
    }
    buf.truncate(3 * pixels);
    // Give the tail back before the next step allocates (glibc shrinks large blocks in place).
    buf.shrink_to_fit();
    buf
}

/// Converts pixels of `N < 3` bytes into a new buffer.
fn grown<const N: usize>(
    buf: &[u8],
    pixels: usize,
    convert: impl Fn(&[u8; N]) -> [u8; 3],
) -> Result<Vec<u8>, PreprocessError> {
    let mut out = Vec::new();
    out.try_reserve_exact(3 * pixels)
        .map_err(|_| out_of_memory(3 * pixels))?;
    for px in buf.chunks_exact(N).take(pixels) {
        out.extend_from_slice(&convert(px.try_into().expect("N bytes")));
    }
    Ok(out)
}

/// `image`'s f32 → u8: clamp to 0..=1 (NaN counts as 1), scale, round.
fn float_to_u8(v: f32) -> u8 {
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let clamped = if !(v < 1.0) { 1.0 } else { v.max(0.0) };
    (clamped * 255.0).round() as u8
}

/// An RGB pixel with alpha `a` over an opaque white background.
#[inline]
fn flatten(rgb: [u8; 3], a: u8) -> [u8; 3] {
    match a {
        255 => rgb,
        0 => [255, 255, 255],
        _ => rgb.map(|c| composite_on_white(c, u32::from(a))),
    }
}

/// Pillow `ImagingAlphaComposite` for an opaque white destination (PRECISION_BITS = 7), so that
/// the Python reference, which composites with PIL, matches exactly.
#[inline]
fn composite_on_white(c: u8, a: u32) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let coef1 = a << PRECISION_BITS; // a * 255 * 255 * 2^7 / (255 * 255)
    let coef2 = (255 << PRECISION_BITS) - coef1;
    let tmp = u32::from(c) * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}

/// Applies the EXIF orientation as `DynamicImage::apply_orientation` does, with the rotated copy
/// reserved without aborting; flips happen in place.
pub(super) fn orient(
    mut rgb: RgbImage,
    orientation: Orientation,
) -> Result<RgbImage, PreprocessError> {
    let rotated = |rgb: &RgbImage, clockwise: bool| -> Result<RgbImage, PreprocessError> {
        let (w, h) = rgb.dimensions();
        let buf = zeroed(rgb.as_raw().len())?;
        let mut out = RgbImage::from_raw(h, w, buf).expect("3 bytes a pixel");
        let copied = if clockwise {
            imageops::rotate90_in(rgb, &mut out)
        } else {
            imageops::rotate270_in(rgb, &mut out)
        };
        copied.map_err(|e| PreprocessError::Internal(format!("rotate: {e}")))?;
        Ok(out)
    };
    Ok(match orientation {
        Orientation::NoTransforms => rgb,
        Orientation::Rotate90 => rotated(&rgb, true)?,
        Orientation::Rotate180 => {
            imageops::rotate180_in_place(&mut rgb);
            rgb
        }
        Orientation::Rotate270 => rotated(&rgb, false)?,
        Orientation::FlipHorizontal => {
            imageops::flip_horizontal_in_place(&mut rgb);
            rgb
        }
        Orientation::FlipVertical => {
            imageops::flip_vertical_in_place(&mut rgb);
            rgb
        }
        Orientation::Rotate90FlipH => {
            let mut out = rotated(&rgb, true)?;
            imageops::flip_horizontal_in_place(&mut out);
            out
        }
        Orientation::Rotate270FlipH => {
            let mut out = rotated(&rgb, false)?;
            imageops::flip_horizontal_in_place(&mut out);
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_matches_the_ends_and_pillow() {
        for c in 0..=255u8 {
            assert_eq!(composite_on_white(c, 255), c);
            assert_eq!(composite_on_white(c, 0), 255);
        }
        // Pillow 12: Image.alpha_composite(white, (c, c, c, a)) for a few values.
        assert_eq!(composite_on_white(0, 128), 127);
        assert_eq!(composite_on_white(0, 1), 254);
        assert_eq!(composite_on_white(100, 200), 133);
    }

    /// Two pixels of each colour type: an opaque one, and one with alpha 128 (or 0x80xx).
    #[test]
    fn conversions_follow_pil_rules() {
        let w16 = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|s| s.to_ne_bytes()).collect() };
        let wf = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|s| s.to_ne_bytes()).collect() };
        let half = composite_on_white(10, 128);
        let cases: Vec<(ColorType, Vec<u8>, [u8; 6])> = vec![
            (ColorType::Rgb8, vec![1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]),
            (
                ColorType::Rgba8,
                vec![1, 2, 3, 255, 10, 10, 10, 128],
                [1, 2, 3, half, half, half],
            ),
            (ColorType::L8, vec![9, 10], [9, 9, 9, 10, 10, 10]),
            (
                ColorType::La8,
                vec![9, 255, 10, 128],
                [9, 9, 9, half, half, half],
            ),
            // 16-bit: the high byte, not a rounded division.
            (
                ColorType::L16,
                w16(&[0x09FF, 0x0A80]),
                [9, 9, 9, 10, 10, 10],
            ),
            (
                ColorType::La16,
                w16(&[0x09FF, 0xFFFF, 0x0AFF, 0x80FF]),
                [9, 9, 9, half, half, half],
            ),
            (
                ColorType::Rgb16,
                w16(&[0x01FF, 0x0280, 0x0300, 0x04FF, 0x0500, 0x06FF]),
                [1, 2, 3, 4, 5, 6],
            ),
            (
                ColorType::Rgba16,
                w16(&[
                    0x01FF, 0x0200, 0x0300, 0xFFFF, 0x0AFF, 0x0A00, 0x0A10, 0x80FF,
                ]),
                [1, 2, 3, half, half, half],
            ),
            (
                ColorType::Rgb32F,
                wf(&[0.0, 0.5, 1.0, -3.0, 2.0, f32::NAN]),
                [0, 128, 255, 0, 255, 255],
            ),
            (
                ColorType::Rgba32F,
                wf(&[
                    0.0,
                    0.5,
                    1.0,
                    1.0,
                    10.0 / 255.0,
                    10.0 / 255.0,
                    10.0 / 255.0,
                    128.0 / 255.0,
                ]),
                [0, 128, 255, half, half, half],
            ),
        ];
        for (color, raw, want) in cases {
            assert_eq!(to_rgb8_on_white(raw, color, 2).unwrap(), want, "{color:?}");
        }
    }

    #[test]
    fn orientations_match_image() {
        let rgb = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 7]));
        for orientation in [
            Orientation::NoTransforms,
            Orientation::Rotate90,
            Orientation::Rotate180,
            Orientation::Rotate270,
            Orientation::FlipHorizontal,
            Orientation::FlipVertical,
            Orientation::Rotate90FlipH,
            Orientation::Rotate270FlipH,
        ] {
            let mut want = image::DynamicImage::ImageRgb8(rgb.clone());
            want.apply_orientation(orientation);
            let got = orient(rgb.clone(), orientation).unwrap();
            assert_eq!(got, want.into_rgb8(), "{orientation:?}");
        }
    }
}
