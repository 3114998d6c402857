//! Preprocessing speed: ours (decode + orient + resize + normalise, `prepare_image`) against the
//! Python reference path (PIL + numpy, `tests/reference/preprocess_reference.py`, which is what
//! the Python Florence-2 processor does) on the same 2000×2000 photo-like JPEGs (quality 90), in
//! the same run. Two noise levels: JPEG decoding, about as fast in zune-jpeg as in
//! libjpeg-turbo, grows with the entropy and dominates both sides on noisy images.
//!
//! Run: `cargo bench --bench preprocess` (`PREPROCESS_BENCH_RUNS` sets the repetitions, default
//! 30). Python is the project venv (`scripts/python-env.sh`); without it only ours is printed.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use altimage::model::preprocess::{ImageLimits, PreprocessorConfig, prepare_image};

const SIDE: u32 = 2000;

/// Deterministic photo-like content: smooth gradients, a soft texture, an edge, and sensor-like
/// noise (sum of two uniforms in ±`noise_amplitude`).
fn photo_jpeg(noise_amplitude: u64) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) % (2 * noise_amplitude + 1)) as f32 - noise_amplitude as f32
    };
    let mut noise = move || (uniform() + uniform()) / 2.0;
    let image = image::RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let (fx, fy) = (x as f32 / SIDE as f32, y as f32 / SIDE as f32);
        let texture = 40.0 * (x as f32 / 23.0).sin() * (y as f32 / 31.0).cos();
        let disc = ((fx - 0.6).powi(2) + (fy - 0.4).powi(2)) < 0.04;
        let base = if disc {
            [210.0, 60.0, 50.0]
        } else {
            [230.0 * fx, 200.0 * fy + 20.0, 128.0 + texture]
        };
        image::Rgb(base.map(|v| (v + noise()).clamp(0.0, 255.0) as u8))
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&image)
        .expect("encode JPEG");
    out
}

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn python_median_ms(jpeg: &[u8], runs: usize) -> Result<f64, String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let env = Command::new("bash")
        .arg("scripts/python-env.sh")
        .current_dir(root)
        .output()
        .map_err(|e| e.to_string())?;
    if !env.status.success() {
        return Err(String::from_utf8_lossy(&env.stderr).into_owned());
    }
    let python = String::from_utf8_lossy(&env.stdout).trim().to_owned();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("bench.jpg");
    std::fs::write(&image, jpeg).map_err(|e| e.to_string())?;
    let out = Command::new(python)
        .arg("tests/reference/preprocess_reference.py")
        .arg("--time")
        .arg(runs.to_string())
        .arg(&image)
        .current_dir(root)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("median_ms="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

fn main() {
    let runs: usize = std::env::var("PREPROCESS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let config = PreprocessorConfig::default();
    let limits = ImageLimits::default();
    for (label, amplitude) in [("moderate noise", 8), ("heavy noise", 24)] {
        let jpeg = photo_jpeg(amplitude);
        println!(
            "preprocess, {SIDE}x{SIDE} JPEG q90 4:2:2, {label} ({} KiB) -> [3, 768, 768] f32, \
             median of {runs} runs:",
            jpeg.len() / 1024
        );
        let _ = prepare_image(&jpeg, &config, &limits).expect("prepare"); // warm-up
        let ours: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                black_box(prepare_image(black_box(&jpeg), &config, &limits).expect("prepare"));
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let ours = median_ms(ours);
        println!("  ours (image + fast_image_resize): {ours:8.2} ms");
        match python_median_ms(&jpeg, runs) {
            Ok(python) => {
                println!("  python reference (PIL + numpy):   {python:8.2} ms");
                println!("  ours is {:.1}x faster", python / ours);
            }
            Err(e) => println!("  python reference unavailable: {e}"),
        }
    }
}
