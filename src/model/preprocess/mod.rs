//! Image bytes in memory → normalised `[3, H, W]` tensor, as the Python Florence-2 processor
//! (`CLIPImageProcessor`) does it.
//!
//! Pipeline ([`prepare_image`]):
//!
//! 1. Sniff the format from the magic bytes (never a file name or content type): JPEG, PNG, WebP,
//!    GIF (first frame), BMP, TIFF. Anything else is [`PreprocessError::UnsupportedFormat`].
//! 2. Read the size from the header and refuse more than [`ImageLimits::max_pixels`] before any
//!    pixel is decoded; the decoder then runs under `image::Limits` (strict width/height equal to
//!    the header's, an allocation budget), so neither a decompression bomb nor a lying header can
//!    allocate without bound.
//! 3. Decode, convert to 8-bit RGB, apply the EXIF orientation. Grayscale is replicated, 16-bit is
//!    reduced to 8-bit, palette and CMYK become RGB. **Alpha is flattened on white** (a deliberate
//!    product choice for product cut-outs: transparent backgrounds become white, as shops show
//!    them; PIL's `convert("RGB")` and transformers.js drop alpha instead, so conformance fixtures
//!    with the references stay opaque).
//! 4. Resize to `size` exactly (aspect not kept) like `PIL.Image.resize` with the configured filter
//!    (bicubic for Florence-2: Catmull-Rom, antialiased when shrinking, 8-bit output), skipped when
//!    the image already has that size.
//! 5. Rescale and normalise, `(x * rescale_factor - mean[c]) / std[c]`, laid out channel-first.
//!
//! The image bytes are only read; nothing is written to disk and no error message carries them.

mod config;
mod decode;
mod tensor;

pub use config::{ImageSize, PreprocessorConfig, Resample};

/// Image container formats accepted, as sniffed from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Caps applied to every image before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted `width * height` (after decoding the header, before the pixels). Decoding
    /// needs up to about 8 bytes per pixel (16-bit RGBA) plus the 8-bit RGB copy, so this also
    /// bounds the memory one image can take.
    pub max_pixels: u64,
}

impl ImageLimits {
    /// 40 megapixels: above any phone camera or product photo; about 0.5 GB worst-case peak.
    pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
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
    #[error("decoding the image would need more memory than allowed")]
    MemoryLimit,
    #[error("{0}")]
    UnsupportedFeature(String),
    #[error("the image could not be decoded: {0}")]
    Decode(String),
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
            PreprocessError::MemoryLimit => "image_too_large",
            PreprocessError::UnsupportedFeature(_) => "image_feature_unsupported",
            PreprocessError::Decode(_) => "image_decode_failed",
            PreprocessError::InvalidConfig { .. } => "invalid_preprocessor_config",
            PreprocessError::Internal(_) => "internal_error",
        }
    }

    /// True when the request's image is at fault (answer 4xx), false for server-side problems.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            PreprocessError::InvalidConfig { .. } | PreprocessError::Internal(_)
        )
    }
}

/// Decodes `bytes` (in memory), orients, flattens, resizes and normalises them into the vision
/// encoder's input. See the module documentation for each step. CPU-bound: call it from a
/// blocking thread.
pub fn prepare_image(
    bytes: &[u8],
    config: &PreprocessorConfig,
    limits: &ImageLimits,
) -> Result<PreparedImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let format = decode::sniff(bytes).ok_or(PreprocessError::UnsupportedFormat)?;
    let rgb = decode::decode_rgb8(bytes, format, limits)?;
    let (original_width, original_height) = rgb.dimensions();
    let (width, height) = if config.do_resize {
        config.output_size()
    } else {
        (original_width, original_height)
    };
    let resized = tensor::resize_rgb8(rgb, width, height, config.resample)?;
    let pixel_values = tensor::to_chw_tensor(&resized, width, height, config)?;
    Ok(PreparedImage {
        pixel_values,
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
