//! The command line against a running server: `jobs submit` waits and writes the results file,
//! a rerun of the same command follows the same job, and `jobs status|results|cancel`.

use super::*;

use std::process::{Command, Output};

/// `altimage <args>` to completion, off the async workers (the image host runs on them).
async fn altimage(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_altimage"))
            .args(&args)
            .envs(env)
            .env("ORT_DYLIB_PATH", common::ort_library())
            .env("ALTIMAGE_INTRA_THREADS", "2")
            .env_remove("ALTIMAGE_MODEL_DIR")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_submit_waits_writes_results_and_resumes_the_same_job() {
    let host = ImageHost::start().await;
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("catalogue.csv");
    let mut csv = String::from("image_url,asset_id\n");
    for i in 0..4 {
        csv.push_str(&format!("{},sku-{i}\n", host.url(&format!("/img/{i}"))));
    }
    csv.push_str(&format!("{},sku-bad\n", host.url("/missing/1")));
    std::fs::write(&catalogue, csv).unwrap();
    let env = vec![
        ("ALTIMAGE_SERVER", server.base.clone()),
        ("ALTIMAGE_API_KEY", server.key.clone().unwrap()),
    ];
    let submit = vec![
        "jobs".to_string(),
        "submit".into(),
        "--no-progress".into(),
        "--poll-ms".into(),
        "100".into(),
        catalogue.display().to_string(),
    ];
    let first = altimage(submit.clone(), env.clone()).await;
    // One item failed: the exit status says so, and the results file has it.
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let results = std::fs::read_to_string(dir.path().join("catalogue.results.jsonl")).unwrap();
    let lines: Vec<Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[2]["asset_id"], "sku-2");
    assert_eq!(lines[2]["status"], "succeeded");
    assert_eq!(lines[4]["error"]["code"], "image_url_upstream_error");
    let stderr = text(&first.stderr);
    let id = stderr
        .split_whitespace()
        .find(|word| word.starts_with("job_"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();

    // The same command again: the same job, nothing described twice.
    let again = altimage(submit, env.clone()).await;
    assert!(text(&again.stderr).contains(&id), "{}", text(&again.stderr));
    let http = server.client();
    let (_, _, page) = call(http.get(server.url("/v1/jobs"))).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");

    let status = altimage(
        vec!["jobs".into(), "status".into(), id.clone()],
        env.clone(),
    )
    .await;
    let job: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(job["counts"]["succeeded"], 4, "{job}");
    let csv = altimage(
        vec![
            "jobs".into(),
            "results".into(),
            "--format".into(),
            "csv".into(),
            id.clone(),
        ],
        env.clone(),
    )
    .await;
    assert!(csv.status.success());
    assert_eq!(text(&csv.stdout).lines().count(), 6);
    let cancel = altimage(vec!["jobs".into(), "cancel".into(), id.clone()], env).await;
    let job: Value = serde_json::from_slice(&cancel.stdout).unwrap();
    assert_eq!(job["status"], "succeeded", "a finished job stays as it is");
}
