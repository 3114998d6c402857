//! `altimage serve` over real HTTP on loopback with the tiny model: every input form, every limit,
//! overload, client disconnect, metrics before traffic, and a graceful shutdown.

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::server::{Server, call, get_text, json_of, post_png, status_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::fixture;

/// A BMP header claiming 50000×50000 pixels: a decompression bomb in 60 bytes.
fn bomb() -> Vec<u8> {
    let mut bytes = b"BM".to_vec();
    for v in [60u32, 0, 54, 40] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(&50_000i32.to_le_bytes());
    bytes.extend_from_slice(&50_000i32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&24u16.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 30]);
    bytes
}

/// Serves the fixtures on 127.0.0.1 for `image_url` requests.
async fn image_host() -> String {
    let png = fixture(2);
    let app = axum::Router::new().route(
        "/scene.png",
        axum::routing::get(move || async move { png.clone() }),
    );
    common::server::serve_on_loopback(app).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_input_form_gives_a_description() {
    let server = Server::start(&["--allow-private-image-urls"]);
    let http = server.client();
    let host = image_host().await;

    let raw = post_png(
        &http,
        server.url("/v1/descriptions?detail=paragraph&max_chars=20&asset_id=sku-1"),
        fixture(0),
    )
    .header("x-request-id", "trace-123")
    .send()
    .await
    .unwrap();
    let (status, headers, body) = json_of(raw).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["x-request-id"], "trace-123");
    assert!(headers.contains_key("x-queue-time-ms") && headers.contains_key("x-inference-time-ms"));
    assert_eq!(body["object"], "description");
    assert!(body["id"].as_str().unwrap().starts_with("desc_"));
    assert_eq!(body["detail"], "paragraph");
    assert_eq!(body["asset_id"], "sku-1");
    assert!(body["text"].as_str().unwrap().chars().count() <= 20);
    assert_eq!(body["image"]["width"], 768);
    assert_eq!(body["image"]["format"], "png");
    assert_eq!(body["image"]["sha256"].as_str().unwrap().len(), 64);

    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(fixture(1)).file_name("a.png"),
        )
        .text("detail", "detailed")
        .text("metadata", r#"{"sku": 7}"#);
    let (status, _, body) = call(http.post(server.url("/v1/descriptions")).multipart(form)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["detail"], "detailed");
    assert_eq!(body["metadata"], json!({"sku": 7}));

    let encoded = base64::engine::general_purpose::STANDARD.encode(fixture(1));
    let request = json!({"image_base64": encoded, "detail": "detailed", "metadata": {"sku": 7}});
    let (status, _, from_base64) =
        call(http.post(server.url("/v1/descriptions")).json(&request)).await;
    assert_eq!(status, StatusCode::CREATED, "{from_base64}");
    assert_eq!(
        from_base64["text"], body["text"],
        "the same image and options give the same text, whatever the form"
    );

    let request = json!({"image_url": format!("{host}/scene.png")});
    let (status, _, body) = call(http.post(server.url("/v1/descriptions")).json(&request)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["detail"], "brief");

    // The batch route: one result or one error per image, in order.
    let request = json!({"images": [
        {"image_base64": base64::engine::general_purpose::STANDARD.encode(fixture(3))},
        {"image_base64": base64::engine::general_purpose::STANDARD.encode(b"not an image")},
        {"image_url": format!("{host}/scene.png"), "detail": "paragraph"},
    ]});
    let (status, _, body) = call(
        http.post(server.url("/v1/descriptions/batch"))
            .json(&request),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["object"], "description");
    assert_eq!(data[1]["error"]["code"], "image_format_unsupported");
    assert_eq!(data[2]["detail"], "paragraph");
}

