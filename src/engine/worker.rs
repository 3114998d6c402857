//! One model instance on its own OS thread: takes a batch (one more is staged while it
//! computes), runs it, answers every entry. Inference never runs on the async workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::queue::{Entry, Queue};
use super::{EngineError, Inferred};
use crate::metrics::{ModelMetrics, STAGES};
use crate::model::generate::FinishReason;
use crate::model::{Captioner, GenerationRequest};

/// Whether a worker's last batch succeeded; read by `/health/ready`.
#[derive(Clone, Default)]
pub struct WorkerHealth(Arc<AtomicBool>);

impl WorkerHealth {
    pub fn healthy() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_healthy(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, healthy: bool, metrics: &ModelMetrics) {
        let was = self.0.swap(healthy, Ordering::SeqCst);
        if was && !healthy {
            metrics.unhealthy_workers.inc();
        } else if !was && healthy {
            metrics.unhealthy_workers.dec();
        }
    }
}

/// Starts the staging task (on the current runtime) and the worker thread.
pub fn spawn(
    index: usize,
    model: Box<dyn Captioner>,
    queue: Queue,
    health: WorkerHealth,
    metrics: ModelMetrics,
    retry_after: std::time::Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Capacity 1: exactly one batch waits, prepared, while the worker computes the current one.
    let (staged_sender, mut staged) = mpsc::channel::<Vec<Entry>>(1);
    tokio::spawn(async move {
        loop {
            let Ok(slot) = staged_sender.reserve().await else {
                break;
            };
            match queue.next_batch().await {
                Some(batch) => slot.send(batch),
                None => break,
            }
        }
    });
    std::thread::Builder::new()
        .name(format!("altimage-worker-{index}"))
        .spawn(move || {
            let mut model = model;
            while let Some(batch) = staged.blocking_recv() {
                run_batch(index, model.as_mut(), batch, &health, &metrics, retry_after);
            }
        })
}

fn run_batch(
    index: usize,
    model: &mut dyn Captioner,
    batch: Vec<Entry>,
    health: &WorkerHealth,
    metrics: &ModelMetrics,
    retry_after: std::time::Duration,
) {
    let started = tokio::time::Instant::now();
    // The staged batch waited for the previous one: check again who still wants an answer.
    let mut live = Vec::with_capacity(batch.len());
    for entry in batch {
        if entry.is_abandoned() {
            metrics.reject("cancelled");
        } else if entry.deadline <= started {
            metrics.reject("expired");
            let _ = entry
                .reply
                .send(Err(EngineError::QueueTimeout { retry_after }));
        } else {
            live.push(entry);
        }
    }
    if live.is_empty() {
        return;
    }
    // One span for the batch, following from each request's span: a trace shows which batch
    // carried a request, and the batch's log lines list who was in it.
    let batch = tracing::info_span!("batch", worker = index, images = live.len());
    let mut requests: Vec<GenerationRequest> = Vec::with_capacity(live.len());
    let mut waiting = Vec::with_capacity(live.len());
    for entry in live {
        let queue_time = started - entry.enqueued_at;
        metrics.queue_time.observe(queue_time.as_secs_f64());
        batch.follows_from(&entry.span);
        entry.span.in_scope(|| {
            tracing::debug!(queue_ms = queue_time.as_millis() as u64, "image in a batch");
        });
        requests.push(entry.request);
        waiting.push((entry.reply, queue_time));
    }
    let _batch = batch.enter();
    let compute_started = Instant::now();
    let outcome = model.generate_with(&requests, &mut |row| waiting[row].0.is_closed());
    let inference_time = compute_started.elapsed();
    drop(requests);
    match outcome {
        Ok((results, timings)) => {
            health.set(true, metrics);
            metrics.batches.inc();
            let batch_size = results.len();
            metrics.batch_size.observe(batch_size as f64);
            for (stage, time) in
                STAGES
                    .iter()
                    .zip([timings.vision, timings.encoder, timings.decode])
            {
                metrics.stage_time(stage).observe(time.as_secs_f64());
            }
            for ((reply, queue_time), generated) in waiting.into_iter().zip(results) {
                if generated.finish_reason == FinishReason::Cancelled {
                    metrics.reject("cancelled");
                    continue;
                }
                metrics.images_described.inc();
                metrics
                    .generated_tokens
                    .observe(generated.generated_tokens() as f64);
                if reply
                    .send(Ok(Inferred {
                        generated,
                        queue_time,
                        inference_time,
                        batch_size,
                    }))
                    .is_err()
                {
                    metrics.reject("cancelled");
                }
            }
        }
        Err(error) => {
            // Requests were validated before they were queued: a failed batch is the model's
            // or the machine's fault, and the next one tells whether it persists.
            health.set(false, metrics);
            tracing::error!(%error, images = waiting.len(), "batch failed; worker marked unhealthy until a batch succeeds");
            for (reply, _) in waiting {
                metrics.images_failed.inc();
                let _ = reply.send(Err(EngineError::Inference(error.to_string())));
            }
        }
    }
}
