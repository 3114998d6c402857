//! Shared test support: the project paths, the ONNX Runtime library and the tiny model.
#![allow(dead_code)]

pub mod cdp;
/// Running helper commands, shared with the load bench.
#[path = "../../support/command.rs"]
pub mod command;
pub mod db;
pub mod server;
/// The server-process harness shared with the load bench.
#[path = "../../support/server.rs"]
pub mod server_process;
pub mod stripe_fake;

use std::path::{Path, PathBuf};

use altimage::model::florence2::Florence2;
use altimage::model::preprocess::ImageLimits;
use altimage::model::runtime::{self, Device, RuntimeOptions};
use altimage::model::{Captioner, Detail, GenerationOptions, GenerationRequest, ImageTensor};
use altimage::model::{LoadOptions, Task};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    root().join("models/tiny-florence2")
}

/// The committed tiny Qwen3.5 (models/tools/make_qwen3_5.py).
pub fn tiny_qwen_dir() -> PathBuf {
    root().join("models/tiny-qwen3_5")
}

pub fn fixtures_dir() -> PathBuf {
    root().join("tests/conformance/fixtures")
}

/// The library `make test` installs (scripts/install-ort.sh), or ORT_DYLIB_PATH.
pub fn ort_library() -> PathBuf {
    let env_path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let (path, _) = runtime::find_library(
        None,
        env_path.as_deref(),
        &root().join(".cache"),
        Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{e} (make test installs it)"));
    path
}

pub fn load_options(model_dir: &Path) -> LoadOptions {
    LoadOptions {
        model_dir: model_dir.to_path_buf(),
        library: ort_library(),
        // Two threads keep parallel test binaries from oversubscribing the CI machine.
        runtime: RuntimeOptions {
            intra_threads: 2,
            ..RuntimeOptions::default()
        },
        variant_suffix: String::new(),
        vision_batch_size: 0,
        vision_max_pixels: 262_144,
        prompt_templates: None,
    }
}

pub fn tiny_model() -> Florence2 {
    Florence2::load(&load_options(&tiny_model_dir())).expect("load the tiny model")
}

/// A copy of the model directory `from` (its files and `onnx/`) in `parent/name`, to break.
pub fn model_copy(from: &Path, parent: &Path, name: &str) -> PathBuf {
    let to = parent.join(name);
    std::fs::create_dir_all(to.join("onnx")).unwrap();
    for dir in ["", "onnx"] {
        for entry in std::fs::read_dir(from.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(dir).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    to
}

pub fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
}

/// The bytes of conformance fixture `index` (sorted by name).
pub fn fixture(index: usize) -> Vec<u8> {
    std::fs::read(&fixture_files()[index]).unwrap()
}

/// A file prepared the way the model's family prepares it.
pub fn image(model: &dyn Captioner, file: &Path) -> ImageTensor {
    let bytes = std::fs::read(file).unwrap();
    model
        .card()
        .frontend
        .prepare(&bytes, &ImageLimits::default())
        .unwrap()
        .tensor
}

/// A request for `file` at `detail`, greedy unless `num_beams` says otherwise.
pub fn request(
    model: &dyn Captioner,
    file: &Path,
    detail: Detail,
    max_new_tokens: usize,
    num_beams: usize,
) -> GenerationRequest {
    GenerationRequest {
        image: image(model, file),
        options: GenerationOptions {
            task: Task {
                detail,
                ..Task::default()
            },
            max_new_tokens,
            num_beams,
            sampling: None,
        },
    }
}

/// The project's Python (pinned venv), created by scripts/python-env.sh.
pub fn python() -> PathBuf {
    script_output_path("scripts/python-env.sh")
}

/// Runs `bash <script>` (a path under the project root) and reads the path it prints.
pub fn script_output_path(script: &str) -> PathBuf {
    let mut command = std::process::Command::new("bash");
    command.arg(root().join(script));
    PathBuf::from(command::text_of(&mut command, script).trim())
}

/// CRC-32 (IEEE), for forging PNG chunks.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