/// Sends one request and checks its status, error code and Retry-After absence.
async fn expect_error(
    request: reqwest::RequestBuilder,
    status: StatusCode,
    code: &str,
    case: &str,
) {
    let (got, _, body) = json_of(request.send().await.unwrap()).await;
    assert_eq!(got, status, "{case}: {body}");
    assert_eq!(body["error"]["code"], code, "{case}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_inputs_get_their_4xx_and_the_server_stays_up() {
    let server = Server::start(&[
        "--max-body-bytes",
        "300000",
        "--max-image-bytes",
        "200000",
        "--max-images-per-request",
        "2",
        "--max-image-pixels",
        "1000000",
    ]);
    let http = server.client();
    let raw = |body: Vec<u8>, content_type: &str| {
        http.post(server.url("/v1/descriptions"))
            .header("content-type", content_type)
            .body(body)
    };
    let json_body = |body: &str| {
        http.post(server.url("/v1/descriptions"))
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let big_png = fixture(5);
    assert!(
        big_png.len() > 200_000 && big_png.len() < 300_000,
        "fixture 5 sits between the two limits"
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(fixture(0));
    let three = json!({"images": [{"image_base64": encoded}, {"image_base64": encoded}, {"image_base64": encoded}]});

    for (case, request, status, code) in [
        (
            "body limit",
            raw(vec![0u8; 400_000], "image/png"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "image bytes",
            raw(big_png, "image/png"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
        ),
        (
            "pixels",
            raw(bomb(), "image/bmp"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_many_pixels",
        ),
        (
            "truncated",
            raw(fixture(2)[..3000].to_vec(), "image/png"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_decode_failed",
        ),
        (
            "empty",
            raw(Vec::new(), "image/jpeg"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_empty",
        ),
        (
            "content type",
            raw(b"hello".to_vec(), "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "detail",
            raw(fixture(0), "image/png").query(&[("detail", "epic")]),
            StatusCode::BAD_REQUEST,
            "invalid_detail",
        ),
        (
            "tokens",
            raw(fixture(0), "image/png").query(&[("max_new_tokens", "5000")]),
            StatusCode::BAD_REQUEST,
            "invalid_option",
        ),
        (
            "beams",
            raw(fixture(0), "image/png").query(&[("num_beams", "99")]),
            StatusCode::BAD_REQUEST,
            "invalid_option",
        ),
        (
            "malformed JSON",
            json_body("{\"image_base64\": "),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "bad base64",
            json_body(r#"{"image_base64": "%%%"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_base64",
        ),
        (
            "no image",
            json_body(r#"{"detail": "brief"}"#),
            StatusCode::BAD_REQUEST,
            "missing_image",
        ),
        (
            "unknown field",
            json_body(&format!(r#"{{"image_base64": "{encoded}", "colour": 1}}"#)),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "images per request",
            http.post(server.url("/v1/descriptions/batch")).json(&three),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_images",
        ),
        (
            "404",
            http.get(server.url("/v2/nothing")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        expect_error(request, status, code, case).await;
    }
    // SSRF: loopback, metadata and private targets are refused before any connection.
    for url in [
        "http://127.0.0.1:9/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.png",
        "http://localhost/x.png",
        "file:///etc/passwd",
    ] {
        let body = json!({"image_url": url}).to_string();
        let (status, _, answer) = call(json_body(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
    }

    let live = status_of(http.get(server.url("/health/live"))).await;
    assert_eq!(live, StatusCode::OK);
    assert_eq!(
        status_of(raw(fixture(0), "image/png")).await,
        StatusCode::CREATED,
        "the server still describes after all that"
    );
    let metrics = server.metrics().await;
    for reason in ["too_large", "bad_image", "bad_request"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("altimage_rejected_total{{reason=\"{reason}\"}}")))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_500_gets_only_201_429_and_503_and_the_server_still_answers() {
    let server = Server::start(&[
        "--max-concurrent-images",
        "4",
        "--max-batch-size",
        "4",
        "--retry-after-secs",
        "3",
        "--max-connections",
        "200",
    ]);
    let http = server.client();
    let image = fixture(0);
    let requests = (0..500).map(|_| {
        let request = post_png(&http, server.url("/v1/descriptions"), image.clone());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = response.json().await.unwrap();
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (status, retry_after, code)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let count = |status: StatusCode| answers.iter().filter(|(s, ..)| *s == status).count();
    let created = count(StatusCode::CREATED);
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, ..)| *s != StatusCode::CREATED)
        .collect();
    eprintln!(
        "201: {created}, 429: {}, 503: {}",
        count(StatusCode::TOO_MANY_REQUESTS),
        count(StatusCode::SERVICE_UNAVAILABLE)
    );
    // Admission permits (429) and, beyond 200 connections, the connection cap (503).
    assert!(
        refused.iter().all(|(status, _, code)| {
            (*status == StatusCode::TOO_MANY_REQUESTS && code == "overloaded")
                || (*status == StatusCode::SERVICE_UNAVAILABLE && code == "too_many_connections")
        }),
        "only 201, 429 and 503: {answers:?}"
    );
    assert!(
        created >= 4 && count(StatusCode::TOO_MANY_REQUESTS) > 0,
        "created {created}, refused {}",
        refused.len()
    );
    assert!(
        refused
            .iter()
            .all(|(_, after, _)| after.as_deref() == Some("3")),
        "429 and 503 carry Retry-After"
    );
    let after = status_of(post_png(&http, server.url("/v1/descriptions"), image)).await;
    assert_eq!(after, StatusCode::CREATED);
    let ready = status_of(http.get(server.url("/health/ready"))).await;
    assert_eq!(ready, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_exist_before_traffic() {
    let server = Server::start(&[]);
    let text = server.metrics().await;
    for name in [
        "altimage_requests_total{route=\"/v1/descriptions\",status=\"201\"} 0",
        "altimage_request_duration_seconds_bucket",
        "altimage_images_total{model=\"tiny-florence2\",outcome=\"described\"} 0",
        "altimage_batches_total{model=\"tiny-florence2\"} 0",
        "altimage_queue_seconds_bucket",
        "altimage_prepare_seconds_bucket",
        "altimage_batch_stage_seconds_bucket{model=\"tiny-florence2\",stage=\"vision\"",
        "altimage_batch_stage_seconds_bucket{model=\"tiny-florence2\",stage=\"encoder\"",
        "altimage_batch_stage_seconds_bucket{model=\"tiny-florence2\",stage=\"decode\"",
        "altimage_batch_size_bucket",
        "altimage_generated_tokens_bucket",
        "altimage_queue_depth{model=\"tiny-florence2\"} 0",
        "altimage_permits_in_use{model=\"tiny-florence2\"} 0",
        "altimage_rejected_total{reason=\"overloaded\"} 0",
        "altimage_rejected_total{reason=\"expired\"} 0",
        "altimage_rejected_total{reason=\"cancelled\"} 0",
        "altimage_rejected_total{reason=\"unauthorized\"} 0",
        "altimage_ready 1",
        "altimage_model_ready{model=\"tiny-florence2\"} 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_costs_no_compute() {
    // The batch delay holds the image in the queue long enough for its client to give up.
    let server = Server::start(&["--max-batch-delay-ms", "1500", "--max-batch-size", "8"]);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let result = post_png(&impatient, server.url("/v1/descriptions"), fixture(0))
        .bearer_auth(server.key.as_deref().unwrap())
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        server
            .sample("altimage_rejected_total{reason=\"cancelled\"}")
            .await
            .unwrap(),
        1.0
    );
    assert_eq!(
        server.sample("altimage_batches_total").await.unwrap(),
        0.0,
        "no batch ran for it"
    );
    assert_eq!(
        server.sample("altimage_permits_in_use").await.unwrap(),
        0.0,
        "its permit came back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_entries_get_503_with_retry_after() {
    let server = Server::start(&["--max-batch-delay-ms", "1500", "--max-queue-time-ms", "200"]);
    let response = post_png(&server.client(), server.url("/v1/descriptions"), fixture(0))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "queue_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_work_then_exits_zero() {
    let mut server = Server::start(&[
        "--max-batch-delay-ms",
        "1500",
        "--shutdown-timeout-secs",
        "20",
    ]);
    let http = server.client();
    let in_flight = {
        let request = post_png(&http, server.url("/v1/descriptions"), fixture(1));
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = status_of(http.get(server.url("/health/ready"))).await;
    assert_eq!(
        ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while draining"
    );
    let refused = post_png(&http, server.url("/v1/descriptions"), fixture(0))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        in_flight.await.unwrap(),
        StatusCode::CREATED,
        "in-flight work finished"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(20));
        (status, server.log())
    })
    .await
    .unwrap();
    assert_eq!(status.0.and_then(|s| s.code()), Some(0), "{}", status.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_model_loads_live_is_200_and_ready_and_work_are_503() {
    let metrics = std::sync::Arc::new(altimage::metrics::Metrics::new(
        8,
        &altimage::http::success_statuses(),
    ));
    let router = altimage::http::starting_router(metrics, Duration::from_secs(5));
    let base = common::server::serve_on_loopback(router).await;
    let http = common::server::http_client();
    assert_eq!(
        status_of(http.get(format!("{base}/health/live"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(http.get(format!("{base}/health/ready"))).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let metrics = get_text(&http, format!("{base}/metrics")).await;
    assert!(metrics.contains("altimage_ready 0"), "{metrics}");
    let response = http
        .post(format!("{base}/v1/descriptions"))
        .body(fixture(0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "starting");
}

/// The request's span reaches the worker through the queue: the worker's log line about the
/// image carries the request id and the account the key belongs to.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_span_travels_through_the_queue_to_the_worker() {
    let server = Server::start(&["--log", "info,altimage::engine=debug"]);
    let http = server.client();
    let account: Value = http
        .get(server.url("/v1/account"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account_id = account["id"].as_str().unwrap().to_string();
    let response = http
        .post(server.url("/v1/descriptions"))
        .header("content-type", "image/png")
        .header("x-request-id", "trace-me-1")
        .body(fixture(0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let log = server.log();
    let line = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "image in a batch")
        .unwrap_or_else(|| panic!("no worker line for the image:\n{log}"));
    let span = &line["span"];
    assert_eq!(span["request_id"], "trace-me-1", "{line}");
    assert_eq!(span["account_id"], account_id.as_str(), "{line}");
}
