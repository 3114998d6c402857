//! Image bytes in memory → normalised `[3, H, W]` tensor, as the Python Florence-2 processor
//! (`CLIPImageProcessor`) does it.
//!
//! Pipeline ([`prepare_image`]):
//!
//! 1. Sniff the format from the magic bytes (never a file name or content type): JPEG, PNG, WebP,
//!    GIF (first frame), BMP, TIFF. Anything else is [`PreprocessError::UnsupportedFormat`].
//! 2. Read the size from the header and refuse more than [`ImageLimits::max_pixels`] or an aspect
//!    ratio beyond [`MAX_ASPECT_RATIO`] before any pixel is decoded, then work out the most memory
//!    the image will hold at once (decoder buffers by format and colour type, conversion, rotation,
//!    resize intermediates and coefficient tables, the tensor) and refuse it when that exceeds the
//!    budget of [`ImageLimits`]. The decoder then runs under `image::Limits` (strict width/height
//!    equal to the header's, an allocation budget), so neither a decompression bomb nor a lying
//!    header can allocate without bound, and the large buffers are reserved fallibly: a failed
//!    allocation is an error, never an abort of the process.
//! 3. Decode, convert to 8-bit RGB (in place where the samples are larger), apply the EXIF
//!    orientation. Grayscale is replicated, 16-bit is reduced to 8-bit, palette and CMYK become
//!    RGB. **Alpha is flattened on white** (a deliberate product choice for product cut-outs:
//!    transparent backgrounds become white, as shops show them; PIL's `convert("RGB")` and
//!    transformers.js drop alpha instead, so conformance fixtures with the references stay
//!    opaque).
//! 4. Resize to `size` exactly (aspect not kept) like `PIL.Image.resize` with the configured filter
//!    (bicubic for Florence-2: Catmull-Rom, antialiased when shrinking, 8-bit output), skipped when
//!    the image already has that size. The two separable passes run in Pillow's order, horizontal
//!    first, unless that order's intermediate would not fit the memory budget (see
//!    `memory::vertical_first`).
//! 5. Rescale and normalise, `(x * rescale_factor - mean[c]) / std[c]`, laid out channel-first.
//!
//! The image bytes are only read; nothing is written to disk and no error message carries them.

mod config;
mod convert;
mod decode;
mod header;
mod memory;
mod patches;
mod resize;
mod tensor;

pub use config::{ImageSize, PreprocessorConfig, Resample, SizeRule, smart_resize};

/// Image container format, sniffed from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
    Gif,
    Bmp,
    Tiff,
}

impl ImageKind {
    /// Lower-case identifier, for metadata and metrics labels: `"jpeg"`, `"png"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpeg",
            ImageKind::Png => "png",
            ImageKind::Webp => "webp",
            ImageKind::Gif => "gif",
            ImageKind::Bmp => "bmp",
            ImageKind::Tiff => "tiff",
        }
    }

    /// The media type, e.g. `"image/jpeg"`.
    pub fn mime_type(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
            ImageKind::Webp => "image/webp",
            ImageKind::Gif => "image/gif",
            ImageKind::Bmp => "image/bmp",
            ImageKind::Tiff => "image/tiff",
        }
    }

    /// Name for messages: `"JPEG"`, `"PNG"`, …
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "JPEG",
            ImageKind::Png => "PNG",
            ImageKind::Webp => "WebP",
            ImageKind::Gif => "GIF",
            ImageKind::Bmp => "BMP",
            ImageKind::Tiff => "TIFF",
        }
    }
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most extreme aspect ratio accepted, longest side over shortest: 200:1, as the Qwen2-VL and
/// Qwen3.5 image processors (`smart_resize`: "absolute aspect ratio must be smaller than 200").
/// Beyond it an image is a strip the models cannot describe once squeezed into their input, and
/// its longest side drives the resize coefficient tables (about 40 bytes per source pixel of the
/// side for bicubic: 1.6 GB for a 1×40,000,000 PNG). With at most `max_pixels` pixels the
/// longest side is then at most `sqrt(200 × max_pixels)`: 89,442 at the default 40 MP.
pub const MAX_ASPECT_RATIO: u32 = 200;

