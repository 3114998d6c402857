//! The most memory preparing one image can hold at once, worked out from its header before any
//! pixel is decoded, and the per-image budget that `ImageLimits` implies; an image whose plan
//! does not fit is refused instead of being allowed to take the process down.
//!
//! Every figure below was read from the decoders' source at the versions in Cargo.lock
//! (image 0.25.10, png 0.18, zune-jpeg 0.5.15, image-webp 0.2.4, gif 0.14, tiff 0.11) and from
//! fast_image_resize 6.1. "P" is the image's pixel count.

use image::ColorType;

use super::config::{PreprocessorConfig, Resample};
use super::header::{self, WebpLayout};
use super::{ImageKind, ImageLimits};

/// Bytes per pixel of `max_pixels` that one image may hold at its peak. The largest need of an
/// 8-bit image of any supported kind at the pixel limit is 12 (an animated WebP: output, canvas
/// and frame, 4 bytes each); a progressive 4-component JPEG needs 11 (3 of output, 8 of DCT
/// coefficients), everything else less. 16-bit and float TIFFs need more and are refused above
/// the pixel count this budget affords them.
pub(super) const BUDGET_BYTES_PER_PIXEL: u64 = 12;
/// On top of the pixels: the model input (counted separately, see [`budget`]) and what does not
/// grow with the pixel count but with a side: decoder row buffers (zune-jpeg keeps up to ~512
/// bytes per column, 46 MB at the longest side 89,443) and resize coefficient tables (≤ 6 MB).
const FIXED_ALLOWANCE_BYTES: u64 = 64 << 20;
/// What a decoder may allocate before the pixels (PNG text and ICC chunks, decompressed), through
/// `image::Limits::max_alloc` while the header is read; PNG keeps that budget for its row buffers.
pub(super) const HEADER_ALLOC_BYTES: u64 = 32 << 20;
/// `max_alloc` on top of the decoded image while the pixels are decoded: the TIFF compressed
/// chunk size check and a GIF frame larger than its screen are held to it.
pub(super) const DECODER_SCRATCH_BYTES: u64 = 64 << 20;

/// Row buffers of the decoders, per column of the (padded) width: zune-jpeg's MCU-row
/// coefficients and upsampling rows; PNG, WebP, GIF and BMP keep a few rows of at most 8 bytes a
/// pixel, which 512 also covers.
const ROW_BYTES_PER_COLUMN: u64 = 512;

/// What the pipeline knows about an image once its header is read.
pub(super) struct Facts<'a> {
    pub bytes: &'a [u8],
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
    /// The decoder's output pixels.
    pub color: ColorType,
    /// Bytes per pixel of the decoder's own full-size buffer where it keeps one (TIFF: the
    /// source colour type, e.g. 4 for CMYK decoded to RGB).
    pub source_bytes_per_pixel: u64,
    /// The EXIF orientation swaps width and height (a rotation copies the image).
    pub transposed: bool,
}

/// The per-image budget: [`BUDGET_BYTES_PER_PIXEL`] × `max_pixels`, plus the model input (the
/// resized image and its f32 tensor: 15 bytes per output pixel, 27 for patches that repeat a still
/// image over two frames) and [`FIXED_ALLOWANCE_BYTES`].
pub(super) fn budget(limits: &ImageLimits, config: &PreprocessorConfig) -> u64 {
    BUDGET_BYTES_PER_PIXEL
        .saturating_mul(limits.max_pixels)
        .saturating_add(
            config
                .output_bytes_per_pixel()
                .saturating_mul(config.max_output_pixels()),
        )
        .saturating_add(FIXED_ALLOWANCE_BYTES)
}

/// The upper bound documented on [`ImageLimits`]: the budget, the metadata a decoder may hold
/// next to it and one copy of the image bytes (the JPEG decoder copies its input; lossy WebP
/// and JPEG-in-TIFF copy the compressed data).
pub(super) fn worst_case(
    limits: &ImageLimits,
    config: &PreprocessorConfig,
    image_bytes: u64,
) -> u64 {
    budget(limits, config)
        .saturating_add(HEADER_ALLOC_BYTES)
        .saturating_add(image_bytes)
}

/// The largest number of bytes held at once while `facts` goes through decoding, conversion to
/// RGB, orientation, resizing and the tensor, whichever step is the largest.
/// `budget` decides the resize pass order (see [`vertical_first`]).
pub(super) fn peak_bytes(facts: &Facts<'_>, config: &PreprocessorConfig, budget: u64) -> u64 {
    let (w, h) = (u64::from(facts.width), u64::from(facts.height));
    let pixels = w * h;
    let out = u64::from(facts.color.bytes_per_pixel());
    let rgb = 3 * pixels;
    // Conversion to packed RGB happens in place when the decoder gives 3 or more bytes a pixel.
    let convert = if out >= 3 {
        out * pixels
    } else {
        out * pixels + rgb
    };
    let orient = if facts.transposed { 2 * rgb } else { rgb };
    let (ow, oh) = if facts.transposed { (h, w) } else { (w, h) };
    let (tw, th) = config.target_size(ow as u32, oh as u32);
    let (tw, th) = (u64::from(tw), u64::from(th));
    let order = vertical_first((ow, oh), (tw, th), config.resample, budget);
    let resize = resize_peak((ow, oh), (tw, th), config.resample, order);
    let tensor = config.output_bytes_per_pixel() * tw * th;
    decode_peak(facts)
        .max(convert)
        .max(orient)
        .max(resize)
        .max(tensor)
}

