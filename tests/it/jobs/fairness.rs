//! Fair share and the interactive reserve: a small job of a second account submitted after a big
//! one finishes while the big one still has work (round-robin across accounts), and interactive
//! requests are answered while jobs run. Their latency is printed (with `--nocapture`) beside
//! the latency on an idle server, for the notes; nothing here asserts a time.

use super::*;

use common::server::post_png;
use serde_json::json;

/// The median of `n` interactive describe requests' latencies, each answered 201.
async fn interactive_median(server: &Server, http: &reqwest::Client, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let response = post_png(http, server.url("/v1/descriptions"), fixture(i % 6))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_share_the_runner_fairly_and_interactive_requests_keep_being_answered() {
    let host = ImageHost::start().await;
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let scopes = ["describe", "read", "manage"];
    let (_, big_key) = server.account_with_key(ADMIN, "big-shop", &scopes).await;
    let (_, small_key) = server.account_with_key(ADMIN, "small-shop", &scopes).await;
    let big = server.client_with_key(&big_key);
    let small = server.client_with_key(&small_key);
    let interactive = server.client();

    let idle = interactive_median(&server, &interactive, 9).await;

    let urls: Vec<String> = (0..150).map(|i| host.url(&format!("/img/{i}"))).collect();
    let big_job = submit(&server, &big, json!({"items": items(&urls)})).await;
    let big_id = big_job["id"].as_str().unwrap();
    wait_for(&server, &big, big_id, "the big job to start", |job| {
        job["counts"]["succeeded"].as_i64().unwrap() >= 2
    })
    .await;
    let urls: Vec<String> = (0..10).map(|i| host.url(&format!("/img/{i}"))).collect();
    let small_job = submit(&server, &small, json!({"items": items(&urls)})).await;
    let small_id = small_job["id"].as_str().unwrap();

    let busy = interactive_median(&server, &interactive, 9).await;

    let small_done = finished(&server, &small, small_id).await;
    assert_eq!(small_done["counts"]["succeeded"], 10, "{small_done}");
    // Round-robin: the small account's ten items did not wait for the big job's 150.
    let big_now = job(&server, &big, big_id).await;
    assert!(
        big_now["counts"]["pending"].as_i64().unwrap() > 0,
        "the big job finished before the small one: {big_now}"
    );
    let big_done = finished(&server, &big, big_id).await;
    assert_eq!(big_done["counts"]["succeeded"], 150, "{big_done}");
    assert!(small_done["finished_at"].as_i64() < big_done["finished_at"].as_i64());
    eprintln!(
        "interactive describe latency, median of 9: idle {} ms, while a 150-item job runs {} ms \
         (--job-concurrency 4, --job-reserve-images 4)",
        idle.as_millis(),
        busy.as_millis()
    );
}
