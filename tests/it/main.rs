//! The one integration-test binary. Each `tests/*.rs` file used to be its own binary, and each
//! binary links the whole crate and its dependencies again: minutes on a 2-core machine. Here
//! every former file is a module (`cargo test accounts_http::` runs one of them), and they share
//! `common` (the tiny model, the server process, test databases, the Stripe fake).

mod common;

mod accounts_cli;
mod accounts_http;
mod billing;
mod conformance;
mod console;
mod contract;
mod deploy;
mod describe_cli;
mod device_path;
mod edge;
mod fetch_model;
mod image_url;
mod jobs;
mod lint;
mod model;
mod model_generator;
mod preprocess;
mod privacy;
mod product_copy;
mod qwen;
mod readme_flags;
mod security;
mod serve_failures;
mod serve_http;
mod store;
