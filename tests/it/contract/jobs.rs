//! The bulk-job routes over real HTTP: each operation's success and the error statuses a client
//! can provoke, each checked against the document (status, headers, body; the results' lines
//! against `JobResult`).

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn job_routes_answer_as_documented() {
    // The image is served by this server's own document route: any URL works for a job that is
    // cancelled before it matters, and a failed item is a documented result too.
    let server = Server::start(&["--allow-private-image-urls", "--job-poll-ms", "50"]);
    let doc = document();
    let http = server.client();
    let mut answers = Answers::new(&doc);
    let url = |path: &str| server.url(path);
    let image = url("/openapi.json");

    let body =
        json!({"items": [{"image_url": image, "asset_id": "sku-1"}], "outputs": ["alt_text"]});
    let keyed = |body: &Value| {
        http.post(url("/v1/jobs"))
            .header("idempotency-key", "openapi-job-1")
            .json(body)
    };
    let (status, job) = answers.send(keyed(&body)).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let response = keyed(&body).send().await.unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    Answers::new(&doc).check("post", "/v1/jobs", response).await;
    let csv = format!("image_url,asset_id\n{image},sku-2\n");
    answers
        .expect_statuses([
            (
                202,
                http.post(url("/v1/jobs?outputs=alt_text"))
                    .header("content-type", "text/csv")
                    .body(csv),
            ),
            (409, keyed(&json!({"items": [{"image_url": image}]}))),
            (400, http.post(url("/v1/jobs")).json(&json!({"items": []}))),
            (
                415,
                http.post(url("/v1/jobs"))
                    .header("content-type", "text/plain")
                    .body("x"),
            ),
            (401, client().post(url("/v1/jobs"))),
            (200, http.get(url("/v1/jobs?limit=1"))),
            (400, http.get(url("/v1/jobs?limit=0"))),
            (200, http.get(url(&format!("/v1/jobs/{id}")))),
            (404, http.get(url("/v1/jobs/job_missing"))),
            (
                200,
                http.get(url(&format!("/v1/jobs/{id}/results?format=csv"))),
            ),
            (
                400,
                http.get(url(&format!("/v1/jobs/{id}/results?format=xml"))),
            ),
            (404, http.get(url("/v1/jobs/job_missing/results"))),
            (200, http.get(url(&format!("/v1/jobs/{id}/deliveries")))),
            (404, http.get(url("/v1/jobs/job_missing/deliveries"))),
            (200, http.post(url("/v1/webhook_secret"))),
            (200, http.post(url(&format!("/v1/jobs/{id}/cancel")))),
            (404, http.post(url("/v1/jobs/job_missing/cancel"))),
        ])
        .await;
    // Each results line is a `JobResult` as documented.
    let text = get_text(&http, url(&format!("/v1/jobs/{id}/results"))).await;
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let schema = json!({"$ref": "#/components/schemas/JobResult"});
        fits(&doc, &schema, &value, "line").unwrap();
    }
    // A job with a webhook, so that its deliveries list has a delivery to fit the schema.
    // The webhook goes to a receiver of its own: a POST to this server would be an answer
    // (405) counted in the metrics the check below reads, whenever the delivery beat it.
    let receiver = crate::common::server::serve_on_loopback(
        axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" })),
    )
    .await;
    let hooked =
        json!({"items": [{"image_url": image}], "webhook_url": format!("{receiver}/hook")});
    let (status, hooked) = answers.send(http.post(url("/v1/jobs")).json(&hooked)).await;
    assert_eq!(status, 202, "{hooked}");
    let hooked_id = hooked["id"].as_str().unwrap();
    answers
        .send(http.post(url(&format!("/v1/jobs/{hooked_id}/cancel"))))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, page) = answers
            .send(http.get(url(&format!("/v1/jobs/{hooked_id}/deliveries"))))
            .await;
        assert_eq!(status, 200);
        if page["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counted_statuses_are_documented(&doc, &server).await;
}
