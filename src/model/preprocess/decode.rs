//! Bytes → 8-bit RGB: format sniffing, header-first size check, bounded decode, EXIF orientation,
//! alpha flattened on white.

use std::io::Cursor;

use image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader, Pixel, RgbImage,
};

use super::{ImageKind, ImageLimits, PreprocessError};

/// Headroom on top of the decoded pixels for a decoder's own buffers (rows, strips, tables).
const DECODER_ALLOC_SLACK: u64 = 64 << 20;
/// Decoded pixels are at most 8 bytes each (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// The format, from the magic bytes only.
pub(super) fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageKind::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(ImageKind::Webp)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(ImageKind::Gif)
    } else if starts(b"BM") {
        Some(ImageKind::Bmp)
    } else if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        Some(ImageKind::Tiff)
    } else {
        None
    }
}

/// The decoded image (first frame of an animation), oriented, as packed 8-bit RGB.
pub(super) fn decode_rgb8(
    bytes: &[u8],
    kind: ImageKind,
    limits: &ImageLimits,
) -> Result<RgbImage, PreprocessError> {
    let alloc_budget = limits
        .max_pixels
        .saturating_mul(MAX_BYTES_PER_PIXEL)
        .saturating_add(DECODER_ALLOC_SLACK);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(alloc_budget);

    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(kind));
    reader.limits(decoder_limits.clone());
    // Constructing the decoder reads only the header (and, for PNG, the chunks before the data).
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(kind, e))?;

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PreprocessError::Decode(format!(
            "the {} header gives an empty size {width}x{height}",
            kind.name()
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(PreprocessError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    // Strict per-side limits from here on, so that no decoder goes beyond the header's size.
    decoder_limits.max_image_width = Some(width);
    decoder_limits.max_image_height = Some(height);
    decoder
        .set_limits(decoder_limits)
        .map_err(|e| map_image_error(kind, e))?;
    if decoder.total_bytes() > alloc_budget {
        return Err(PreprocessError::MemoryLimit);
    }
    if kind == ImageKind::Jpeg && !jpeg_has_end_marker(bytes) {
        return Err(PreprocessError::Decode(
            "the JPEG data is truncated (no end-of-image marker)".to_owned(),
        ));
    }
    // Broken metadata must not cost the user the description: treat it as "no rotation".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);

    // A decoder bug on hostile data must refuse this image, not take the worker thread down.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        DynamicImage::from_decoder(decoder)
    }))
    .map_err(|_| PreprocessError::Decode(format!("the {} data could not be decoded", kind.name())))?
    .map_err(|e| map_image_error(kind, e))?;
    let mut rgb = DynamicImage::ImageRgb8(to_rgb8_on_white(decoded));
    rgb.apply_orientation(orientation);
    Ok(rgb.into_rgb8())
}

fn image_format(kind: ImageKind) -> ImageFormat {
    match kind {
        ImageKind::Jpeg => ImageFormat::Jpeg,
        ImageKind::Png => ImageFormat::Png,
        ImageKind::Webp => ImageFormat::WebP,
        ImageKind::Gif => ImageFormat::Gif,
        ImageKind::Bmp => ImageFormat::Bmp,
        ImageKind::Tiff => ImageFormat::Tiff,
    }
}

/// True when an end-of-image marker follows the first start-of-scan. zune-jpeg (through `image`)
/// decodes a truncated scan without complaint and fills the rest with grey; a half-grey upload
/// must not be described as if it were the photo. The segments before the scan are skipped by
/// their lengths, so an EXIF thumbnail's own end marker does not count.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    // 0xFF 0xD9 cannot occur inside entropy-coded data, so a file that ends with it is complete.
    if bytes.ends_with(&[0xFF, 0xD9]) {
        return true;
    }
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => i += 1, // fill byte
            0xD8 | 0x01 | 0xD0..=0xD7 => i += 2,
            0xD9 => return true,
            0xDA => {
                // Entropy-coded data: an 0xFF there is always followed by 0x00 (stuffing), a
                // restart marker or another marker, so 0xFF 0xD9 can only be the end marker.
                return bytes[i + 2..].windows(2).any(|w| w == [0xFF, 0xD9]);
            }
            _ => {
                let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
                i += 2 + len;
            }
        }
    }
    false
}

