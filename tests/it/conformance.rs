//! Conformance with the reference implementation: transformers.js 4.3.1 runs the tiny model over
//! the 768×768 fixtures (tests/conformance/run-reference.sh); our greedy output must equal its
//! output token for token, and the cleaned text must match.

use crate::common;

use altimage::model::florence2::task_token;
use altimage::model::{Captioner, Detail, GenerationRequest};
use serde_json::Value;

fn reference() -> Value {
    let script = common::root().join("tests/conformance/run-reference.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .expect("run run-reference.sh");
    assert!(
        status.success(),
        "{} failed (needs node and npm)",
        script.display()
    );
    let text =
        std::fs::read_to_string(common::root().join("tests/conformance/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON array of token ids.
fn ids(array: &Value) -> Vec<i64> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn detail_of(task: &str) -> Detail {
    Detail::ALL
        .into_iter()
        .find(|&d| task_token(d) == task)
        .unwrap_or_else(|| panic!("unknown task {task}"))
}

#[test]
fn greedy_output_equals_transformers_js_token_for_token() {
    let reference = reference();
    let max_new_tokens = reference["max_new_tokens"].as_u64().unwrap() as usize;
    let results = reference["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        common::fixture_files().len() * 3,
        "every fixture × every caption task"
    );

    let mut model = common::tiny_model();
    let requests: Vec<GenerationRequest> = results
        .iter()
        .map(|r| {
            common::request(
                &model,
                &common::fixtures_dir().join(r["file"].as_str().unwrap()),
                detail_of(r["task"].as_str().unwrap()),
                max_new_tokens,
                1,
            )
        })
        .collect();
    // All 18 in one batch: conformance must hold for batched generation too.
    let ours = model.generate(&requests).unwrap();

    let mut mismatches = Vec::new();
    for ((expected, got), request) in results.iter().zip(&ours).zip(&requests) {
        let label = format!("{} {}", expected["file"], expected["task"]);
        let prompt = ids(&expected["prompt_ids"]);
        assert_eq!(
            model.prompt_ids(request.options.task.detail),
            prompt.as_slice(),
            "{label}: prompt ids differ"
        );
        let tokens = ids(&expected["token_ids"]);
        let text = expected["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if got.token_ids != tokens || got.text != text {
            mismatches.push(format!(
                "{label}\n  transformers.js {tokens:?} {text:?}\n  altimage        {:?} {:?}",
                got.token_ids, got.text
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        results.len(),
        mismatches.join("\n")
    );
    let lengths: std::collections::BTreeSet<usize> =
        ours.iter().map(|g| g.token_ids.len()).collect();
    eprintln!(
        "conformance: {} generations equal transformers.js; lengths {lengths:?}",
        ours.len()
    );
}
