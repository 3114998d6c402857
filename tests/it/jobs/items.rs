//! A job's items: 200 with a handful of bad URLs and a flaky one, on both databases (every good
//! item described and billed once, bad ones failed with their error, results in input order);
//! the CSV and JSON Lines forms, `Idempotency-Key`, the limits; cancelling mid-job.

use super::*;

use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_items_with_bad_urls_are_each_described_once_in_order() {
    let host = ImageHost::start().await;
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let http = server.client();
        let account = account_id(&server, &http).await;
        // Every 40th URL is missing (5 of them); item 7 fails once with a 503, then works.
        let urls: Vec<String> = (0..200)
            .map(|i| match i {
                7 => host.url(&format!("/flaky/{i}-{}", db.backend)),
                i if i % 40 == 39 => host.url(&format!("/missing/{i}")),
                i => host.url(&format!("/img/{i}")),
            })
            .collect();
        let created = submit(
            &server,
            &http,
            json!({"items": items(&urls), "outputs": ["alt_text"]}),
        )
        .await;
        assert_eq!(created["status"], "queued");
        assert_eq!(created["counts"]["total"], 200);
        let id = created["id"].as_str().unwrap();
        let done = finished(&server, &http, id).await;
        assert_eq!(done["status"], "succeeded", "{}: {done}", db.backend);
        assert_eq!(done["counts"]["succeeded"], 195, "{done}");
        assert_eq!(done["counts"]["failed"], 5, "{done}");
        assert_eq!(done["counts"]["pending"], 0, "{done}");

        let lines = results(&server, &http, id).await;
        assert_eq!(lines.len(), 200);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["position"], i as i64, "{line}");
            assert_eq!(line["asset_id"], format!("sku-{i}"), "{line}");
            if i % 40 == 39 {
                assert_eq!(line["status"], "failed", "{line}");
                assert_eq!(line["error"]["code"], "image_url_upstream_error", "{line}");
                assert!(line.get("description").is_none(), "{line}");
                // A 404 is permanent: asked once, not retried.
                assert_eq!(line["attempts"], 1, "{line}");
            } else {
                assert_eq!(line["status"], "succeeded", "{line}");
                assert_eq!(line["description"]["asset_id"], format!("sku-{i}"));
                assert!(!line["description"]["text"].as_str().unwrap().is_empty());
            }
        }
        // The flaky image: a 503, retried, then described.
        assert_eq!(lines[7]["attempts"], 2, "{}", lines[7]);
        assert_eq!(host.hits(&format!("/flaky/7-{}", db.backend)), 2);

        // Every good item stored once and billed once, each under its own item.
        let store = db.store().await;
        assert_eq!(
            stored(&store, &account).await,
            (195, 195, 195),
            "{}",
            db.backend
        );
        let (status, _, usage) = call(http.get(server.url("/v1/usage"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(usage["totals"]["created"], 195, "{usage}");

        // CSV results: a header, then the same order.
        let csv = http
            .get(server.url(&format!("/v1/jobs/{id}/results?format=csv")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 200);
        assert_eq!(&rows[39][1], "sku-39");
        assert_eq!(&rows[39][3], "failed");
        assert_eq!(&rows[39][10], "image_url_upstream_error");
        assert_eq!(&rows[40][3], "succeeded");
        assert!(rows[40][4].starts_with("desc_"));

        // Metrics: the processed items by result, and the finished job.
        assert!(
            server
                .sample_at_least(
                    "altimage_job_items_processed_total{result=\"succeeded\"}",
                    195.0
                )
                .await
        );
        assert!(
            server
                .sample_at_least(
                    "altimage_job_items_processed_total{result=\"retried\"}",
                    1.0
                )
                .await
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_and_json_lines_uploads_idempotency_and_limits() {
    let host = ImageHost::start().await;
    let db = TestDatabase::sqlite();
    // Product context needs a model that takes it: the tiny Qwen3.5 beside the default.
    let qwen = common::tiny_qwen_dir();
    let server = start(
        &db,
        &[
            "--max-job-items",
            "5",
            "--max-active-jobs",
            "2",
            "--model-dir",
            qwen.to_str().unwrap(),
        ],
    );
    let http = server.client();
    let post = |content_type: &str, query: &str, body: String| {
        http.post(server.url(&format!("/v1/jobs{query}")))
            .header("content-type", content_type)
            .body(body)
    };

    // CSV with product context columns; options in the query string.
    let csv = format!(
        "image_url,asset_id,title,keywords,attr:colour,metadata\n{},sku-a,Stoneware mug,handmade;white,white,\"{{\"\"row\"\": 1}}\"\n{},sku-b,,,,\n",
        host.url("/img/1"),
        host.url("/img/2")
    );
    let (status, _, job) = call(post(
        "text/csv",
        "?outputs=alt_text&model=tiny-qwen3_5",
        csv,
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        job["options"],
        json!({"model": "tiny-qwen3_5", "outputs": ["alt_text"]})
    );
    let id = job["id"].as_str().unwrap().to_string();
    let done = finished(&server, &http, &id).await;
    assert_eq!(done["counts"]["succeeded"], 2, "{done}");
    let lines = results(&server, &http, &id).await;
    assert_eq!(lines[0]["asset_id"], "sku-a");
    assert_eq!(
        lines[0]["description"]["context"],
        json!({"title": "Stoneware mug", "attributes": {"colour": "white"}, "keywords": ["handmade", "white"]})
    );
    assert_eq!(lines[0]["description"]["metadata"], json!({"row": 1}));
    assert!(
        lines[1]["description"]
            .get("context")
            .is_none_or(Value::is_null)
    );

    // JSON Lines.
    let jsonl = format!(
        "{}\n\n{}\n",
        json!({"image_url": host.url("/img/3"), "asset_id": "l-1"}),
        json!({"image_url": host.url("/img/4")})
    );
    let (status, _, job) = call(post("application/x-ndjson", "", jsonl)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["counts"]["total"], 2);
    finished(&server, &http, job["id"].as_str().unwrap()).await;

    // Refusals, each with its 4xx and code.
    let refused = [
        (post("text/csv", "", "asset_id\nx\n".into()), 400, "invalid_csv"),
        (post("text/csv", "", "image_url,colour\nhttp://x/,red\n".into()), 400, "invalid_csv"),
        (post("application/json", "", json!({"items": []}).to_string()), 400, "no_items"),
        (
            post("application/json", "", json!({"items": [{"image_url": "http://x/"}], "detail": "epic"}).to_string()),
            400,
            "invalid_detail",
        ),
        (
            post("application/json", "", json!({"items": [{"image_url": "http://x/", "colour": 1}]}).to_string()),
            400,
            "invalid_json",
        ),
        (
            post("application/json", "", json!({"items": (0..6).map(|i| json!({"image_url": format!("http://x/{i}")})).collect::<Vec<_>>()}).to_string()),
            413,
            "too_many_items",
        ),
        (post("text/plain", "", "x".into()), 415, "unsupported_media_type"),
        (
            post("application/json", "", json!({"items": [{"image_url": "http://x/"}], "webhook_url": "http://169.254.169.254/hook"}).to_string()),
            400,
            "invalid_webhook_url",
        ),
        (
            post("application/json", "", json!({"items": [{"image_url": "http://x/"}], "webhook_url": "http://127.0.0.1:9/hook"}).to_string()),
            400,
            "webhook_secret_missing",
        ),
    ];
    for (request, status, code) in refused {
        let (got, _, body) = call(request).await;
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // An item refused by validation names its place.
    let (_, _, body) = call(post(
        "application/json",
        "",
        json!({"items": [{"image_url": "http://x/"}, {"image_url": "http://y/", "asset_id": "x".repeat(300)}]}).to_string(),
    ))
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("items[1]"),
        "{body}"
    );

    // An Idempotency-Key answers the job it made; another request with it is a 409.
    // Images that never come: these jobs stay running for the rest of the test.
    let slow =
        json!({"items": [{"image_url": host.url("/hang/1")}, {"image_url": host.url("/hang/2")}]});
    let keyed = |body: &Value| {
        http.post(server.url("/v1/jobs"))
            .header("idempotency-key", "catalogue-1")
            .json(body)
    };
    let (status, headers, first) = call(keyed(&slow)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, headers, again) = call(keyed(&slow)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["id"], first["id"]);
    let (status, _, body) = call(keyed(
        &json!({"items": [{"image_url": host.url("/img/9")}]}),
    ))
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_key_reused"))
    );

    // A second active job is allowed, a third is a 429 with Retry-After.
    let (status, _, _) = call(http.post(server.url("/v1/jobs")).json(&slow)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, body) = call(http.post(server.url("/v1/jobs")).json(&slow)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_active_jobs")),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));

    // The list, newest first, with a cursor.
    let (status, _, page) = call(http.get(server.url("/v1/jobs?limit=2"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().unwrap();
    let (_, _, next) = call(http.get(server.url(&format!("/v1/jobs?starting_after={last}")))).await;
    assert_eq!(next["data"].as_array().unwrap().len(), 2, "{next}");
    let (status, _, _) =
        call(http.get(server.url("/v1/jobs/job_00000000000000000000000000000000"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_keeps_what_is_done_and_never_starts_the_rest() {
    let host = ImageHost::start().await;
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let http = server.client();
    let account = account_id(&server, &http).await;
    let urls: Vec<String> = (0..100).map(|i| host.url(&format!("/slow/{i}"))).collect();
    let created = submit(&server, &http, json!({"items": items(&urls)})).await;
    let id = created["id"].as_str().unwrap();
    wait_for(&server, &http, id, "a few items", |job| {
        job["counts"]["succeeded"].as_i64().unwrap() >= 3
    })
    .await;
    let (status, _, cancelled) =
        call(http.post(server.url(&format!("/v1/jobs/{id}/cancel")))).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let counts = &cancelled["counts"];
    let succeeded = counts["succeeded"].as_i64().unwrap();
    assert!(counts["cancelled"].as_i64().unwrap() > 0, "{cancelled}");
    assert_eq!(
        succeeded + counts["failed"].as_i64().unwrap() + counts["cancelled"].as_i64().unwrap(),
        100,
        "{cancelled}"
    );
    assert_eq!(counts["pending"], 0);
    // Items that were running when it was cancelled are dropped unstored: after their leases
    // could have been renewed, nothing more is stored or billed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = job(&server, &http, id).await;
    assert_eq!(after["counts"], cancelled["counts"], "{after}");
    assert_eq!(
        stored(&db.store().await, &account).await,
        (succeeded, succeeded, succeeded)
    );
    let lines = results(&server, &http, id).await;
    assert_eq!(
        lines.iter().filter(|l| l["status"] == "cancelled").count() as i64,
        counts["cancelled"].as_i64().unwrap()
    );
    // Cancelling again answers the job as it is.
    let (status, _, again) = call(http.post(server.url(&format!("/v1/jobs/{id}/cancel")))).await;
    assert_eq!(
        (status, &again["counts"]),
        (StatusCode::OK, &cancelled["counts"])
    );
}
