//! OpenAPI 3.1 for the HTTP API, generated from the code with utoipa: the handlers'
//! `#[utoipa::path]` annotations (descriptions.rs, and stubs here for the operations routes of
//! mod.rs) and the wire types' `ToSchema` derives. Served at `/openapi.json`; `/docs` is a
//! self-contained page (no CDN, no external fonts or scripts) that fetches it and renders it.
//!
//! The status check (tests/openapi.rs) compares, per operation, the documented response statuses
//! with [`handler_statuses`]: for the description handlers these come from the `ApiError` variants
//! they can return (`descriptions::create_returns`, exhaustive matches) through
//! [`status_of`](super::error::status_of).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToSchema};

use super::descriptions;
use super::error::{ApiError, ErrorBody, ErrorDetail, status_of};
use crate::model::Detail;
use crate::model::generate::FinishReason;
use crate::model::preprocess::ImageKind;
use crate::store::descriptions::{Description, ImageFacts};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "altimage",
        description = "Self-hosted image descriptions: alt text and product descriptions from \
            Florence-2.\n\nErrors are JSON `{\"error\": {\"type\", \"code\", \"message\"}}`; every \
            answer carries `x-request-id`; 429 and 503 carry `Retry-After`. While the model loads, \
            every route except `/health/*`, `/metrics`, `/openapi.json` and `/docs` answers 503 \
            with code `starting`. Unknown paths answer 404 with the same error body."
    ),
    paths(
        descriptions::create,
        descriptions::create_batch,
        health_live,
        health_ready,
        health,
        info,
        metrics,
        openapi_json,
        docs,
    ),
    components(schemas(
        Description,
        ImageFacts,
        FinishReason,
        Detail,
        ImageKind,
        ErrorBody,
        ErrorDetail,
        DescriptionList,
        DescriptionOrError,
        HealthStatus,
        InfoBody,
        InfoLimits,
        Metadata,
        RawImage,
    )),
    tags(
        (name = "descriptions", description = "Describe images."),
        (name = "operations", description = "Health, information, metrics and this documentation."),
    ),
    modifiers(&FromTheCode),
)]
pub struct ApiDoc;

/// The document, built once.
static SPEC: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises; this is a bug")
});

/// The docs page: plain HTML and JS that fetch `/openapi.json`; nothing from other hosts.
pub const DOCS_HTML: &str = include_str!("docs.html");

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This API as OpenAPI 3.1",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], SPEC.as_str()).into_response()
}

#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "operations",
    summary = "Human-readable API documentation",
    description = "A self-contained page that renders `/openapi.json`; it loads nothing from other hosts.",
    responses((status = 200, description = "The documentation page.", content_type = "text/html", body = String)),
)]
pub async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page may talk to this server only; a browser enforces it.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
            ),
        ],
        DOCS_HTML,
    )
        .into_response()
}

// Stubs that carry the documentation of the operations handlers in mod.rs (which keep no
// annotations of their own); their statuses are in `handler_statuses`.

#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "operations",
    summary = "Liveness",
    description = "200 whenever the process answers, including while the model loads. Cheap; no authentication.",
    responses((status = 200, description = "Alive.", body = HealthStatus, example = json!({"status": "live"}))),
)]
#[allow(dead_code)]
fn health_live() {}

#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "operations",
    summary = "Readiness",
    description = "200 when the model is warm and a worker is healthy. 503 while the model loads, while draining after SIGTERM, or when no worker is healthy; not merely because the queue is full.",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready; `reason` says why.", body = HealthStatus, example = json!({"status": "unavailable", "reason": "draining"})),
    ),
)]
#[allow(dead_code)]
fn health_ready() {}

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    summary = "Readiness (alias of /health/ready)",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus),
        (status = 503, description = "Not ready; `reason` says why.", body = HealthStatus),
    ),
)]
#[allow(dead_code)]
fn health() {}

#[utoipa::path(
    get,
    path = "/info",
    operation_id = "info",
    tag = "operations",
    summary = "Model, device, effective limits and version",
    description = "No secrets.",
    responses(
        (status = 200, description = "What this server runs with.", body = InfoBody),
        (status = 503, description = "The model is still loading (code `starting`).", body = ErrorBody, headers(
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
    ),
)]
#[allow(dead_code)]
fn info() {}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Text exposition format, prefix `altimage_`; every series exists from start-up.",
    responses((status = 200, description = "The metrics.", content_type = "text/plain; version=0.0.4", body = String)),
)]
#[allow(dead_code)]
fn metrics() {}

