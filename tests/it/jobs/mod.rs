//! Bulk jobs over real HTTP on loopback, against a local image server and a local webhook
//! receiver: items described once with their errors in order (`items`), crashes and replicas
//! (`durability`), signed and retried webhooks (`webhooks`), fair share and interactive latency
//! (`fairness`), and the command line (`cli`).

mod cli;
mod durability;
mod fairness;
mod items;
mod webhooks;

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use common::db::{TestDatabase, select_one};
use common::fixture;
use common::server::{Server, call};
use serde_json::Value;

const ADMIN: &str = "jobs-admin-token";

/// The flags every job test runs with: image URLs on loopback allowed, quick polls and retries.
const FAST: [&str; 9] = [
    "--allow-private-image-urls",
    "--job-poll-ms",
    "50",
    "--job-retry-base-ms",
    "50",
    "--job-concurrency",
    "4",
    "--webhook-retry-base-ms",
    "100",
];

/// A server on `db` with the admin API, the fast job flags and `extra`.
fn start(db: &TestDatabase, extra: &[&str]) -> Server {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend(extra);
    common::server::start_on(db, ADMIN, &flags)
}

/// Serves images on loopback: `/img/N` a fixture PNG, `/missing/N` 404, `/flaky/N` 503 the first
/// time each N is asked then the image, `/slow/N` the image after 150 ms, `/hang/N` nothing for
/// ten minutes.
pub struct ImageHost {
    pub base: String,
    /// Requests per path.
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl ImageHost {
    pub async fn start() -> ImageHost {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let count = |hits: &Arc<Mutex<HashMap<String, usize>>>, path: String| {
            let mut hits = hits.lock().unwrap();
            let n = hits.entry(path).or_default();
            *n += 1;
            *n
        };
        let png = |n: usize| {
            (
                [(axum::http::header::CONTENT_TYPE, "image/png")],
                fixture(n % 6),
            )
                .into_response()
        };
        let router = Router::new()
            .route(
                "/img/{n}",
                get(
                    move |State(hits): State<Arc<Mutex<HashMap<String, usize>>>>,
                          Path(n): Path<usize>| async move {
                        count(&hits, format!("/img/{n}"));
                        png(n)
                    },
                ),
            )
            .route(
                "/missing/{n}",
                get(|Path(_n): Path<usize>| async { StatusCode::NOT_FOUND.into_response() }),
            )
            .route(
                "/flaky/{name}",
                get(
                    move |State(hits): State<Arc<Mutex<HashMap<String, usize>>>>,
                          Path(name): Path<String>| async move {
                        if count(&hits, format!("/flaky/{name}")) == 1 {
                            StatusCode::SERVICE_UNAVAILABLE.into_response()
                        } else {
                            png(name.len())
                        }
                    },
                ),
            )
            .route(
                "/hang/{_n}",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    StatusCode::NOT_FOUND
                }),
            )
            .route(
                "/slow/{n}",
                get(move |Path(n): Path<usize>| async move {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    png(n)
                }),
            )
            .with_state(hits.clone());
        let base = common::server::serve_on_loopback(router).await;
        ImageHost { base, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// `POST /v1/jobs` with a JSON body; the 202's job.
async fn submit(server: &Server, http: &reqwest::Client, body: Value) -> Value {
    let (status, _, job) = call(http.post(server.url("/v1/jobs")).json(&body)).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{job}");
    job
}

/// JSON items for these image URLs, `asset_id` = `sku-<index>`.
fn items(urls: &[String]) -> Vec<Value> {
    urls.iter()
        .enumerate()
        .map(|(i, url)| serde_json::json!({"image_url": url, "asset_id": format!("sku-{i}")}))
        .collect()
}

/// The job now.
async fn job(server: &Server, http: &reqwest::Client, id: &str) -> Value {
    let (status, _, job) = call(http.get(server.url(&format!("/v1/jobs/{id}")))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{job}");
    job
}

/// Polls until `done(job)`; the deadline only bounds a broken run.
async fn wait_for(
    server: &Server,
    http: &reqwest::Client,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let now = job(server, http, id).await;
        if done(&now) {
            return now;
        }
        if Instant::now() > deadline {
            panic!("gave up waiting for {what}: {now}\n{}", server.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the job is finished (succeeded, failed or cancelled).
async fn finished(server: &Server, http: &reqwest::Client, id: &str) -> Value {
    wait_for(server, http, id, "the job to finish", |job| {
        matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .await
}

/// The JSON Lines results of a job.
async fn results(server: &Server, http: &reqwest::Client, id: &str) -> Vec<Value> {
    let response = http
        .get(server.url(&format!("/v1/jobs/{id}/results")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// What the database holds for an account: (descriptions, distinct request ids among them,
/// `created` usage rows).
async fn stored(store: &altimage::store::Store, account: &str) -> (i64, i64, i64) {
    let descriptions = select_one(
        store,
        "SELECT COUNT(*) FROM descriptions WHERE account_id = $1",
        account,
    )
    .await;
    let distinct = select_one(
        store,
        "SELECT COUNT(DISTINCT request_id) FROM descriptions WHERE account_id = $1",
        account,
    )
    .await;
    let usage = select_one(
        store,
        "SELECT COUNT(*) FROM usage_events WHERE account_id = $1 AND kind = 'created'",
        account,
    )
    .await;
    (descriptions, distinct, usage)
}

/// The bootstrap account's id.
async fn account_id(server: &Server, http: &reqwest::Client) -> String {
    let (_, _, account) = call(http.get(server.url("/v1/account"))).await;
    account["id"].as_str().unwrap().to_string()
}
