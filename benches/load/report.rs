//! What the load bench prints: the statistics (median, nearest-rank percentiles, means), the
//! per-configuration tables, the overhead lines and the batching / no-batching ratio table.

use std::time::Duration;

use crate::client::{Level, Sample};
use crate::overhead::Overhead;

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn print_table(batch_size: usize, levels: &[Level]) {
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

pub fn print_overhead(batch_size: usize, o: &Overhead) {
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

/// Per concurrency level: `--max-batch-size 16` (`batched`) against `--max-batch-size 1`.
pub fn print_ratios(batched: &[Level], unbatched: &[Level]) {
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
    for (a, b) in batched.iter().zip(unbatched) {
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
}
