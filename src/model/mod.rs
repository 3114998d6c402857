//! The models: one folder per family (`florence2/`, `qwen3_5/`), the seam the engine, the CLI and the benches
//! use ([`Captioner`], [`Frontend`], [`load`]), and the machinery the families share: the ONNX
//! Runtime library and sessions (`runtime`), image preprocessing (`preprocess`), token search and
//! logits rules (`generate`), graph contract checks (`signature`), and the model-neutral task
//! (`task`).

pub mod config;
pub mod device_rows;
pub mod florence2;
pub mod generate;
pub mod preprocess;
pub mod qwen3_5;
pub mod rows;
pub mod runtime;
pub mod signature;
pub mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use generate::FinishReason;
use preprocess::{ImageKind, ImageLimits, PreprocessError};
pub use runtime::{Device, RuntimeOptions};
pub use task::{Capabilities, Detail, Output, ProductContext, Task};

/// Errors of loading or running the model. Load-time messages name the file or flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    RuntimeLibrary(String),
    #[error("{0}")]
    Device(String),
    #[error("model directory {dir}: {message}")]
    ModelDir { dir: PathBuf, message: String },
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("cannot load {file}: {message}")]
    Session { file: PathBuf, message: String },
    #[error("{file} does not fit the export contract of its model family: {message}")]
    Signature { file: PathBuf, message: String },
    #[error("inference failed in {stage}: {message}")]
    Inference {
        stage: &'static str,
        message: String,
    },
}

impl ModelError {
    pub(crate) fn inference(stage: &'static str) -> impl Fn(ort::Error) -> ModelError {
        move |e| ModelError::Inference {
            stage,
            message: e.to_string(),
        }
    }
}

/// The model families this server runs, picked by `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Florence2,
    Qwen3_5,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Florence2, Family::Qwen3_5];

    /// The `model_type` of the family's `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Florence2 => "florence2",
            Family::Qwen3_5 => "qwen3_5",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|family| family.model_type() == model_type)
    }
}

/// Where to load a model from and how to run it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library (see `runtime::find_library`).
    pub library: PathBuf,
    pub runtime: RuntimeOptions,
    /// File-name suffix of the graph variant (`""` fp32, `"_fp16"`, `"_quantized"`, ...).
    pub variant_suffix: String,
    /// Images per vision-encoder call (0 = auto: 1 on the CPU, the whole batch on CUDA). On a
    /// CPU the tower is compute-bound and a batch of 8 only thrashes the caches (measured 1.3×
    /// slower per image on Florence-2); on a GPU batching is where its throughput comes from.
    pub vision_batch_size: usize,
    /// The most pixels an image is resized to for families that keep its aspect (Qwen3.5): the
    /// image tokens, and so the prompt's length and the vision encoder's work, grow with it.
    pub vision_max_pixels: u64,
    /// A file replacing the built-in prompt templates of instruct families.
    pub prompt_templates: Option<PathBuf>,
}

/// Opens the model directory with the family its `config.json` names. An unknown family is an
/// error that lists the ones this server runs.
pub fn load(options: &LoadOptions) -> Result<Box<dyn Captioner>, ModelError> {
    let dir = &options.model_dir;
    if !dir.is_dir() {
        return Err(ModelError::ModelDir {
            dir: dir.clone(),
            message: "not a directory (pass --model-dir, env ALTIMAGE_MODEL_DIR: the bundled test model is models/tiny-florence2, `scripts/fetch-model.sh` fetches the real one)".into(),
        });
    }
    let model_type = config::model_type(dir)?;
    match Family::from_model_type(&model_type) {
        Some(Family::Florence2) => Ok(Box::new(florence2::Florence2::load(options)?)),
        Some(Family::Qwen3_5) => Ok(Box::new(qwen3_5::Qwen35::load(options)?)),
        None => Err(ModelError::ModelDir {
            dir: dir.clone(),
            message: format!(
                "config.json's model_type `{model_type}` is not a family this server runs ({})",
                Family::ALL.map(Family::model_type).join(", ")
            ),
        }),
    }
}

/// A prepared image in its family's own layout (Florence-2: `[3, H, W]`, normalised; Qwen3.5:
/// patches). Only the family that made it reads it; the layers above move it. Cheap to clone: the
/// outputs of one image share it, and a family runs its vision encoder once per distinct image
/// of a batch ([`distinct_images`]).
#[derive(Debug, Clone)]
pub struct ImageTensor(Arc<ndarray::ArrayD<f32>>);

impl ImageTensor {
    pub fn new(values: ndarray::ArrayD<f32>) -> Self {
        Self(Arc::new(values))
    }

