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
//!
//! This file is the run (settings, both servers side by side, the levels alternated between
//! them); `server` starts them through the process harness the integration tests use
//! (`tests/support/server.rs`), `client` drives the load, `overhead` measures the raw pipeline
//! against single requests, `report` prints.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use altimage::model::runtime::{self, Device};
use bytes::Bytes;

#[path = "../common/mod.rs"]
mod common;
use common::{env_or, write_images};

mod client;
/// Running helper commands, shared with the integration tests; the bench uses part of it.
#[allow(dead_code)]
#[path = "../../tests/support/command.rs"]
mod command;
mod overhead;
mod report;
mod server;
/// The server-process harness shared with the integration tests; the bench uses part of it.
#[allow(dead_code)]
#[path = "../../tests/support/server.rs"]
mod server_process;

use client::{Level, run_level};
use overhead::{load_raw_model, overhead};
use report::{print_overhead, print_ratios, print_table};
use server::{Server, api_key, cpu_seconds};

/// The two server configurations compared in one run.
const BATCH_SIZES: [usize; 2] = [16, 1];

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
    let client = server_process::client_with_key(&key)
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
            let pid = servers[i].pid();
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
        if let Some(status) = server.exited() {
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
    print_ratios(&results[0], &results[1]);
    println!();
    for (batch_size, o) in BATCH_SIZES.iter().zip(&overheads) {
        print_overhead(*batch_size, o);
    }
}
