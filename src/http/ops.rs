//! The operations routes, documented on their own handlers: liveness, readiness, `/info`,
//! Prometheus metrics, the OpenAPI document and the `/docs` page. No authentication.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorKind};
use crate::metrics::Metrics;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(health))
        .routes(routes!(info))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
}

/// Health answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `live`, `ready` or `unavailable`.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    /// Why not ready: `starting`, `draining` or `no healthy model worker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
}

impl HealthStatus {
    fn unavailable(reason: &'static str) -> (StatusCode, Json<HealthStatus>) {
        let status = HealthStatus {
            status: "unavailable",
            reason: Some(reason),
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(status))
    }
}

/// Liveness
///
/// 200 whenever the process answers, including while the model loads. Cheap; no authentication.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    responses((status = 200, description = "Alive.", body = HealthStatus, example = json!({"status": "live"}))),
)]
pub async fn live() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "live",
        reason: None,
    })
}

/// Readiness
///
/// 200 when every loaded model is warm and has a healthy worker. 503 while the models load,
/// while draining after SIGTERM, or when a model has no healthy worker; not merely because a
/// queue is full.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready; `reason` says why.", body = HealthStatus, example = json!({"status": "unavailable", "reason": "draining"})),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<HealthStatus>) {
    let models = state.describe.models();
    let mut unready = None;
    for served in models {
        served.engine.publish_readiness();
        if served.engine.is_draining() {
            return HealthStatus::unavailable("draining");
        }
        if !served.engine.is_ready() {
            unready.get_or_insert(served.name.as_str());
        }
    }
    match unready {
        None => (
            StatusCode::OK,
            Json(HealthStatus {
                status: "ready",
                reason: None,
            }),
        ),
        // One reason for every model, so that probes and dashboards see a fixed set.
        Some(_) => HealthStatus::unavailable("no healthy model worker"),
    }
}

/// Readiness (alias of /health/ready)
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus),
        (status = 503, description = "Not ready; `reason` says why.", body = HealthStatus),
    ),
)]
pub async fn health(state: State<AppState>) -> (StatusCode, Json<HealthStatus>) {
    ready(state).await
}

/// Readiness while the model loads: never ready.
pub async fn ready_while_starting() -> (StatusCode, Json<HealthStatus>) {
    HealthStatus::unavailable("starting")
}

/// What the server runs with.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = InfoBody)]
pub struct Info {
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The default model's name (the first of `models`: it answers requests that name none).
    #[schema(example = "florence-2-base-ft")]
    pub model: String,
    /// Every loaded model, the default first, with what each can be asked for.
    pub models: Vec<InfoModel>,
    #[schema(example = "cpu")]
    pub device: String,
    #[schema(example = "fp32")]
    pub dtype: String,
    /// Model instances, all models together.
    pub workers: usize,
    pub healthy_workers: usize,
    /// Every model ready (what `/health/ready` answers).
    pub ready: bool,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub database: String,
    /// Whether the `/v1/admin/` routes exist (`--admin-token` is set).
    pub admin_api: bool,
    /// Whether usage is reported to Stripe.
    pub billing: bool,
    pub limits: InfoLimits,
}

/// A loaded model and what it can be asked for (a request asking more gets 422 naming one that
/// can).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InfoModel {
    /// What requests send as `model`: the model directory's name.
    #[schema(example = "Qwen3.5-0.8B-ONNX-OPT")]
    pub name: String,
    /// `florence2` or `qwen3_5` (config.json's `model_type`).
    #[schema(example = "qwen3_5")]
    pub family: String,
    #[schema(value_type = Vec<crate::model::Output>)]
    pub outputs: Vec<crate::model::Output>,
    /// BCP 47 tags it writes; a region of one (`de-AT`) is accepted too.
    #[schema(example = json!(["de", "en", "fr"]))]
    pub languages: Vec<String>,
    /// Takes `context` and `tone`.
    pub product_context: bool,
    /// Takes `temperature`, `top_p` and `seed`.
    pub sampling: bool,
    /// Takes `detail` (Florence-2's caption levels).
    pub detail: bool,
    pub max_new_tokens: usize,
    pub max_num_beams: usize,
    pub workers: usize,
    pub healthy_workers: usize,
    pub ready: bool,
}

/// The effective limits (after defaults).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InfoLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_batch_delay_ms: u64,
    pub max_queue_time_ms: u64,
    pub max_concurrent_images: usize,
    pub max_body_bytes: usize,
    pub max_image_bytes: u64,
    pub max_image_pixels: u64,
    pub max_images_per_request: usize,
    /// Open HTTP connections; one more is answered 503 `too_many_connections`.
    pub max_connections: u64,
    /// Seconds for a request's headers (and an idle kept-alive connection).
    pub header_read_timeout_secs: u64,
    /// Seconds from a request's headers to the end of its body; then 408.
    pub body_read_timeout_secs: u64,
    /// The default model's; each model's are in `models`.
    pub max_new_tokens: usize,
    /// The default model's; each model's are in `models`.
    pub max_num_beams: usize,
    /// Requests per minute per account unless the account has its own limit; 0 = no limit.
    pub rate_limit_per_minute: u64,
}

/// Model, device, effective limits and version
///
/// No secrets.
#[utoipa::path(
    get,
    path = "/info",
    operation_id = "info",
    responses(
        (status = 200, description = "What this server runs with.", body = Info),
        (status = 503, description = "The model is still loading (code `starting`).", body = ErrorBody),
    ),
)]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    let mut info = (*state.info).clone();
    for (model, served) in info.models.iter_mut().zip(state.describe.models()) {
        model.healthy_workers = served.engine.healthy_workers();
        model.ready = served.engine.is_ready();
    }
    info.healthy_workers = info.models.iter().map(|m| m.healthy_workers).sum();
    info.ready = info.models.iter().all(|m| m.ready);
    Json(info)
}

/// Prometheus metrics
///
/// Text exposition format, prefix `altimage_`; every series exists from start-up.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    responses((status = 200, description = "The metrics.", content_type = "text/plain; version=0.0.4", body = String)),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    for served in state.describe.models() {
        served.engine.publish_readiness();
    }
    exposition(&state.metrics)
}

/// The metrics in the text exposition format.
pub fn exposition(metrics: &Arc<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

/// This API as OpenAPI 3.1
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document_json(),
    )
        .into_response()
}

/// Human-readable API documentation
///
/// A self-contained page that renders `/openapi.json`; it loads nothing from other hosts.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    responses((status = 200, description = "The documentation page.", content_type = "text/html", body = String)),
)]
pub async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page may talk to this server only, and run only its own script and style;
            // a browser enforces it.
            (header::CONTENT_SECURITY_POLICY, super::openapi::docs_csp()),
        ],
        super::openapi::DOCS_HTML,
    )
        .into_response()
}

/// Any path no route takes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// A known route, another method (`OPTIONS` and `TRACE` included: no route takes them). axum
/// adds the `Allow` header with the methods the route takes.
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "method_not_allowed",
        format!("this route does not take {method}; the Allow header lists the methods it takes"),
    )
}
