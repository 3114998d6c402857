//! The describe service, between the surfaces that take describe requests (the HTTP routes, the
//! CLI, bulk jobs) and the engine: one validation stage (`request`), and describe-and-store
//! (`service`): the `Idempotency-Key` claim (`idempotency`), admission, the image fetched and
//! hashed once, the engine, and the stored description with its usage row. `context` bounds
//! product data; `outputs` fits the model's text to each output.

pub mod context;
mod idempotency;
pub mod lint;
pub mod outputs;
pub mod request;
pub mod review;
pub mod service;

pub use context::ContextOptions;
pub use request::{
    DescribeOptions, DescribeRequest, ImageSource, ValidDescribeRequest, ValidationError, Validator,
};
pub use service::{Answer, Call, DescribeService, Described, Rendered, ServedModel};

use crate::engine::EngineError;
use crate::fetch::ImageUrlError;
use crate::store::StoreError;

/// Why a description was not made. Each layer's own error is kept whole, so the HTTP layer's
/// one table maps it to its status.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The image is larger than `--max-image-bytes`.
    #[error("the image has {bytes} bytes; the limit is {limit} (--max-image-bytes)")]
    ImageTooLarge { bytes: usize, limit: u64 },
    #[error(transparent)]
    Fetch(#[from] ImageUrlError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this Idempotency-Key was used with a different request in the last 24 hours; use a new key"
    )]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still running; retry after it finishes")]
    IdempotencyKeyInUse,
}
