//! What the request log costs the request path: two servers on the tiny model side by side, the
//! same account and key, one with the request log (the default) and one with
//! `--no-request-log`, each driven in turn by a closed loop of clients calling `GET /v1/account`
//! (authenticated, two small reads: the cheapest route that is logged, so the log's share is
//! the largest it can be). The rounds alternate between the servers; the best round of each is
//! kept. Prints requests per second and p50/p95 latency per server, the ratio, and how many
//! entries the logging server wrote (all of them: none may be dropped).
//!
//! `cargo bench --bench request_log`. Env: BENCH_RL_CONCURRENCY (16), BENCH_RL_REQUESTS per round
//! (4000), BENCH_RL_ROUNDS (3), BENCH_RL_DATABASE_URL (default: each server its own SQLite file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[path = "common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::env_or;

/// Running helper commands, shared with the integration tests.
#[allow(dead_code)]
#[path = "../tests/support/command.rs"]
mod command;
/// The server-process harness shared with the integration tests.
#[allow(dead_code)]
#[path = "../tests/support/server.rs"]
mod server_process;

use server_process::{Launch, Process, client_with_key};

struct Round {
    per_second: f64,
    p50_ms: f64,
    p95_ms: f64,
    failures: usize,
}

/// `requests` calls from `concurrency` clients, each sending its next as soon as the last is
/// answered.
async fn round(url: &str, key: &str, concurrency: usize, requests: usize) -> Round {
    let client = client_with_key(key).build().unwrap();
    let left = Arc::new(Mutex::new(requests));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let failures = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            let (left, latencies, failures) = (left.clone(), latencies.clone(), failures.clone());
            tokio::spawn(async move {
                loop {
                    {
                        let mut left = left.lock().await;
                        if *left == 0 {
                            return;
                        }
                        *left -= 1;
                    }
                    let sent = Instant::now();
                    let ok = client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    latencies
                        .lock()
                        .await
                        .push(sent.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        *failures.lock().await += 1;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().await.clone();
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let failures = *failures.lock().await;
    Round {
        per_second: requests as f64 / elapsed,
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        failures,
    }
}

fn start(
    root: &std::path::Path,
    data_dir: &std::path::Path,
    database: Option<&str>,
    log: bool,
) -> Process {
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            altimage::model::runtime::find_library(
                None,
                None,
                &root.join(".cache"),
                altimage::model::runtime::Device::Cpu,
            )
            .expect("the ONNX Runtime library (make test installs it)")
            .0
        });
    let mut launch = Launch::new(root.join("models/tiny-florence2"), library)
        .clear_altimage_env()
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--rate-limit-per-minute",
            "0",
            "--log",
            "warn,altimage::server=info",
        ]);
    if let Some(url) = database {
        launch = launch.args(["--database-url", url]);
    }
    if !log {
        launch = launch.arg("--no-request-log");
    }
    launch.current_dir(root).start()
}

fn main() {
    let concurrency: usize = env_or("BENCH_RL_CONCURRENCY", 16);
    let requests: usize = env_or("BENCH_RL_REQUESTS", 4000);
    let rounds: usize = env_or("BENCH_RL_ROUNDS", 3);
    let database = std::env::var("BENCH_RL_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Each server its own database (a shared PostgreSQL one is shared: the bootstrap key of the
    // first start serves both).
    let logging = start(&root, dirs[0].path(), database.as_deref(), true);
    let key_of = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("bootstrap-api-key")).map(|k| k.trim().to_string())
    };
    let logging_key = key_of(dirs[0].path()).expect("the first start wrote a key");
    let plain = start(&root, dirs[1].path(), database.as_deref(), false);
    let plain_key = key_of(dirs[1].path()).unwrap_or_else(|_| logging_key.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "request log overhead: GET /v1/account, {concurrency} clients, {requests} requests per round, {rounds} rounds, {}",
        database.as_deref().map_or("SQLite", |_| "PostgreSQL")
    );
    let mut best: [Option<Round>; 2] = [None, None];
    for r in 0..rounds {
        for (i, (server, key)) in [(&logging, &logging_key), (&plain, &plain_key)]
            .into_iter()
            .enumerate()
        {
            let url = format!("{}/v1/account", server.base());
            let result = runtime.block_on(round(&url, key, concurrency, requests));
            println!(
                "  round {} {:>11}: {:>8.0} req/s, p50 {:.2} ms, p95 {:.2} ms, {} failed",
                r + 1,
                if i == 0 { "log on" } else { "log off" },
                result.per_second,
                result.p50_ms,
                result.p95_ms,
                result.failures
            );
            if best[i]
                .as_ref()
                .is_none_or(|b| result.per_second > b.per_second)
            {
                best[i] = Some(result);
            }
        }
    }
    let [Some(on), Some(off)] = best else {
        unreachable!()
    };
    // Let the writer finish, then read what it did from the metrics.
    std::thread::sleep(Duration::from_secs(2));
    let metrics = runtime.block_on(async {
        reqwest::get(format!("{}/metrics", logging.base()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let sample = |result: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "altimage_request_log_entries_total{{result=\"{result}\"}} "
                ))
            })
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "best rounds: log on {:.0} req/s (p50 {:.2} ms, p95 {:.2} ms), log off {:.0} req/s (p50 {:.2} ms, p95 {:.2} ms)",
        on.per_second, on.p50_ms, on.p95_ms, off.per_second, off.p50_ms, off.p95_ms
    );
    println!(
        "ratio on / off: throughput {:.3}x, p50 {:.3}x, p95 {:.3}x; entries written {}, dropped {}, failed {}",
        on.per_second / off.per_second,
        on.p50_ms / off.p50_ms,
        on.p95_ms / off.p95_ms,
        sample("written"),
        sample("dropped"),
        sample("failed"),
    );
}
