//! Serving machinery that does not know HTTP: admission, preparation on a blocking pool, the
//! queue, and the model workers. `Engine` is the cheap handle the HTTP layer holds.

pub mod admission;
pub mod queue;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

pub use admission::{Admission, Permits};
use queue::{BatchLimits, Entry, Queue};
use worker::WorkerHealth;

use crate::metrics::Metrics;
use crate::model::Detail;
use crate::model::florence2::{
    Florence2, Generated, GenerationRequest, LoadOptions, default_max_new_tokens,
};
use crate::model::preprocess::{
    ImageKind, ImageLimits, PreprocessError, PreprocessorConfig, prepare_image,
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
    #[error("{0}")]
    InvalidRequest(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Per-request generation options, validated by `Engine::describe`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DescribeOptions {
    pub detail: Detail,
    pub max_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
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

/// A finished description with its timings.
#[derive(Debug, Clone)]
pub struct Described {
    pub generated: Generated,
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
    preprocessor: PreprocessorConfig,
    prompt_lengths: [usize; 3],
    max_new_tokens_limit: usize,
    workers: Vec<WorkerHealth>,
    warmed: AtomicBool,
    metrics: Arc<Metrics>,
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
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(config.workers >= 1, "--workers must be at least 1");
        anyhow::ensure!(
            config.max_batch_size >= 1,
            "--max-batch-size must be at least 1"
        );
        let mut models = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let mut model = Florence2::load(load)
                .map_err(|e| anyhow::anyhow!("loading model instance {index}: {e}"))?;
            warm_up(&mut model, config.max_batch_size)?;
            models.push(model);
        }
        let first = &models[0];
        let preprocessor = first.preprocessor().clone();
        let prompt_lengths = Detail::ALL.map(|d| first.prompt_ids(d).len());
        let max_new_tokens_limit = first.max_new_tokens_limit();

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
            preprocessor,
            prompt_lengths,
            max_new_tokens_limit,
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

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn max_new_tokens_limit(&self) -> usize {
        self.inner.max_new_tokens_limit
    }

    /// Takes one permit per image without waiting (429 when full, 503 while draining).
    pub fn try_admit(&self, images: usize) -> Result<Permits, EngineError> {
        self.inner.admission.try_admit(images)
    }

    /// Describes one admitted image. The bytes are dropped as soon as the tensor exists. If the
    /// caller drops this future (client gone), the image leaves the queue or the running batch.
    pub async fn describe(
        &self,
        permit: Permits,
        bytes: Bytes,
        options: DescribeOptions,
    ) -> Result<Described, EngineError> {
        let _permit = permit;
        let (max_new_tokens, num_beams) = self.validate(&options)?;
        let inner = &self.inner;

        let prepare_started = Instant::now();
        let slot = inner
            .prepare_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed; this is a bug");
        let (preprocessor, limits) = (inner.preprocessor.clone(), inner.config.image_limits);
        let prepared = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let facts_hash = hex(&Sha256::digest(&bytes));
            let byte_size = bytes.len();
            prepare_image(&bytes, &preprocessor, &limits)
                .map(|prepared| (prepared, byte_size, facts_hash))
        })
        .await
        .map_err(|e| EngineError::Inference(format!("image preparation panicked: {e}")))?;
        let (prepared, byte_size, sha256) = prepared?;
        let prepare_time = prepare_started.elapsed();
        inner
            .metrics
            .prepare_time
            .observe(prepare_time.as_secs_f64());
        let image = ImageFacts {
            width: prepared.original_width,
            height: prepared.original_height,
            format: prepared.format,
            byte_size,
            sha256,
        };

        let now = Instant::now();
        let (reply, answer) = oneshot::channel();
        let prompt = inner.prompt_lengths[options.detail as usize];
        let entry = Entry {
            request: GenerationRequest {
                pixel_values: prepared.pixel_values,
                detail: options.detail,
                max_new_tokens: Some(max_new_tokens),
                num_beams: Some(num_beams),
            },
            token_cost: (prompt + max_new_tokens) * num_beams,
            enqueued_at: now,
            deadline: now + inner.config.max_queue_time,
            reply,
        };
        let retry_after = inner.config.retry_after;
        inner
            .queue
            .append(entry)
            .map_err(|_| EngineError::Draining { retry_after })?;
        let inferred = answer
            .await
            .map_err(|_| EngineError::Draining { retry_after })??;
        Ok(Described {
            generated: inferred.generated,
            image,
            prepare_time,
            queue_time: inferred.queue_time,
            inference_time: inferred.inference_time,
            batch_size: inferred.batch_size,
        })
    }

    fn validate(&self, options: &DescribeOptions) -> Result<(usize, usize), EngineError> {
        let limit = self.inner.max_new_tokens_limit;
        let max_new_tokens = options
            .max_new_tokens
            .unwrap_or_else(|| default_max_new_tokens(options.detail));
        if max_new_tokens == 0 || max_new_tokens > limit {
            return Err(EngineError::InvalidRequest(format!(
                "max_new_tokens must be between 1 and {limit}"
            )));
        }
        let num_beams = options.num_beams.unwrap_or(1);
        let max_beams = self.inner.config.max_num_beams;
        if num_beams == 0 || num_beams > max_beams {
            return Err(EngineError::InvalidRequest(format!(
                "num_beams must be between 1 and {max_beams} (--max-num-beams)"
            )));
        }
        Ok((max_new_tokens, num_beams))
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
        self.inner.metrics.ready.set(i64::from(self.is_ready()));
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
fn warm_up(model: &mut Florence2, max_batch_size: usize) -> anyhow::Result<()> {
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

fn warm_up_batch(model: &mut Florence2, images: usize) -> Result<(), crate::model::ModelError> {
    let (width, height) = model.preprocessor().output_size();
    let blank = ndarray::Array3::<f32>::zeros((3, height as usize, width as usize));
    let requests: Vec<GenerationRequest> = (0..images)
        .map(|_| GenerationRequest {
            pixel_values: blank.clone(),
            detail: Detail::Paragraph,
            max_new_tokens: Some(4),
            num_beams: Some(1),
        })
        .collect();
    model.generate(&requests).map(drop)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
