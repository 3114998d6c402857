//! Load on the real server: `altimage serve` started as a process on loopback, once with dynamic
//! batching (`--max-batch-size 16`) and once without (`--max-batch-size 1`), driven by a
//! closed-loop client pool at several concurrencies (each client sends its next request as soon
//! as the previous one is answered). Prints throughput, p50/p95 latency and non-201 answers per
//! configuration, the batching / no-batching ratio per concurrency, and the server's overhead at
//! concurrency 1 against the raw in-process pipeline (`prepare_image` + `generate`) on the same
//! image.
//!
//! `cargo bench --bench load` (env: BENCH_LOAD_MODEL=models/base-shaped,
//! BENCH_LOAD_CONCURRENCY=1,4,16,64, BENCH_LOAD_REQUESTS=N per level (default max(2×concurrency,
//! 8)), BENCH_LOAD_MAX_NEW_TOKENS=20, BENCH_LOAD_IMAGES=32, BENCH_LOAD_OVERHEAD_RUNS=5,
//! BENCH_LOAD_LEVEL_SECONDS=600: no new request starts after this long in one level).
//! `BENCH_LOAD_MODEL=models/tiny-florence2` makes a quick run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altimage::model::Detail;
use altimage::model::florence2::{Florence2, GenerationRequest, LoadOptions};
use altimage::model::preprocess::{ImageLimits, prepare_image};
use altimage::model::runtime::{self, Device, RuntimeOptions};
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
    levels: Vec<usize>,
    requests: Option<usize>,
    max_new_tokens: usize,
    overhead_runs: usize,
    level_time: Duration,
}