/// Decoder buffers plus its output, by format.
fn decode_peak(facts: &Facts<'_>) -> u64 {
    let (w, h) = (u64::from(facts.width), u64::from(facts.height));
    let pixels = w * h;
    let output = u64::from(facts.color.bytes_per_pixel()) * pixels;
    let padded = |block: u64| w.div_ceil(block) * block * (h.div_ceil(block) * block);
    let rows = ROW_BYTES_PER_COLUMN * w.div_ceil(32) * 32;
    let buffers = match facts.kind {
        ImageKind::Png | ImageKind::Bmp => 0,
        // Progressive and multi-scan JPEGs keep every DCT coefficient (2 bytes per sample of each
        // component, MCUs of up to 32×32 pixels); 4 components is the worst case (CMYK, YCCK).
        ImageKind::Jpeg => {
            let components = if facts.color == ColorType::L8 { 1 } else { 4 };
            2 * components * padded(32)
        }
        ImageKind::Webp => webp_buffers(facts.bytes, pixels, padded(16)),
        ImageKind::Gif => gif_buffers(facts, pixels),
        ImageKind::Tiff => {
            let own = facts.source_bytes_per_pixel * pixels;
            // A JPEG strip or tile is decoded on its own (3 bytes a pixel and its coefficients)
            // before being copied; one strip can be the whole image.
            let jpeg = if header::tiff_compression(facts.bytes) == Some(7) {
                11 * pixels
            } else {
                0
            };
            own + jpeg
        }
    };
    output + buffers + rows
}

fn webp_buffers(bytes: &[u8], pixels: u64, padded16: u64) -> u64 {
    // Lossy frames decode into YUV 4:2:0 planes (1.5 bytes a pixel of 16×16 macroblocks).
    let yuv = padded16 * 3 / 2;
    match header::webp(bytes).map(|(_, _, layout)| layout) {
        Some(WebpLayout::Lossy) => yuv,
        // Lossless: an ARGB buffer (4) plus transform and entropy images (≤ 7/8).
        Some(WebpLayout::Lossless) => 5 * pixels,
        // Still extended images add a lossless alpha plane decoded as ARGB, then kept as 1 byte.
        Some(WebpLayout::Extended { animated: false }) => yuv + 5 * pixels,
        // Animated: the canvas and the first frame, 4 bytes a pixel each.
        Some(WebpLayout::Extended { animated: true }) | None => 8 * pixels,
    }
}

fn gif_buffers(facts: &Facts<'_>, pixels: u64) -> u64 {
    // The frame's palette indices (1 byte a pixel), and a 4-byte frame buffer unless the frame
    // spans the screen's width from its left edge. A frame may claim to be larger than the
    // screen; the decoder then allocates for all of it.
    match header::gif_first_frame(facts.bytes) {
        Some((left, top, fw, fh)) => {
            let frame = u64::from(fw) * u64::from(fh);
            let direct = left == 0
                && fw == facts.width
                && u64::from(top) + u64::from(fh) <= u64::from(facts.height);
            if direct { frame } else { 5 * frame }
        }
        None => 5 * (pixels + DECODER_SCRATCH_BYTES / 4),
    }
}

/// Whether the resize runs its vertical pass first. Pillow's order, horizontal first, widens
/// every source row before the rows are reduced when the width grows while the height shrinks:
/// an intermediate of target width × source height, larger than both the source and the output
/// (206 MB for 447×89,400 → 768×768). The vertical pass first keeps it below the output.
///
/// But the order is not free: the 8-bit intermediate is rounded and clipped at another point, so
/// near hard edges the overshoot of bicubic and Lanczos lands differently (up to 16 and 23 steps
/// measured; none on smooth content), and ordinary portraits such as 700×1000 → 768×768 would
/// no longer match Pillow. So Pillow's order is kept unless its resize would not fit the
/// per-image budget. At the defaults (768×768, ≤ 200:1) it always fits: the largest intermediate
/// is 768 × 89,442 × 3 = 206 MB next to a 120 MB source. Larger model inputs or a lower
/// `--max-image-pixels` can make it not fit; those images get the other order.
pub(super) fn vertical_first(
    source: (u64, u64),
    target: (u64, u64),
    resample: Resample,
    budget: u64,
) -> bool {
    let grows = target.0 > source.0 && target.1 < source.1;
    grows && resample != Resample::Nearest && resize_peak(source, target, resample, false) > budget
}

