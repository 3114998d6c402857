//! The Qwen2-VL patch layout: a resized RGB image → rescaled and normalised patches of
//! `temporal × 3 × patch × patch` values, grouped by merged token (the spec's §2.8 steps 4-6).
//! A still image fills every frame of a temporal patch.

use ndarray::Array4;

use super::PreprocessError;
use super::config::PreprocessorConfig;
use super::resize::out_of_memory;

/// Packed RGB (`width × height × 3`) → `[height/(p·m), width/(p·m), m·m, t·3·p·p]` f32, which is
/// the model's `[patches, t·3·p·p]` (rows in merge order) with the grid in its shape: row
/// `((bh·(gw/m) + bw)·m + mh)·m + mw`, column `((c·t + frame)·p + py)·p + px`.
///
/// Rescaling and normalising follow transformers.js bit for bit: `r = f32(u8 · f64(1/255))`,
/// then `f32((f64(r) − mean) / std)`.
pub(super) fn to_patches(
    rgb: &[u8],
    width: u32,
    height: u32,
    config: &PreprocessorConfig,
) -> Result<Array4<f32>, PreprocessError> {
    let (Some(p), Some(m)) = (config.patch_size, config.merge_size) else {
        return Err(PreprocessError::Internal(
            "patches without patch_size and merge_size".into(),
        ));
    };
    let t = config.temporal_patch_size.unwrap_or(1).max(1) as usize;
    let (p, m) = (p as usize, m as usize);
    let (w, h) = (width as usize, height as usize);
    if w % (p * m) != 0 || h % (p * m) != 0 {
        return Err(PreprocessError::Internal(format!(
            "a {w}x{h} image does not split into {p}-pixel patches merged {m} by {m}"
        )));
    }
    debug_assert_eq!(rgb.len(), w * h * 3);
    let luts = lookup_tables(config);
    let (blocks_h, blocks_w) = (h / (p * m), w / (p * m));
    let columns = t * 3 * p * p;
    let len = blocks_h * blocks_w * m * m * columns;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| out_of_memory(len * size_of::<f32>()))?;
    for bh in 0..blocks_h {
        for bw in 0..blocks_w {
            for mh in 0..m {
                for mw in 0..m {
                    let (top, left) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for frame_row in 0..t * 3 {
                        let c = frame_row / t;
                        let lut = &luts[c];
                        for py in 0..p {
                            let start = ((top + py) * w + left) * 3 + c;
                            data.extend(
                                rgb[start..start + (p - 1) * 3 + 1]
                                    .iter()
                                    .step_by(3)
                                    .map(|&v| lut[usize::from(v)]),
                            );
                        }
                    }
                }
            }
        }
    }
    Array4::from_shape_vec((blocks_h, blocks_w, m * m, columns), data)
        .map_err(|e| PreprocessError::Internal(format!("patch shape: {e}")))
}

/// Per channel, a u8 sample's final value in transformers.js's arithmetic (f64, then f32).
fn lookup_tables(config: &PreprocessorConfig) -> [[f32; 256]; 3] {
    let mut tables = [[0f32; 256]; 3];
    for (c, table) in tables.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let mut x = if config.do_rescale {
                (v as f64 * config.rescale_factor) as f32
            } else {
                v as f32
            };
            if config.do_normalize {
                let (mean, std) = (
                    f64::from(config.image_mean[c]),
                    f64::from(config.image_std[c]),
                );
                x = ((f64::from(x) - mean) / std) as f32;
            }
            *out = x;
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen_config() -> PreprocessorConfig {
        PreprocessorConfig::from_json_str(
            r#"{"size": {"longest_edge": 16777216, "shortest_edge": 1024},
                "patch_size": 2, "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": 0.5, "image_std": 0.5}"#,
        )
        .unwrap()
    }

    #[test]
    fn rows_follow_the_merge_order_and_columns_repeat_the_frame() {
        // 4x8 image, patch 2, merge 2: 1x2 blocks of 4 patches of 2·3·2·2 = 24 values.
        let (w, h) = (8usize, 4usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let config = qwen_config();
        let patches = to_patches(&rgb, w as u32, h as u32, &config).unwrap();
        assert_eq!(patches.shape(), &[1, 2, 4, 24]);
        let luts = lookup_tables(&config);
        let value = |x: usize, y: usize, c: usize| luts[c][usize::from(rgb[(y * w + x) * 3 + c])];
        // Block (0, 1), merge slot (1, 0): the patch at rows 2-3, columns 4-5.
        let row = patches.slice(ndarray::s![0, 1, 2, ..]);
        for c in 0..3 {
            for frame in 0..2 {
                for py in 0..2 {
                    for px in 0..2 {
                        let column = ((c * 2 + frame) * 2 + py) * 2 + px;
                        assert_eq!(
                            row[column],
                            value(4 + px, 2 + py, c),
                            "{c} {frame} {py} {px}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn grey_maps_through_f64_like_transformers_js() {
        let luts = lookup_tables(&qwen_config());
        assert_eq!(luts[0][255], 1.0);
        assert_eq!(luts[1][0], -1.0);
        let r = (128f64 * (1.0 / 255.0)) as f32;
        assert_eq!(luts[2][128], ((f64::from(r) - 0.5) / 0.5) as f32);
    }
}
