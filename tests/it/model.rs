//! The pipeline on the tiny model: determinism, batch invariance, finished rows leaving the batch,
//! beam search, and clear load errors for model directories that do not fit.

use crate::common;

use std::path::{Path, PathBuf};

use altimage::model::florence2::Florence2;
use altimage::model::generate::FinishReason;
use altimage::model::{Captioner, Detail, GenerationRequest};

fn request(model: &Florence2, file: &Path, detail: Detail) -> GenerationRequest {
    common::request(model, file, detail, 48, 1)
}

/// One request per file, all at `detail`.
fn requests(model: &Florence2, files: &[PathBuf], detail: Detail) -> Vec<GenerationRequest> {
    files.iter().map(|f| request(model, f, detail)).collect()
}

#[test]
fn describes_each_fixture_deterministically_and_differently() {
    let mut model = common::tiny_model();
    let files = common::fixture_files();
    let requests = requests(&model, &files, Detail::Brief);
    let first = model.generate(&requests).unwrap();
    let second = model.generate(&requests).unwrap();
    assert_eq!(first, second, "same input, same output");
    for generated in &first {
        // decoder start, forced BOS, at least one real token.
        assert_eq!(&generated.token_ids[..2], &[2, 0]);
        assert!(generated.generated_tokens() >= 2, "{generated:?}");
        assert!(!generated.text.is_empty(), "{generated:?}");
    }
    let distinct: std::collections::HashSet<&str> = first.iter().map(|g| g.text.as_str()).collect();
    assert!(
        distinct.len() >= files.len() - 1,
        "images should give different captions: {distinct:?}"
    );
}

#[test]
fn each_image_alone_equals_the_same_image_in_a_mixed_batch_of_eight() {
    let mut model = common::tiny_model();
    let files = common::fixture_files();
    let details = [Detail::Brief, Detail::Detailed, Detail::Paragraph];
    // 8 rows: every fixture, two repeated, with mixed details (different prompt lengths → padding).
    let batch: Vec<GenerationRequest> = (0..8)
        .map(|i| request(&model, &files[i % files.len()], details[i % details.len()]))
        .collect();
    let together = model.generate(&batch).unwrap();
    let lengths: std::collections::HashSet<usize> =
        together.iter().map(|g| g.token_ids.len()).collect();
    assert!(
        lengths.len() > 1,
        "captions of varied length exercise rows leaving the batch: {lengths:?}"
    );
    for (row, expected) in batch.iter().zip(&together) {
        let alone = model.generate(std::slice::from_ref(row)).unwrap();
        assert_eq!(
            &alone[0], expected,
            "row with detail {:?} differs alone vs batched",
            row.options.task.detail
        );
    }
    // The vision encoder batched too (as on a GPU), not only the encoder and decoder.
    let mut options = common::load_options(&common::tiny_model_dir());
    options.vision_batch_size = 8;
    let mut vision_batched = Florence2::load(&options).unwrap();
    assert_eq!(vision_batched.generate(&batch).unwrap(), together);
}

#[test]
fn max_new_tokens_forces_the_end() {
    let mut model = common::tiny_model();
    let file = &common::fixture_files()[0];
    let mut short = request(&model, file, Detail::Paragraph);
    short.options.max_new_tokens = 3;
    let generated = model.generate(&[short]).unwrap().remove(0);
    assert_eq!(generated.generated_tokens(), 3, "{generated:?}");
    assert_eq!(
        *generated.token_ids.last().unwrap(),
        2,
        "EOS is forced at the limit"
    );
    assert_eq!(generated.finish_reason, FinishReason::Length);
}

