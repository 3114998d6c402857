//! The server's edge under hostile input, over real HTTP: strings no field may hold (on SQLite
//! and PostgreSQL alike), wrong methods, transfer codings, slow clients, the connection cap, and
//! an `Idempotency-Key` whose client disconnected mid-request.

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::db::TestDatabase;
use common::fixture;
use common::server::{Server, call, post_png};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-token-for-edge-tests";

fn start(db: &TestDatabase, extra: &[&str]) -> Server {
    common::server::start_on(db, ADMIN, extra)
}

/// The server's host:port.
fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Writes `request` on a new connection and reads until the server closes it (at most 20 s).
async fn raw(server: &Server, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address(server)).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// What a hostile-string request must get: the status, and for a 400 a word its message names.
struct Expect {
    status: StatusCode,
    names: &'static str,
}

const fn bad(names: &'static str) -> Expect {
    Expect {
        status: StatusCode::BAD_REQUEST,
        names,
    }
}

const GONE: Expect = Expect {
    status: StatusCode::NOT_FOUND,
    names: "",
};

#[tokio::test(flavor = "multi_thread")]
async fn strings_no_field_may_hold_are_refused_at_the_edge_on_both_databases() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let admin = server.client_with_key(ADMIN);
        let all = ["describe", "read", "manage"];
        let (account, key) = server.account_with_key(ADMIN, "shop", &all).await;
        let (_, stranger_key) = server.account_with_key(ADMIN, "stranger", &all).await;
        let shop = server.client_with_key(&key);
        let stranger = server.client_with_key(&stranger_key);
        let (status, _, created) =
            call(post_png(&shop, server.url("/v1/descriptions"), fixture(0))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let desc = created["id"].as_str().unwrap().to_string();
        let png_b64 = base64::engine::general_purpose::STANDARD.encode(fixture(1));
        let form = || {
            reqwest::multipart::Form::new()
                .part(
                    "image",
                    reqwest::multipart::Part::bytes(fixture(1)).file_name("a.png"),
                )
                .text("asset_id", "sku\u{0}1")
        };

        let cases: Vec<(&str, reqwest::RequestBuilder, Expect)> = vec![
            (
                "another account's id with %00",
                stranger.get(server.url(&format!("/v1/descriptions/{desc}%00"))),
                GONE,
            ),
            (
                "a path id with %1B",
                shop.delete(server.url(&format!("/v1/descriptions/{desc}%1B"))),
                GONE,
            ),
            (
                "a path id of the wrong form",
                shop.get(server.url("/v1/descriptions/desc_x/versions")),
                GONE,
            ),
            (
                "list filter",
                shop.get(server.url("/v1/descriptions?asset_id=sku%001")),
                bad("asset_id"),
            ),
            (
                "list cursor with NUL",
                shop.get(server.url(&format!("/v1/descriptions?starting_after={desc}%00"))),
                bad("starting_after"),
            ),
            (
                "list cursor of the wrong form",
                shop.get(server.url("/v1/descriptions?starting_after=acct_x")),
                bad("starting_after"),
            ),
            (
                "export filter (refused before the stream starts)",
                shop.get(server.url("/v1/descriptions/export?asset_id=%00")),
                bad("asset_id"),
            ),
            (
                "raw upload's asset_id",
                post_png(&shop, server.url("/v1/descriptions?asset_id=sku%001"), fixture(1)),
                bad("asset_id"),
            ),
            (
                "JSON asset_id",
                shop.post(server.url("/v1/descriptions"))
                    .json(&json!({"image_base64": png_b64, "asset_id": "sku\u{0}1"})),
                bad("asset_id"),
            ),
            (
                "JSON metadata value",
                shop.post(server.url("/v1/descriptions"))
                    .json(&json!({"image_base64": png_b64, "metadata": {"colour": "red\u{0}"}})),
                bad("metadata.colour"),
            ),
            (
                "JSON metadata key",
                shop.post(server.url("/v1/descriptions/batch")).json(
                    &json!({"images": [{"image_base64": png_b64, "metadata": {"c\u{0}": 1}}]}),
                ),
                bad("images[0].metadata"),
            ),
            (
                "multipart asset_id",
                shop.post(server.url("/v1/descriptions")).multipart(form()),
                bad("asset_id"),
            ),
            (
                "multipart metadata value",
                shop.post(server.url("/v1/descriptions")).multipart(
                    reqwest::multipart::Form::new()
                        .part(
                            "image",
                            reqwest::multipart::Part::bytes(fixture(1)).file_name("a.png"),
                        )
                        .text("metadata", r#"{"colour": "red\u0000"}"#),
                ),
                bad("`metadata.colour`"),
            ),
            (
                "edited text",
                shop.patch(server.url(&format!("/v1/descriptions/{desc}")))
                    .json(&json!({"text": "a red\u{0} shoe"})),
                bad("text"),
            ),
            (
                "edited text with a noncharacter",
                shop.patch(server.url(&format!("/v1/descriptions/{desc}")))
                    .json(&json!({"text": "a red shoe\u{FFFF}"})),
                bad("text"),
            ),
            (
                "account name",
                shop.patch(server.url("/v1/account"))
                    .json(&json!({"name": "shop\u{0}"})),
                bad("name"),
            ),
            (
                "account email",
                shop.patch(server.url("/v1/account"))
                    .json(&json!({"email": "shop@example.com\u{0}"})),
                bad("email"),
            ),
            (
                "admin: account name with a line break",
                admin
                    .post(server.url("/v1/admin/accounts"))
                    .json(&json!({"name": "evil\nname", "email": "e@example.com"})),
                bad("name"),
            ),
            (
                "admin: Stripe customer id",
                admin.post(server.url("/v1/admin/accounts")).json(
                    &json!({"name": "n", "email": "e@example.com", "stripe_customer_id": "cus_\u{0}"}),
                ),
                bad("stripe_customer_id"),
            ),
            (
                "admin: Stripe customer id on update",
                admin
                    .patch(server.url(&format!("/v1/admin/accounts/{account}")))
                    .json(&json!({"stripe_customer_id": "cus_1\u{0}"})),
                bad("stripe_customer_id"),
            ),
            (
                "admin: key name",
                admin
                    .post(server.url(&format!("/v1/admin/accounts/{account}/keys")))
                    .json(&json!({"name": "k\u{0}", "scopes": ["read"]})),
                bad("name"),
            ),
            (
                "admin: account id in the path",
                admin.get(server.url(&format!("/v1/admin/accounts/{account}%00"))),
                GONE,
            ),
            (
                "admin: key id in the path",
                admin.delete(server.url(&format!("/v1/admin/accounts/{account}/keys/key_%00"))),
                GONE,
            ),
            (
                "admin: account list cursor",
                admin.get(server.url("/v1/admin/accounts?starting_after=acct_%00")),
                bad("starting_after"),
            ),
            (
                "admin: meter report id",
                admin.post(server.url("/v1/admin/billing/reports/mr_%00/retry")),
                GONE,
            ),
        ];
        for (what, request, expect) in cases {
            let (status, _, body) = call(request).await;
            assert_eq!(status, expect.status, "{what} on {}: {body}", db.backend);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(expect.names), "{what}: {message}");
            for leak in [
                "0x00",
                "invalid byte sequence",
                "Unicode escape",
                "postgres",
                "sqlx",
            ] {
                assert!(!message.contains(leak), "{what}: {message}");
            }
        }
        // Nothing above was stored: the account, the text and the description count are as
        // they were, and prose keeps its line breaks.
        let (_, _, me) = call(shop.get(server.url("/v1/account"))).await;
        assert_eq!(me["name"], "shop");
        let (status, _, edited) = call(
            shop.patch(server.url(&format!("/v1/descriptions/{desc}")))
                .json(&json!({"text": "A red shoe.\nLeather, size 42."})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{edited}");
        assert_eq!(edited["version"], 2);
        let (_, _, list) = call(shop.get(server.url("/v1/descriptions"))).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        // The database backstop never fired: every string was refused before a query.
        let log = server.log();
        assert!(
            !log.contains("a string the edge should have refused"),
            "{}: {log}",
            db.backend
        );
        assert!(!log.contains("database failure"), "{}: {log}", db.backend);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_are_405_with_allow_and_the_json_error() {
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let http = server.client();
    for (method, path, allow) in [
        ("PUT", "/v1/descriptions", "GET,HEAD,POST"),
        ("OPTIONS", "/v1/usage", "GET,HEAD"),
        ("TRACE", "/health/live", "GET,HEAD"),
        ("BREW", "/v1/descriptions/batch", "POST"),
        ("POST", "/metrics", "GET,HEAD"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, headers, body) = call(http.request(method.clone(), server.url(path))).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let mut got: Vec<&str> = headers["allow"].to_str().unwrap().split(',').collect();
        got.sort_unstable();
        assert_eq!(got.join(","), allow, "{method} {path}");
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("altimage_rejected_total{reason=\"protocol\"} 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_codings_other_than_chunked_are_refused_and_chunked_works() {
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let key = server.key.clone().unwrap();
    let png = fixture(0);
    let send = |coding: &str| {
        let mut request = format!(
            "POST /v1/descriptions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: image/png\r\ntransfer-encoding: {coding}\r\nconnection: close\r\n\r\n{:x}\r\n",
            png.len()
        )
        .into_bytes();
        request.extend_from_slice(&png);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        request
    };
    let answer = raw(&server, &send("gzip, chunked")).await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("unsupported_transfer_encoding"), "{answer}");
    let answer = raw(&server, &send("chunked")).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_while_others_are_served() {
    let db = TestDatabase::sqlite();
    let server = start(
        &db,
        &[
            "--header-read-timeout-secs",
            "1",
            "--body-read-timeout-secs",
            "2",
        ],
    );
    let key = server.key.clone().unwrap();
    // Half a request line, then nothing.
    let mut slow_head = TcpStream::connect(address(&server)).await.unwrap();
    slow_head.write_all(b"GET /health/live HTT").await.unwrap();
    // Headers complete, a tenth of the body, then nothing.
    let mut slow_body = TcpStream::connect(address(&server)).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/descriptions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: image/png\r\ncontent-length: 1000\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Meanwhile everybody else is served.
    let http = server.client();
    let (status, _, body) = call(post_png(&http, server.url("/v1/descriptions"), fixture(0))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The slow head is closed without an answer; the slow body gets 408 and is closed.
    let answer = read_to_close(&mut slow_head).await;
    assert_eq!(answer, "", "a header timeout closes the connection");
    let answer = read_to_close(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    let (status, _, _) = call(http.get(server.url("/v1/usage"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_get_503_with_retry_after() {
    let db = TestDatabase::sqlite();
    let server = start(&db, &["--max-connections", "2"]);
    let idle: Vec<TcpStream> = {
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(address(&server)).await.unwrap());
        }
        held
    };
    // Accepts are in arrival order, so the two held connections take both places.
    let answer = raw(
        &server,
        b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 2"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    drop(idle);
    // Once the held connections are gone, requests are served again.
    let http = common::server::http_client();
    let mut served = false;
    for _ in 0..50 {
        if let Ok(response) = http.get(server.url("/metrics")).send().await
            && response.status() == StatusCode::OK
        {
            let text = response.text().await.unwrap();
            assert!(
                text.contains("altimage_rejected_total{reason=\"connections\"}"),
                "{text}"
            );
            assert!(
                !text.contains("altimage_rejected_total{reason=\"connections\"} 0"),
                "{text}"
            );
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the server did not serve again after the held connections closed"
    );
}

/// An image server whose every answer takes `delay`, so that a request is in flight long
/// enough for its client to leave.
async fn slow_image_server(delay: Duration) -> String {
    let png = fixture(2);
    let router = axum::Router::new().route(
        "/slow.png",
        axum::routing::get(move || {
            let png = png.clone();
            async move {
                tokio::time::sleep(delay).await;
                ([(axum::http::header::CONTENT_TYPE, "image/png")], png)
            }
        }),
    );
    common::server::serve_on_loopback(router).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_request_releases_its_idempotency_key() {
    for db in TestDatabase::all().await {
        let server = start(&db, &["--allow-private-image-urls"]);
        let images = slow_image_server(Duration::from_secs(2)).await;
        let body = json!({"image_url": format!("{images}/slow.png")});
        let key = server.key.clone().unwrap();
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let gave_up = impatient
            .post(server.url("/v1/descriptions"))
            .bearer_auth(&key)
            .header("idempotency-key", "leave-1")
            .json(&body)
            .send()
            .await;
        assert!(gave_up.is_err(), "the client should have timed out");
        // The retry runs (the claim was released), well before a 30 s lease could lapse.
        let http = server.client();
        let mut answer = None;
        for _ in 0..20 {
            let (status, _, value) = call(
                http.post(server.url("/v1/descriptions"))
                    .header("idempotency-key", "leave-1")
                    .json(&body),
            )
            .await;
            if status == StatusCode::CONFLICT {
                assert_eq!(value["error"]["code"], "idempotency_key_in_use");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            answer = Some((status, value));
            break;
        }
        let (status, value) = answer.expect("the key stayed claimed after its client left");
        assert_eq!(status, StatusCode::CREATED, "{}: {value}", db.backend);
        assert!(
            server
                .log()
                .contains("idempotency key released: the client left mid-request"),
            "{}",
            server.log()
        );
        // The replay is the stored answer, and only one description was billed.
        let (status, headers, replay) = call(
            http.post(server.url("/v1/descriptions"))
                .header("idempotency-key", "leave-1")
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(replay["id"], value["id"]);
        let (_, _, usage) = call(http.get(server.url("/v1/usage"))).await;
        assert_eq!(usage["totals"]["created"], 1, "{usage}");
    }
}

/// What hyper answers before the router sees a request (README, "Errors"): no JSON there, but
/// a status, and the server goes on.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_hyper_s_status_and_the_server_goes_on() {
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let huge_header = format!(
        "GET /health/live HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(500 * 1024)
    );
    let many_headers = format!(
        "GET /health/live HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("x-h{i}: 1\r\n"))
            .collect::<String>()
    );
    let long_uri = format!(
        "GET /health/live?{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    for (what, request, status) in [
        ("headers over the buffer", huge_header.as_str(), "431"),
        ("more than 100 headers", many_headers.as_str(), "431"),
        ("a 100 KiB URI", long_uri.as_str(), "414"),
        (
            "a bad Content-Length",
            "POST /v1/descriptions HTTP/1.1\r\nhost: x\r\ncontent-length: 12x\r\n\r\n",
            "400",
        ),
        (
            "two Content-Lengths",
            "POST /v1/descriptions HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            "400",
        ),
        ("a bad request line", "GET\r\n\r\n", "400"),
    ] {
        let answer = raw(&server, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {answer}"
        );
    }
    let live = reqwest::get(server.url("/health/live")).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
}

/// Every refusal is counted once, under its reason, wherever it was decided (the engine used to
/// count image and option errors that the HTTP layer counted again).
#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_is_counted_once() {
    let db = TestDatabase::sqlite();
    let server = start(&db, &["--max-image-pixels", "100"]);
    let http = server.client();
    let post = |query: &'static str, body: Vec<u8>| {
        post_png(
            &http,
            server.url(&format!("/v1/descriptions?{query}")),
            body,
        )
    };
    for (request, status) in [
        (
            post("", b"not an image".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (post("", fixture(0)), StatusCode::PAYLOAD_TOO_LARGE),
        (post("num_beams=99", fixture(0)), StatusCode::BAD_REQUEST),
        (
            http.put(server.url("/v1/descriptions")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (got, _, body) = call(request).await;
        assert_eq!(got, status, "{body}");
    }
    let metrics = server.metrics().await;
    for (reason, count) in [
        ("bad_image", 1),
        ("too_large", 1),
        ("bad_request", 1),
        ("protocol", 1),
        ("overloaded", 0),
    ] {
        let line = format!("altimage_rejected_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
