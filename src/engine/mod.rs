//! Serving machinery that does not know HTTP: admission, preparation on a blocking pool, the
//! queue, and the model workers. `Engine` is the cheap handle the HTTP layer holds.

pub mod admission;
pub mod queue;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

pub use admission::{Admission, Permits};
use queue::{BatchLimits, Entry, Queue};
use worker::WorkerHealth;

use crate::metrics::ModelMetrics;
use crate::model::preprocess::{ImageKind, ImageLimits, PreprocessError};
use crate::model::{
    Captioner, Detail, Generated, GenerationOptions, GenerationRequest, LoadOptions, ModelCard,
    Task,
};

/// Why the engine could not describe an image. The HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the server is at capacity; retry after {} s", retry_after.as_secs())]
    Overloaded { retry_after: Duration },
    #[error("the server is shutting down; retry on another replica or after {} s", retry_after.as_secs())]
    Draining { retry_after: Duration },
    #[error("the image waited too long in the queue; retry after {} s", retry_after.as_secs())]
    QueueTimeout { retry_after: Duration },
    #[error(transparent)]
    Image(#[from] PreprocessError),
    #[error(
        "{images} images in one request exceed the server's {capacity} concurrent images (--max-concurrent-images)"
    )]
    TooManyImages { images: usize, capacity: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// An image's bytes with their SHA-256 (hex), hashed once by the caller: the describe service
/// needs it before the engine does (the `Idempotency-Key` fingerprint).
#[derive(Debug, Clone)]
pub struct ImageBytes {
    pub bytes: Bytes,
    pub sha256: String,
}

/// What a worker returns for one image.
#[derive(Debug, Clone)]
pub struct Inferred {
    pub generated: Generated,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub batch_size: usize,
}

/// Facts about the image kept after its bytes are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub width: u32,
    pub height: u32,
    pub format: ImageKind,
    pub byte_size: usize,
    pub sha256: String,
}

/// A finished image with its timings.
#[derive(Debug, Clone)]
pub struct Described {
    /// One per requested output, in order.
    pub generated: Vec<Generated>,
    pub image: ImageFacts,
    pub prepare_time: Duration,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub batch_size: usize,
}

/// The serving settings (from `altimage serve`'s flags).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_concurrent_images: usize,
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_batch_delay: Duration,
    pub max_queue_time: Duration,
    pub workers: usize,
    pub prepare_threads: usize,
    pub image_limits: ImageLimits,
    pub max_num_beams: usize,
    pub retry_after: Duration,
}

struct Inner {
    config: EngineConfig,
    admission: Admission,
    queue: Queue,
    prepare_slots: Arc<Semaphore>,
    card: ModelCard,
    workers: Vec<WorkerHealth>,
    warmed: AtomicBool,
    metrics: ModelMetrics,
}

