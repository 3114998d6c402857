//! `POST /v1/descriptions` and `POST /v1/descriptions/batch`: admission, image fetch, the engine,
//! and the answer with its timing headers.

use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::input::{ImageRequest, ImageSource, ResponseOptions, read_images, truncate_at_word};
use super::openapi::{
    DescriptionForm, DescriptionJson, DescriptionList, DescriptionsBatchForm,
    DescriptionsBatchJson, RawImage, RawImageQuery,
};
use crate::engine::{Described, Permits};
use crate::model::Detail;
use crate::model::generate::FinishReason;

/// The description resource as returned to clients.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DescriptionBody {
    /// Always `description`.
    #[schema(value_type = String, example = "description")]
    pub object: &'static str,
    /// Unique id of this answer.
    #[schema(example = "desc_3f1c2a9e8b7d4c6a9e0f1a2b3c4d5e6f")]
    pub id: String,
    /// The description, cut at a word boundary when `max_chars` was given.
    #[schema(example = "A red leather shoe on a white background.")]
    pub text: String,
    /// The detail level used.
    #[schema(value_type = crate::model::Detail)]
    pub detail: &'static str,
    /// The model directory's name.
    #[schema(example = "florence-2-base")]
    pub model: String,
    /// The caller's `asset_id`, echoed back; absent when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    /// The caller's `metadata` object, echoed back; absent when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::openapi::Metadata>)]
    pub metadata: Option<Value>,
    pub image: ImageBody,
    /// Tokens the model generated for `text` (before any `max_chars` cut).
    pub generated_tokens: usize,
    pub finish_reason: FinishReason,
    /// Whether `max_chars` shortened the text.
    pub truncated: bool,
}

/// Facts about the image as read from its bytes; the bytes themselves are never kept.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImageBody {
    pub width: u32,
    pub height: u32,
    /// The container format sniffed from the bytes (not the declared content type).
    #[schema(value_type = crate::model::preprocess::ImageKind)]
    pub format: &'static str,
    pub byte_size: usize,
    /// SHA-256 of the image bytes, hex.
    #[schema(example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub sha256: String,
}

struct Timed {
    body: DescriptionBody,
    queue_ms: u128,
    inference_ms: u128,
}

/// Whether `create` can answer with `error`. tests/openapi.rs turns this into statuses through
/// `status_of` and checks them against the `responses` of `create`'s `#[utoipa::path]` below.
/// Exhaustive on purpose: a new `ApiError` variant does not compile until this says whether
/// `create` returns it, and the check then fails until its status is documented.
pub fn create_returns(error: &ApiError) -> bool {
    match error {
        // read_images (options, JSON, multipart, base64), image URL refused, engine options.
        ApiError::BadRequest { .. }
        | ApiError::UnsupportedMediaType(_)
        // Body, image bytes, pixels, fetched image size.
        | ApiError::TooLarge { .. }
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        // Admission.
        | ApiError::Overloaded { .. }
        // Draining at admission, queue timeout.
        | ApiError::Unavailable { .. }
        // Inference failed.
        | ApiError::Internal(_) => true,
        ApiError::NotFound(_) => false,
    }
}

