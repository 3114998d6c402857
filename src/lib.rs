//! altimage: alt text and product descriptions for e-commerce images, from Florence-2 on ONNX Runtime.

pub mod billing;
pub mod cli;
pub mod console;
pub mod describe;
pub mod engine;
pub mod fetch;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod strings;
