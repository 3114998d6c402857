//! The GPU path as far as a CPU-only machine can check it: `--device cuda:N` fails loudly with the
//! CPU-only ONNX Runtime (never a silent CPU run), the device id, arena cap, dtype and KV-cache
//! flags reach the load options, `--dtype fp16` picks the `_fp16` files or names the missing one,
//! and the I/O-binding decoders (cache kept where the session made it, beams reordered and rows
//! dropped by a Gather session, Qwen3.5's prefilled rows joined by a Pad/Concat session) give
//! exactly the tokens of the host-copy path.

use crate::common;

use std::path::Path;

use altimage::cli::{Cli, Command};
use altimage::model::florence2::{Florence2, default_max_new_tokens};
use altimage::model::generate::FinishReason;
use altimage::model::qwen3_5::Qwen35;
use altimage::model::runtime::{Device, KvCache};
use altimage::model::{
    Captioner, Detail, GenerationOptions, GenerationRequest, ModelError, Output, Task,
};
use clap::Parser;

fn request(model: &Florence2, file: &Path, detail: Detail, beams: usize) -> GenerationRequest {
    common::request(model, file, detail, default_max_new_tokens(detail), beams)
}

fn load(kv_cache: KvCache) -> Florence2 {
    let mut options = common::load_options(&common::tiny_model_dir());
    options.runtime.kv_cache = kv_cache;
    Florence2::load(&options).expect("load the tiny model")
}

#[test]
fn io_binding_cache_gives_the_tokens_of_the_host_copy_path() {
    let mut device = load(KvCache::Device);
    let mut host = load(KvCache::Host);
    assert_eq!(device.kv_cache(), KvCache::Device);
    assert_eq!(host.kv_cache(), KvCache::Host);
    let files = common::fixture_files();
    // Greedy rows that finish at different steps (rows leave: a gather), beams (a gather every
    // step), a short limit, all in one batch; then each greedy image alone (no gather at all).
    let mut batch = vec![
        request(&device, &files[0], Detail::Brief, 1),
        request(&device, &files[1], Detail::Detailed, 3),
        request(&device, &files[2], Detail::Paragraph, 1),
        request(&device, &files[3 % files.len()], Detail::Brief, 2),
    ];
    batch[2].options.max_new_tokens = 5;
    let on_device = device.generate(&batch).unwrap();
    let on_host = host.generate(&batch).unwrap();
    assert_eq!(on_device, on_host);
    for single in [&batch[0], &batch[2]] {
        let on_device = device.generate(std::slice::from_ref(single)).unwrap();
        let on_host = host.generate(std::slice::from_ref(single)).unwrap();
        assert_eq!(on_device, on_host);
    }
}

fn load_qwen(kv_cache: KvCache) -> Qwen35 {
    let mut options = common::load_options(&common::tiny_qwen_dir());
    options.runtime.kv_cache = kv_cache;
    let model = Qwen35::load(&options).expect("load the tiny Qwen3.5");
    assert_eq!(model.kv_cache(), kv_cache);
    model
}

/// Every Qwen3.5 fixture image with each output in turn, greedy, limits from 2 to 13 tokens, so
/// rows are prefilled to different lengths and leave the batch at different steps.
fn qwen_requests(model: &Qwen35) -> Vec<GenerationRequest> {
    let dir = common::root().join("tests/conformance/fixtures_qwen");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .enumerate()
        .map(|(i, file)| GenerationRequest {
            image: common::image(model, file),
            options: GenerationOptions {
                task: Task {
                    output: Output::ALL[i % Output::ALL.len()],
                    ..Task::default()
                },
                max_new_tokens: 2 + (i * 5) % 12,
                num_beams: 1,
                sampling: None,
            },
        })
        .collect()
}

