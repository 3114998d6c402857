//! Load on the real server: `altimage serve` started as a process on loopback, once with dynamic
//! batching (`--max-batch-size 16`) and once without (`--max-batch-size 1`), driven by a
//! closed-loop client pool at several concurrencies (each client sends its next request as soon
//! as the previous one is answered). Prints throughput, p50/p95 latency and non-201 answers per
//! configuration, the batching / no-batching ratio per concurrency, and the server's overhead at
//! concurrency 1 against the raw in-process pipeline (`prepare_image` + `generate`) on the same
//! image.
//!
//! `cargo bench --bench load`. Env: BENCH_LOAD_MODEL (default models/base-shaped;
//! models/tiny-florence2 makes a quick run), BENCH_LOAD_CONCURRENCY (default 1,4,16,64),
//! BENCH_LOAD_REQUESTS (one count for every level or one per level; default max(2 × concurrency,
//! 8)), BENCH_LOAD_MAX_NEW_TOKENS (20), BENCH_LOAD_IMAGES (32 distinct images, cycled),
//! BENCH_LOAD_OVERHEAD_RUNS (5), BENCH_LOAD_LEVEL_SECONDS (600: no request starts after this long
//! in one level). The images are `benches/describe.rs`'s, in target/bench-describe-images/.
//! The server binary is the one Cargo builds for this bench (target/release/altimage).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altimage::model::preprocess::ImageLimits;
use altimage::model::runtime::{self, Device, RuntimeOptions};
use altimage::model::{Captioner, GenerationOptions, GenerationRequest, LoadOptions, Task};
use bytes::Bytes;

mod common;
use common::{env_or, write_images};

/// The two server configurations compared in one run.
const BATCH_SIZES: [usize; 2] = [16, 1];
/// How long a server may take to load the model and warm up before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(900);

struct Settings {
    root: PathBuf,
    model_dir: PathBuf,
    library: PathBuf,
    /// (concurrency, requests) per level.
    levels: Vec<(usize, usize)>,
    max_new_tokens: usize,
    overhead_runs: usize,
    level_time: Duration,
}

/// A comma-separated list of positive counts.
fn counts(name: &str, value: &str) -> Vec<usize> {
    value
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .ok()
                .filter(|&c: &usize| c > 0)
                .unwrap_or_else(|| panic!("{name}: `{v}` is not a positive count"))
        })
        .collect()
}

/// BENCH_LOAD_CONCURRENCY, with BENCH_LOAD_REQUESTS: one count for every level, one per level,
/// or unset for max(2 × concurrency, 8).
fn plan_levels() -> Vec<(usize, usize)> {
    let concurrency = counts(
        "BENCH_LOAD_CONCURRENCY",
        &std::env::var("BENCH_LOAD_CONCURRENCY").unwrap_or_else(|_| "1,4,16,64".into()),
    );
    let requests = std::env::var("BENCH_LOAD_REQUESTS")
        .ok()
        .map(|v| counts("BENCH_LOAD_REQUESTS", &v));
    concurrency
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let n = match requests.as_deref() {
                None => (2 * c).max(8),
                Some([n]) => *n,
                Some(list) if list.len() == concurrency.len() => list[i],
                Some(_) => {
                    panic!("BENCH_LOAD_REQUESTS: give one count, or one per concurrency level")
                }
            };
            (c, n)
        })
        .collect()
}

/// One answered (or failed) request.
struct Sample {
    /// `None`: the request failed before a status arrived (connection error, client timeout).
    status: Option<u16>,
    latency: Duration,
    queue_ms: Option<f64>,
    inference_ms: Option<f64>,
    tokens: Option<usize>,
    text: Option<String>,
}

