//! Everything that knows Florence-2: the ONNX Runtime library, preprocessing, prompts, the four
//! sessions and generation.

pub mod config;
pub mod florence2;
pub mod generate;
pub mod kv_cache;
pub mod logits;
pub mod preprocess;
pub mod prompts;
pub mod runtime;
pub mod signature;
pub mod text;

use std::path::PathBuf;

pub use florence2::{Florence2, Generated, GenerationRequest};
pub use prompts::Detail;
pub use runtime::{Device, RuntimeOptions};

/// Errors of loading or running the model. Load-time messages name the file or flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    RuntimeLibrary(String),
    #[error("{0}")]
    Device(String),
    #[error("model directory {dir}: {message}")]
    ModelDir { dir: PathBuf, message: String },
    #[error("cannot load {file}: {message}")]
    Session { file: PathBuf, message: String },
    #[error("{file} does not fit the Florence-2 export contract: {message}")]
    Signature { file: PathBuf, message: String },
    #[error("inference failed in {stage}: {message}")]
    Inference {
        stage: &'static str,
        message: String,
    },
    #[error("invalid generation request: {0}")]
    InvalidRequest(String),
}

impl ModelError {
    pub(crate) fn inference(stage: &'static str) -> impl Fn(ort::Error) -> ModelError {
        move |e| ModelError::Inference {
            stage,
            message: e.to_string(),
        }
    }
}