#[utoipa::path(
    post,
    path = "/v1/descriptions",
    operation_id = "createDescription",
    tag = "descriptions",
    summary = "Describe one image",
    description = "Send one image in one of three body forms and get its description.\n\n\
        * **Raw image**: the bytes as the body with `Content-Type: image/*` (any image type) or \
        `application/octet-stream`; options go in the query string.\n\
        * **Multipart form** (`multipart/form-data`): one file field `image` and optional text \
        fields `detail`, `max_chars`, `max_new_tokens`, `num_beams`, `asset_id` and `metadata` \
        (a JSON object as text). Query options are accepted too; form fields win.\n\
        * **JSON** (`application/json`): exactly one of `image_base64` (a data URL is accepted) \
        and `image_url` (http or https, fetched by the server), plus the options.\n\n\
        The format is sniffed from the bytes: JPEG, PNG, WebP, GIF, BMP or TIFF.",
    params(RawImageQuery),
    request_body(
        description = "The image, in one of three forms.",
        content(
            (RawImage = "image/*"),
            (RawImage = "application/octet-stream"),
            (DescriptionForm = "multipart/form-data"),
            (DescriptionJson = "application/json"),
        ),
    ),
    responses(
        (status = 201, description = "The description.", body = DescriptionBody, headers(
            ("x-request-id" = String, description = "The caller's `x-request-id` when it is sane (1-128 of `A-Za-z0-9-_.:`), else a new one."),
            ("x-queue-time-ms" = u64, description = "Milliseconds the image waited for a batch."),
            ("x-inference-time-ms" = u64, description = "Milliseconds of model time for the image's batch."),
        )),
        (status = 400, description = "Invalid request: malformed JSON or multipart, bad base64, no image or two, an unknown field or option, an invalid option value, or a refused image URL (scheme, private address).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 413, description = "Too large: the body (`--max-body-bytes`), the image bytes (`--max-image-bytes`, sent or fetched) or its pixels (`--max-image-pixels`).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 415, description = "Unsupported content type: send image/*, application/octet-stream, multipart/form-data or application/json.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 422, description = "The bytes are not an image that can be read (empty, truncated, unknown format), or the image URL could not be fetched (unreachable, upstream error status, timeout, too many redirects).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 429, description = "At capacity (`--max-concurrent-images`); retry after `Retry-After` seconds.", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
        (status = 500, description = "Inference failed; the worker is marked unhealthy until a run succeeds.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 503, description = "Not available: the model is still loading (`starting`), the server is draining (`draining`), or the image waited longer than `--max-queue-time-ms` (`queue_timeout`).", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
    ),
)]
pub async fn create(State(state): State<AppState>, request: Request) -> Response {
    let images = match read_images(request, false).await {
        Ok(images) => images,
        Err(error) => return state.reject(error),
    };
    let image = images
        .into_iter()
        .next()
        .expect("read_images returns at least one; this is a bug");
    let permits = match state.engine.try_admit(1) {
        Ok(permits) => permits,
        Err(error) => return ApiError::from(error).into_response(),
    };
    match describe_one(&state, permits, image).await {
        Ok(timed) => {
            let mut response = (StatusCode::CREATED, Json(timed.body)).into_response();
            timing_headers(response.headers_mut(), timed.queue_ms, timed.inference_ms);
            response
        }
        Err(error) => state.reject(error),
    }
}

/// Whether `create_batch` answers the whole request with `error` (per-image errors are inside
/// its 200 answer). Exhaustive on purpose, like [`create_returns`].
pub fn create_batch_returns(error: &ApiError) -> bool {
    match error {
        // read_images, or more images than the server's capacity.
        ApiError::BadRequest { .. }
        | ApiError::UnsupportedMediaType(_)
        // Body size, `--max-images-per-request`.
        | ApiError::TooLarge { .. }
        // Admission: at capacity, draining.
        | ApiError::Overloaded { .. }
        | ApiError::Unavailable { .. } => true,
        // Per image, inside the 200 list.
        ApiError::BadImage { .. } | ApiError::ImageUrlFailed { .. } | ApiError::Internal(_) => {
            false
        }
        ApiError::NotFound(_) => false,
    }
}

