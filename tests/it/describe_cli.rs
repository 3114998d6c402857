//! `altimage describe` end to end: folders walked recursively, one record per file in input
//! order, hostile files answered with error records, exit status, CSV output, start-up errors.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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
        assert!(!r["description"].as_str().unwrap().is_empty(), "{r}");
        assert_eq!(r["detail"], "brief");
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
            "--detail",
            "paragraph",
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
    assert_eq!(&headers[0], "path");
    assert_eq!(&headers[1], "description");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(!row[1].is_empty());
        assert_eq!(&row[2], "paragraph");
        assert_eq!(&row[8], "", "no error code");
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
