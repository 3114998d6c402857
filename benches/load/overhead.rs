//! The server's overhead at concurrency 1: the raw in-process pipeline (`prepare_image` +
//! `generate`, the model loaded here the way `serve` loads it) alternated with single requests
//! to each server on the same image.

use std::time::{Duration, Instant};

use altimage::model::preprocess::ImageLimits;
use altimage::model::runtime::RuntimeOptions;
use altimage::model::{Captioner, GenerationOptions, GenerationRequest, LoadOptions, Task};
use bytes::Bytes;

use crate::Settings;
use crate::client::{Sample, send};
use crate::report::{mean, median, ms};

/// One image through the raw pipeline.
struct RawRun {
    total_ms: f64,
    prepare_ms: f64,
    generate_ms: f64,
    tokens: usize,
    text: String,
}

/// The model loaded in this process with the runtime options `serve` uses by default.
pub fn load_raw_model(settings: &Settings) -> Box<dyn Captioner> {
    altimage::model::load(&LoadOptions {
        model_dir: settings.model_dir.clone(),
        library: settings.library.clone(),
        runtime: RuntimeOptions::default(),
        variant_suffix: String::new(),
        vision_batch_size: 0,
        vision_max_pixels: 262_144,
        prompt_templates: None,
    })
    .expect("load the model in-process")
}

/// `prepare_image` + `generate` on `bytes`, the way the server's worker runs one image alone:
/// greedy, `<CAPTION>`, `max_new_tokens`.
fn raw_once(model: &mut dyn Captioner, bytes: &[u8], max_new_tokens: usize) -> RawRun {
    let started = Instant::now();
    let prepared = model
        .card()
        .frontend
        .prepare(bytes, &ImageLimits::default())
        .expect("prepare the image");
    let prepared_at = Instant::now();
    let generated = model
        .generate(&[GenerationRequest {
            image: prepared.tensor,
            options: GenerationOptions {
                task: Task::default(),
                max_new_tokens,
                num_beams: 1,
                sampling: None,
            },
        }])
        .expect("generate")
        .remove(0);
    let done = Instant::now();
    RawRun {
        total_ms: ms(done - started),
        prepare_ms: ms(prepared_at - started),
        generate_ms: ms(done - prepared_at),
        tokens: generated.generated_tokens(),
        text: generated.text,
    }
}

pub struct Overhead {
    pub runs: usize,
    pub server_ms: f64,
    pub raw_ms: f64,
    pub raw_prepare_ms: f64,
    pub raw_generate_ms: f64,
    /// Median over rounds of (server latency − the raw run next to it in time).
    pub paired_ms: f64,
    /// The fastest of each: interference from other work only ever adds time.
    pub server_min_ms: f64,
    pub raw_min_ms: f64,
    /// Median of (latency − x-inference-time-ms): what the server adds outside the model call
    /// (HTTP, hashing, decoding and resizing, queueing, JSON).
    pub outside_inference_ms: f64,
    pub queue_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    pub failures: usize,
    /// `None` when the first server answer had the raw pipeline's text and token count.
    pub mismatch: Option<String>,
}

/// Concurrency 1 on one image, for every server in `urls`: server requests and raw-pipeline runs
/// alternate, in an order that rotates each round, so that all see the same machine (other work
/// on a shared box comes and goes). One warm-up each, then the medians of `runs`. A pause after
/// each lets the previous side's ONNX Runtime threads stop spinning.
pub fn overhead(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    urls: &[String],
    model: &mut dyn Captioner,
    image: &Bytes,
    settings: &Settings,
) -> Vec<Overhead> {
    let pause = Duration::from_millis(100);
    let raw_warm = raw_once(model, image, settings.max_new_tokens);
    let server_warm: Vec<Sample> = urls
        .iter()
        .map(|url| {
            std::thread::sleep(pause);
            runtime.block_on(send(client, url, image.clone()))
        })
        .collect();
    let mut raw = Vec::with_capacity(settings.overhead_runs);
    let mut server: Vec<Vec<Sample>> = urls.iter().map(|_| Vec::new()).collect();
    // Slot 0 is the raw pipeline, slot i + 1 the server urls[i].
    let slots = urls.len() + 1;
    for round in 0..settings.overhead_runs {
        for step in 0..slots {
            std::thread::sleep(pause);
            match (round + step) % slots {
                0 => raw.push(raw_once(model, image, settings.max_new_tokens)),
                i => {
                    server[i - 1].push(runtime.block_on(send(client, &urls[i - 1], image.clone())))
                }
            }
        }
    }
    let raw_ms = median(raw.iter().map(|r| r.total_ms).collect());
    let raw_min_ms = raw.iter().map(|r| r.total_ms).fold(f64::INFINITY, f64::min);
    let raw_prepare_ms = median(raw.iter().map(|r| r.prepare_ms).collect());
    let raw_generate_ms = median(raw.iter().map(|r| r.generate_ms).collect());
    server
        .iter()
        .zip(&server_warm)
        .map(|(samples, warm)| {
            let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok()).collect();
            let mismatch = match (&warm.text, warm.tokens) {
                (Some(text), Some(tokens))
                    if *text == raw_warm.text && tokens == raw_warm.tokens =>
                {
                    None
                }
                (text, tokens) => Some(format!(
                    "server {tokens:?} tokens {text:?}, raw {} tokens {:?}",
                    raw_warm.tokens, raw_warm.text
                )),
            };
            let or_nan = |values: Vec<f64>| {
                if values.is_empty() {
                    f64::NAN
                } else {
                    median(values)
                }
            };
            let paired = samples
                .iter()
                .zip(&raw)
                .filter(|(s, _)| s.ok())
                .map(|(s, r)| ms(s.latency) - r.total_ms)
                .collect();
            let outside = ok
                .iter()
                .filter_map(|s| s.inference_ms.map(|i| ms(s.latency) - i))
                .collect();
            Overhead {
                runs: settings.overhead_runs,
                paired_ms: or_nan(paired),
                server_min_ms: ok.iter().map(|s| ms(s.latency)).fold(f64::NAN, f64::min),
                raw_min_ms,
                outside_inference_ms: or_nan(outside),
                server_ms: if ok.is_empty() {
                    f64::NAN
                } else {
                    median(ok.iter().map(|s| ms(s.latency)).collect())
                },
                raw_ms,
                raw_prepare_ms,
                raw_generate_ms,
                queue_ms: mean(ok.iter().filter_map(|s| s.queue_ms)),
                inference_ms: mean(ok.iter().filter_map(|s| s.inference_ms)),
                failures: samples.len() - ok.len() + usize::from(!warm.ok()),
                mismatch,
            }
        })
        .collect()
}