/// Caps applied to every image before it is decoded.
///
/// # Memory per image
///
/// Before decoding, the most memory the image will hold at once is worked out from its header and
/// must fit `12 B × max_pixels + 15 B × output pixels + 64 MiB`; otherwise it is refused
/// ([`PreprocessError::MemoryLimit`]). At the pixel limit the largest needs are, in bytes per
/// pixel: animated WebP 12 (output, canvas, frame), progressive CMYK JPEG 11 (output and DCT
/// coefficients), lossy WebP with alpha 10.5, GIF 9 (a frame not spanning the screen), lossless
/// WebP 9, 16-bit RGBA PNG 8, baseline JPEG and 8-bit PNG/BMP 3 to 4; converting to RGB happens
/// in place (4 and 5 for 8-bit gray, gray+alpha); a rotation takes 6 (two RGB copies); resizing
/// at most 8.2 (the source and Pillow's horizontal-first intermediate, target width × source
/// height, 206 MB for 447×89,400 → 768×768; coefficient tables under 6 MB thanks to
/// [`MAX_ASPECT_RATIO`]). TIFF needs its own buffer and the output: 16 for 16-bit RGBA, 17 for
/// JPEG-compressed RGB (a strip decodes on its own), so such TIFFs are refused above about 33 to
/// 35 MP. The output side is
/// the resized image and its f32 tensor, 15 B × 768 × 768 = 8.8 MB for Florence-2; the 64 MiB
/// cover decoder row buffers and tables. On top: up to 32 MiB of metadata a decoder may read
/// before the pixels, and one copy of the image bytes (JPEG, lossy WebP).
///
/// Worst case per image: `12 B × max_pixels + 15 B × output pixels + 96 MiB + image bytes`:
/// 0.61 GB at the defaults (40 MP, 768×768, 20 MiB images); see [`ImageLimits::worst_case_bytes`].
/// Not covered: lossless WebP Huffman tables, which image-webp sizes from the file's entropy
/// codes rather than the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted `width * height` (after decoding the header, before the pixels). Also
    /// sets the memory budget of one image, see above.
    pub max_pixels: u64,
}

impl ImageLimits {
    /// 40 megapixels: above any phone camera or product photo; about 0.6 GB worst-case peak.
    pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

    /// The most bytes preparing one image of at most `image_bytes` bytes can hold at once with
    /// these limits and `config` (see [Memory per image](ImageLimits#memory-per-image)).
    pub fn worst_case_bytes(&self, config: &PreprocessorConfig, image_bytes: u64) -> u64 {
        memory::worst_case(self, config, image_bytes)
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// The result of [`prepare_image`].
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// `[3, H, W]`, RGB, rescaled and normalised; `(W, H)` is [`PreprocessorConfig::output_size`]
    /// (or the oriented image size with `do_resize: false`).
    pub pixel_values: ndarray::Array3<f32>,
    /// Size of the decoded image after EXIF orientation, before resizing.
    pub original_width: u32,
    pub original_height: u32,
    /// The sniffed container format.
    pub format: ImageKind,
}

/// Why an image (or a config) was refused. Messages are meant for API users; none carries image
/// bytes. Everything but [`PreprocessError::InvalidConfig`] and [`PreprocessError::Internal`] is
/// the client's fault (a 4xx).
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("unsupported image format: send JPEG, PNG, WebP, GIF, BMP or TIFF")]
    UnsupportedFormat,
    #[error("the image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error(
        "the image is {width}x{height} pixels, an aspect ratio of {ratio}:1; at most \
         {MAX_ASPECT_RATIO}:1 is supported: crop the image, or pad it to a less elongated shape",
        ratio = aspect_ratio(.width, .height)
    )]
    AspectRatioUnsupported { width: u32, height: u32 },
    #[error(
        "preparing this image would need more memory than one image may use: send fewer pixels \
         or 8 bits per channel"
    )]
    MemoryLimit,
    #[error("{0}")]
    UnsupportedFeature(String),
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    /// The process could not get the memory the plan allowed: the server is short of memory
    /// right now (other images, the model), not the image at fault.
    #[error(
        "the server is short of memory: {megabytes} MB for preparing the image could not be allocated; retry shortly"
    )]
    OutOfMemory { megabytes: usize },
    #[error("invalid preprocessor config {origin}: {reason}")]
    InvalidConfig { origin: String, reason: String },
    #[error("internal error while preparing the image: {0}")]
    Internal(String),
}

impl PreprocessError {
    /// A stable machine-readable code for API error bodies and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            PreprocessError::Empty => "image_empty",
            PreprocessError::UnsupportedFormat => "image_format_unsupported",
            PreprocessError::TooManyPixels { .. } => "image_too_many_pixels",
            PreprocessError::AspectRatioUnsupported { .. } => "image_aspect_ratio_unsupported",
            PreprocessError::MemoryLimit => "image_too_large",
            PreprocessError::UnsupportedFeature(_) => "image_feature_unsupported",
            PreprocessError::Decode(_) => "image_decode_failed",
            PreprocessError::OutOfMemory { .. } => "out_of_memory",
            PreprocessError::InvalidConfig { .. } => "invalid_preprocessor_config",
            PreprocessError::Internal(_) => "internal_error",
        }
    }

    /// True when the request's image is at fault (answer 4xx), false for server-side problems.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            PreprocessError::InvalidConfig { .. }
                | PreprocessError::Internal(_)
                | PreprocessError::OutOfMemory { .. }
        )
    }
}

