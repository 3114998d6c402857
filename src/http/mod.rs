//! The HTTP API: shared state, the router assembled from the route groups of `openapi::routes`
//! (each route registered once), the router served while the model loads, and the plumbing
//! around handlers (middleware, extractors, errors, authentication, the client's address, the
//! request log, security headers and CORS, the accept loop and TLS).

pub mod auth;
pub mod client;
pub mod error;
pub mod error_set;
pub mod extract;
pub mod framing;
pub mod headers;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod ratelimit;
pub mod request_log;
pub mod server;
pub mod tls;
pub mod v1;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;

use crate::describe::DescribeService;
use crate::metrics::Metrics;
use crate::store::Store;
use error::{ApiError, ErrorKind};
use ratelimit::RateLimiter;

/// Who may do what, and how often.
pub struct Access {
    pub rate_limiter: RateLimiter,
    /// Requests per minute per account unless the account overrides it (0 = no limit).
    pub rate_limit_per_minute: u64,
    /// `None`: the admin routes are not mounted.
    pub admin_token: Option<String>,
    /// Between an account's deletion request and the purge of its data.
    pub deletion_grace: std::time::Duration,
    /// Whose `X-Forwarded-For` is believed (`--trusted-proxies`).
    pub trusted_proxies: client::TrustedProxies,
}

/// Request limits enforced by the HTTP layer (the describe service and the engine enforce the
/// image's).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_images_per_request: usize,
    /// From a request's head to the end of its body (`--body-read-timeout-secs`).
    pub body_read_timeout: std::time::Duration,
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The loaded models (each with its engine) and describe-and-store.
    pub describe: DescribeService,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub store: Store,
    pub access: Arc<Access>,
    pub limits: HttpLimits,
    /// What `/info` shows (no secrets).
    pub info: Arc<ops::Info>,
    /// The billing loop's handle (None with billing off), woken after an operator's retry or a
    /// webhook that changed reports.
    pub billing: Option<crate::billing::Billing>,
    /// The Stripe webhook settings (None without a webhook secret: the route is not mounted).
    pub stripe_webhook: Option<Arc<crate::billing::webhook::WebhookConfig>>,
    /// The bulk-job runner's handle: its limits, the webhook URL check, its wake-up.
    pub jobs: crate::jobs::Jobs,
    /// The console for people (None with `--console` off: `/console` is not mounted).
    pub console: Option<Arc<crate::console::Console>>,
    /// The request log's writer (None with `--no-request-log`).
    pub request_log: Option<request_log::RequestLog>,
    /// HSTS and CORS, for the browser-facing layers.
    pub web: Arc<headers::WebPolicy>,
}

/// Each path with the success statuses of its operations, for the request metrics.
pub fn success_statuses() -> Vec<(String, u16)> {
    openapi::success_statuses()
}

pub fn router(state: AppState) -> Router {
    let openapi::Routes {
        api_key,
        admin,
        stripe,
        ops,
    } = openapi::routes();
    let mut app = Router::new().merge(
        Router::from(api_key).route_layer(from_fn_with_state(state.clone(), auth::require_api_key)),
    );
    if state.access.admin_token.is_some() {
        app = app.merge(
            Router::from(admin).route_layer(from_fn_with_state(state.clone(), auth::require_admin)),
        );
    }
    if state.stripe_webhook.is_some() {
        // Stripe signs the body instead of sending an API key.
        app = app.merge(Router::from(stripe));
    }
    if let Some(console) = &state.console {
        app = app.merge(crate::console::router(crate::console::ConsoleState {
            console: console.clone(),
            store: state.store.clone(),
            describe: state.describe.clone(),
        }));
    }
    let mut app = app
        .merge(Router::from(ops))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(from_fn_with_state(
            state.limits.body_read_timeout,
            framing::body_deadline,
        ))
        .layer(axum::middleware::from_fn(framing::refuse_transfer_codings))
        .layer(from_fn_with_state(state.clone(), middleware::observe));
    // Outside `observe`: a preflight is the browser's question, not an API request.
    if !state.web.cors_allowed_origins.is_empty() {
        app = app.layer(from_fn_with_state(state.web.clone(), headers::cors));
    }
    app.layer(from_fn_with_state(
        state.web.clone(),
        headers::security_headers,
    ))
    .with_state(state)
}

/// The router served while the model loads: alive, not ready, every other route 503.
pub fn starting_router(metrics: Arc<Metrics>, retry_after: std::time::Duration) -> Router {
    let unavailable = move || async move {
        ApiError::retry_later(
            ErrorKind::Unavailable,
            "starting",
            "the model is still loading; retry shortly",
            retry_after,
        )
    };
    let render = move || {
        let metrics = metrics.clone();
        async move { ops::exposition(&metrics) }
    };
    Router::new()
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready_while_starting))
        .route("/health", get(ops::ready_while_starting))
        .route("/metrics", get(render))
        .route("/openapi.json", get(ops::openapi_json))
        .route("/docs", get(ops::docs))
        .fallback(unavailable)
        .method_not_allowed_fallback(ops::method_not_allowed)
}