/// Cheap handle to the serving machinery.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Loads `config.workers` model instances, warms each up at the maximum batch size, and
    /// starts their threads. Must run inside a tokio runtime.
    pub fn start(
        config: EngineConfig,
        load: &LoadOptions,
        metrics: ModelMetrics,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(config.workers >= 1, "--workers must be at least 1");
        anyhow::ensure!(
            config.max_batch_size >= 1,
            "--max-batch-size must be at least 1"
        );
        let mut models = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let mut model = crate::model::load(load)
                .map_err(|e| anyhow::anyhow!("loading model instance {index}: {e}"))?;
            warm_up(model.as_mut(), config.max_batch_size)?;
            models.push(model);
        }
        let card = models[0].card().clone();

        let limits = BatchLimits {
            max_size: config.max_batch_size,
            max_tokens: config.max_batch_tokens,
            max_delay: config.max_batch_delay,
            retry_after: config.retry_after,
        };
        let queue = Queue::spawn(limits, metrics.clone());
        let mut workers = Vec::with_capacity(models.len());
        for (index, model) in models.into_iter().enumerate() {
            let health = WorkerHealth::healthy();
            worker::spawn(
                index,
                model,
                queue.clone(),
                health.clone(),
                metrics.clone(),
                config.retry_after,
            )?;
            workers.push(health);
        }
        let inner = Inner {
            admission: Admission::new(
                config.max_concurrent_images,
                config.retry_after,
                metrics.clone(),
            ),
            prepare_slots: Arc::new(Semaphore::new(config.prepare_threads.max(1))),
            config,
            queue,
            card,
            workers,
            warmed: AtomicBool::new(true),
            metrics,
        };
        let engine = Self {
            inner: Arc::new(inner),
        };
        engine.publish_readiness();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &ModelMetrics {
        &self.inner.metrics
    }

    /// What the loaded model is and takes.
    pub fn card(&self) -> &ModelCard {
        &self.inner.card
    }

    /// Images that could be admitted now.
    pub fn free_images(&self) -> usize {
        let admission = &self.inner.admission;
        admission.capacity() - admission.in_use()
    }

    /// Takes permits only from spare capacity: while more than `reserve` stay free for
    /// interactive requests (bulk jobs).
    pub fn try_admit_spare(&self, images: usize, reserve: usize) -> Result<Permits, EngineError> {
        self.inner.admission.try_admit_spare(images, reserve)
    }

    /// Takes one permit per image without waiting (429 when full, 503 while draining).
    pub fn try_admit(&self, images: usize) -> Result<Permits, EngineError> {
        self.inner.admission.try_admit(images)
    }

    /// Describes one admitted image with the outputs the describe service validated: each is
    /// its own row over the one prepared image (families run their vision encoder once per
    /// image of a batch). The bytes are dropped as soon as the tensor exists. If the caller drops
    /// this future (client gone), the rows leave the queue or the running batch.
    pub async fn describe(
        &self,
        permit: Permits,
        image: ImageBytes,
        outputs: Vec<GenerationOptions>,
    ) -> Result<Described, EngineError> {
        debug_assert!(
            !outputs.is_empty(),
            "the describe service asks for at least one output"
        );
        let _permit = permit;
        let inner = &self.inner;

        let prepare_started = Instant::now();
        let slot = inner
            .prepare_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed; this is a bug");
        let (frontend, limits) = (inner.card.frontend.clone(), inner.config.image_limits);
        let ImageBytes { bytes, sha256 } = image;
        let byte_size = bytes.len();
        let prepared = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            frontend.prepare(&bytes, &limits)
        })
        .await
        .map_err(|e| EngineError::Inference(format!("image preparation panicked: {e}")))??;
        let prepare_time = prepare_started.elapsed();
        inner
            .metrics
            .prepare_time
            .observe(prepare_time.as_secs_f64());
        let image = ImageFacts {
            width: prepared.width,
            height: prepared.height,
            format: prepared.format,
            byte_size,
            sha256,
        };

        let now = Instant::now();
        let retry_after = inner.config.retry_after;
        let mut answers = Vec::with_capacity(outputs.len());
        for options in outputs {
            let (reply, answer) = oneshot::channel();
            let prompt = inner
                .card
                .frontend
                .prompt_len(&options.task, &prepared.tensor);
            let entry = Entry {
                token_cost: (prompt + options.max_new_tokens) * options.num_beams,
                request: GenerationRequest {
                    image: prepared.tensor.clone(),
                    options,
                },
                enqueued_at: now,
                deadline: now + inner.config.max_queue_time,
                reply,
                span: tracing::Span::current(),
            };
            inner
                .queue
                .append(entry)
                .map_err(|_| EngineError::Draining { retry_after })?;
            answers.push(answer);
        }
        drop(prepared);
        let mut described = Described {
            generated: Vec::with_capacity(answers.len()),
            image,
            prepare_time,
            queue_time: Duration::ZERO,
            inference_time: Duration::ZERO,
            batch_size: 0,
        };
        for answer in answers {
            let inferred = answer
                .await
                .map_err(|_| EngineError::Draining { retry_after })??;
            described.queue_time = described.queue_time.max(inferred.queue_time);
            described.inference_time = described.inference_time.max(inferred.inference_time);
            described.batch_size = described.batch_size.max(inferred.batch_size);
            described.generated.push(inferred.generated);
        }
        Ok(described)
    }

    /// Ready: warmed up, not draining, and at least one worker whose last batch succeeded. A full
    /// queue does not make the server unready (that is what 429 is for).
    pub fn is_ready(&self) -> bool {
        self.inner.warmed.load(Ordering::SeqCst)
            && !self.is_draining()
            && self.healthy_workers() > 0
    }

    pub fn is_draining(&self) -> bool {
        self.inner.admission.is_draining()
    }

    pub fn healthy_workers(&self) -> usize {
        self.inner.workers.iter().filter(|w| w.is_healthy()).count()
    }

    pub fn workers(&self) -> usize {
        self.inner.workers.len()
    }

    pub fn publish_readiness(&self) {
        self.inner.metrics.set_ready(self.is_ready());
    }

    /// Refuses new work, then waits for admitted work to be answered (or the timeout).
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.inner.admission.start_draining();
        self.publish_readiness();
        self.inner.admission.wait_idle(timeout).await
    }
}

/// One batch at the maximum size before the server says ready, so that a batch size the machine
/// (or the export) cannot hold fails at start-up, not under traffic. When it fails, one image is
/// tried alone, so that the message says whether lowering `--max-batch-size` can help.
fn warm_up(model: &mut dyn Captioner, max_batch_size: usize) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match warm_up_batch(model, max_batch_size) {
        Ok(()) => {
            tracing::info!(
                batch = max_batch_size,
                seconds = started.elapsed().as_secs_f64(),
                "warm-up done"
            );
            Ok(())
        }
        Err(error) if max_batch_size > 1 && warm_up_batch(model, 1).is_ok() => {
            anyhow::bail!(
                "warm-up at --max-batch-size {max_batch_size} failed, while a single image runs: \
                 {error}; lower --max-batch-size (env ALTIMAGE_MAX_BATCH_SIZE)"
            )
        }
        Err(error) => anyhow::bail!(
            "warm-up failed even on a single image, so the batch size is not the cause: {error}"
        ),
    }
}

fn warm_up_batch(model: &mut dyn Captioner, images: usize) -> Result<(), crate::model::ModelError> {
    let blank = model.blank_image();
    let requests: Vec<GenerationRequest> = (0..images)
        .map(|_| GenerationRequest {
            image: blank.clone(),
            options: GenerationOptions {
                task: Task {
                    detail: Detail::Paragraph,
                    ..Task::default()
                },
                max_new_tokens: 4,
                num_beams: 1,
                sampling: None,
            },
        })
        .collect();
    model.generate(&requests).map(drop)
}
