//! `altimage describe` end to end: folders walked recursively, one record per file in input
//! order, hostile files answered with error records, exit status, CSV output, start-up errors;
//! product copy on the tiny Qwen3.5 (every output equal to the library's plan + generate + fit,
//! context from CSV and JSON Lines reaching the prompt, seeded sampling repeating) and every
//! refusal the API would give, with its message, before any image is read.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use altimage::describe::outputs::fit;
use altimage::describe::{ContextOptions, DescribeOptions, Validator};
use altimage::model::qwen3_5::Qwen35;
use altimage::model::{Captioner, GenerationRequest, ImageTensor};
use serde_json::{Map, Value, json};

const QWEN: &str = "tiny-qwen3_5";
const FLORENCE: &str = "tiny-florence2";

/// `altimage describe --model-dir <model> <args>` on the tests' ONNX Runtime library.
fn describe_command(model: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_altimage"));
    command
        .arg("describe")
        .arg("--model-dir")
        .arg(model)
        .args(args)
        .env("ORT_DYLIB_PATH", common::ort_library())
        .env("ALTIMAGE_INTRA_THREADS", "2")
        .env_remove("ALTIMAGE_MODEL_DIR");
    command
}

/// Runs `describe_command` to completion, whatever its exit status.
fn describe(model: &Path, args: &[&str]) -> Output {
    describe_command(model, args)
        .output()
        .expect("run altimage")
}

/// A BMP header that claims 50000×50000 pixels in a 60-byte file: a decompression bomb.
fn bomb_bmp() -> Vec<u8> {
    let mut bytes = b"BM".to_vec();
    bytes.extend_from_slice(&60u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&54u32.to_le_bytes());
    bytes.extend_from_slice(&40u32.to_le_bytes());
    bytes.extend_from_slice(&50_000i32.to_le_bytes());
    bytes.extend_from_slice(&50_000i32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&24u16.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 24]);
    bytes.extend_from_slice(&[0u8; 6]);
    bytes
}

