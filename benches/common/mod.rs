//! Shared by the benchmarks: settings from the environment and the deterministic test images.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic 768×768 product-like scenes (768×768 so no resize difference between engines).
/// Files already in `dir` are kept, so every benchmark reads the same bytes.
pub fn write_images(dir: &Path, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % u64::from(bound)) as u32
    };
    (0..count)
        .map(|i| {
            let path = dir.join(format!("image-{i:03}.png"));
            if !path.exists() {
                let (r0, g0, b0) = (next(256), next(256), next(256));
                let mut img = RgbImage::from_fn(768, 768, |x, y| {
                    Rgb([
                        ((r0 + x / 4) % 256) as u8,
                        ((g0 + y / 4) % 256) as u8,
                        ((b0 + (x + y) / 8) % 256) as u8,
                    ])
                });
                for _ in 0..4 {
                    let (x0, y0, w, h) = (next(500), next(500), 60 + next(200), 60 + next(200));
                    let colour = Rgb([next(256) as u8, next(256) as u8, next(256) as u8]);
                    for y in y0..(y0 + h).min(768) {
                        for x in x0..(x0 + w).min(768) {
                            img.put_pixel(x, y, colour);
                        }
                    }
                }
                img.save(&path).unwrap();
            }
            path
        })
        .collect()
}
