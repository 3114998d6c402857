//! Describe throughput on the Florence-2-base-shaped model (`make model-base`): batch size 1 vs 8,
//! and vs transformers.js doing the same job on the same files, in one run; ratios printed.
//!
//! `cargo bench --bench describe` (env: BENCH_IMAGES=32, BENCH_MODEL=models/base-shaped,
//! BENCH_MAX_NEW_TOKENS=20, BENCH_SKIP_TRANSFORMERS_JS=1 to skip the reference).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use altimage::model::Detail;
use altimage::model::florence2::{Florence2, GenerationRequest, LoadOptions, StageTimings};
use altimage::model::preprocess::{ImageLimits, prepare_image};
use altimage::model::runtime::{self, Device, RuntimeOptions};

mod common;
use common::{env_or, write_images};

struct Pass {
    seconds: f64,
    tokens: usize,
    stages: StageTimings,
}

fn run_ours(
    model: &mut Florence2,
    files: &[PathBuf],
    batch_size: usize,
    max_new_tokens: usize,
) -> Pass {
    let started = Instant::now();
    let mut tokens = 0;
    let mut stages = StageTimings::default();
    for chunk in files.chunks(batch_size) {
        let requests: Vec<GenerationRequest> = chunk
            .iter()
            .map(|file| {
                let bytes = std::fs::read(file).unwrap();
                let prepared =
                    prepare_image(&bytes, model.preprocessor(), &ImageLimits::default()).unwrap();
                GenerationRequest {
                    pixel_values: prepared.pixel_values,
                    detail: Detail::Brief,
                    max_new_tokens: Some(max_new_tokens),
                    num_beams: Some(1),
                }
            })
            .collect();
        let (results, timings) = model.generate_with(&requests, &mut |_| false).unwrap();
        tokens += results.iter().map(|g| g.generated_tokens()).sum::<usize>();
        stages.vision += timings.vision;
        stages.encoder += timings.encoder;
        stages.decode += timings.decode;
    }
    Pass {
        seconds: started.elapsed().as_secs_f64(),
        tokens,
        stages,
    }
}

fn run_transformers_js(
    root: &Path,
    model_dir: &Path,
    image_dir: &Path,
    max_new_tokens: usize,
) -> Option<Pass> {
    let setup = Command::new("bash")
        .arg(root.join("tests/conformance/run-reference.sh"))
        .status()
        .ok()?;
    if !setup.success() {
        eprintln!("transformers.js set-up failed; skipping the reference");
        return None;
    }
    let out = Command::new("node")
        .current_dir(root.join("tests/conformance"))
        .args([
            "describe_bench.mjs",
            model_dir.to_str()?,
            image_dir.to_str()?,
            &max_new_tokens.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "transformers.js failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some(Pass {
        seconds: value["seconds"].as_f64()?,
        tokens: value["generated_tokens"].as_u64()? as usize,
        stages: StageTimings::default(),
    })
}

fn per_image(d: Duration, images: usize) -> f64 {
    d.as_secs_f64() / images as f64
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let images: usize = env_or("BENCH_IMAGES", 32);
    let max_new_tokens: usize = env_or("BENCH_MAX_NEW_TOKENS", 20);
    let model_dir =
        root.join(std::env::var("BENCH_MODEL").unwrap_or_else(|_| "models/base-shaped".into()));
    if !model_dir.join("onnx/decoder_model_merged.onnx").is_file() {
        eprintln!(
            "{} is missing: run `make model-base` first",
            model_dir.display()
        );
        std::process::exit(1);
    }
    let image_dir = root.join("target/bench-describe-images");
    let files = write_images(&image_dir, images);
    let env_path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let (library, _) =
        runtime::find_library(None, env_path.as_deref(), &root.join(".cache"), Device::Cpu)
            .unwrap();
    let mut model = Florence2::load(&LoadOptions {
        model_dir: model_dir.clone(),
        library,
        runtime: RuntimeOptions::default(),
        variant_suffix: String::new(),
        vision_batch_size: 0,
    })
    .unwrap();
    println!(
        "describe benchmark: {} images, {}, max_new_tokens {max_new_tokens}, greedy, CPU",
        files.len(),
        model_dir.display()
    );
    // One warm-up image so that one-time allocations do not land on the first pass.
    run_ours(&mut model, &files[..1], 1, max_new_tokens);

    let report = |name: &str, pass: &Pass| {
        println!(
            "{name:<28} {:>7.3} images/s  {:>8.2} s  {:>5} tokens  vision {:.2} s/img  encoder {:.2} s/img  decode {:.2} s/img",
            files.len() as f64 / pass.seconds,
            pass.seconds,
            pass.tokens,
            per_image(pass.stages.vision, files.len()),
            per_image(pass.stages.encoder, files.len()),
            per_image(pass.stages.decode, files.len()),
        );
    };
    let batch1 = run_ours(&mut model, &files, 1, max_new_tokens);
    report("altimage batch 1", &batch1);
    let batch8 = run_ours(&mut model, &files, 8, max_new_tokens);
    report("altimage batch 8", &batch8);
    println!(
        "ratio batch 8 / batch 1: {:.2}x throughput",
        batch1.seconds / batch8.seconds
    );

    if std::env::var("BENCH_SKIP_TRANSFORMERS_JS").is_ok() {
        return;
    }
    drop(model);
    if let Some(reference) = run_transformers_js(&root, &model_dir, &image_dir, max_new_tokens) {
        println!(
            "{:<28} {:>7.3} images/s  {:>8.2} s  {:>5} tokens",
            "transformers.js 4.3.1",
            files.len() as f64 / reference.seconds,
            reference.seconds,
            reference.tokens
        );
        println!(
            "ratio altimage / transformers.js: batch 1 {:.2}x, batch 8 {:.2}x throughput{}",
            reference.seconds / batch1.seconds,
            reference.seconds / batch8.seconds,
            if reference.tokens == batch1.tokens {
                " (same tokens generated)"
            } else {
                " (token counts differ!)"
            }
        );
    }
}