/// Source, intermediate, output and coefficient tables of the two separable passes (see
/// [`super::resize`]); nothing when the size is already right.
fn resize_peak(
    source: (u64, u64),
    target: (u64, u64),
    resample: Resample,
    vertical_first: bool,
) -> u64 {
    let ((sw, sh), (tw, th)) = (source, target);
    if source == target {
        return 0;
    }
    let (src, dst) = (3 * sw * sh, 3 * tw * th);
    if resample == Resample::Nearest || sw == tw || sh == th {
        let table = coefficient_bytes(sw, tw, resample).max(coefficient_bytes(sh, th, resample));
        return src + dst + table;
    }
    let (first, second, intermediate) = if vertical_first {
        (
            coefficient_bytes(sh, th, resample),
            coefficient_bytes(sw, tw, resample),
            3 * sw * th,
        )
    } else {
        (
            coefficient_bytes(sw, tw, resample),
            coefficient_bytes(sh, th, resample),
            3 * tw * sh,
        )
    };
    (src + intermediate + first).max(intermediate + dst + second)
}

/// fast_image_resize's tables for one pass from `input` to `output` samples: a window of
/// `2 × ceil(support × max(input / output, 1)) + 1` f64 weights per output sample, their i16
/// copy, and a bound and a small Vec per output sample. Proportional to the input side when
/// shrinking, which is why the aspect ratio is limited.
pub(super) fn coefficient_bytes(input: u64, output: u64, resample: Resample) -> u64 {
    let support = match resample {
        Resample::Nearest => return 4 * output,
        Resample::Bilinear | Resample::Hamming => 1.0,
        Resample::Bicubic => 2.0,
        Resample::Lanczos => 3.0,
    };
    let scale = (input as f64 / output.max(1) as f64).max(1.0);
    let window = 2 * (support * scale).ceil() as u64 + 1;
    10 * window * output + 64 * output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: ImageKind, width: u32, height: u32, color: ColorType) -> Facts<'static> {
        Facts {
            bytes: b"",
            kind,
            width,
            height,
            color,
            source_bytes_per_pixel: u64::from(color.bytes_per_pixel()),
            transposed: false,
        }
    }

    #[test]
    fn coefficient_tables_follow_the_input_side() {
        // 40,000,000 rows to 768 with bicubic: 1.6 GB, what a 1×40,000,000 PNG used to take.
        let bomb = coefficient_bytes(40_000_000, 768, Resample::Bicubic);
        assert!(bomb > 1_500_000_000, "{bomb}");
        // The longest side the aspect-ratio limit allows at 40 MP: a few MB.
        let longest = coefficient_bytes(89_443, 768, Resample::Lanczos);
        assert!(longest < 6_000_000, "{longest}");
        assert_eq!(
            coefficient_bytes(500, 768, Resample::Bicubic),
            (10 * 5 + 64) * 768
        );
    }

    #[test]
    fn budget_at_the_defaults() {
        let (limits, config) = (ImageLimits::default(), PreprocessorConfig::default());
        assert_eq!(
            budget(&limits, &config),
            480_000_000 + 15 * 768 * 768 + (64 << 20)
        );
        assert_eq!(
            worst_case(&limits, &config, 20 << 20),
            budget(&limits, &config) + (32 << 20) + (20 << 20)
        );
    }

    #[test]
    fn near_limit_images_fit_and_wide_tiffs_do_not() {
        let (limits, config) = (ImageLimits::default(), PreprocessorConfig::default());
        let budget = budget(&limits, &config);
        for (w, h) in [(447, 89_400), (89_400, 447), (6_324, 6_324)] {
            for kind in [
                ImageKind::Png,
                ImageKind::Jpeg,
                ImageKind::Gif,
                ImageKind::Bmp,
            ] {
                let f = facts(kind, w, h, ColorType::Rgb8);
                assert!(
                    peak_bytes(&f, &config, budget) <= budget,
                    "{kind:?} {w}x{h}"
                );
            }
            let f = facts(ImageKind::Png, w, h, ColorType::Rgba16);
            assert!(
                peak_bytes(&f, &config, budget) <= budget,
                "RGBA16 PNG {w}x{h}"
            );
            let f = facts(ImageKind::Tiff, w, h, ColorType::Rgba16);
            assert!(
                peak_bytes(&f, &config, budget) > budget,
                "RGBA16 TIFF {w}x{h}"
            );
        }
    }

    #[test]
    fn pillow_order_unless_it_does_not_fit() {
        let (limits, config) = (ImageLimits::default(), PreprocessorConfig::default());
        let budget = budget(&limits, &config);
        let (source, target) = ((447, 89_400), (768, 768));
        let pillow = resize_peak(source, target, Resample::Bicubic, false);
        let other = resize_peak(source, target, Resample::Bicubic, true);
        let (src, dst) = (3 * 447 * 89_400, 3 * 768 * 768);
        assert!(
            pillow > src + 3 * 768 * 89_400 && pillow < budget,
            "{pillow}"
        );
        assert!(other < src + dst + 4_000_000, "{other}");
        assert!(!vertical_first(source, target, Resample::Bicubic, budget));
        assert!(vertical_first(
            source,
            target,
            Resample::Bicubic,
            pillow - 1
        ));
        assert!(!vertical_first((89_400, 447), target, Resample::Bicubic, 0));
        assert!(!vertical_first(source, target, Resample::Nearest, 0));
    }
}