impl Settings {
    fn requests_at(&self, concurrency: usize) -> usize {
        self.requests.unwrap_or((2 * concurrency).max(8))
    }
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The raw pipeline, in this process.

struct Raw {
    total_ms: f64,
    prepare_ms: f64,
    generate_ms: f64,
    tokens: usize,
    text: String,
}

/// `prepare_image` + `generate` on `bytes`, the way the server's worker runs one image: same
/// model, same runtime options as `serve`'s defaults, greedy, `max_new_tokens`. One warm-up run,
/// then the median of `runs`.
fn raw_pipeline(settings: &Settings, bytes: &[u8]) -> Raw {
    let mut model = Florence2::load(&LoadOptions {
        model_dir: settings.model_dir.clone(),
        library: settings.library.clone(),
        runtime: RuntimeOptions::default(),
        variant_suffix: String::new(),
        vision_batch_size: 0,
    })
    .expect("load the model in-process");
    let mut once = || {
        let started = Instant::now();
        let prepared = prepare_image(bytes, model.preprocessor(), &ImageLimits::default())
            .expect("prepare the image");
        let prepared_at = Instant::now();
        let generated = model
            .generate(&[GenerationRequest {
                pixel_values: prepared.pixel_values,
                detail: Detail::Brief,
                max_new_tokens: Some(settings.max_new_tokens),
                num_beams: Some(1),
            }])
            .expect("generate")
            .remove(0);
        let done = Instant::now();
        (
            ms(done - started),
            ms(prepared_at - started),
            ms(done - prepared_at),
            generated,
        )
    };
    let (_, _, _, warm) = once();
    let mut totals = Vec::new();
    let mut prepares = Vec::new();
    let mut generates = Vec::new();
    for _ in 0..settings.overhead_runs {
        let (total, prepare, generate, _) = once();
        totals.push(total);
        prepares.push(prepare);
        generates.push(generate);
    }
    Raw {
        total_ms: median(totals),
        prepare_ms: median(prepares),
        generate_ms: median(generates),
        tokens: warm.generated_tokens(),
        text: warm.text,
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
    fn start(settings: &Settings, max_batch_size: usize, max_concurrent: usize) -> Server {
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
}

impl Level {
    fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.ok()).count()
    }

    fn throughput(&self) -> f64 {
        self.ok() as f64 / self.wall.as_secs_f64()
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
    }
}

struct Overhead {
    latency_ms: f64,
    queue_ms: Option<f64>,
    inference_ms: Option<f64>,
    failures: usize,
    tokens: Option<usize>,
    text: Option<String>,
}

/// Concurrency 1 on the raw pipeline's image: one warm-up request, then the median of `runs`.
async fn overhead(client: &reqwest::Client, url: &str, image: &Bytes, runs: usize) -> Overhead {
    let warm = send(client, url, image.clone()).await;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(send(client, url, image.clone()).await);
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok()).collect();
    Overhead {
        latency_ms: if ok.is_empty() {
            f64::NAN
        } else {
            median(ok.iter().map(|s| ms(s.latency)).collect())
        },
        queue_ms: mean(ok.iter().filter_map(|s| s.queue_ms)),
        inference_ms: mean(ok.iter().filter_map(|s| s.inference_ms)),
        failures: samples.len() - ok.len() + usize::from(!warm.ok()),
        tokens: warm.tokens,
        text: warm.text,
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn print_table(batch_size: usize, levels: &[Level]) {
    println!();
    println!("--max-batch-size {batch_size}:");
    println!(
        "| concurrency | requests | 201 | non-201 | wall s | images/s | p50 ms | p95 ms | mean x-queue-time-ms | mean x-inference-time-ms |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
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
            "| {} | {}{capped} | {} | {} | {:.1} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} |",
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

fn print_overhead(batch_size: usize, raw: &Raw, server: &Overhead) {
    let overhead = server.latency_ms - raw.total_ms;
    println!(
        "overhead at concurrency 1 (--max-batch-size {batch_size}): server p50 {:.0} ms - raw {:.0} ms = {:+.0} ms ({:+.1} %); mean x-inference-time-ms {:.0} (raw generate {:.0} ms), mean x-queue-time-ms {:.1}{}{}",
        server.latency_ms,
        raw.total_ms,
        overhead,
        100.0 * overhead / raw.total_ms,
        server.inference_ms.unwrap_or(f64::NAN),
        raw.generate_ms,
        server.queue_ms.unwrap_or(f64::NAN),
        if server.failures > 0 {
            format!(", {} non-201", server.failures)
        } else {
            String::new()
        },
        match (&server.text, server.tokens) {
            (Some(text), Some(tokens)) if *text == raw.text && tokens == raw.tokens =>
                ", same text and tokens as the raw pipeline".to_string(),
            (text, tokens) => format!(
                ", OUTPUT DIFFERS from the raw pipeline: server {tokens:?} tokens {text:?}, raw {} tokens {:?}",
                raw.tokens, raw.text
            ),
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
    let levels: Vec<usize> = std::env::var("BENCH_LOAD_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .ok()
                .filter(|&c: &usize| c > 0)
                .unwrap_or_else(|| panic!("BENCH_LOAD_CONCURRENCY: `{v}` is not a count"))
        })
        .collect();
    let env_path = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (library, _) =
        runtime::find_library(None, env_path.as_deref(), &root.join(".cache"), Device::Cpu)
            .unwrap_or_else(|e| panic!("{e} (scripts/install-ort.sh installs it)"));
    let settings = Settings {
        model_dir,
        library,
        requests: std::env::var("BENCH_LOAD_REQUESTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0),
        max_new_tokens: env_or("BENCH_LOAD_MAX_NEW_TOKENS", 20),
        overhead_runs: env_or("BENCH_LOAD_OVERHEAD_RUNS", 5usize).max(1),
        level_time: Duration::from_secs(env_or("BENCH_LOAD_LEVEL_SECONDS", 600)),
        levels,
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
        .map(|&c| format!("{c}×{}", settings.requests_at(c)))
        .collect();
    println!(
        "load benchmark: {}, {} distinct 768×768 PNGs, <CAPTION> greedy max_new_tokens {}, CPU; concurrency×requests {}; --max-batch-size {:?}",
        settings.model_dir.display(),
        images.len(),
        settings.max_new_tokens,
        plan.join(", "),
        BATCH_SIZES,
    );
    for &c in &settings.levels {
        if settings.requests_at(c) < c {
            println!(
                "note: {} requests at concurrency {c}: only {} clients will be busy",
                settings.requests_at(c),
                settings.requests_at(c)
            );
        }
    }

    // The raw pipeline first, alone on the machine (no server running yet).
    let raw = raw_pipeline(&settings, &images[0]);
    println!(
        "raw pipeline (in-process, {}): {:.0} ms per image (prepare {:.1} ms + generate {:.0} ms), median of {}, {} tokens",
        file_name(&files[0]),
        raw.total_ms,
        raw.prepare_ms,
        raw.generate_ms,
        settings.overhead_runs,
        raw.tokens
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let max_level = settings.levels.iter().copied().max().unwrap_or(1);
    let query = format!("?max_new_tokens={}&num_beams=1", settings.max_new_tokens);
    let mut results: Vec<(usize, Vec<Level>)> = Vec::new();
    let mut overheads: Vec<(usize, Overhead)> = Vec::new();
    for batch_size in BATCH_SIZES {
        let started = Instant::now();
        let mut server = Server::start(&settings, batch_size, (4 * max_level).max(256));
        println!(
            "\nserver --max-batch-size {batch_size} ready in {:.1} s (load + warm-up)",
            started.elapsed().as_secs_f64()
        );
        let url = format!("{}{query}", server.url);
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(max_level)
            .timeout(settings.level_time + Duration::from_secs(600))
            .build()
            .expect("HTTP client");
        let server_overhead =
            runtime.block_on(overhead(&client, &url, &images[0], settings.overhead_runs));
        print_overhead(batch_size, &raw, &server_overhead);
        let mut levels = Vec::new();
        for &concurrency in &settings.levels {
            let level = runtime.block_on(run_level(
                &client,
                &url,
                &images,
                concurrency,
                settings.requests_at(concurrency),
                settings.level_time,
            ));
            eprintln!(
                "  --max-batch-size {batch_size}, concurrency {concurrency}: {} of {} answered 201 in {:.1} s",
                level.ok(),
                level.samples.len(),
                level.wall.as_secs_f64()
            );
            levels.push(level);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            println!(
                "the server exited during the run ({status}):\n{}",
                server.log_tail()
            );
        }
        drop(server);
        print_table(batch_size, &levels);
        results.push((batch_size, levels));
        overheads.push((batch_size, server_overhead));
    }

    println!();
    println!(
        "## summary: {}, max_new_tokens {}",
        settings.model_dir.display(),
        settings.max_new_tokens
    );
    for (batch_size, levels) in &results {
        print_table(*batch_size, levels);
    }
    println!();
    println!(
        "| concurrency | images/s batch 16 | images/s batch 1 | throughput ratio 16 / 1 | p50 ms batch 16 | p50 ms batch 1 |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let (batched, unbatched) = (&results[0].1, &results[1].1);
    for (a, b) in batched.iter().zip(unbatched) {
        let p50 = |l: &Level| {
            let latencies = l.latencies();
            if latencies.is_empty() {
                f64::NAN
            } else {
                percentile(&latencies, 50.0)
            }
        };
        println!(
            "| {} | {:.3} | {:.3} | **{:.2}×** | {:.0} | {:.0} |",
            a.concurrency,
            a.throughput(),
            b.throughput(),
            a.throughput() / b.throughput(),
            p50(a),
            p50(b),
        );
    }
    println!();
    for (batch_size, server) in &overheads {
        print_overhead(*batch_size, &raw, server);
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
