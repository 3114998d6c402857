//! The HTTP API: the axum router, shared state, request ids, request metrics, and the
//! operations routes (health, info, metrics).

pub mod account;
pub mod admin;
pub mod auth;
pub mod billing;
pub mod descriptions;
pub mod error;
pub mod extract;
pub mod framing;
pub mod input;
pub mod library;
pub mod openapi;
pub mod ratelimit;
pub mod server;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use crate::describe::DescribeService;
use crate::engine::Engine;
use crate::store::Store;
use error::ApiError;
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
}

/// Request limits enforced by the HTTP layer (the engine enforces pixels).
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
    pub describe: DescribeService,
    pub engine: Engine,
    pub store: Store,
    pub access: Arc<Access>,
    pub limits: HttpLimits,
    /// The effective configuration shown at `/info` (no secrets).
    pub info: Arc<Value>,
    /// The billing loop's handle (None with billing off), woken after an operator's retry or a
    /// webhook that changed reports.
    pub billing: Option<crate::billing::Billing>,
    /// The Stripe webhook settings (None without a webhook secret: the route is not mounted).
    pub stripe_webhook: Option<Arc<crate::billing::webhook::WebhookConfig>>,
}

/// Routes with each of their success statuses, so their metric series exist before traffic.
pub const ROUTES: [(&str, u16); 26] = [
    ("/v1/descriptions", 201),
    ("/v1/descriptions", 200),
    ("/v1/descriptions/batch", 200),
    ("/v1/descriptions/export", 200),
    ("/v1/descriptions/{id}", 200),
    ("/v1/descriptions/{id}/versions", 200),
    ("/v1/usage", 200),
    ("/v1/account", 200),
    ("/v1/account", 202),
    ("/v1/account/export", 200),
    ("/v1/admin/accounts", 201),
    ("/v1/admin/accounts", 200),
    ("/v1/admin/accounts/{id}", 200),
    ("/v1/admin/accounts/{id}", 202),
    ("/v1/admin/accounts/{id}/keys", 201),
    ("/v1/admin/accounts/{id}/keys", 200),
    ("/v1/admin/accounts/{id}/keys/{key_id}", 200),
    ("/v1/admin/billing/reports", 200),
    ("/v1/admin/billing/reports/{id}/retry", 200),
    ("/v1/stripe/webhook", 200),
    ("/health/live", 200),
    ("/health/ready", 200),
    ("/info", 200),
    ("/metrics", 200),
    ("/openapi.json", 200),
    ("/docs", 200),
];

pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let account_routes = Router::new()
        .route(
            "/v1/descriptions",
            post(descriptions::create).get(library::list),
        )
        .route("/v1/descriptions/batch", post(descriptions::create_batch))
        .route("/v1/descriptions/export", get(library::export))
        .route(
            "/v1/descriptions/{id}",
            get(library::retrieve)
                .patch(library::edit)
                .delete(library::delete),
        )
        .route("/v1/descriptions/{id}/versions", get(library::versions))
        .route("/v1/usage", get(account::usage))
        .route(
            "/v1/account",
            get(account::show)
                .patch(account::update)
                .delete(account::delete),
        )
        .route("/v1/account/export", get(account::export))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let mut app = Router::new().merge(account_routes);
    if state.access.admin_token.is_some() {
        let admin_routes = Router::new()
            .route(
                "/v1/admin/accounts",
                post(admin::create_account).get(admin::list_accounts),
            )
            .route(
                "/v1/admin/accounts/{id}",
                get(admin::show_account)
                    .patch(admin::update_account)
                    .delete(admin::delete_account),
            )
            .route(
                "/v1/admin/accounts/{id}/keys",
                post(admin::create_key).get(admin::list_keys),
            )
            .route(
                "/v1/admin/accounts/{id}/keys/{key_id}",
                delete(admin::revoke_key),
            )
            .route("/v1/admin/billing/reports", get(billing::list_reports))
            .route(
                "/v1/admin/billing/reports/{id}/retry",
                post(billing::retry_report),
            )
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_admin,
            ));
        app = app.merge(admin_routes);
    }
    if state.stripe_webhook.is_some() {
        // Stripe signs the body instead of sending an API key.
        app = app.route("/v1/stripe/webhook", post(billing::receive));
    }
    app.route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(ready))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.limits.body_read_timeout,
            framing::body_deadline,
        ))
        .layer(middleware::from_fn(framing::refuse_transfer_codings))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request id (the caller's `x-request-id` when it is sane, else a new one), request metrics and
/// a log line per request.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
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
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let status = response.status();
    response.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&request_id).expect("checked ASCII; this is a bug"),
    );
    let metrics = state.engine.metrics();
    if let Some(error::Rejected(reason)) = response.extensions().get::<error::Rejected>() {
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
        tracing::info!(%method, route, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, request_id, "request");
    }
    response
}

/// The router served while the model loads: alive, not ready, every other route 503.
pub fn starting_router(
    metrics: Arc<crate::metrics::Metrics>,
    retry_after: std::time::Duration,
) -> Router {
    let unavailable = move || async move {
        ApiError::Unavailable {
            code: "starting",
            message: "the model is still loading; retry shortly".into(),
            retry_after,
        }
    };
    let render = move || {
        let metrics = metrics.clone();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                metrics.render(),
            )
        }
    };
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(starting_ready))
        .route("/health", get(starting_ready))
        .route("/metrics", get(render))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .fallback(unavailable)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn starting_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unavailable", "reason": "starting"})),
    )
        .into_response()
}

async fn live() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "live"})))
}

async fn ready(State(state): State<AppState>) -> Response {
    let engine = &state.engine;
    engine.publish_readiness();
    if engine.is_ready() {
        return (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response();
    }
    let reason = if engine.is_draining() {
        "draining"
    } else {
        "no healthy model worker"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unavailable", "reason": reason})),
    )
        .into_response()
}

async fn info(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = (*state.info).clone();
    body["healthy_workers"] = json!(state.engine.healthy_workers());
    body["ready"] = json!(state.engine.is_ready());
    axum::Json(body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.engine.publish_readiness();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.engine.metrics().render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A known route, another method (`OPTIONS` and `TRACE` included: no route takes them). axum
/// adds the `Allow` header with the methods the route takes.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::Protocol {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!(
            "this route does not take {method}; the Allow header lists the methods it takes"
        ),
    }
}