    pub fn values(&self) -> &ndarray::ArrayD<f32> {
        &self.0
    }

    /// The same prepared image (not merely equal values).
    pub fn is_same(&self, other: &ImageTensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The distinct images of a batch in first-seen order, and for each request the index of its
/// image among them.
pub fn distinct_images(requests: &[GenerationRequest]) -> (Vec<&ImageTensor>, Vec<usize>) {
    let mut images: Vec<&ImageTensor> = Vec::new();
    let mut of_request = Vec::with_capacity(requests.len());
    for request in requests {
        match images
            .iter()
            .position(|image| image.is_same(&request.image))
        {
            Some(index) => of_request.push(index),
            None => {
                of_request.push(images.len());
                images.push(&request.image);
            }
        }
    }
    (images, of_request)
}

/// An image ready for a model, with the facts kept once its bytes are gone.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub tensor: ImageTensor,
    /// Size after EXIF orientation, before resizing.
    pub width: u32,
    pub height: u32,
    /// The sniffed container format.
    pub format: ImageKind,
}

/// What to generate for one image: its task and bounds, validated against the [`ModelCard`]
/// before they reach a model (`describe::request`); families only `debug_assert` them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationOptions {
    pub task: Task,
    pub max_new_tokens: usize,
    /// 1 = greedy.
    pub num_beams: usize,
    /// Sampling instead of the most likely token, where the family supports it.
    pub sampling: Option<generate::sample::Sampling>,
}

/// One image to describe.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub image: ImageTensor,
    pub options: GenerationOptions,
}

/// A description and how it came about.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    /// Decoder tokens, start token included.
    pub token_ids: Vec<i64>,
    pub finish_reason: FinishReason,
}

impl Generated {
    /// Tokens the model produced (start token excluded).
    pub fn generated_tokens(&self) -> usize {
        self.token_ids.len().saturating_sub(1)
    }
}

/// Where a batch's time went, for metrics and benchmarks. The stages are the metric's `stage`
/// label: the vision tower, the prompt pass (Florence-2's encoder), the decode loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub vision: Duration,
    pub encoder: Duration,
    pub decode: Duration,
    pub decode_steps: usize,
    /// Part of `decode` spent reordering the cache (rows leaving or joining, beams).
    pub reorder: Duration,
}

/// What the layers above need to know of a loaded model, fixed at load.
#[derive(Clone)]
pub struct ModelCard {
    pub family: Family,
    /// The largest `max_new_tokens` a request may ask for.
    pub max_new_tokens: usize,
    /// The widest beam search the family runs.
    pub max_num_beams: usize,
    pub capabilities: Capabilities,
    pub frontend: Arc<dyn Frontend>,
}

impl std::fmt::Debug for ModelCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCard")
            .field("family", &self.family)
            .field("max_new_tokens", &self.max_new_tokens)
            .field("max_num_beams", &self.max_num_beams)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// The part of a family that runs beside its sessions, on any thread: preparing images (on the
/// blocking pool, while the model works) and sizing requests for the batcher.
pub trait Frontend: Send + Sync {
    /// Bytes in memory to the family's tensor; the bytes are only read.
    fn prepare(&self, bytes: &[u8], limits: &ImageLimits) -> Result<Prepared, PreprocessError>;

    /// Decoder positions a request's prompt takes, for the batch token budget.
    fn prompt_len(&self, task: &Task, image: &ImageTensor) -> usize;

    /// `max_new_tokens` when a request gives none: enough for the detail level, bounded so one
    /// request cannot hold a batch for long.
    fn default_max_new_tokens(&self, task: &Task) -> usize;
}

/// One loaded model instance of some family: its sessions and its generation. Owned by one
/// thread (an engine worker, the CLI); never shared.
pub trait Captioner: Send {
    fn card(&self) -> &ModelCard;

    /// An image of the largest size the model takes, for warm-up.
    fn blank_image(&self) -> ImageTensor;

    /// Describes a batch, asking `is_cancelled(i)` between decode steps: a cancelled request's
    /// rows leave the batch, and its result is `FinishReason::Cancelled` with empty text.
    /// Results come in request order.
    fn generate_with(
        &mut self,
        requests: &[GenerationRequest],
        is_cancelled: &mut dyn FnMut(usize) -> bool,
    ) -> Result<(Vec<Generated>, StageTimings), ModelError>;

    /// [`Captioner::generate_with`] without cancellation or timings.
    fn generate(&mut self, requests: &[GenerationRequest]) -> Result<Vec<Generated>, ModelError> {
        self.generate_with(requests, &mut |_| false)
            .map(|(results, _)| results)
    }
}
