//! Bytes → 8-bit RGB: format sniffing, header-first checks (pixel count, aspect ratio, memory
//! plan), then a bounded decode into a buffer reserved without aborting, conversion and EXIF
//! orientation.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

use super::memory::{self, DECODER_SCRATCH_BYTES, Facts, HEADER_ALLOC_BYTES};
use super::resize::zeroed;
use super::{ImageKind, ImageLimits, MAX_ASPECT_RATIO, PreprocessError, PreprocessorConfig};
use super::{convert, header};

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

/// Refuses a header size beyond the pixel limit (413) or the aspect ratio limit (422).
pub(super) fn check_size(
    width: u32,
    height: u32,
    limits: &ImageLimits,
) -> Result<(), PreprocessError> {
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(PreprocessError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let (long, short) = (width.max(height), width.min(height));
    if u64::from(long) > u64::from(MAX_ASPECT_RATIO) * u64::from(short) {
        return Err(PreprocessError::AspectRatioUnsupported { width, height });
    }
    Ok(())
}

/// The decoded image (first frame of an animation), oriented, as packed 8-bit RGB. Nothing of
/// the pixels is decoded before the header passed [`check_size`] and its memory plan fits the
/// budget of `limits` (see `memory`).
pub(super) fn decode_rgb8(
    bytes: &[u8],
    kind: ImageKind,
    limits: &ImageLimits,
    config: &PreprocessorConfig,
) -> Result<RgbImage, PreprocessError> {
    // Sizes read here before the decoder exists: image-webp misreads a lossless side of 16384 as
    // 0, and the png crate reserves a whole row while it reads the header.
    let declared = match kind {
        ImageKind::Webp => header::webp(bytes).map(|(w, h, _)| (w, h)),
        ImageKind::Png => header::png(bytes),
        _ => None,
    };
    if let Some((w, h)) = declared
        && w > 0
        && h > 0
    {
        check_size(w, h, limits)?;
    }

    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(HEADER_ALLOC_BYTES);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(kind));
    reader.limits(decoder_limits.clone());
    // Constructing the decoder reads only the header (and, for PNG, the chunks before the data).
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(kind, e))?;

    let (width, height) = decoder.dimensions();
    if let Some((w, h)) = declared
        && kind == ImageKind::Webp
        && (w, h) != (width, height)
    {
        return Err(PreprocessError::UnsupportedFeature(format!(
            "this WebP image is {w}x{h} pixels; lossless WebP images with a side of exactly \
             16384 pixels cannot be decoded: re-encode it smaller or as PNG or JPEG"
        )));
    }
    if width == 0 || height == 0 {
        return Err(PreprocessError::Decode(format!(
            "the {} header gives an empty size {width}x{height}",
            kind.name()
        )));
    }
    check_size(width, height, limits)?;
    if kind == ImageKind::Jpeg && !jpeg_has_end_marker(bytes) {
        return Err(PreprocessError::Decode(
            "the JPEG data is truncated (no end-of-image marker)".to_owned(),
        ));
    }
    // Broken metadata must not cost the user the description: treat it as "no rotation".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);

    let color = decoder.color_type();
    let pixels = u64::from(width) * u64::from(height);
    let source_bytes_per_pixel = u64::from(decoder.original_color_type().bits_per_pixel())
        .div_ceil(8)
        .max(u64::from(color.bytes_per_pixel()));
    let facts = Facts {
        bytes,
        kind,
        width,
        height,
        color,
        source_bytes_per_pixel,
        transposed: matches!(
            orientation,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Rotate90FlipH
                | Orientation::Rotate270FlipH
        ),
    };
    let budget = memory::budget(limits, config);
    if memory::peak_bytes(&facts, config, budget) > budget {
        return Err(PreprocessError::MemoryLimit);
    }

    // Strict per-side limits from here on, so that no decoder goes beyond the header's size, and
    // an allocation budget that holds the decoders which honour it to their own full-size buffer.
    decoder_limits.max_image_width = Some(width);
    decoder_limits.max_image_height = Some(height);
    decoder_limits.max_alloc =
        Some((source_bytes_per_pixel * pixels).saturating_add(DECODER_SCRATCH_BYTES));
    decoder
        .set_limits(decoder_limits)
        .map_err(|e| map_image_error(kind, e))?;
    let total = usize::try_from(decoder.total_bytes()).map_err(|_| PreprocessError::MemoryLimit)?;
    let mut buf = zeroed(total)?;
    // A decoder bug on hostile data must refuse this image, not take the worker thread down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decoder.read_image(&mut buf)
    }))
    .map_err(|_| PreprocessError::Decode(format!("the {} data could not be decoded", kind.name())))?
    .map_err(|e| map_image_error(kind, e))?;

    let rgb = convert::to_rgb8_on_white(buf, color, pixels as usize)?;
    let rgb = RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| PreprocessError::Internal("decoded size mismatch".to_owned()))?;
    convert::orient(rgb, orientation)
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