/// 8-bit RGB; an alpha channel is flattened on white (see [`flatten_on_white`]). 16-bit samples
/// keep their high byte, as PIL does when it opens 16-bit PNG and TIFF images.
fn to_rgb8_on_white(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(rgba) => flatten_on_white(&rgba),
        DynamicImage::ImageLuma16(b) => to_rgb8_on_white(DynamicImage::ImageLuma8(high_bytes(&b))),
        DynamicImage::ImageLumaA16(b) => {
            to_rgb8_on_white(DynamicImage::ImageLumaA8(high_bytes(&b)))
        }
        DynamicImage::ImageRgb16(b) => high_bytes(&b),
        DynamicImage::ImageRgba16(b) => flatten_on_white(&high_bytes(&b)),
        other if other.color().has_alpha() => flatten_on_white(&other.into_rgba8()),
        other => other.into_rgb8(),
    }
}

/// 16-bit → 8-bit by keeping the high byte (PIL's `;16B` unpackers), not by rounding.
fn high_bytes<P, Q>(image: &ImageBuffer<P, Vec<u16>>) -> ImageBuffer<Q, Vec<u8>>
where
    P: Pixel<Subpixel = u16>,
    Q: Pixel<Subpixel = u8>,
{
    let (width, height) = image.dimensions();
    let samples = image.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
    ImageBuffer::from_raw(width, height, samples).expect("same number of samples")
}

/// Composites RGBA over an opaque white background, with Pillow's `Image.alpha_composite`
/// fixed-point arithmetic (so the Python reference, which composites with PIL, matches exactly).
fn flatten_on_white(rgba: &image::RgbaImage) -> RgbImage {
    let (width, height) = rgba.dimensions();
    let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        out.extend_from_slice(&match a {
            255 => [px[0], px[1], px[2]],
            0 => [255, 255, 255],
            _ => [
                composite_on_white(px[0], a),
                composite_on_white(px[1], a),
                composite_on_white(px[2], a),
            ],
        });
    }
    RgbImage::from_raw(width, height, out).expect("3 bytes for each of width*height pixels")
}

/// Pillow `ImagingAlphaComposite` for an opaque white destination (PRECISION_BITS = 7).
#[inline]
fn composite_on_white(c: u8, a: u32) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let coef1 = a << PRECISION_BITS; // a * 255 * 255 * 2^7 / (255 * 255)
    let coef2 = (255 << PRECISION_BITS) - coef1;
    let tmp = u32::from(c) * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}

fn map_image_error(kind: ImageKind, error: ImageError) -> PreprocessError {
    match error {
        ImageError::Limits(_) => PreprocessError::MemoryLimit,
        ImageError::Unsupported(e) => PreprocessError::UnsupportedFeature(format!(
            "this {} image uses a feature that is not supported ({})",
            kind.name(),
            sanitize(&e.to_string())
        )),
        other => PreprocessError::Decode(format!(
            "the {} data is corrupt or truncated ({})",
            kind.name(),
            sanitize(&other.to_string())
        )),
    }
}

/// Decoder messages go to users and logs: printable ASCII only, short, and without the debug dumps
/// (`ChunkType { type: … }`, byte arrays) through which a few image bytes could ride along.
fn sanitize(message: &str) -> String {
    const MAX_CHARS: usize = 160;
    let message = message.trim();
    let message = match message.find(['{', '[', '\\']) {
        Some(at) => message[..at].trim_end().trim_end_matches(':'),
        None => message,
    };
    let mut out: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_CHARS)
        .collect();
    if message.chars().count() > MAX_CHARS {
        out.push_str("...");
    }
    out
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

    #[test]
    fn sniffs_magic_bytes_only() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0"), Some(ImageKind::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(ImageKind::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8L"), Some(ImageKind::Webp));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"GIF89a"), Some(ImageKind::Gif));
        assert_eq!(sniff(b"BM"), Some(ImageKind::Bmp));
        assert_eq!(sniff(b"MM\0*"), Some(ImageKind::Tiff));
        assert_eq!(sniff(b"\0\0\0\x1cftypheic"), None);
        assert_eq!(sniff(b"<svg"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn jpeg_end_marker_scan() {
        // SOI, APP1 holding a thumbnail's FFD9, SOS, data with stuffing, no EOI.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34]);
        assert!(!jpeg_has_end_marker(&jpeg));
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        assert!(jpeg_has_end_marker(&jpeg));
        assert!(!jpeg_has_end_marker(&[0xFF, 0xD8, 0xFF]));
    }

    #[test]
    fn sanitize_keeps_messages_short_and_printable() {
        assert_eq!(sanitize("bad \u{1}chunk\n"), "bad ?chunk");
        assert_eq!(
            sanitize("Format error: ChunkType { type: 5uy\r } chunk appeared before IHDR"),
            "Format error: ChunkType"
        );
        assert_eq!(sanitize("bytes: [1, 2, 3]"), "bytes");
        assert_eq!(sanitize(&"x".repeat(500)).len(), 163);
    }
}
