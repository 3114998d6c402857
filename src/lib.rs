//! altimage: alt text and product descriptions for e-commerce images, from Florence-2 on ONNX Runtime.

pub mod config;
pub mod describe;
pub mod model;
