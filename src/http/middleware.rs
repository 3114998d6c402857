//! What runs around every request: the request id, the client's address and user agent
//! ([`ClientInfo`], for the request and audit logs) and its arrival time ([`Arrived`]), the
//! request's tracing span (request id, route, and the account once authenticated; it travels
//! with the image through the queue to the worker), the request metrics, error counting and the
//! log line ([`observe`]), the outermost layer of the router's API answers.

use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AppState;
use super::client::ClientInfo;
use super::error::Rejected;

/// When the request arrived: `at` for its latency, `unix_ms` for the request log.
#[derive(Debug, Clone, Copy)]
pub struct Arrived {
    pub at: Instant,
    pub unix_ms: i64,
}

/// Request id (the caller's `x-request-id` when it is sane, else a new one), request metrics and
/// a log line per request.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
    request.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&request_id).expect("checked ASCII; this is a bug"),
    );
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let client = ClientInfo::read(&state.access.trusted_proxies, peer, request.headers());
    request.extensions_mut().insert(client);
    request.extensions_mut().insert(Arrived {
        at: started,
        unix_ms: crate::store::now_ms(),
    });
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        %method,
        route = %route,
        account_id = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    response.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&request_id).expect("checked ASCII; this is a bug"),
    );
    let metrics = &state.metrics;
    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
        metrics.reject(reason);
    }
    metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route.as_str(), status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    if !route.starts_with("/health") && route != "/metrics" {
        span.in_scope(|| {
            tracing::info!(%method, route, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, request_id, "request");
        });
    }
    response
}
