//! Resized 8-bit RGB → rescaled, normalised, planar f32.

use ndarray::Array3;

use super::PreprocessError;
use super::config::PreprocessorConfig;
use super::resize::out_of_memory;

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
    let mut data = Vec::new();
    data.try_reserve_exact(plane * 3)
        .map_err(|_| out_of_memory(plane * 3 * size_of::<f32>()))?;
    data.resize(plane * 3, 0f32);
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