#[test]
fn beam_search_runs_beside_greedy_rows() {
    let mut model = common::tiny_model();
    let files = common::fixture_files();
    let mut beam = request(&model, &files[1], Detail::Brief);
    beam.options.num_beams = 3;
    let greedy = request(&model, &files[2], Detail::Detailed);
    let mixed = model.generate(&[beam.clone(), greedy.clone()]).unwrap();
    let beam_alone = model.generate(std::slice::from_ref(&beam)).unwrap();
    let greedy_alone = model.generate(std::slice::from_ref(&greedy)).unwrap();
    assert_eq!(mixed[0], beam_alone[0]);
    assert_eq!(mixed[1], greedy_alone[0]);
    assert_eq!(&mixed[0].token_ids[..2], &[2, 0]);
    assert!(!mixed[0].text.is_empty());
}

#[test]
fn cancelled_rows_stop_and_others_are_unaffected() {
    let mut model = common::tiny_model();
    let files = common::fixture_files();
    let requests = requests(&model, &files[..3], Detail::Paragraph);
    let full = model.generate(&requests).unwrap();
    let (partial, _) = model.generate_with(&requests, &mut |row| row == 1).unwrap();
    assert_eq!(partial[1].finish_reason, FinishReason::Cancelled);
    assert_eq!(partial[0], full[0]);
    assert_eq!(partial[2], full[2]);
}

/// A copy of the tiny model in `parent/name`, to break.
fn model_copy(parent: &Path, name: &str) -> PathBuf {
    common::model_copy(&common::tiny_model_dir(), parent, name)
}

/// Through the family seam, as the server and the CLI load.
fn load_error(dir: &Path) -> String {
    match altimage::model::load(&common::load_options(dir)) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Asserts that the model in `dir` is refused with an error naming each of `needles`.
fn assert_refused(dir: &Path, needles: &[&str]) {
    let err = load_error(dir);
    assert!(needles.iter().all(|n| err.contains(n)), "{err}");
}

#[test]
fn model_directories_that_do_not_fit_are_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    // `dir`'s `from` copied over its `to`.
    let copy_over = |dir: &Path, from: &str, to: &str| {
        std::fs::copy(dir.join(from), dir.join(to)).unwrap();
    };

    let missing = model_copy(tmp.path(), "missing");
    std::fs::remove_file(missing.join("onnx/encoder_model.onnx")).unwrap();
    assert_refused(&missing, &["encoder_model.onnx"]);

    // The encoder where the decoder should be: wrong names.
    let swapped = model_copy(tmp.path(), "swapped");
    copy_over(
        &swapped,
        "onnx/encoder_model.onnx",
        "onnx/decoder_model_merged.onnx",
    );
    assert_refused(&swapped, &["decoder_model_merged.onnx", "missing input"]);

    // A vision encoder whose input has the wrong rank (the embed graph's input_ids is rank 2 and
    // named differently; use it to stand in for a broken vision export).
    let wrong = model_copy(tmp.path(), "wrong-vision");
    copy_over(&wrong, "onnx/embed_tokens.onnx", "onnx/vision_encoder.onnx");
    assert_refused(&wrong, &["vision_encoder.onnx", "pixel_values"]);

    let no_tokenizer = model_copy(tmp.path(), "no-tokenizer");
    std::fs::remove_file(no_tokenizer.join("tokenizer.json")).unwrap();
    assert_refused(&no_tokenizer, &["tokenizer.json"]);

    // The family comes from config.json's model_type: an unknown one lists those we run.
    let not_florence = model_copy(tmp.path(), "not-florence");
    let config = not_florence.join("config.json");
    for (contents, needles) in [
        (
            r#"{"model_type": "bert"}"#,
            &["model_type `bert`", "florence2"][..],
        ),
        (r#"{"architectures": ["Florence2"]}"#, &["no `model_type`"]),
        // Florence-2's own contract still applies once the family is known.
        (r#"{"model_type": "florence2"}"#, &["is_encoder_decoder"]),
    ] {
        std::fs::write(&config, contents).unwrap();
        assert_refused(&not_florence, needles);
    }

    assert_refused(&tmp.path().join("nowhere"), &["--model-dir"]);
}