impl Sample {
    fn ok(&self) -> bool {
        self.status == Some(201)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// User + system CPU seconds of a process (Linux /proc; USER_HZ is 100).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is field 3, utime 14.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The raw pipeline, in this process.

/// One image through the raw pipeline.
struct RawRun {
    total_ms: f64,
    prepare_ms: f64,
    generate_ms: f64,
    tokens: usize,
    text: String,
}

/// The model loaded in this process with the runtime options `serve` uses by default.
fn load_raw_model(settings: &Settings) -> Box<dyn Captioner> {
    altimage::model::load(&LoadOptions {
        model_dir: settings.model_dir.clone(),
        library: settings.library.clone(),
        runtime: RuntimeOptions::default(),
        variant_suffix: String::new(),
        vision_batch_size: 0,
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

// ---------------------------------------------------------------------------------------------
// The server process.

struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    fn start(
        settings: &Settings,
        data_dir: &std::path::Path,
        max_batch_size: usize,
        max_concurrent: usize,
    ) -> Server {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_altimage"));
        if !binary.is_file() {
            eprintln!(
                "{} is missing: `cargo bench --bench load` builds it; run `cargo build --release`",
                binary.display()
            );
            std::process::exit(1);
        }
        let mut command = Command::new(&binary);
        // Settings come from the flags below only, not from an ALTIMAGE_* in the caller's shell.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ALTIMAGE_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--model-dir"])
            .arg(&settings.model_dir)
            .args(["--log-format", "json"])
            .args(["--max-batch-size", &max_batch_size.to_string()])
            .args(["--max-concurrent-images", &max_concurrent.to_string()])
            // Nothing may time out in the queue: at concurrency 64 without batching the last
            // image waits for 63 others.
            .args(["--max-queue-time-ms", "3600000"])
            // One account shared by both servers (made below); the bench measures the model
            // path, so no rate limit applies.
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--no-bootstrap", "--rate-limit-per-minute", "0"])
            .env("ORT_DYLIB_PATH", &settings.library)
            .current_dir(&settings.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            // Reads stderr until the process exits, so the pipe never fills; keeps the tail.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("\"message\":\"ready\"")
                        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                        && let Some(address) = value["fields"]["address"].as_str()
                    {
                        let _ = address_sender.send(address.to_string());
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() == 40 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        match address_receiver.recv_timeout(READY_TIMEOUT) {
            Ok(address) => server.url = format!("http://{address}/v1/descriptions"),
            Err(_) => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                panic!(
                    "the server did not become ready (--max-batch-size {max_batch_size}):\n{}",
                    server.log_tail()
                );
            }
        }
        server
    }

    fn log_tail(&self) -> String {
        Vec::from(self.log.lock().unwrap().clone()).join("\n")
    }
}

/// An account and key in a fresh database in `data_dir`, made with the CLI as an operator would.
fn api_key(data_dir: &std::path::Path) -> String {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_altimage"));
    let run = |args: &[&str]| -> serde_json::Value {
        let output = Command::new(&binary)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .output()
            .expect("altimage runs");
        assert!(
            output.status.success(),
            "altimage {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON from the CLI")
    };
    let account = run(&[
        "accounts",
        "create",
        "--name",
        "load bench",
        "--email",
        "bench@localhost",
    ]);
    let account_id = account["id"].as_str().expect("an account id");
    let key = run(&["keys", "create", "--account", account_id]);
    key["key"].as_str().expect("a key").to_string()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The client.

async fn send(client: &reqwest::Client, url: &str, image: Bytes) -> Sample {
    let started = Instant::now();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "image/png")
        .body(image)
        .send()
        .await;
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let (status, queue_ms, inference_ms, body) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let queue_ms = header(&response, "x-queue-time-ms");
            let inference_ms = header(&response, "x-inference-time-ms");
            match response.bytes().await {
                Ok(body) => (Some(status), queue_ms, inference_ms, body),
                Err(_) => (None, None, None, Bytes::new()),
            }
        }
        Err(_) => (None, None, None, Bytes::new()),
    };
    let latency = started.elapsed();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    Sample {
        status,
        latency,
        queue_ms,
        inference_ms,
        tokens: json
            .as_ref()
            .and_then(|j| j["generated_tokens"].as_u64())
            .map(|t| t as usize),
        text: json.and_then(|j| j["text"].as_str().map(str::to_string)),
    }
}

struct Level {
    concurrency: usize,
    planned: usize,
    samples: Vec<Sample>,
    wall: Duration,
    /// CPU time the server process used during the level, in cores (CPU seconds / wall
    /// seconds). On this shared machine it shows how much of the CPU the server actually got.
    server_cores: Option<f64>,
}

impl Level {
    fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.ok()).count()
    }

    fn throughput(&self) -> f64 {
        self.ok() as f64 / self.wall.as_secs_f64()
    }

    /// Images per CPU-second the server used: less sensitive than images/s to other work
    /// taking CPU from the server, though not immune (a starved thread pool also spins).
    fn per_cpu_second(&self) -> f64 {
        self.server_cores
            .map_or(f64::NAN, |cores| self.throughput() / cores)
    }

    fn latencies(&self) -> Vec<f64> {
        let mut latencies: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.ok())
            .map(|s| ms(s.latency))
            .collect();
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

/// Closed loop: `concurrency` clients share a counter of `requests` tickets; each sends its next
/// image as soon as its previous one is answered. No ticket is taken after `level_time`.
async fn run_level(
    client: &reqwest::Client,
    url: &str,
    images: &[Bytes],
    concurrency: usize,
    requests: usize,
    level_time: Duration,
) -> Level {
    let tickets = Arc::new(AtomicUsize::new(0));
    let images = Arc::new(images.to_vec());
    let started = Instant::now();
    let deadline = started + level_time;
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, images, tickets) = (
                client.clone(),
                url.to_string(),
                images.clone(),
                tickets.clone(),
            );
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let ticket = tickets.fetch_add(1, Ordering::SeqCst);
                    if ticket >= requests {
                        break;
                    }
                    let image = images[ticket % images.len()].clone();
                    samples.push(send(&client, &url, image).await);
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(requests);
    for handle in clients {
        samples.extend(handle.await.expect("client task"));
    }
    Level {
        concurrency,
        planned: requests,
        samples,
        wall: started.elapsed(),
        server_cores: None,
    }
}

struct Overhead {
    runs: usize,
    server_ms: f64,
    raw_ms: f64,
    raw_prepare_ms: f64,
    raw_generate_ms: f64,
    /// Median over rounds of (server latency − the raw run next to it in time).
    paired_ms: f64,
    /// The fastest of each: interference from other work only ever adds time.
    server_min_ms: f64,
    raw_min_ms: f64,
    /// Median of (latency − x-inference-time-ms): what the server adds outside the model call
    /// (HTTP, hashing, decoding and resizing, queueing, JSON).
    outside_inference_ms: f64,
    queue_ms: Option<f64>,
    inference_ms: Option<f64>,
    failures: usize,
    /// `None` when the first server answer had the raw pipeline's text and token count.
    mismatch: Option<String>,
}

/// Concurrency 1 on one image, for every server in `urls`: server requests and raw-pipeline runs
/// alternate, in an order that rotates each round, so that all see the same machine (other work
/// on a shared box comes and goes). One warm-up each, then the medians of `runs`. A pause after
/// each lets the previous side's ONNX Runtime threads stop spinning.
fn overhead(
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

// ---------------------------------------------------------------------------------------------
// Reporting.

fn print_table(batch_size: usize, levels: &[Level]) {
    println!();
    println!("--max-batch-size {batch_size}:");
    println!(
        "| concurrency | requests | 201 | non-201 | wall s | images/s | p50 ms | p95 ms | mean x-queue-time-ms | mean x-inference-time-ms | server CPU cores |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for level in levels {
        let latencies = level.latencies();
        let (p50, p95) = if latencies.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (percentile(&latencies, 50.0), percentile(&latencies, 95.0))
        };
        let ok: Vec<&Sample> = level.samples.iter().filter(|s| s.ok()).collect();
        let queue = mean(ok.iter().filter_map(|s| s.queue_ms)).unwrap_or(f64::NAN);
        let inference = mean(ok.iter().filter_map(|s| s.inference_ms)).unwrap_or(f64::NAN);
        let capped = if level.samples.len() < level.planned {
            format!(" (time cap: {} of {})", level.samples.len(), level.planned)
        } else {
            String::new()
        };
        println!(
            "| {} | {}{capped} | {} | {} | {:.1} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            level.concurrency,
            level.samples.len(),
            level.ok(),
            level.samples.len() - level.ok(),
            level.wall.as_secs_f64(),
            level.throughput(),
            p50,
            p95,
            queue,
            inference,
            level.server_cores.unwrap_or(f64::NAN),
        );
    }
    let statuses: Vec<String> = levels
        .iter()
        .flat_map(|l| &l.samples)
        .filter(|s| !s.ok())
        .map(|s| s.status.map_or("error".to_string(), |c| c.to_string()))
        .collect();
    if !statuses.is_empty() {
        println!("non-201 answers: {}", statuses.join(", "));
    }
}

fn print_overhead(batch_size: usize, o: &Overhead) {
    let overhead = o.server_ms - o.raw_ms;
    let min_overhead = o.server_min_ms - o.raw_min_ms;
    println!(
        "overhead at concurrency 1, --max-batch-size {batch_size} ({} alternating rounds): server median {:.0} ms - raw pipeline median {:.0} ms (prepare {:.1} + generate {:.0}) = {:+.0} ms ({:+.1} %); paired median {:+.0} ms ({:+.1} %); fastest {:.0} - {:.0} = {:+.0} ms ({:+.1} %); latency - x-inference-time-ms median {:.0} ms; mean x-inference-time-ms {:.0}, mean x-queue-time-ms {:.1}{}; {}",
        o.runs,
        o.server_ms,
        o.raw_ms,
        o.raw_prepare_ms,
        o.raw_generate_ms,
        overhead,
        100.0 * overhead / o.raw_ms,
        o.paired_ms,
        100.0 * o.paired_ms / o.raw_ms,
        o.server_min_ms,
        o.raw_min_ms,
        min_overhead,
        100.0 * min_overhead / o.raw_min_ms,
        o.outside_inference_ms,
        o.inference_ms.unwrap_or(f64::NAN),
        o.queue_ms.unwrap_or(f64::NAN),
        if o.failures > 0 {
            format!(", {} non-201", o.failures)
        } else {
            String::new()
        },
        match &o.mismatch {
            None => "same text and tokens as the raw pipeline".to_string(),
            Some(m) => format!("OUTPUT DIFFERS from the raw pipeline: {m}"),
        }
    );
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model_dir = root
        .join(std::env::var("BENCH_LOAD_MODEL").unwrap_or_else(|_| "models/base-shaped".into()));
    if !model_dir.join("onnx/decoder_model_merged.onnx").is_file() {
        eprintln!(
            "{} is missing: run `make model-base` first (or BENCH_LOAD_MODEL=models/tiny-florence2)",
            model_dir.display()
        );
        std::process::exit(1);
    }
    let env_path = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (library, _) =
        runtime::find_library(None, env_path.as_deref(), &root.join(".cache"), Device::Cpu)
            .unwrap_or_else(|e| panic!("{e} (scripts/install-ort.sh installs it)"));
    let settings = Settings {
        model_dir,
        library,
        max_new_tokens: env_or("BENCH_LOAD_MAX_NEW_TOKENS", 20),
        overhead_runs: env_or("BENCH_LOAD_OVERHEAD_RUNS", 5usize).max(1),
        level_time: Duration::from_secs(env_or("BENCH_LOAD_LEVEL_SECONDS", 600)),
        levels: plan_levels(),
        root,
    };
    let image_count: usize = env_or("BENCH_LOAD_IMAGES", 32usize).max(1);
    let files = write_images(
        &settings.root.join("target/bench-describe-images"),
        image_count,
    );
    let images: Vec<Bytes> = files
        .iter()
        .map(|f| Bytes::from(std::fs::read(f).expect("read a bench image")))
        .collect();
    let plan: Vec<String> = settings
        .levels
        .iter()
        .map(|&(c, n)| format!("{c}×{n}"))
        .collect();
    println!(
        "load benchmark: {}, {} distinct 768×768 PNGs, <CAPTION> greedy max_new_tokens {}, CPU; concurrency×requests {}; --max-batch-size {:?}",
        settings.model_dir.display(),
        images.len(),
        settings.max_new_tokens,
        plan.join(", "),
        BATCH_SIZES,
    );
    for &(c, n) in &settings.levels {
        if n < c {
            println!("note: {n} requests at concurrency {c}: only {n} clients will be busy");
        }
    }

    // Loaded before any server runs; idle while the load levels run.
    let mut model = load_raw_model(&settings);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let max_level = settings.levels.iter().map(|&(c, _)| c).max().unwrap_or(1);
    let query = format!("?max_new_tokens={}&num_beams=1", settings.max_new_tokens);
    // Both servers run side by side (the idle one costs memory, not CPU), so that each level can
    // be measured on both back to back: on a shared machine the load from other work drifts
    // over minutes, and only measurements taken close together compare.
    let data_dir = tempfile::tempdir().expect("a temporary data directory");
    let key = api_key(data_dir.path());
    let mut servers = Vec::new();
    for batch_size in BATCH_SIZES {
        let started = Instant::now();
        let server = Server::start(
            &settings,
            data_dir.path(),
            batch_size,
            (4 * max_level).max(256),
        );
        println!(
            "server --max-batch-size {batch_size} ready in {:.1} s (load + warm-up)",
            started.elapsed().as_secs_f64()
        );
        servers.push(server);
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("{}{query}", s.url))
        .collect();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("an ASCII key"),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .pool_max_idle_per_host(max_level)
        .timeout(settings.level_time + Duration::from_secs(600))
        .build()
        .expect("HTTP client");

    let overheads = overhead(
        &runtime,
        &client,
        &urls,
        model.as_mut(),
        &images[0],
        &settings,
    );
    for (batch_size, o) in BATCH_SIZES.iter().zip(&overheads) {
        print_overhead(*batch_size, o);
    }
    let mut results: Vec<Vec<Level>> = BATCH_SIZES.iter().map(|_| Vec::new()).collect();
    for (index, &(concurrency, requests)) in settings.levels.iter().enumerate() {
        // Alternate which configuration goes first, so that neither always follows the other.
        let mut order: Vec<usize> = (0..BATCH_SIZES.len()).collect();
        if index % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let pid = servers[i].child.id();
            let cpu_before = cpu_seconds(pid);
            let mut level = runtime.block_on(run_level(
                &client,
                &urls[i],
                &images,
                concurrency,
                requests,
                settings.level_time,
            ));
            level.server_cores = cpu_before
                .zip(cpu_seconds(pid))
                .map(|(before, after)| (after - before) / level.wall.as_secs_f64());
            eprintln!(
                "  --max-batch-size {}, concurrency {concurrency}: {} of {} answered 201 in {:.1} s, server CPU {:.2} cores",
                BATCH_SIZES[i],
                level.ok(),
                level.samples.len(),
                level.wall.as_secs_f64(),
                level.server_cores.unwrap_or(f64::NAN)
            );
            results[i].push(level);
        }
    }
    for (server, batch_size) in servers.iter_mut().zip(BATCH_SIZES) {
        if let Ok(Some(status)) = server.child.try_wait() {
            println!(
                "the --max-batch-size {batch_size} server exited during the run ({status}):\n{}",
                server.log_tail()
            );
        }
    }
    drop(servers);

    println!();
    println!(
        "## results: {}, max_new_tokens {}",
        settings.model_dir.display(),
        settings.max_new_tokens
    );
    for (batch_size, levels) in BATCH_SIZES.iter().zip(&results) {
        print_table(*batch_size, levels);
    }
    println!();
    println!(
        "| concurrency | images/s batch 16 | images/s batch 1 | throughput ratio 16 / 1 | per server CPU-second ratio 16 / 1 | p50 ms batch 16 | p50 ms batch 1 |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let p50 = |l: &Level| {
        let latencies = l.latencies();
        if latencies.is_empty() {
            f64::NAN
        } else {
            percentile(&latencies, 50.0)
        }
    };
    for (a, b) in results[0].iter().zip(&results[1]) {
        println!(
            "| {} | {:.3} | {:.3} | **{:.2}×** | {:.2}× | {:.0} | {:.0} |",
            a.concurrency,
            a.throughput(),
            b.throughput(),
            a.throughput() / b.throughput(),
            a.per_cpu_second() / b.per_cpu_second(),
            p50(a),
            p50(b),
        );
    }
    println!();
    for (batch_size, o) in BATCH_SIZES.iter().zip(&overheads) {
        print_overhead(*batch_size, o);
    }
}