#[utoipa::path(
    post,
    path = "/v1/descriptions/batch",
    operation_id = "createDescriptions",
    tag = "descriptions",
    summary = "Describe several images",
    description = "Up to `--max-images-per-request` images in one request, admitted whole or \
        refused whole. The answer lists one description or one error per image, in order; an \
        image that fails (bad bytes, URL failure, queue timeout, inference failure) does not fail \
        the others.\n\n\
        * **JSON**: `{\"images\": [...]}`, each item as the JSON body of `POST /v1/descriptions`.\n\
        * **Multipart**: several `image` file fields; the option fields apply to all of them.\n\
        * **Raw image**: as for `POST /v1/descriptions`, a batch of one.",
    params(RawImageQuery),
    request_body(
        description = "The images, in one of three forms.",
        content(
            (DescriptionsBatchJson = "application/json"),
            (DescriptionsBatchForm = "multipart/form-data"),
            (RawImage = "image/*"),
            (RawImage = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "One result per image, in order: a description or an error body.", body = DescriptionList, headers(
            ("x-request-id" = String, description = "The caller's `x-request-id` when it is sane, else a new one."),
            ("x-queue-time-ms" = u64, description = "The longest queue wait among the images."),
            ("x-inference-time-ms" = u64, description = "The longest model time among the images."),
        )),
        (status = 400, description = "Invalid request: malformed JSON or multipart, bad base64, an empty `images` list, an unknown field, an invalid option.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 413, description = "Too large: the body (`--max-body-bytes`), more images than `--max-images-per-request`, or more than the server admits at once (`--max-concurrent-images`).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 415, description = "Unsupported content type: send application/json, multipart/form-data, image/* or application/octet-stream.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 429, description = "Not enough capacity for all the images at once; retry after `Retry-After` seconds.", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
        (status = 503, description = "Not available: the model is still loading (`starting`) or the server is draining (`draining`).", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
    ),
)]
pub async fn create_batch(State(state): State<AppState>, request: Request) -> Response {
    let images = match read_images(request, true).await {
        Ok(images) => images,
        Err(error) => return state.reject(error),
    };
    let limit = state.limits.max_images_per_request;
    if images.len() > limit {
        return state.reject(ApiError::too_large(
            "too_many_images",
            format!(
                "{} images in one request; the limit is {limit} (--max-images-per-request)",
                images.len()
            ),
        ));
    }
    // All permits at once: a batch request is admitted whole or refused whole, like single ones.
    let mut permits = match state.engine.try_admit(images.len()) {
        Ok(permits) => permits,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let tasks = images.into_iter().map(|image| {
        let permit = permits
            .split_one()
            .expect("one permit per image; this is a bug");
        describe_one(&state, permit, image)
    });
    let results = join_all(tasks).await;
    let (mut queue_ms, mut inference_ms) = (0, 0);
    let data: Vec<Value> = results
        .into_iter()
        .map(|result| match result {
            Ok(timed) => {
                queue_ms = queue_ms.max(timed.queue_ms);
                inference_ms = inference_ms.max(timed.inference_ms);
                serde_json::to_value(timed.body).expect("serialisable; this is a bug")
            }
            Err(error) => {
                state.count_rejection(&error);
                serde_json::to_value(error.body()).expect("serialisable; this is a bug")
            }
        })
        .collect();
    let mut response = (
        StatusCode::OK,
        Json(serde_json::json!({"object": "list", "data": data})),
    )
        .into_response();
    timing_headers(response.headers_mut(), queue_ms, inference_ms);
    response
}

async fn describe_one(
    state: &AppState,
    permit: Permits,
    image: ImageRequest,
) -> Result<Timed, ApiError> {
    let ImageRequest {
        source,
        describe,
        response,
    } = image;
    let bytes = fetch(state, source).await?;
    let max = state.limits.max_image_bytes;
    if bytes.len() as u64 > max {
        return Err(ApiError::too_large(
            "image_too_large",
            format!(
                "the image has {} bytes; the limit is {max} (--max-image-bytes)",
                bytes.len()
            ),
        ));
    }
    let started = Instant::now();
    let described = state.engine.describe(permit, bytes, describe).await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "described"
    );
    Ok(body_of(state, described, describe.detail, response))
}

async fn fetch(state: &AppState, source: ImageSource) -> Result<Bytes, ApiError> {
    match source {
        ImageSource::Bytes(bytes) => Ok(bytes),
        ImageSource::Url(url) => Ok(state.fetcher.fetch(&url).await?),
    }
}

fn body_of(
    state: &AppState,
    described: Described,
    detail: Detail,
    options: ResponseOptions,
) -> Timed {
    let Described {
        generated,
        image: facts,
        queue_time,
        inference_time,
        ..
    } = described;
    let (text, truncated) = match options.max_chars {
        Some(max) => {
            let cut = truncate_at_word(&generated.text, max);
            let truncated = cut.len() < generated.text.len();
            (cut, truncated)
        }
        None => (generated.text.clone(), false),
    };
    Timed {
        body: DescriptionBody {
            object: "description",
            id: format!("desc_{}", uuid::Uuid::new_v4().simple()),
            text,
            detail: detail.as_str(),
            model: state.model_name.clone(),
            asset_id: options.asset_id,
            metadata: options.metadata,
            image: ImageBody {
                width: facts.width,
                height: facts.height,
                format: facts.format.as_str(),
                byte_size: facts.byte_size,
                sha256: facts.sha256,
            },
            generated_tokens: generated.generated_tokens(),
            finish_reason: generated.finish_reason,
            truncated,
        },
        queue_ms: queue_time.as_millis(),
        inference_ms: inference_time.as_millis(),
    }
}

fn timing_headers(headers: &mut HeaderMap, queue_ms: u128, inference_ms: u128) {
    headers.insert("x-queue-time-ms", HeaderValue::from(queue_ms as u64));
    headers.insert(
        "x-inference-time-ms",
        HeaderValue::from(inference_ms as u64),
    );
}
