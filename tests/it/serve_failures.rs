//! `altimage serve` when the model really fails in ONNX Runtime: a warm-up that cannot run the
//! maximum batch size stops the process with a message naming the flag to lower, and a batch
//! whose inference fails answers every entry with a 500 JSON error and marks the worker
//! unhealthy until a batch succeeds.
//!
//! The failures are real: copies of the tiny model rewritten by
//! `models/tools/faulty_florence2.py` into variants that break the way some exports do (a fixed
//! batch dimension of 1; a decoder position table shorter than config.json promises). No switch
//! in the server fakes them.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use common::server::{Server, http_client, post_png};
use reqwest::StatusCode;
use serde_json::Value;

/// Decoder positions kept by the short-table variant: scene-1's brief caption on the tiny model
/// is 34 tokens long, so it reaches position 8 and fails there; 4 new tokens never do.
const SHORT_POSITIONS: &str = "8";

/// Writes a faulty copy of the tiny model into a fresh temporary directory.
fn faulty_model(variant: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("model");
    common::command::stdout_of(
        Command::new(common::python())
            .arg(common::root().join("models/tools/faulty_florence2.py"))
            .args(variant)
            .arg(common::tiny_model_dir())
            .arg(&dir),
        &format!("faulty_florence2.py {variant:?}"),
    );
    (temp, dir)
}

/// Runs `altimage serve` on `model` until it exits by itself; returns its status and stderr.
/// Panics if it becomes ready instead, or is still running after two minutes.
fn serve_until_exit(model: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_altimage"))
        .args(["serve", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(model)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--log-format", "json"])
        .args(extra)
        .env("ORT_DYLIB_PATH", common::ort_library())
        .env("ALTIMAGE_INTRA_THREADS", "1")
        .env("ALTIMAGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("start altimage serve");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let stderr = std::fs::read_to_string(log.path()).unwrap();
        if stderr.contains("\"message\":\"ready\"") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("altimage serve did not exit on its own:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(log.path()).unwrap())
}

/// The messages of the ERROR lines of a JSON log.
fn errors(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "ERROR")
        .map(|line| line["fields"]["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// POST /v1/descriptions with a raw PNG body, with the server's bootstrap key. Every request to
/// /v1/ goes through here.
async fn describe(server: &Server, query: &str, png: Vec<u8>) -> (StatusCode, Value) {
    let response = post_png(
        &server.client(),
        server.url(&format!("/v1/descriptions?{query}")),
        png,
    )
    .send()
    .await
    .unwrap();
    json_of(response).await
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    http_client().get(server.url(path)).send().await.unwrap()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let (status, _, value) = common::server::json_of(response).await;
    (status, value)
}

fn assert_error_body(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    for field in ["type", "code", "message"] {
        assert!(
            error[field].as_str().is_some_and(|s| !s.is_empty()),
            "error.{field} missing: {body}"
        );
    }
}

#[test]
fn a_warm_up_that_cannot_run_the_batch_size_exits_naming_the_flag() {
    let (_temp, model) = faulty_model(&["static-batch"]);

    // The default --max-batch-size (8) is more than this export can take.
    let (status, log) = serve_until_exit(&model, &[]);
    assert!(!status.success(), "exit status {status}:\n{log}");
    let errors = errors(&log);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("warm-up at --max-batch-size 8 failed")
                && e.contains("a single image runs")
                && e.contains("lower --max-batch-size")),
        "no error naming the flag to lower:\n{log}"
    );

    // Following the advice works: the same export serves at batch size 1.
    let server = Server::start_with_model(&model, &["--max-batch-size", "1"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, body) = describe(&server, "detail=brief&max_new_tokens=4", fixture(4)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    });
}

#[test]
fn a_warm_up_that_fails_on_one_image_does_not_blame_the_batch_size() {
    // Two decoder positions: the warm-up's four tokens fail at any batch size.
    let (_temp, model) = faulty_model(&["short-positions", "2"]);
    let (status, log) = serve_until_exit(&model, &["--max-batch-size", "2"]);
    assert!(!status.success(), "exit status {status}:\n{log}");
    let errors = errors(&log);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("warm-up failed even on a single image")),
        "no warm-up error:\n{log}"
    );
    assert!(
        !log.contains("lower --max-batch-size"),
        "advice that cannot help:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_batch_answers_every_entry_500_and_the_worker_recovers() {
    let (_temp, model) = faulty_model(&["short-positions", SHORT_POSITIONS]);
    // Three images in one batch: it runs once all three are queued (or the first waited 3 s).
    let server = Server::start_with_model(
        &model,
        &["--max-batch-size", "3", "--max-batch-delay-ms", "3000"],
    );
    assert_eq!(get(&server, "/health/ready").await.status(), StatusCode::OK);
    assert_eq!(
        server.sample("altimage_unhealthy_workers").await.unwrap(),
        0.0
    );

    // One long caption that reaches the missing positions, two short ones that alone succeed.
    let (long, short_a, short_b) = tokio::join!(
        describe(&server, "detail=brief&max_new_tokens=64", fixture(1)),
        describe(&server, "detail=brief&max_new_tokens=4", fixture(4)),
        describe(&server, "detail=brief&max_new_tokens=4", fixture(4)),
    );
    for (status, body) in [&long, &short_a, &short_b] {
        assert_error_body(*status, body, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["type"], "api_error", "{body}");
        assert_eq!(body["error"]["code"], "internal_error", "{body}");
    }
    assert_eq!(
        server
            .sample("altimage_images_total{model=\"model\",outcome=\"failed\"}")
            .await
            .unwrap(),
        3.0
    );
    assert_eq!(server.sample("altimage_batches_total").await.unwrap(), 0.0);
    assert!(
        server.log().contains("batch failed"),
        "no log line for the failed batch:\n{}",
        server.log()
    );

    // The worker is unhealthy: not ready, and the gauge says so.
    let (status, body) = json_of(get(&server, "/health/ready").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no healthy")),
        "{body}"
    );
    assert_eq!(
        server.sample("altimage_unhealthy_workers").await.unwrap(),
        1.0
    );

    // Requests are still taken; the next batch that succeeds makes the worker healthy again.
    let (status, body) = describe(&server, "detail=brief&max_new_tokens=4", fixture(4)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = json_of(get(&server, "/health/ready").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.sample("altimage_unhealthy_workers").await.unwrap(),
        0.0
    );
    assert_eq!(server.sample("altimage_batches_total").await.unwrap(), 1.0);
}