/// The code side of the status check, per documented operation: `(method, path, statuses the
/// handler can answer with)`. The description handlers derive theirs from the `ApiError` variants
/// they return; the operations handlers in mod.rs return no `ApiError` and answer with the
/// statuses listed here. The start-up router (`starting_router`) adds 503 to the routes it does
/// not serve; tests/openapi.rs measures that by calling it.
pub fn handler_statuses() -> Vec<(&'static str, &'static str, BTreeSet<u16>)> {
    let fixed = |statuses: &[StatusCode]| statuses.iter().map(StatusCode::as_u16).collect();
    vec![
        (
            "post",
            "/v1/descriptions",
            statuses(StatusCode::CREATED, descriptions::create_returns),
        ),
        (
            "post",
            "/v1/descriptions/batch",
            statuses(StatusCode::OK, descriptions::create_batch_returns),
        ),
        ("get", "/health/live", fixed(&[StatusCode::OK])),
        (
            "get",
            "/health/ready",
            fixed(&[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]),
        ),
        (
            "get",
            "/health",
            fixed(&[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]),
        ),
        ("get", "/info", fixed(&[StatusCode::OK])),
        ("get", "/metrics", fixed(&[StatusCode::OK])),
        ("get", "/openapi.json", fixed(&[StatusCode::OK])),
        ("get", "/docs", fixed(&[StatusCode::OK])),
    ]
}

/// `success` and the status of every `ApiError` variant that `returns` says the handler gives.
pub fn statuses(success: StatusCode, returns: fn(&ApiError) -> bool) -> BTreeSet<u16> {
    every_api_error()
        .iter()
        .filter(|error| returns(error))
        .map(|error| status_of(error).0.as_u16())
        .chain([success.as_u16()])
        .collect()
}

/// One value of each `ApiError` variant (tests/openapi.rs checks that none is missing).
pub fn every_api_error() -> Vec<ApiError> {
    let after = std::time::Duration::from_secs(1);
    vec![
        ApiError::bad_request("invalid_json", "example"),
        ApiError::UnsupportedMediaType("text/plain".into()),
        ApiError::too_large("body_too_large", "example"),
        ApiError::BadImage {
            code: "image_decode_failed",
            message: "example".into(),
        },
        ApiError::ImageUrlFailed {
            code: "upstream_status",
            message: "example".into(),
        },
        ApiError::Overloaded {
            message: "example".into(),
            retry_after: after,
        },
        ApiError::Unavailable {
            code: "draining",
            message: "example".into(),
            retry_after: after,
        },
        ApiError::NotFound("example".into()),
        ApiError::Internal("example".into()),
    ]
}

/// Fills in what the derives cannot know: the values of `ErrorDetail.type`, from `status_of`.
struct FromTheCode;

impl Modify for FromTheCode {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let kinds: BTreeSet<&str> = every_api_error()
            .iter()
            .map(|error| status_of(error).1)
            .collect();
        let detail = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("ErrorDetail"));
        if let Some(RefOr::T(Schema::Object(detail))) = detail
            && let Some(RefOr::T(Schema::Object(kind))) = detail.properties.get_mut("type")
        {
            kind.enum_values = Some(kinds.into_iter().map(Into::into).collect());
        }
    }
}

/// A string schema whose values are `values`.
fn string_enum(description: &str, values: impl IntoIterator<Item = &'static str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

impl PartialSchema for Detail {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "How much text: `brief` is one sentence (alt text, the default), `detailed` a few \
             sentences, `paragraph` a paragraph (product descriptions).",
            Detail::ALL.map(Detail::as_str),
        )
        .into()
    }
}

impl ToSchema for Detail {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Detail")
    }
}

impl PartialSchema for ImageKind {
    fn schema() -> RefOr<Schema> {
        let all = [
            ImageKind::Jpeg,
            ImageKind::Png,
            ImageKind::Webp,
            ImageKind::Gif,
            ImageKind::Bmp,
            ImageKind::Tiff,
        ];
        // A new format does not compile until it is listed above.
        for kind in all {
            match kind {
                ImageKind::Jpeg
                | ImageKind::Png
                | ImageKind::Webp
                | ImageKind::Gif
                | ImageKind::Bmp
                | ImageKind::Tiff => {}
            }
        }
        string_enum(
            "Image container format, sniffed from the bytes.",
            all.map(ImageKind::as_str),
        )
        .into()
    }
}

impl ToSchema for ImageKind {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ImageKind")
    }
}

