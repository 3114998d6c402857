//! Qwen3.5 on the Qwen3.5-0.8B-shaped random model (`make model-base-qwen`), in one run with the
//! ratios printed:
//! - ours vs transformers.js 4.3.1 at batch 1: the same images, the same prompt text (alt text,
//!   English), greedy, the prompt ids and generated ids of both compared;
//! - the four outputs of one image (alt text, description, SEO title, keywords) in one
//!   `generate` call sharing one prepared image, vs the same four one call at a time;
//! - the memory of a running row: the decoder state's size from the graph's inputs, and the peak
//!   resident memory of one call at several row counts, each in a fresh process.
//!
//! `cargo bench --bench qwen` (`make bench-qwen`). Env: BENCH_MODEL (models/base-shaped-qwen3_5),
//! BENCH_IMAGES (2), BENCH_MAX_NEW_TOKENS (24), BENCH_REPEATS (2 alternating passes per side, the
//! faster kept: the machine is shared), BENCH_MEMORY_ROWS (1,2,4,8; empty skips),
//! BENCH_SKIP_TRANSFORMERS_JS=1. The images are `benches/describe.rs`'s scenes scaled to 512×512
//! (target/bench-qwen/images): the server's default `--vision-max-pixels` (262 144) keeps that size
//! and transformers.js, which knows no such cap, takes it as it is, so both see 256 image tokens.
//!
//! This file is the run and its report; `reference` drives transformers.js, `memory` measures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use altimage::model::preprocess::ImageLimits;
use altimage::model::qwen3_5::Qwen35;
use altimage::model::qwen3_5::prompt::Templates;
use altimage::model::runtime::{self, Device, RuntimeOptions};
use altimage::model::{
    Captioner, GenerationOptions, GenerationRequest, ImageTensor, LoadOptions, Output,
    StageTimings, Task,
};

#[path = "../common/mod.rs"]
mod common;
mod memory;
mod reference;

use common::{env_or, write_images};
use reference::{Job, ReferencePass, TransformersJs};

/// Set in the child processes of the memory measurement: how many rows to run.
const MEMORY_CHILD: &str = "BENCH_QWEN_MEMORY_CHILD";

struct Pass {
    seconds: f64,
    stages: StageTimings,
    /// Generated ids per output, in order (EOS kept, as transformers.js returns them).
    generated: Vec<Vec<i64>>,
}

fn faster(kept: Option<Pass>, new: Pass) -> Pass {
    match kept {
        Some(kept) if kept.seconds <= new.seconds => kept,
        _ => new,
    }
}

fn add(total: &mut StageTimings, part: &StageTimings) {
    total.vision += part.vision;
    total.encoder += part.encoder;
    total.decode += part.decode;
    total.decode_steps += part.decode_steps;
    total.reorder += part.reorder;
}

fn task(output: Output) -> Task {
    Task {
        output,
        ..Task::default()
    }
}

fn prepare(model: &Qwen35, file: &Path) -> ImageTensor {
    let bytes = std::fs::read(file).unwrap();
    model
        .card()
        .frontend
        .prepare(&bytes, &ImageLimits::default())
        .unwrap()
        .tensor
}

fn request(image: &ImageTensor, output: Output, max_new_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        image: image.clone(),
        options: GenerationOptions {
            task: task(output),
            max_new_tokens,
            num_beams: 1,
            sampling: None,
        },
    }
}

/// Runs `requests` as one batch; adds its timings to `stages`, its ids to `generated`.
fn generate(
    model: &mut Qwen35,
    requests: &[GenerationRequest],
    stages: &mut StageTimings,
    generated: &mut Vec<Vec<i64>>,
) {
    let (results, timings) = model.generate_with(requests, &mut |_| false).unwrap();
    add(stages, &timings);
    generated.extend(results.into_iter().map(|g| g.token_ids[1..].to_vec()));
}

/// Each image read, prepared and described alone (alt text): what the reference does.
fn batch1_pass(model: &mut Qwen35, files: &[PathBuf], max_new_tokens: usize) -> Pass {
    let started = Instant::now();
    let (mut stages, mut generated) = (StageTimings::default(), Vec::new());
    for file in files {
        let image = prepare(model, file);
        let one = [request(&image, Output::AltText, max_new_tokens)];
        generate(model, &one, &mut stages, &mut generated);
    }
    Pass {
        seconds: started.elapsed().as_secs_f64(),
        stages,
        generated,
    }
}

