//! 8-bit RGB → resized → rescaled, normalised, planar f32.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use ndarray::Array3;

use super::PreprocessError;
use super::config::{PreprocessorConfig, Resample};

/// Resizes packed RGB to `width`×`height` like `PIL.Image.resize` (no-op when already that size).
///
/// Pillow resamples in two separable passes, horizontal first, with an 8-bit intermediate image.
/// fast_image_resize does the vertical pass first for 8-bit pixels when both axes change, and
/// the rounding and clipping of the intermediate then differ visibly near hard edges (up to ~7
/// steps on noisy images). So each axis is resized on its own, in Pillow's order.
pub(super) fn resize_rgb8(
    rgb: RgbImage,
    width: u32,
    height: u32,
    resample: Resample,
) -> Result<Vec<u8>, PreprocessError> {
    let (src_w, src_h) = rgb.dimensions();
    if (src_w, src_h) == (width, height) {
        return Ok(rgb.into_raw());
    }
    let algorithm = match resample {
        Resample::Nearest => ResizeAlg::Nearest,
        Resample::Lanczos => ResizeAlg::Convolution(FilterType::Lanczos3),
        Resample::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Resample::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        Resample::Hamming => ResizeAlg::Convolution(FilterType::Hamming),
    };
    let options = ResizeOptions::new().resize_alg(algorithm);
    let mut resizer = Resizer::new();
    let mut pass = |src: &Image<'_>, w: u32, h: u32| -> Result<Image<'static>, PreprocessError> {
        let mut dst = Image::new(w, h, PixelType::U8x3);
        resizer
            .resize(src, &mut dst, &options)
            .map_err(|e| PreprocessError::Internal(format!("resize: {e}")))?;
        Ok(dst)
    };
    let mut image = Image::from_vec_u8(src_w, src_h, rgb.into_raw(), PixelType::U8x3)
        .map_err(|e| PreprocessError::Internal(format!("resize source: {e}")))?;
    let separable = !matches!(resample, Resample::Nearest);
    if separable && src_w != width && src_h != height {
        image = pass(&image, width, src_h)?;
    }
    Ok(pass(&image, width, height)?.into_vec())
}

/// Packed RGB (`width*height*3` bytes) → `[3, height, width]`, rescale + normalise + transpose in
/// one pass through a 256-entry table per channel.
pub(super) fn to_chw_tensor(
    rgb: &[u8],
    width: u32,
    height: u32,
    config: &PreprocessorConfig,
) -> Result<Array3<f32>, PreprocessError> {
    let plane = width as usize * height as usize;
    debug_assert_eq!(rgb.len(), plane * 3);
    let [lut_r, lut_g, lut_b] = config.lookup_tables();
    let mut data = vec![0f32; plane * 3];
    let (r, rest) = data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((px, r), g), b) in rgb.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = lut_r[usize::from(px[0])];
        *g = lut_g[usize::from(px[1])];
        *b = lut_b[usize::from(px[2])];
    }
    Array3::from_shape_vec((3, height as usize, width as usize), data)
        .map_err(|e| PreprocessError::Internal(format!("tensor shape: {e}")))
}
