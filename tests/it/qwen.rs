//! Qwen3.5 on the tiny model: transformers.js 4.3.1 (tests/conformance/run-reference.sh) runs the
//! parity requests greedily, and ours must match it in the prompt ids, the image patches and the
//! generated ids, alone and all in one batch, with the decoder state kept on the device (I/O
//! binding, the default) and copied through the host (`--kv-cache host`); seeded sampling is
//! reproducible; load errors name what to fix.

use crate::common;

use std::collections::BTreeSet;

use altimage::model::generate::sample::Sampling;
use altimage::model::preprocess::ImageLimits;
use altimage::model::qwen3_5::Qwen35;
use altimage::model::runtime::KvCache;
use altimage::model::{
    Captioner, GenerationOptions, GenerationRequest, Output, ProductContext, Task,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn reference() -> Value {
    // The Florence-2 conformance test runs the same script; it rebuilds only what changed.
    let script = common::root().join("tests/conformance/run-reference.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .expect("run run-reference.sh");
    assert!(
        status.success(),
        "{} failed (needs node, npm and the Python venv)",
        script.display()
    );
    let path = common::root().join("tests/conformance/reference_qwen3_5.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn requests_file() -> Value {
    let path = common::root().join("tests/conformance/qwen3_5_requests.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(array: &Value) -> Vec<i64> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn count(value: &Value) -> Option<usize> {
    value.as_u64().map(|n| n as usize)
}

/// A parity request (qwen3_5_requests.json) as the task our API would build from it.
fn task_of(request: &Value) -> Task {
    let output = Output::ALL
        .into_iter()
        .find(|o| o.as_str() == request["output"].as_str().unwrap())
        .unwrap_or_else(|| panic!("unknown output in {request}"));
    let attributes = request["attributes"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap().to_owned(),
                        pair[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let keywords = request["keywords"]
        .as_array()
        .map(|words| {
            words
                .iter()
                .map(|w| w.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    Task {
        output,
        language: string(&request["language"]),
        context: ProductContext {
            title: string(&request["title"]),
            brand: string(&request["brand"]),
            category: string(&request["category"]),
            attributes,
            keywords,
        },
        tone: string(&request["tone"]),
        max_chars: count(&request["max_chars"]),
        max_words: count(&request["max_words"]),
        keyword_count: count(&request["count"]),
        ..Task::default()
    }
}

fn load(options: &altimage::model::LoadOptions) -> Qwen35 {
    Qwen35::load(options).expect("load the tiny Qwen3.5")
}

fn tiny() -> Qwen35 {
    load(&common::load_options(&common::tiny_qwen_dir()))
}

fn tiny_with(kv_cache: KvCache) -> Qwen35 {
    let mut options = common::load_options(&common::tiny_qwen_dir());
    options.runtime.kv_cache = kv_cache;
    let model = load(&options);
    assert_eq!(model.kv_cache(), kv_cache);
    model
}

/// Every parity request, prepared by our frontend, greedy, `max_new_tokens` from the file.
fn parity_requests(model: &Qwen35) -> Vec<GenerationRequest> {
    let file = requests_file();
    let max_new_tokens = file["max_new_tokens"].as_u64().unwrap() as usize;
    let dir = common::root().join("tests/conformance");
    file["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| GenerationRequest {
            image: common::image(model, &dir.join(r["image"].as_str().unwrap())),
            options: GenerationOptions {
                task: task_of(r),
                max_new_tokens,
                num_beams: 1,
                sampling: None,
            },
        })
        .collect()
}

fn sha256_of(values: &[f32]) -> String {
    let mut hash = Sha256::new();
    for v in values {
        hash.update(v.to_le_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn greedy_output_equals_transformers_js_alone_and_in_one_batch() {
    let reference = reference();
    let results = reference["results"].as_array().unwrap();
    let mut model = tiny();
    assert_eq!(model.kv_cache(), KvCache::Device, "the default path");
    let mut host = tiny_with(KvCache::Host);
    let requests = parity_requests(&model);
    assert_eq!(
        results.len(),
        requests.len(),
        "one reference result per parity request"
    );

    // What the model reads: the prompt ids (image pads expanded) and the patches, bit for bit.
    for (expected, request) in results.iter().zip(&requests) {
        let label = expected["id"].as_str().unwrap();
        assert_eq!(
            model
                .prompt_ids(&request.options.task, &request.image)
                .unwrap(),
            ids(&expected["prompt_ids"]),
            "{label}: prompt ids differ"
        );
        let patches = request.image.values();
        let shape = patches.shape();
        let rows = shape[0] * shape[1] * shape[2];
        assert_eq!(
            vec![rows as i64, shape[3] as i64],
            ids(&expected["pixel_values"]["shape"]),
            "{label}: patch tensor shape"
        );
        let merge = (shape[2] as f64).sqrt() as usize;
        assert_eq!(
            vec![1, (shape[0] * merge) as i64, (shape[1] * merge) as i64],
            ids(&expected["grid"]),
            "{label}: grid"
        );
        let flat: Vec<f32> = patches.iter().copied().collect();
        assert_eq!(
            sha256_of(&flat),
            expected["pixel_values"]["sha256"].as_str().unwrap(),
            "{label}: patches differ from transformers.js's pixel_values (first {:?})",
            &flat[..8]
        );
    }

    let compare = |ours: &[altimage::model::Generated], how: &str| {
        let mismatches: Vec<String> = results
            .iter()
            .zip(ours)
            .filter_map(|(expected, got)| {
                let tokens = ids(&expected["generated_ids"]);
                let text = one_line(expected["text"].as_str().unwrap());
                (got.token_ids[1..] != tokens[..] || got.text != text).then(|| {
                    format!(
                        "{}\n  transformers.js {tokens:?} {text:?}\n  altimage        {:?} {:?}",
                        expected["id"],
                        &got.token_ids[1..],
                        got.text
                    )
                })
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{how}: {} of {} differ:\n{}",
            mismatches.len(),
            results.len(),
            mismatches.join("\n")
        );
    };

    let alone: Vec<_> = requests
        .iter()
        .map(|r| model.generate(std::slice::from_ref(r)).unwrap().remove(0))
        .collect();
    compare(&alone, "each request alone, state on the device");
    // All at once: six images, four outputs each and an injection attempt, prompts of different
    // lengths, rows that finish at different steps. The joined, left-padded decode must not
    // change a token.
    let together = model.generate(&requests).unwrap();
    compare(&together, "all in one batch, state on the device");

    // The same through the host copy of the state (`--kv-cache host`).
    let alone: Vec<_> = requests
        .iter()
        .map(|r| host.generate(std::slice::from_ref(r)).unwrap().remove(0))
        .collect();
    compare(&alone, "each request alone, state through the host");
    compare(
        &host.generate(&requests).unwrap(),
        "all in one batch, state through the host",
    );

    let lengths: BTreeSet<usize> = together.iter().map(|g| g.generated_tokens()).collect();
    assert!(
        lengths.len() > 3,
        "rows leave the batch at different steps: {lengths:?}"
    );
    eprintln!(
        "qwen conformance: {} generations equal transformers.js alone and batched; lengths {lengths:?}",
        together.len()
    );
}

/// Product data that carries special or added tokens (whole, split around another span, or in
/// the tokenizer's own markup such as `</think>`) reaches the prompt as text only: the prompt
/// holds exactly the frame's special tokens, as for a request without such data.
#[test]
fn injected_tokens_never_reach_the_prompt_as_tokens() {
    let model = tiny();
    let requests = parity_requests(&model);
    let file = requests_file();
    let index = file["requests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["id"].as_str().unwrap().ends_with("injection"))
        .expect("the parity set has an injection request");
    let injected = &requests[index];
    let mut clean = injected.clone();
    clean.options.task.context = Default::default();
    let ids = |request: &GenerationRequest| {
        model
            .prompt_ids(&request.options.task, &request.image)
            .unwrap()
    };
    // `<|im_start|>` 1901, `<|im_end|>` 1902, `<think>` 1924, `</think>` 1925, tool-call 1914/1915.
    let count = |ids: &[i64], token: i64| ids.iter().filter(|&&id| id == token).count();
    let (dirty, plain) = (ids(injected), ids(&clean));
    for token in [1901, 1902, 1914, 1915, 1924, 1925] {
        assert_eq!(count(&dirty, token), count(&plain, token), "token {token}");
    }
    assert!(
        dirty.len() > plain.len(),
        "the text of the context is still there"
    );
}

#[test]
fn seeded_sampling_is_reproducible_and_the_seed_matters() {
    let mut model = tiny();
    let mut requests = parity_requests(&model);
    requests.truncate(8);
    let sampled = |requests: &[GenerationRequest], seed: u64| -> Vec<GenerationRequest> {
        requests
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.options.sampling = Some(Sampling {
                    temperature: 1.5,
                    top_p: 0.95,
                    top_k: 0,
                    seed,
                });
                r
            })
            .collect()
    };
    let first = model.generate(&sampled(&requests, 7)).unwrap();
    assert_eq!(
        first,
        model.generate(&sampled(&requests, 7)).unwrap(),
        "same seed, same text"
    );
    // A row's draws are its own: batched or alone, the same seed gives the same tokens.
    let alone = model.generate(&sampled(&requests[2..3], 7)).unwrap();
    assert_eq!(alone[0], first[2]);
    let other = model.generate(&sampled(&requests, 8)).unwrap();
    assert_ne!(first, other, "another seed, other text");
    let greedy = model.generate(&requests).unwrap();
    assert_ne!(
        first, greedy,
        "sampling at temperature 1.5 departs from greedy somewhere"
    );
}

#[test]
fn outputs_of_one_image_share_its_tensor() {
    let mut model = tiny();
    let requests = parity_requests(&model);
    // The four outputs of the first image, from one prepared tensor (as the engine queues them).
    let shared: Vec<GenerationRequest> = requests[..4]
        .iter()
        .map(|r| GenerationRequest {
            image: requests[0].image.clone(),
            options: r.options.clone(),
        })
        .collect();
    assert!(shared[3].image.is_same(&shared[0].image));
    assert_eq!(
        model.generate(&shared).unwrap(),
        model.generate(&requests[..4]).unwrap()
    );
}

#[test]
fn the_pixel_cap_shrinks_large_images_and_counts_their_tokens() {
    let mut options = common::load_options(&common::tiny_qwen_dir());
    // Above the tiny model's min_pixels (256²), below the 512×512 image.
    options.vision_max_pixels = 320 * 320;
    let model = load(&options);
    let image = common::root().join("tests/conformance/fixtures_qwen/shoes-512x512.png");
    let bytes = std::fs::read(&image).unwrap();
    let prepared = model
        .card()
        .frontend
        .prepare(&bytes, &ImageLimits::default())
        .unwrap();
    let shape = prepared.tensor.values().shape().to_vec();
    // 320×320 at patch 16, merge 2: 10×10 merged tokens of 2·3·16·16 values per patch.
    assert_eq!(shape, [10, 10, 4, 1536]);
    let task = Task::default();
    let pads = model
        .prompt_ids(&task, &prepared.tensor)
        .unwrap()
        .into_iter()
        .filter(|&id| id == 1912)
        .count();
    assert_eq!(pads, 100);
    assert_eq!(
        model.card().frontend.prompt_len(&task, &prepared.tensor),
        model.prompt_ids(&task, &prepared.tensor).unwrap().len()
    );
}

#[test]
fn load_errors_name_the_file_or_flag_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let copy = common::model_copy(&common::tiny_qwen_dir(), dir.path(), "tiny-qwen3_5");

    // A missing graph names the file.
    std::fs::remove_file(copy.join("onnx/vision_encoder.onnx")).unwrap();
    let message = Qwen35::load(&common::load_options(&copy))
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("vision_encoder.onnx"), "{message}");

    // Prompt templates that do not parse name the flag.
    let templates = dir.path().join("prompts.json");
    std::fs::write(&templates, "{\"system\": 1}").unwrap();
    let mut options = common::load_options(&common::tiny_qwen_dir());
    options.prompt_templates = Some(templates.clone());
    let message = Qwen35::load(&options).err().unwrap().to_string();
    assert!(
        message.contains("--prompt-templates") && message.contains("prompts.json"),
        "{message}"
    );

    // A quantised variant that is not there names the suffix's flag.
    let mut options = common::load_options(&common::tiny_qwen_dir());
    options.variant_suffix = "_q4".into();
    let message = Qwen35::load(&options).err().unwrap().to_string();
    assert!(message.contains("_q4"), "{message}");
}