/// Each image prepared once and its four outputs generated in one call (`batched`) or in four.
fn outputs_pass(
    model: &mut Qwen35,
    files: &[PathBuf],
    max_new_tokens: usize,
    batched: bool,
) -> Pass {
    let started = Instant::now();
    let (mut stages, mut generated) = (StageTimings::default(), Vec::new());
    for file in files {
        let image = prepare(model, file);
        let requests: Vec<GenerationRequest> = Output::ALL
            .into_iter()
            .map(|output| request(&image, output, max_new_tokens))
            .collect();
        if batched {
            generate(model, &requests, &mut stages, &mut generated);
        } else {
            for one in requests.chunks(1) {
                generate(model, one, &mut stages, &mut generated);
            }
        }
    }
    Pass {
        seconds: started.elapsed().as_secs_f64(),
        stages,
        generated,
    }
}

/// The scenes at 512×512, written once: the size the server's default pixel cap gives.
fn images_512(scenes: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    scenes
        .iter()
        .map(|scene| {
            let path = dir.join(scene.file_name().unwrap());
            if !path.exists() {
                image::open(scene)
                    .unwrap()
                    .resize_exact(512, 512, image::imageops::FilterType::Triangle)
                    .to_rgb8()
                    .save(&path)
                    .unwrap();
            }
            path
        })
        .collect()
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() / n as f64
}

fn step_ms(decode: Duration, steps: usize) -> f64 {
    decode.as_secs_f64() * 1000.0 / steps.max(1) as f64
}

fn tokens(ids: &[Vec<i64>]) -> usize {
    ids.iter().map(Vec::len).sum()
}

fn report_ours(name: &str, pass: &Pass, images: usize) {
    let t = &pass.stages;
    println!(
        "{name:<34} {:>6.2} s/image  {:>5.2} tokens/s  vision {:.2}  prefill {:.2}  decode {:.2} s/image ({:.0} ms/step, {} steps)",
        pass.seconds / images as f64,
        tokens(&pass.generated) as f64 / pass.seconds,
        per(t.vision, images),
        per(t.encoder, images),
        per(t.decode, images),
        step_ms(t.decode, t.decode_steps),
        t.decode_steps,
    );
}

fn report_reference(pass: &ReferencePass, images: usize) {
    let n = images as f64;
    println!(
        "{:<34} {:>6.2} s/image  {:>5.2} tokens/s  vision {:.2}  prefill {:.2}  decode {:.2} s/image ({:.0} ms/step, {} steps); embed_tokens {:.2} s/image",
        "transformers.js 4.3.1, batch 1",
        pass.seconds / n,
        tokens(&pass.generated_ids) as f64 / pass.seconds,
        pass.vision / n,
        pass.prefill / n,
        pass.decode / n,
        pass.decode * 1000.0 / pass.decode_steps.max(1) as f64,
        pass.decode_steps,
        pass.embed / n,
    );
}

/// Where two id lists first differ: (output, position).
fn first_difference(a: &[Vec<i64>], b: &[Vec<i64>]) -> Option<(usize, usize)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), 0));
    }
    a.iter().zip(b).enumerate().find_map(|(i, (x, y))| {
        (x != y).then(|| {
            let at = x.iter().zip(y).take_while(|(p, q)| p == q).count();
            (i, at)
        })
    })
}

fn same_ids(what: &str, a: &[Vec<i64>], b: &[Vec<i64>]) -> bool {
    match first_difference(a, b) {
        None => {
            println!("{what}: the same ({} ids)", tokens(a));
            true
        }
        Some((output, at)) => {
            println!("{what}: DIFFER (output {output}, from position {at})");
            false
        }
    }
}

fn load(model_dir: &Path, library: &Path) -> Qwen35 {
    Qwen35::load(&LoadOptions {
        model_dir: model_dir.to_path_buf(),
        library: library.to_path_buf(),
        runtime: RuntimeOptions::default(),
        variant_suffix: String::new(),
        vision_batch_size: 0,
        vision_max_pixels: 262_144,
        prompt_templates: None,
    })
    .unwrap()
}