fn catalogue(dir: &Path) {
    let fixtures = common::fixture_files();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(&fixtures[0], dir.join("a-good.png")).unwrap();
    // A JPEG of another size, so the resize path runs end to end.
    let image = image::open(&fixtures[1]).unwrap().resize_exact(
        640,
        480,
        image::imageops::FilterType::Triangle,
    );
    image.to_rgb8().save(dir.join("sub/c-good.jpg")).unwrap();
    std::fs::write(dir.join("b-empty.jpg"), b"").unwrap();
    let png = std::fs::read(&fixtures[2]).unwrap();
    std::fs::write(dir.join("d-truncated.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(dir.join("e-not-an-image.jpg"), b"hello, I am text").unwrap();
    std::fs::write(dir.join("f-bomb.bmp"), bomb_bmp()).unwrap();
    std::fs::write(dir.join("notes.txt"), b"skipped: not an image extension").unwrap();
}

#[test]
fn hostile_files_get_error_records_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("catalogue");
    catalogue(&dir);
    let model = common::tiny_model_dir();
    let out = describe(&model, &["--batch-size", "2", dir.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "some files failed → exit 1\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<String> = records
        .iter()
        .map(|r| {
            Path::new(r["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "a-good.png",
            "b-empty.jpg",
            "d-truncated.png",
            "e-not-an-image.jpg",
            "f-bomb.bmp",
            "c-good.jpg"
        ]
    );

    let by_name = |name: &str| &records[names.iter().position(|n| n == name).unwrap()];
    for good in ["a-good.png", "c-good.jpg"] {
        let r = by_name(good);
        assert!(r["error"].is_null(), "{r}");
        assert!(!r["text"].as_str().unwrap().is_empty(), "{r}");
        assert_eq!(r["text"], r["outputs"]["alt_text"], "{r}");
        assert_eq!(
            (&r["detail"], &r["model"], &r["language"]),
            (&json!("brief"), &json!(FLORENCE), &json!("en"))
        );
        assert!(r.get("seed").is_none() && r.get("context").is_none(), "{r}");
    }
    assert_eq!(by_name("c-good.jpg")["width"], 640);
    assert_eq!(by_name("c-good.jpg")["format"], "jpeg");
    assert_eq!(by_name("b-empty.jpg")["error"]["code"], "image_empty");
    assert_eq!(
        by_name("d-truncated.png")["error"]["code"],
        "image_decode_failed"
    );
    assert_eq!(
        by_name("e-not-an-image.jpg")["error"]["code"],
        "image_format_unsupported"
    );
    assert_eq!(
        by_name("f-bomb.bmp")["error"]["code"],
        "image_too_many_pixels"
    );
}

#[test]
fn csv_output_to_a_file_and_success_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("out.csv");
    let fixtures = common::fixture_files();
    let model = common::tiny_model_dir();
    let mut command = describe_command(
        &model,
        &[
            "--format",
            "csv",
            "--outputs",
            "alt_text,description",
            "--detail",
            "detailed",
            "-o",
            out_file.to_str().unwrap(),
            fixtures[0].to_str().unwrap(),
            fixtures[3].to_str().unwrap(),
        ],
    );
    let stdout = common::command::stdout_of(&mut command, "altimage describe --format csv");
    assert!(stdout.is_empty(), "records go to --output, not stdout");
    let mut reader = csv::Reader::from_path(&out_file).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {headers:?}"))
    };
    assert_eq!(column("path"), 0);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    // Florence-2's outputs are what the library makes of the same options.
    let mut florence = common::tiny_model();
    let options = DescribeOptions {
        outputs: Some(names(&["alt_text", "description"])),
        detail: Some("detailed".into()),
        ..DescribeOptions::default()
    };
    for (row, fixture) in rows.iter().zip([&fixtures[0], &fixtures[3]]) {
        let expected = expected_outputs(&mut florence, FLORENCE, fixture, &options);
        assert_eq!(&row[column("path")], fixture.to_str().unwrap());
        assert_eq!(
            &row[column("alt_text")],
            expected["alt_text"].as_str().unwrap()
        );
        assert_eq!(
            &row[column("description")],
            expected["description"].as_str().unwrap()
        );
        assert_eq!(&row[column("text")], &row[column("alt_text")]);
        assert_eq!(&row[column("detail")], "detailed");
        assert_eq!(&row[column("model")], FLORENCE);
        assert_eq!(&row[column("language")], "en");
        assert_eq!(&row[column("seo_title")], "", "not asked for");
        assert_eq!(&row[column("error_code")], "", "no error code");
    }
}

#[test]
fn start_up_errors_name_the_fix() {
    let model = common::tiny_model_dir();
    let fixture = common::fixture_files().remove(0);
    let out = describe(
        &model,
        &[
            "--ort-library",
            "/nonexistent/libonnxruntime.so",
            fixture.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scripts/install-ort.sh"), "{stderr}");

    // The CPU library cannot drive CUDA: an error, never a silent run on the CPU.
    let library = common::ort_library();
    let out = describe(
        &model,
        &[
            "--device",
            "cuda:0",
            "--ort-library",
            library.to_str().unwrap(),
            fixture.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "no record may be written on the CPU instead"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot use CUDA device cuda:0") && stderr.contains("--device cpu"),
        "{stderr}"
    );

    let out = describe(
        Path::new("/nonexistent-model"),
        &[fixture.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-model"), "{stderr}");
}

fn names(outputs: &[&str]) -> Vec<String> {
    outputs.iter().map(|s| s.to_string()).collect()
}

/// A conformance image of the Qwen3.5 set.
fn qwen_image(name: &str) -> PathBuf {
    common::root()
        .join("tests/conformance/fixtures_qwen")
        .join(name)
}

fn tiny_qwen() -> Qwen35 {
    Qwen35::load(&common::load_options(&common::tiny_qwen_dir())).expect("tiny Qwen3.5")
}

/// The records of a run that must succeed.
fn records(model: &Path, args: &[&str]) -> Vec<Value> {
    let out = describe(model, args);
    assert!(
        out.status.success(),
        "altimage describe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `image` prepared by `model`'s frontend, as the CLI prepares it.
fn prepared(model: &dyn Captioner, image: &Path) -> ImageTensor {
    let bytes = std::fs::read(image).unwrap();
    model
        .card()
        .frontend
        .prepare(&bytes, &Default::default())
        .unwrap()
        .tensor
}

/// What the library makes of the same options, image and model: the API's plan, the model run
/// on every output over the one tensor, each text fitted.
fn expected_outputs(
    model: &mut dyn Captioner,
    name: &str,
    image: &Path,
    options: &DescribeOptions,
) -> Map<String, Value> {
    let plan = Validator::new(vec![(name.into(), model.card().clone())], usize::MAX)
        .plan(options)
        .unwrap();
    let tensor = prepared(model, image);
    let requests: Vec<GenerationRequest> = plan
        .outputs
        .iter()
        .map(|o| GenerationRequest {
            image: tensor.clone(),
            options: o.generation.clone(),
        })
        .collect();
    let generated = model.generate(&requests).unwrap();
    plan.outputs
        .iter()
        .zip(generated)
        .map(|(o, g)| (o.output.as_str().to_string(), fit(&g.text, o.fit).value))
        .collect()
}

/// The mug's context as the CSV and JSON Lines files below give it.
fn mug_context() -> ContextOptions {
    ContextOptions {
        title: Some("Keramikbecher „Morgenrot“".into()),
        brand: Some("Töpferei Müller".into()),
        category: None,
        attributes: vec![
            ("Farbe".into(), "Weiß".into()),
            ("Material".into(), "Steinzeug".into()),
        ],
        keywords: vec!["handgemacht".into(), "Geschenk".into()],
    }
}

/// A run's images copied under `tmp/images` (so context paths can be relative), and a CSV
/// context file in `tmp/context` naming the mug relative to its own folder.
fn catalogue_with_context(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let images = tmp.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(tmp.join("context")).unwrap();
    let mug = images.join("mug.png");
    let bag = images.join("bag.png");
    std::fs::copy(qwen_image("mug-256x256.png"), &mug).unwrap();
    std::fs::copy(qwen_image("bag-448x320.png"), &bag).unwrap();
    let csv = tmp.join("context/products.csv");
    std::fs::write(
        &csv,
        "image,title,brand,category,keywords,Farbe,Material\n\
         ../images/mug.png,Keramikbecher „Morgenrot“,Töpferei Müller,,handgemacht; Geschenk,Weiß,Steinzeug\n",
    )
    .unwrap();
    (mug, bag, csv)
}

#[test]
fn qwen_writes_every_output_as_the_library_plans_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mug, bag, csv) = catalogue_with_context(tmp.path());
    let outputs = ["keywords", "alt_text", "description", "seo_title"];
    let records = records(
        &common::tiny_qwen_dir(),
        &[
            "--outputs",
            &outputs.join(","),
            "--language",
            "de",
            "--tone",
            "warm",
            "--max-words",
            "30",
            "--keyword-count",
            "5",
            "--max-chars",
            "90",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "2",
            "--context",
            csv.to_str().unwrap(),
            mug.to_str().unwrap(),
            bag.to_str().unwrap(),
        ],
    );
    assert_eq!(records.len(), 2);
    let options = DescribeOptions {
        outputs: Some(names(&outputs)),
        language: Some("de".into()),
        tone: Some("warm".into()),
        max_words: Some(30),
        keyword_count: Some(5),
        max_chars: Some(90),
        max_new_tokens: Some(16),
        ..DescribeOptions::default()
    };
    let mut qwen = tiny_qwen();
    for (record, image, context) in [
        (&records[0], &mug, Some(mug_context())),
        (&records[1], &bag, None),
    ] {
        assert_eq!(record["path"], image.to_str().unwrap());
        let asked = DescribeOptions {
            context: context.clone(),
            ..options.clone()
        };
        let expected = expected_outputs(&mut qwen, QWEN, image, &asked);
        assert_eq!(record["outputs"], Value::Object(expected), "{record}");
        assert_eq!(record["text"], record["outputs"]["alt_text"], "{record}");
        assert_eq!(
            (&record["model"], &record["language"], &record["tone"]),
            (&json!(QWEN), &json!("de"), &json!("warm"))
        );
        assert_eq!(
            record.get("context"),
            context.map(|c| c.to_json()).as_ref(),
            "{record}"
        );
        assert!(
            record.get("detail").is_none() && record.get("seed").is_none(),
            "Qwen3.5 has no caption levels; greedy has no seed: {record}"
        );
        assert!(record["outputs"]["keywords"].as_array().unwrap().len() <= 5);
        assert!(
            record["outputs"]["alt_text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 90
        );
        assert!(record["generated_tokens"].as_u64().unwrap() > 0, "{record}");
    }
}

#[test]
fn context_from_csv_and_jsonl_reaches_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let (mug, bag, csv) = catalogue_with_context(tmp.path());
    // The same context in JSON Lines, the mug named by its absolute path.
    let jsonl = tmp.path().join("products.jsonl");
    let row = |context: &ContextOptions| {
        let mut row = context.to_json();
        row["path"] = json!(mug.to_str().unwrap());
        row.to_string()
    };
    std::fs::write(&jsonl, format!("{}\n", row(&mug_context()))).unwrap();
    let other = ContextOptions {
        title: Some("Reisebecher aus Edelstahl".into()),
        brand: None,
        category: Some("Outdoor".into()),
        attributes: vec![("Farbe".into(), "Schwarz".into())],
        keywords: vec![],
    };
    let other_file = tmp.path().join("other.ndjson");
    std::fs::write(&other_file, format!("\n{}\n", row(&other))).unwrap();

    let run = |context: &Path| {
        records(
            &common::tiny_qwen_dir(),
            &[
                "--outputs",
                "description,keywords",
                "--max-new-tokens",
                "12",
                "--context",
                context.to_str().unwrap(),
                mug.to_str().unwrap(),
                bag.to_str().unwrap(),
            ],
        )
    };
    let from_csv = run(&csv);
    let from_jsonl = run(&jsonl);
    let from_other = run(&other_file);
    assert_eq!(from_csv, from_jsonl, "one context, whichever file gives it");
    assert_eq!(from_csv[0]["context"], mug_context().to_json());
    assert_eq!(from_other[0]["context"], other.to_json());
    assert_eq!(from_csv[1], from_other[1], "the bag has no row in either");
    assert_ne!(
        from_csv[0]["outputs"], from_other[0]["outputs"],
        "another context, another text"
    );

    // Each context is in the prompt, so the prompts differ; each run's outputs are the
    // library's for its context.
    let mut qwen = tiny_qwen();
    let tensor = prepared(&qwen, &mug);
    let options = |context: Option<ContextOptions>| DescribeOptions {
        outputs: Some(names(&["description", "keywords"])),
        max_new_tokens: Some(12),
        context,
        ..DescribeOptions::default()
    };
    let prompt = |qwen: &Qwen35, context: Option<ContextOptions>| {
        let plan = Validator::new(vec![(QWEN.into(), qwen.card().clone())], 1)
            .plan(&options(context))
            .unwrap();
        qwen.prompt_ids(&plan.outputs[0].generation.task, &tensor)
            .unwrap()
    };
    let prompts = [
        prompt(&qwen, None),
        prompt(&qwen, Some(mug_context())),
        prompt(&qwen, Some(other.clone())),
    ];
    assert_ne!(prompts[0], prompts[1]);
    assert_ne!(prompts[1], prompts[2]);
    assert_ne!(prompts[0], prompts[2]);
    for (records, context) in [(&from_csv, mug_context()), (&from_other, other)] {
        let expected = expected_outputs(&mut qwen, QWEN, &mug, &options(Some(context)));
        assert_eq!(records[0]["outputs"], Value::Object(expected));
    }
    let expected = expected_outputs(&mut qwen, QWEN, &bag, &options(None));
    assert_eq!(from_csv[1]["outputs"], Value::Object(expected));
}

#[test]
fn seeded_sampling_repeats_from_the_recorded_seed() {
    let mug = qwen_image("mug-256x256.png");
    let bag = qwen_image("bag-448x320.png");
    let sampled = [
        "--outputs",
        "alt_text,description",
        "--temperature",
        "1.2",
        "--top-p",
        "0.95",
        "--max-new-tokens",
        "12",
    ];
    let run = |extra: &[&str]| {
        let mut args = sampled.to_vec();
        args.extend_from_slice(extra);
        args.extend([mug.to_str().unwrap(), bag.to_str().unwrap()]);
        records(&common::tiny_qwen_dir(), &args)
    };
    let first = run(&[]);
    let seed = first[0]["seed"]
        .as_u64()
        .expect("the drawn seed is recorded");
    assert_eq!(first[1]["seed"], seed, "one seed for the run");
    let again = run(&["--seed", &seed.to_string()]);
    assert_eq!(first, again, "--seed {seed} makes the run again");
    // And it is the library's sampling with that seed.
    let expected = expected_outputs(
        &mut tiny_qwen(),
        QWEN,
        &mug,
        &DescribeOptions {
            outputs: Some(names(&["alt_text", "description"])),
            temperature: Some(1.2),
            top_p: Some(0.95),
            seed: Some(seed),
            max_new_tokens: Some(12),
            ..DescribeOptions::default()
        },
    );
    assert_eq!(first[0]["outputs"], Value::Object(expected));
}

/// A refused run: exit 2, no record, stderr.
fn refused(model: &Path, args: &[&str]) -> String {
    let out = describe(model, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: no record may be written");
    stderr
}

#[test]
fn the_api_s_refusals_with_its_messages() {
    let image = qwen_image("mug-256x256.png");
    let image = image.to_str().unwrap();
    let florence = common::tiny_model_dir();
    let qwen = common::tiny_qwen_dir();
    let validator = |dir: &Path, name: &str| {
        let model = altimage::model::load(&common::load_options(dir)).unwrap();
        Validator::new(vec![(name.into(), model.card().clone())], usize::MAX)
    };
    let (florence_validator, qwen_validator) =
        (validator(&florence, FLORENCE), validator(&qwen, QWEN));
    let cases: Vec<(&Path, &Validator, Vec<&str>, DescribeOptions, &str)> = vec![
        (
            &florence,
            &florence_validator,
            vec!["--language", "de"],
            DescribeOptions {
                language: Some("de".into()),
                ..DescribeOptions::default()
            },
            "unsupported_by_model",
        ),
        (
            &florence,
            &florence_validator,
            vec!["--outputs", "alt_text,seo_title", "--temperature", "0.7"],
            DescribeOptions {
                outputs: Some(names(&["alt_text", "seo_title"])),
                temperature: Some(0.7),
                ..DescribeOptions::default()
            },
            "unsupported_by_model",
        ),
        (
            &florence,
            &florence_validator,
            vec!["--tone", "warm"],
            DescribeOptions {
                tone: Some("warm".into()),
                ..DescribeOptions::default()
            },
            "unsupported_by_model",
        ),
        (
            &qwen,
            &qwen_validator,
            vec!["--detail", "brief"],
            DescribeOptions {
                detail: Some("brief".into()),
                ..DescribeOptions::default()
            },
            "unsupported_by_model",
        ),
        (
            &qwen,
            &qwen_validator,
            vec!["--max-words", "10"],
            DescribeOptions {
                max_words: Some(10),
                ..DescribeOptions::default()
            },
            "invalid_option",
        ),
        (
            &qwen,
            &qwen_validator,
            vec!["--seed", "3"],
            DescribeOptions {
                seed: Some(3),
                ..DescribeOptions::default()
            },
            "invalid_option",
        ),
        (
            &qwen,
            &qwen_validator,
            vec!["--outputs", "alt_text,poem"],
            DescribeOptions {
                outputs: Some(names(&["alt_text", "poem"])),
                ..DescribeOptions::default()
            },
            "invalid_outputs",
        ),
        (
            &qwen,
            &qwen_validator,
            vec!["--language", "german"],
            DescribeOptions {
                language: Some("german".into()),
                ..DescribeOptions::default()
            },
            "invalid_language",
        ),
        (
            &qwen,
            &qwen_validator,
            vec!["--temperature", "0.5", "--top-p", "0"],
            DescribeOptions {
                temperature: Some(0.5),
                top_p: Some(0.0),
                ..DescribeOptions::default()
            },
            "invalid_option",
        ),
    ];
    for (model, validator, mut args, options, code) in cases {
        let api = validator.plan(&options).unwrap_err();
        assert_eq!(api.code, code, "{args:?}: {api}");
        args.push(image);
        let stderr = refused(model, &args);
        assert!(
            stderr.contains(&format!("{code}: {}", api.message)),
            "{args:?}: the API says `{api}`; the CLI said {stderr}"
        );
    }
}

#[test]
fn context_files_are_refused_by_file_and_line_before_any_image_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (mug, bag, csv) = catalogue_with_context(tmp.path());
    let (mug, bag) = (mug.to_str().unwrap(), bag.to_str().unwrap());
    let context = |name: &str, text: &str| {
        let file = tmp.path().join("context").join(name);
        std::fs::write(&file, text).unwrap();
        file.to_str().unwrap().to_string()
    };
    let long_title = "x".repeat(201);
    let cases = [
        // A row for an image this run does not describe.
        (
            context(
                "stray.csv",
                "path,title\n../images/mug.png,Mug\n../images/vase.png,Vase\n",
            ),
            " line 3: `../images/vase.png`",
            "is not among the images to describe",
        ),
        // Two rows for one image, spelled two ways.
        (
            context(
                "twice.jsonl",
                &format!(
                    "{{\"path\": \"../images/mug.png\", \"title\": \"Mug\"}}\n{{\"path\": {}, \"title\": \"Cup\"}}\n",
                    json!(mug)
                ),
            ),
            " line 2:",
            "already has a row at line 1",
        ),
        (
            context("ragged.csv", "path,title\n../images/mug.png,Mug,extra\n"),
            " line 2:",
            "3 cells where the header row has 2",
        ),
        (
            context("nameless.csv", "file,title\n../images/mug.png,Mug\n"),
            " line 1:",
            "no `path` (or `image`) column",
        ),
        (
            context(
                "broken.jsonl",
                "{\"path\": \"../images/bag.png\"}\n{\"path\": \"../images/mug.png\",\n",
            ),
            " line 2:",
            "not an object of path",
        ),
        (
            context(
                "unknown.jsonl",
                "{\"path\": \"../images/mug.png\", \"tone\": \"warm\"}\n",
            ),
            " line 1:",
            "unknown field `tone`",
        ),
        (
            context("products.txt", "path\n../images/mug.png\n"),
            ":",
            "must end in .csv, .jsonl or .ndjson",
        ),
    ];
    for (file, at, message) in &cases {
        // Refused before the model loads: a missing model folder is never reached.
        let stderr = refused(
            Path::new("/nonexistent-model"),
            &["--context", file, mug, bag],
        );
        assert!(
            stderr.contains(&format!("--context {file}{at}")),
            "{file}: {stderr}"
        );
        assert!(stderr.contains(message), "{file}: {stderr}");
        assert!(!stderr.contains("nonexistent-model"), "{stderr}");
    }

    // Context limits are the API's, checked per row once the model is known; Florence-2 takes
    // no context at all.
    let over = context(
        "long.csv",
        &format!("path,title\n../images/bag.png,Bag\n../images/mug.png,{long_title}\n"),
    );
    let stderr = refused(&common::tiny_qwen_dir(), &["--context", &over, mug, bag]);
    assert!(
        stderr.contains(&format!(
            "{over} line 3: invalid_context: context.title has 201 characters; at most 200"
        )),
        "{stderr}"
    );
    let stderr = refused(
        &common::tiny_model_dir(),
        &["--context", csv.to_str().unwrap(), mug, bag],
    );
    assert!(
        stderr.contains("line 2: unsupported_by_model")
            && stderr.contains("cannot use product context"),
        "{stderr}"
    );
}
