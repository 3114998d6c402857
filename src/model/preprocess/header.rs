//! The few header fields the decoders do not expose but the memory plan needs (or that a decoder
//! reads wrong), parsed from the bytes with bounds checks; `None` when a header is malformed, and
//! the decoder then reports the problem.

/// `(width, height)` from a PNG's IHDR. Read before the decoder is made because the png crate
/// reserves a row at once, and a row of an extreme shape (40,000,000 × 1) would exceed the
/// header's allocation budget before the shape could be refused for what it is.
pub(super) fn png(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be32 = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((be32(16)?, be32(20)?))
}

/// How a WebP file stores its pixels, from its first chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WebpLayout {
    /// `VP8 `: lossy, opaque.
    Lossy,
    /// `VP8L`: lossless.
    Lossless,
    /// `VP8X`: extended (alpha, metadata), possibly animated.
    Extended { animated: bool },
}

/// `(width, height, layout)` of a WebP file.
///
/// image-webp 0.2.4 computes a `VP8L` size as `(1 + bits) & 0x3FFF`, so a side of exactly 16384
/// (stored as 16383, the largest the format allows) comes out as 0; the header is read here so
/// that such an image gets the right size in its error.
pub(super) fn webp(bytes: &[u8]) -> Option<(u32, u32, WebpLayout)> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WEBP" {
        return None;
    }
    let payload = bytes.get(20..)?;
    match bytes.get(12..16)? {
        b"VP8 " => {
            // Frame tag (3 bytes), start code 9D 01 2A, then 14-bit width and height.
            if payload.get(3..6)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            let width = u32::from(le16(payload, 6)? & 0x3FFF);
            let height = u32::from(le16(payload, 8)? & 0x3FFF);
            Some((width, height, WebpLayout::Lossy))
        }
        b"VP8L" => {
            if *payload.first()? != 0x2F {
                return None;
            }
            let bits = u32::from_le_bytes(payload.get(1..5)?.try_into().ok()?);
            let width = 1 + (bits & 0x3FFF);
            let height = 1 + ((bits >> 14) & 0x3FFF);
            Some((width, height, WebpLayout::Lossless))
        }
        b"VP8X" => {
            let flags = *payload.first()?;
            let width = 1 + le24(payload, 4)?;
            let height = 1 + le24(payload, 7)?;
            let animated = flags & 0x02 != 0;
            Some((width, height, WebpLayout::Extended { animated }))
        }
        _ => None,
    }
}