/// In a child process: load, warm up on one row, then report the resident memory around one
/// call of `rows` rows of the same alt-text request (one JSON line on stdout).
fn memory_child(rows: usize, model_dir: &Path, library: &Path, files: &[PathBuf]) {
    let max_new_tokens: usize = env_or("BENCH_MAX_NEW_TOKENS", 24);
    let mut model = load(model_dir, library);
    let image = prepare(&model, &files[0]);
    let one = request(&image, Output::AltText, max_new_tokens);
    model.generate(std::slice::from_ref(&one)).unwrap();
    let requests = vec![one; rows];
    let (results, measured) = memory::peak_over(|| model.generate(&requests).unwrap());
    let generated = results.iter().map(|g| g.generated_tokens()).max();
    let prompt = model.prompt_ids(&task(Output::AltText), &image).unwrap();
    let (before, peak) = measured.unwrap_or((0, 0));
    println!(
        "{}",
        serde_json::json!({
            "rows": rows, "before": before, "peak": peak,
            "prompt_tokens": prompt.len(), "generated_tokens": generated,
        })
    );
}

/// Each row count in a fresh process (so no earlier run's retained memory hides the growth).
fn memory_rows(rows: &[usize], state: Option<memory::StateSize>) {
    let exe = std::env::current_exe().unwrap();
    let mut points = Vec::new();
    for &n in rows {
        let out = std::process::Command::new(&exe)
            .env(MEMORY_CHILD, n.to_string())
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let Some(value) = line
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        else {
            eprintln!(
                "memory run of {n} rows failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        };
        let (before, peak) = (value["before"].as_u64(), value["peak"].as_u64());
        let (Some(before), Some(peak)) = (before, peak) else {
            return;
        };
        if peak == 0 {
            println!("peak resident memory cannot be measured here (/proc/self/clear_refs)");
            return;
        }
        let growth = peak.saturating_sub(before);
        let context = value["prompt_tokens"].as_u64().unwrap_or(0)
            + value["generated_tokens"].as_u64().unwrap_or(0);
        println!(
            "{n:>3} rows: resident {:>7.1} MB before the call, peak {:>7.1} MB, growth {:>7.1} MB ({context} positions a row at the end)",
            mb(before),
            mb(peak),
            mb(growth)
        );
        points.push((n as f64, growth as f64, context));
    }
    if points.len() < 2 {
        return;
    }
    // Least-squares slope of the growth over the row count: the bytes one more row costs.
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y, _)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y, _)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    let slope = num / den;
    let context = points.last().map_or(0, |p| p.2) as usize;
    match state {
        Some(state) => println!(
            "memory per running row, measured: {:.1} MB (peak growth per added row) = {:.2}× the row's state at {context} positions ({:.1} MB)",
            mb(slope as u64),
            slope / state.at(context) as f64,
            mb(state.at(context))
        ),
        None => println!(
            "memory per running row, measured: {:.1} MB (peak growth per added row)",
            mb(slope as u64)
        ),
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model_dir = root
        .join(std::env::var("BENCH_MODEL").unwrap_or_else(|_| "models/base-shaped-qwen3_5".into()));
    if !model_dir.join("onnx/decoder_model_merged.onnx").is_file() {
        eprintln!(
            "{} is missing: run `make model-base-qwen` first",
            model_dir.display()
        );
        std::process::exit(1);
    }
    let images: usize = env_or("BENCH_IMAGES", 2);
    let max_new_tokens: usize = env_or("BENCH_MAX_NEW_TOKENS", 24);
    let repeats = env_or("BENCH_REPEATS", 2usize).max(1);
    let scenes = write_images(&root.join("target/bench-describe-images"), images.max(1));
    let files = images_512(&scenes, &root.join("target/bench-qwen/images"));
    let env_path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let (library, _) =
        runtime::find_library(None, env_path.as_deref(), &root.join(".cache"), Device::Cpu)
            .unwrap();
    if let Some(rows) = std::env::var(MEMORY_CHILD)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        memory_child(rows, &model_dir, &library, &files);
        return;
    }

    let mut model = load(&model_dir, &library);
    let images = files.len();
    let first = prepare(&model, &files[0]);
    let prompt_len = model
        .prompt_ids(&task(Output::AltText), &first)
        .unwrap()
        .len();
    println!(
        "qwen3.5 benchmark: {images} images (512×512, 256 image tokens), {}, alt text prompt of {prompt_len} tokens, max_new_tokens {max_new_tokens}, greedy, CPU, best of {repeats} alternating passes",
        model_dir.display()
    );
    // One short warm-up so one-time allocations do not land on the first pass.
    model
        .generate(&[request(&first, Output::AltText, 2)])
        .unwrap();

    // 1. Ours vs transformers.js at batch 1, passes alternating.
    let work_dir = root.join("target/bench-qwen");
    std::fs::create_dir_all(&work_dir).unwrap();
    let templates = Templates::builtin();
    let jobs: Vec<Job> = files
        .iter()
        .map(|image| Job {
            image: image.clone(),
            prompt: templates.render(&task(Output::AltText)),
        })
        .collect();
    let our_prompts: Vec<Vec<i64>> = files
        .iter()
        .map(|f| {
            model
                .prompt_ids(&task(Output::AltText), &prepare(&model, f))
                .unwrap()
        })
        .collect();
    let mut reference = if std::env::var("BENCH_SKIP_TRANSFORMERS_JS").is_ok() {
        None
    } else {
        TransformersJs::start(&root, &model_dir, &work_dir, &jobs, max_new_tokens)
    };
    let (mut ours, mut theirs): (Option<Pass>, Option<ReferencePass>) = (None, None);
    for _ in 0..repeats {
        ours = Some(faster(
            ours,
            batch1_pass(&mut model, &files, max_new_tokens),
        ));
        if let Some(pass) = reference.as_mut().and_then(TransformersJs::pass) {
            theirs = match theirs {
                Some(kept) if kept.seconds <= pass.seconds => Some(kept),
                _ => Some(pass),
            };
        }
    }
    if let Some(reference) = reference {
        reference.stop();
    }
    let ours = ours.unwrap();
    report_ours("altimage, batch 1", &ours, images);
    if let Some(theirs) = &theirs {
        report_reference(theirs, images);
        same_ids("prompt ids", &our_prompts, &theirs.prompt_ids);
        same_ids("generated ids", &ours.generated, &theirs.generated_ids);
        let ratio = theirs.seconds / ours.seconds;
        println!(
            "ratio altimage / transformers.js at batch 1: {ratio:.2}× throughput (target ≥ 1.3×: {}); vision {:.2}×, prefill {:.2}×, decode {:.2}× per step",
            if ratio >= 1.3 { "met" } else { "NOT met" },
            theirs.vision / ours.stages.vision.as_secs_f64(),
            theirs.prefill / ours.stages.encoder.as_secs_f64(),
            (theirs.decode / theirs.decode_steps.max(1) as f64)
                / (ours.stages.decode.as_secs_f64() / ours.stages.decode_steps.max(1) as f64),
        );
    }

    // 2. The four outputs of one image: one call vs four.
    let (mut batched, mut alone) = (None, None);
    for _ in 0..repeats {
        batched = Some(faster(
            batched,
            outputs_pass(&mut model, &files, max_new_tokens, true),
        ));
        alone = Some(faster(
            alone,
            outputs_pass(&mut model, &files, max_new_tokens, false),
        ));
    }
    let (batched, alone) = (batched.unwrap(), alone.unwrap());
    report_ours("4 outputs in one generate call", &batched, images);
    report_ours("the same 4 one call at a time", &alone, images);
    same_ids(
        "generated ids, one call vs four",
        &batched.generated,
        &alone.generated,
    );
    println!(
        "ratio 4 outputs in one call / one at a time: {:.2}× throughput; decode alone {:.2}×; vision ran {}× less",
        alone.seconds / batched.seconds,
        alone.stages.decode.as_secs_f64() / batched.stages.decode.as_secs_f64(),
        Output::ALL.len(),
    );
    drop(model);

    // 3. Memory per running row.
    let state = match memory::state_size(&root, &model_dir.join("onnx/decoder_model_merged.onnx")) {
        Ok(state) => {
            let context = prompt_len + max_new_tokens;
            println!(
                "decoder state per row (graph inputs): {:.2} MB fixed ({} conv/recurrent tensors) + {:.1} KB per position ({} KV tensors); {:.2} MB at {context} positions (prompt {prompt_len} + {max_new_tokens} generated)",
                mb(state.fixed_bytes),
                state.fixed_tensors,
                state.kv_bytes_per_token as f64 / 1e3,
                state.kv_tensors,
                mb(state.at(context)),
            );
            Some(state)
        }
        Err(e) => {
            eprintln!("cannot read the decoder's state shapes: {e}");
            None
        }
    };
    let rows: Vec<usize> = std::env::var("BENCH_MEMORY_ROWS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    memory_rows(&rows, state);
}