#[test]
fn qwen_rows_leave_mid_batch_on_the_device_as_on_the_host() {
    let mut device = load_qwen(KvCache::Device);
    let mut host = load_qwen(KvCache::Host);
    let requests = qwen_requests(&device);
    assert!(requests.len() >= 6);
    // Request 1's caller leaves at its 3rd poll, request 4's at its 6th: between decode steps,
    // while other rows still run and others already left.
    let cancelling = || {
        let mut polls = vec![0usize; requests.len()];
        move |request: usize| {
            polls[request] += 1;
            matches!((request, polls[request]), (1, 3..) | (4, 6..))
        }
    };
    let (on_device, timings) = device.generate_with(&requests, &mut cancelling()).unwrap();
    let (on_host, _) = host.generate_with(&requests, &mut cancelling()).unwrap();
    assert_eq!(on_device, on_host);
    assert!(timings.decode_steps > 0);
    for (i, (request, got)) in requests.iter().zip(&on_device).enumerate() {
        if i == 1 || i == 4 {
            assert_eq!(got.finish_reason, FinishReason::Cancelled, "request {i}");
            assert!(got.text.is_empty(), "request {i}");
            continue;
        }
        // The rows that stayed were gathered around the ones that left: still their own tokens.
        let alone = device.generate(std::slice::from_ref(request)).unwrap();
        assert_eq!(got, &alone[0], "request {i}: batched differs from alone");
    }
    let lengths: std::collections::BTreeSet<usize> =
        on_device.iter().map(|g| g.generated_tokens()).collect();
    assert!(
        lengths.len() >= 3,
        "rows leave at different steps: {lengths:?}"
    );
}

#[test]
fn cuda_with_the_cpu_only_runtime_is_an_error_not_a_cpu_run() {
    let mut options = common::load_options(&common::tiny_model_dir());
    options.runtime.device = Device::Cuda(1);
    options.runtime.cuda_mem_limit = 256 << 20;
    let err = match Florence2::load(&options) {
        Ok(_) => panic!("CUDA on the CPU-only ONNX Runtime loaded: a silent CPU fall-back"),
        Err(e) => e,
    };
    assert!(matches!(err, ModelError::Device(_)), "{err:?}");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        message.contains("cannot use CUDA device cuda:1"),
        "{message}"
    );
    assert!(message.contains("--device cpu"), "{message}");
    assert!(message.contains("install-ort.sh cuda"), "{message}");
}

#[test]
fn dtype_fp16_takes_the_fp16_files_or_names_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::tiny_model_dir();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("onnx")).unwrap();
    for graph in ["vision_encoder", "embed_tokens", "encoder_model"] {
        std::fs::copy(
            source.join(format!("onnx/{graph}.onnx")),
            dir.path().join(format!("onnx/{graph}_fp16.onnx")),
        )
        .unwrap();
    }
    let mut options = common::load_options(dir.path());
    options.variant_suffix = "_fp16".into();
    let err = Florence2::load(&options)
        .err()
        .expect("a missing fp16 decoder");
    let message = err.to_string();
    assert!(
        message.contains("onnx/decoder_model_merged_fp16.onnx"),
        "{message}"
    );

    // The same graph under the fp16 name: the fp16 files are the ones loaded (there is no fp32
    // decoder in this folder at all).
    std::fs::copy(
        source.join("onnx/decoder_model_merged.onnx"),
        dir.path().join("onnx/decoder_model_merged_fp16.onnx"),
    )
    .unwrap();
    Florence2::load(&options).expect("the fp16 files load");
}

#[test]
fn device_flags_reach_the_load_options() {
    let library = common::ort_library();
    let parse = |extra: &[&str]| {
        let mut args = vec![
            "altimage",
            "describe",
            "--model-dir",
            "models/tiny-florence2",
            "--ort-library",
            library.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push("image.png");
        match Cli::try_parse_from(args).unwrap().command {
            Command::Describe(describe) => describe.model.load_options().unwrap(),
            _ => unreachable!(),
        }
    };
    let defaults = parse(&[]);
    assert_eq!(defaults.runtime.device, Device::Cpu);
    assert_eq!(defaults.runtime.cuda_mem_limit, 0);
    assert_eq!(defaults.runtime.kv_cache, KvCache::Device);
    assert_eq!(defaults.variant_suffix, "");

    let cuda = parse(&[
        "--device",
        "cuda:2",
        "--cuda-memory-limit-mb",
        "1536",
        "--dtype",
        "fp16",
        "--kv-cache",
        "host",
    ]);
    assert_eq!(cuda.runtime.device, Device::Cuda(2));
    assert_eq!(cuda.runtime.cuda_mem_limit, 1536 * 1024 * 1024);
    assert_eq!(cuda.runtime.kv_cache, KvCache::Host);
    assert_eq!(cuda.variant_suffix, "_fp16");
}
