//! What crashes and replicas cannot break: a server SIGKILLed mid-job and started again finishes
//! the job with every item stored and billed exactly once; two servers on one PostgreSQL
//! database share one job without doubling anything.

use super::*;

use serde_json::json;

/// Items each stored once under its own item id, and the job's counts agreeing with the
/// database: descriptions = distinct items = usage rows = succeeded items.
async fn assert_exactly_once(db: &TestDatabase, account: &str, done: &Value) {
    let succeeded = done["counts"]["succeeded"].as_i64().unwrap();
    let store = db.store().await;
    assert_eq!(
        stored(&store, account).await,
        (succeeded, succeeded, succeeded),
        "{}: {done}",
        db.backend
    );
    let described: i64 = select_one(
        &store,
        "SELECT COUNT(DISTINCT description_id) FROM job_items WHERE account_id = $1 AND status = 'succeeded'",
        account,
    )
    .await;
    assert_eq!(described, succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_job_resumes_it_after_a_restart() {
    let host = ImageHost::start().await;
    for db in TestDatabase::all().await {
        // A short lease: the dead process's claims run out quickly.
        let lease = ["--job-lease-secs", "2"];
        let server = start(&db, &lease);
        let http = server.client();
        let account = account_id(&server, &http).await;
        let key = server.key.clone().unwrap();
        let urls: Vec<String> = (0..60).map(|i| host.url(&format!("/img/{i}"))).collect();
        let created = submit(&server, &http, json!({"items": items(&urls)})).await;
        let id = created["id"].as_str().unwrap().to_string();
        wait_for(&server, &http, &id, "some items", |job| {
            job["counts"]["succeeded"].as_i64().unwrap() >= 5
        })
        .await;
        // SIGKILL: no drain, claims left held, whatever was mid-transaction rolled back.
        drop(server);

        let server = start(&db, &lease);
        let http = server.client_with_key(&key);
        let done = finished(&server, &http, &id).await;
        assert_eq!(done["status"], "succeeded", "{}: {done}", db.backend);
        assert_eq!(done["counts"]["succeeded"], 60, "{done}");
        assert_exactly_once(&db, &account, &done).await;
        let lines = results(&server, &http, &id).await;
        assert!(lines.iter().all(|l| l["status"] == "succeeded"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_postgres_database_share_a_job_without_doubling() {
    let Some(db) = TestDatabase::postgres_or_skip("sharing a job between replicas").await else {
        return;
    };
    let host = ImageHost::start().await;
    let first = start(&db, &[]);
    let http = first.client();
    let account = account_id(&first, &http).await;
    let second = start(&db, &[]);
    let urls: Vec<String> = (0..120).map(|i| host.url(&format!("/slow/{i}"))).collect();
    let created = submit(&first, &http, json!({"items": items(&urls)})).await;
    let id = created["id"].as_str().unwrap();
    let done = finished(&second, &http, id).await;
    assert_eq!(done["counts"]["succeeded"], 120, "{done}");
    assert_exactly_once(&db, &account, &done).await;
    // Both replicas described some of it; together exactly the job.
    let series = "altimage_job_items_processed_total{result=\"succeeded\"}";
    let a = first.sample(series).await.unwrap();
    let b = second.sample(series).await.unwrap();
    assert!(a > 0.0 && b > 0.0, "first {a}, second {b}");
    assert_eq!(a + b, 120.0);
}