/// The first frame of a GIF: `(left, top, width, height)` from its image descriptor. A frame can
/// be larger than the logical screen the file declares, and the decoder then allocates for the
/// frame, so the plan must know it.
pub(super) fn gif_first_frame(bytes: &[u8]) -> Option<(u32, u32, u32, u32)> {
    let packed = *bytes.get(10)?;
    let mut at = 13;
    if packed & 0x80 != 0 {
        at += 3 << ((packed & 0x07) + 1);
    }
    loop {
        match *bytes.get(at)? {
            0x2C => {
                let field = |i: usize| le16(bytes, at + 1 + 2 * i).map(u32::from);
                return Some((field(0)?, field(1)?, field(2)?, field(3)?));
            }
            0x21 => {
                // Extension: label, then data sub-blocks until an empty one.
                at += 2;
                loop {
                    let len = usize::from(*bytes.get(at)?);
                    at += 1 + len;
                    if len == 0 {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
}

/// The `Compression` tag of a TIFF's first image (1, uncompressed, when absent). JPEG-compressed
/// TIFFs (7) decode each strip or tile into a buffer of its own before the tiff crate copies it,
/// which the plan has to count.
pub(super) fn tiff_compression(bytes: &[u8]) -> Option<u16> {
    const COMPRESSION: u16 = 259;
    let big_endian = match bytes.get(0..2)? {
        b"II" => false,
        b"MM" => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
        Some(if big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    };
    // Classic TIFF: 12-byte entries after a 2-byte count; BigTIFF: 20-byte entries after 8.
    let (ifd, count_len, entry_len, value_at) = match u16_at(2)? {
        42 => (usize::try_from(u32_at(4)?).ok()?, 2, 12, 8),
        43 => (usize::try_from(u64_at(8)?).ok()?, 8, 20, 12),
        _ => return None,
    };
    let count = if count_len == 2 {
        u64::from(u16_at(ifd)?)
    } else {
        u64_at(ifd)?
    };
    let first = ifd.checked_add(count_len)?;
    for i in 0..usize::try_from(count).ok()? {
        let entry = first.checked_add(i.checked_mul(entry_len)?)?;
        if u16_at(entry)? == COMPRESSION {
            return u16_at(entry + value_at);
        }
        // Entries are sorted by tag.
        if u16_at(entry)? > COMPRESSION {
            break;
        }
    }
    Some(1)
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn riff(chunk: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WEBP".to_vec();
        out.extend_from_slice(chunk);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn png_size() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&1u32.to_be_bytes());
        png.extend_from_slice(&40_000_000u32.to_be_bytes());
        assert_eq!(super::png(&png), Some((1, 40_000_000)));
        assert_eq!(super::png(&png[..20]), None);
    }

    #[test]
    fn webp_sizes_of_each_layout() {
        // 16384×16384 lossless: both 14-bit fields hold 16383.
        let bits: u32 = 16383 | (16383 << 14);
        let mut vp8l = vec![0x2F];
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(
            webp(&riff(b"VP8L", &vp8l)),
            Some((16384, 16384, WebpLayout::Lossless))
        );
        let vp8 = [0, 0, 0, 0x9D, 0x01, 0x2A, 0x20, 0x03, 0x58, 0x02];
        assert_eq!(
            webp(&riff(b"VP8 ", &vp8)),
            Some((800, 600, WebpLayout::Lossy))
        );
        let vp8x = [0x12, 0, 0, 0, 0xFF, 0xFF, 0x00, 0x0F, 0x00, 0x00];
        assert_eq!(
            webp(&riff(b"VP8X", &vp8x)),
            Some((65536, 16, WebpLayout::Extended { animated: true }))
        );
        assert_eq!(webp(&riff(b"VP8L", &[0x2F, 1])), None);
        assert_eq!(webp(b"RIFF"), None);
    }

    #[test]
    fn gif_frame_after_extensions() {
        let mut gif = b"GIF89a\x10\x00\x08\x00\x80\x00\x00".to_vec();
        gif.extend_from_slice(&[0; 6]); // 2-colour table
        gif.extend_from_slice(&[0x21, 0xF9, 4, 0, 0, 0, 0, 0]); // graphic control
        gif.extend_from_slice(&[0x2C, 1, 0, 2, 0, 0xFF, 0xFF, 3, 0, 0]);
        assert_eq!(gif_first_frame(&gif), Some((1, 2, 65535, 3)));
        assert_eq!(gif_first_frame(&gif[..20]), None);
    }

    #[test]
    fn tiff_compression_tag() {
        let mut t = b"II*\0\x08\0\0\0".to_vec();
        t.extend_from_slice(&2u16.to_le_bytes());
        for (tag, value) in [(256u16, 64u16), (259, 7)] {
            t.extend_from_slice(&tag.to_le_bytes());
            t.extend_from_slice(&3u16.to_le_bytes());
            t.extend_from_slice(&1u32.to_le_bytes());
            t.extend_from_slice(&value.to_le_bytes());
            t.extend_from_slice(&[0, 0]);
        }
        assert_eq!(tiff_compression(&t), Some(7));
        t[10..12].copy_from_slice(&300u16.to_le_bytes());
        t[22..24].copy_from_slice(&301u16.to_le_bytes());
        assert_eq!(tiff_compression(&t), Some(1));
        assert_eq!(tiff_compression(b"II*\0\xFF\0\0\0"), None);
    }
}