/// The caller's `metadata`: any JSON object, echoed back.
pub struct Metadata;

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Any JSON object (at most 16 KiB serialised), echoed back with the description.",
            ))
            .examples([serde_json::json!({"sku": 1042, "collection": "spring"})])
            .into()
    }
}

impl ToSchema for Metadata {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Metadata")
    }
}

/// Image bytes as the whole body (or one form part): JPEG, PNG, WebP, GIF, BMP or TIFF; the
/// format is sniffed from the bytes.
pub struct RawImage;

impl PartialSchema for RawImage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .description(Some(
                "Image bytes: JPEG, PNG, WebP, GIF, BMP or TIFF (sniffed from the bytes).",
            ))
            .into()
    }
}

impl ToSchema for RawImage {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RawImage")
    }
}

/// Options of the raw-image form, in the query string (also accepted with a multipart body,
/// where form fields win).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawImageQuery {
    /// How much text: `brief` (default), `detailed` or `paragraph`.
    pub detail: Option<Detail>,
    /// Cut the text at a word boundary so that it never exceeds this many characters.
    #[param(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[param(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[param(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id for the image, echoed back.
    #[param(max_length = 256)]
    pub asset_id: Option<String>,
}

/// The JSON form: exactly one of `image_base64` and `image_url`, and options. Unknown fields
/// are refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescriptionJson {
    /// The image in standard base64; a data URL (`data:image/png;base64,…`) is accepted.
    #[schema(
        example = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    )]
    pub image_base64: Option<String>,
    /// An http or https URL that the server fetches (size limit, timeout, redirect limit).
    /// Private, loopback, link-local and metadata addresses are refused unless the operator
    /// allows them.
    #[schema(example = "https://images.example.com/shoe.jpg")]
    pub image_url: Option<String>,
    pub detail: Option<Detail>,
    /// Cut the text at a word boundary so that it never exceeds this many characters.
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id for the image, echoed back.
    #[schema(max_length = 256, example = "sku-1042")]
    pub asset_id: Option<String>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<serde_json::Value>,
}

/// The multipart form: one file field `image` and optional text fields. Unknown fields are
/// refused.
#[derive(ToSchema)]
pub struct DescriptionForm {
    pub image: RawImage,
    pub detail: Option<Detail>,
    /// Cut the text at a word boundary so that it never exceeds this many characters.
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id for the image, echoed back.
    #[schema(max_length = 256)]
    pub asset_id: Option<String>,
    /// A JSON object as text (at most 16 KiB), echoed back.
    #[schema(example = "{\"sku\": 1042, \"collection\": \"spring\"}")]
    pub metadata: Option<String>,
}

/// The JSON batch form.
#[derive(ToSchema)]
pub struct DescriptionsBatchJson {
    /// Each item as the JSON body of `POST /v1/descriptions`; at least one.
    #[schema(min_items = 1)]
    pub images: Vec<DescriptionJson>,
}

/// The multipart batch form: several `image` file fields; the options apply to every image.
#[derive(ToSchema)]
pub struct DescriptionsBatchForm {
    /// One field per image, in order.
    #[schema(min_items = 1)]
    pub image: Vec<RawImage>,
    pub detail: Option<Detail>,
    /// Cut each text at a word boundary so that it never exceeds this many characters.
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id, echoed back with every description.
    #[schema(max_length = 256)]
    pub asset_id: Option<String>,
    /// A JSON object as text, echoed back with every description.
    pub metadata: Option<String>,
}

/// The batch answer.
#[derive(ToSchema)]
pub struct DescriptionList {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// One item per image, in the order sent.
    pub data: Vec<DescriptionOrError>,
}

/// A description, or the error body of an image that failed.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum DescriptionOrError {
    Description(Description),
    Error(ErrorBody),
}

/// Health answers.
#[derive(ToSchema)]
pub struct HealthStatus {
    /// `live`, `ready` or `unavailable`.
    #[schema(example = "ready")]
    pub status: String,
    /// Why not ready: `starting`, `draining` or `no healthy model worker`.
    pub reason: Option<String>,
}

/// What the server runs with.
#[derive(ToSchema)]
pub struct InfoBody {
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The model directory's name.
    #[schema(example = "florence-2-base")]
    pub model: String,
    #[schema(example = "cpu")]
    pub device: String,
    #[schema(example = "fp32")]
    pub dtype: String,
    /// Model instances.
    pub workers: usize,
    pub healthy_workers: usize,
    pub ready: bool,
    pub limits: InfoLimits,
}

/// The effective limits (after defaults and clamping).
#[derive(ToSchema)]
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
    pub max_new_tokens: usize,
    pub max_num_beams: usize,
}