/// Longest side over shortest, for messages: `201.0`, `40000000.0`.
fn aspect_ratio(width: &u32, height: &u32) -> String {
    let (long, short) = ((*width).max(*height), (*width).min(*height).max(1));
    format!("{:.1}", f64::from(long) / f64::from(short))
}

/// Decodes `bytes` (in memory), orients, flattens, resizes and normalises them into the vision
/// encoder's input. See the module documentation for each step. CPU-bound: call it from a
/// blocking thread.
pub fn prepare_image(
    bytes: &[u8],
    config: &PreprocessorConfig,
    limits: &ImageLimits,
) -> Result<PreparedImage, PreprocessError> {
    let resized = decode_and_resize(bytes, config, limits)?;
    let pixel_values = tensor::to_chw_tensor(&resized.rgb, resized.width, resized.height, config)?;
    Ok(PreparedImage {
        pixel_values,
        original_width: resized.original_width,
        original_height: resized.original_height,
        format: resized.format,
    })
}

/// The result of [`prepare_patches`].
#[derive(Debug, Clone)]
pub struct PreparedPatches {
    /// `[grid_h / merge, grid_w / merge, merge², temporal · 3 · patch²]`: the vision encoder's
    /// `[patches, temporal · 3 · patch²]` with the patch grid in its shape.
    pub patches: ndarray::Array4<f32>,
    pub original_width: u32,
    pub original_height: u32,
    pub format: ImageKind,
}

/// As [`prepare_image`] for the Qwen2-VL image processors: the size from `smart_resize`, then
/// patches instead of a planar tensor (`patches.rs`).
pub fn prepare_patches(
    bytes: &[u8],
    config: &PreprocessorConfig,
    limits: &ImageLimits,
) -> Result<PreparedPatches, PreprocessError> {
    let resized = decode_and_resize(bytes, config, limits)?;
    let patches = patches::to_patches(&resized.rgb, resized.width, resized.height, config)?;
    Ok(PreparedPatches {
        patches,
        original_width: resized.original_width,
        original_height: resized.original_height,
        format: resized.format,
    })
}

/// Packed RGB at the target size, and the facts of the source.
struct Resized {
    rgb: Vec<u8>,
    width: u32,
    height: u32,
    original_width: u32,
    original_height: u32,
    format: ImageKind,
}

/// Steps 1 to 4 of the module documentation, every buffer planned before it is taken.
fn decode_and_resize(
    bytes: &[u8],
    config: &PreprocessorConfig,
    limits: &ImageLimits,
) -> Result<Resized, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let format = decode::sniff(bytes).ok_or(PreprocessError::UnsupportedFormat)?;
    let rgb = decode::decode_rgb8(bytes, format, limits, config)?;
    let (original_width, original_height) = rgb.dimensions();
    let (width, height) = config.target_size(original_width, original_height);
    let vertical_first = memory::vertical_first(
        (u64::from(original_width), u64::from(original_height)),
        (u64::from(width), u64::from(height)),
        config.resample,
        memory::budget(limits, config),
    );
    let rgb = resize::resize_rgb8(
        rgb.into_raw(),
        (original_width, original_height),
        (width, height),
        config.resample,
        vertical_first,
    )?;
    Ok(Resized {
        rgb,
        width,
        height,
        original_width,
        original_height,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(image: &image::DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn white_image_gives_the_spec_test_vector() {
        let white = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            300,
            200,
            image::Rgb([255, 255, 255]),
        ));
        let out = prepare_image(
            &png(&white),
            &PreprocessorConfig::default(),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(out.pixel_values.shape(), &[3, 768, 768]);
        assert_eq!((out.original_width, out.original_height), (300, 200));
        assert_eq!(out.format, ImageKind::Png);
        for (c, want) in [2.2489f32, 2.4286, 2.6400].into_iter().enumerate() {
            let plane = out.pixel_values.index_axis(ndarray::Axis(0), c);
            assert!(plane.iter().all(|v| (v - want).abs() < 1e-4), "channel {c}");
        }
        let values = &out.pixel_values;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        assert!((mean - 2.439_159_870_147_705).abs() < 1e-4, "{mean}");
    }

    #[test]
    fn transparent_pixels_become_white() {
        let clear = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            8,
            8,
            image::Rgba([10, 20, 30, 0]),
        ));
        let config = PreprocessorConfig::from_json_str(
            r#"{"size": {"height": 8, "width": 8}, "do_normalize": false, "do_rescale": false}"#,
        )
        .unwrap();
        let out = prepare_image(&png(&clear), &config, &ImageLimits::default()).unwrap();
        assert!(out.pixel_values.iter().all(|&v| v == 255.0));
    }
}
