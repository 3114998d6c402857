//! Job webhooks against a local receiver: the signature verifies with the account's secret (and
//! an independent HMAC), a failing receiver gets retries of the same delivery, the deliveries are
//! listed, a rotated secret signs what follows, and a cancelled job says so.

use super::*;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// What the receiver got: (headers, body) per request, in order.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on loopback that answers 500 to its first `failures` requests, then 204.
async fn receiver(failures: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let state = received.clone();
    let router = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut got = state.lock().unwrap();
                got.push((headers, String::from_utf8(body.to_vec()).unwrap()));
                if got.len() <= failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let base = common::server::serve_on_loopback(router).await;
    (format!("{base}/hook"), received)
}

/// `t=…,v1=…` checked the way the README's receiver sample does, without the server's code.
fn independently_verified(secret: &str, header: &str, body: &str) -> bool {
    let parts: HashMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{body}", parts["t"]).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == parts["v1"]
}

async fn wait_received(received: &Received, n: usize, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "no webhook came:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_retried_and_listed() {
    let host = ImageHost::start().await;
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let http = server.client();
    let (status, _, made) = call(http.post(server.url("/v1/webhook_secret"))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{made}");
    let secret = made["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));

    // The receiver fails twice; the third attempt of the same delivery gets through.
    let (hook, received) = receiver(2).await;
    let urls = [host.url("/img/1"), host.url("/missing/2")];
    let created = submit(
        &server,
        &http,
        json!({"items": items(&urls), "webhook_url": hook}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    finished(&server, &http, id).await;
    wait_received(&received, 3, &server).await;

    let got = received.lock().unwrap().clone();
    let now = altimage::store::now_ms() / 1000;
    let delivery = got[0].0["altimage-delivery"].to_str().unwrap().to_string();
    for (headers, body) in &got {
        let signature = headers["altimage-signature"].to_str().unwrap();
        assert!(altimage::jobs::signature::verify(
            &secret, signature, body, now, 300
        ));
        assert!(independently_verified(&secret, signature, body));
        assert!(!independently_verified("whsec_other", signature, body));
        // Every retry is the same delivery with the same body.
        assert_eq!(headers["altimage-delivery"], delivery.as_str());
        assert_eq!(headers["altimage-event"], "job.succeeded");
        assert_eq!(body, &got[0].1);
    }
    let event: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(event["id"], delivery.as_str());
    assert_eq!(event["type"], "job.succeeded");
    assert_eq!(event["data"]["job"]["id"], id);
    assert_eq!(event["data"]["job"]["counts"]["succeeded"], 1);
    assert_eq!(event["data"]["job"]["counts"]["failed"], 1);

    // Listed with its attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (status, _, page) =
            call(http.get(server.url(&format!("/v1/jobs/{id}/deliveries")))).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        if page["data"][0]["status"] == "delivered" || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed = &listed["data"][0];
    assert_eq!(listed["id"], delivery.as_str(), "{listed}");
    assert_eq!(listed["status"], "delivered", "{listed}");
    assert_eq!(listed["attempts"], 3, "{listed}");
    assert_eq!(listed["last_status"], 204, "{listed}");
    assert!(
        server
            .sample_at_least("altimage_webhook_deliveries_total{result=\"retry\"}", 2.0)
            .await
    );

    // A rotated secret signs the next event; the old one no longer verifies it.
    let (_, _, rotated) = call(http.post(server.url("/v1/webhook_secret"))).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let (hook, received) = receiver(0).await;
    let urls = [host.url("/hang/1")];
    let created = submit(
        &server,
        &http,
        json!({"items": items(&urls), "webhook_url": hook}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let (status, _, _) = call(http.post(server.url(&format!("/v1/jobs/{id}/cancel")))).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    wait_received(&received, 1, &server).await;
    let (headers, body) = received.lock().unwrap()[0].clone();
    let signature = headers["altimage-signature"].to_str().unwrap();
    assert!(independently_verified(&new_secret, signature, &body));
    assert!(!independently_verified(&secret, signature, &body));
    assert_eq!(headers["altimage-event"], "job.cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_2xx_is_given_up_on_after_the_retry_window() {
    let host = ImageHost::start().await;
    let db = TestDatabase::sqlite();
    let server = start(&db, &["--webhook-retry-for-secs", "1"]);
    let http = server.client();
    call(http.post(server.url("/v1/webhook_secret"))).await;
    let (hook, received) = receiver(usize::MAX).await;
    let created = submit(
        &server,
        &http,
        json!({"items": items(&[host.url("/img/1")]), "webhook_url": hook}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    finished(&server, &http, id).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivery = loop {
        let (_, _, page) = call(http.get(server.url(&format!("/v1/jobs/{id}/deliveries")))).await;
        if page["data"][0]["status"] == "failed" {
            break page["data"][0].clone();
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = delivery["attempts"].as_i64().unwrap();
    assert!(attempts >= 2, "{delivery}");
    assert_eq!(received.lock().unwrap().len() as i64, attempts);
    assert_eq!(delivery["last_status"], 500);
    assert!(delivery["next_attempt_at"].is_null());
}
