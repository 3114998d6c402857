//! `POST /v1/descriptions` and `POST /v1/descriptions/batch`: admission, image fetch, the engine,
//! the description and its usage row stored in one transaction, `Idempotency-Key` replays, and
//! the answer with its timing headers.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::idempotency::{self, Idempotency};
use super::input::{ImageRequest, ImageSource, ResponseOptions, read_images, truncate_at_word};
use super::library::request_id;
use super::openapi::{
    DescriptionForm, DescriptionJson, DescriptionList, DescriptionsBatchForm,
    DescriptionsBatchJson, IdempotencyKey, RawImage, RawImageQuery,
};
use crate::engine::{DescribeOptions, Described, Permits};
use crate::store::descriptions::{Description, ImageFacts, Provenance};
use crate::store::keys::Scope;
use crate::store::now_ms;

struct Timed {
    body: Description,
    queue_ms: u128,
    inference_ms: u128,
}

/// Whether `create` can answer with `error`. tests/it/openapi.rs turns this into statuses through
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
        // Inference failed, or the database failed (503 when it did not answer in time).
        | ApiError::Internal(_)
        // No key or a bad one; the `describe` scope missing or processing restricted.
        | ApiError::Unauthorized { .. }
        | ApiError::Forbidden { .. }
        // An Idempotency-Key reused with another request, or still running.
        | ApiError::Conflict { .. }
        | ApiError::RateLimited { .. } => true,
        ApiError::NotFound(_) => false,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
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
        The format is sniffed from the bytes: JPEG, PNG, WebP, GIF, BMP or TIFF.\n\n\
        The description is stored with the image's facts (never its bytes) and billed once (the \
        `created` meter of `GET /v1/usage`). Scope: `describe`; refused while the account's \
        processing is restricted.",
    params(RawImageQuery, IdempotencyKey),
    security(("api_key" = [])),
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
        (status = 201, description = "The description.", body = Description, headers(
            ("x-request-id" = String, description = "The caller's `x-request-id` when it is sane (1-128 of `A-Za-z0-9-_.:`), else a new one."),
            ("x-queue-time-ms" = u64, description = "Milliseconds the image waited for a batch."),
            ("x-inference-time-ms" = u64, description = "Milliseconds of model time for the image's batch."),
            ("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key` (then not billed again, and without the timing headers)."),
        )),
        (status = 400, description = "Invalid request: malformed JSON or multipart, bad base64, no image or two, an unknown field or option, an invalid option value, a refused image URL (scheme, private address), or an invalid `Idempotency-Key`.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 401, description = "No API key, or one that is unknown or revoked, or whose account is deleted (`missing_api_key`, `invalid_api_key`).", body = ErrorBody),
        (status = 403, description = "The key lacks the `describe` scope (`missing_scope`), or the account's processing is restricted (`account_restricted`).", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` was used with a different request in the last 24 hours (`idempotency_key_reused`), or a request with it is still running (`idempotency_key_in_use`).", body = ErrorBody),
        (status = 413, description = "Too large: the body (`--max-body-bytes`), the image bytes (`--max-image-bytes`, sent or fetched) or its pixels (`--max-image-pixels`).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 415, description = "Unsupported content type: send image/*, application/octet-stream, multipart/form-data or application/json.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 422, description = "The bytes are not an image that can be read (empty, truncated, unknown format, or more elongated than 200:1: `image_aspect_ratio_unsupported`), or the image URL could not be fetched (unreachable, upstream error status, timeout, too many redirects).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 429, description = "At capacity (`--max-concurrent-images`, code `overloaded`), or the account's requests per minute are used up (`rate_limited`); retry after `Retry-After` seconds.", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
        (status = 500, description = "Inference failed (the worker is marked unhealthy until a run succeeds), or the database failed; nothing was stored or billed.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 503, description = "Not available: the model is still loading (`starting`), the server is draining (`draining`), the image waited longer than `--max-queue-time-ms` (`queue_timeout`), the server is short of memory for preparing the image (`out_of_memory`), or the database did not answer in time (`database_unavailable`).", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
    ),
)]
pub async fn create(State(state): State<AppState>, caller: Caller, request: Request) -> Response {
    let (request_id, idempotency_key, images) = match read_request(&caller, request, false).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let guard = match Idempotency::claim(&state, &caller, idempotency_key, "create", &images).await
    {
        Ok(Ok(guard)) => guard,
        Ok(Err(replay)) => return replay,
        Err(error) => return error.into_response(),
    };
    let image = images
        .into_iter()
        .next()
        .expect("read_images returns at least one; this is a bug");
    let permits = match state.engine.try_admit(1) {
        Ok(permits) => permits,
        Err(error) => return guard.fail(ApiError::from(error)).await,
    };
    let timed = match describe_one(&state, permits, image).await {
        Ok(timed) => timed,
        Err(error) => return guard.fail(error).await,
    };
    let body = serde_json::to_string(&timed.body).expect("serialisable; this is a bug");
    let saved = state
        .store
        .save_created(
            caller.account_id(),
            &request_id,
            std::slice::from_ref(&timed.body),
            guard.completion(StatusCode::CREATED, &body),
        )
        .await;
    if let Err(error) = saved {
        // Not stored, so not billed: the caller gets an error and may retry.
        return guard.fail(ApiError::from(error)).await;
    }
    guard.answered();
    let mut response = (
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    timing_headers(response.headers_mut(), timed.queue_ms, timed.inference_ms);
    response
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
        | ApiError::Unavailable { .. }
        // Storing the results failed.
        | ApiError::Internal(_)
        | ApiError::Unauthorized { .. }
        | ApiError::Forbidden { .. }
        | ApiError::Conflict { .. }
        | ApiError::RateLimited { .. } => true,
        // Per image, inside the 200 list.
        ApiError::BadImage { .. } | ApiError::ImageUrlFailed { .. } => false,
        ApiError::NotFound(_) => false,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
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
        * **Raw image**: as for `POST /v1/descriptions`, a batch of one.\n\n\
        Each description is stored and billed as by `POST /v1/descriptions`; failed images are \
        neither. Scope: `describe`; refused while the account's processing is restricted.",
    params(RawImageQuery, IdempotencyKey),
    security(("api_key" = [])),
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
            ("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key` (then not billed again, and without the timing headers)."),
        )),
        (status = 400, description = "Invalid request: malformed JSON or multipart, bad base64, an empty `images` list, an unknown field, an invalid option, or an invalid `Idempotency-Key`.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 401, description = "No API key, or one that is unknown or revoked, or whose account is deleted (`missing_api_key`, `invalid_api_key`).", body = ErrorBody),
        (status = 403, description = "The key lacks the `describe` scope (`missing_scope`), or the account's processing is restricted (`account_restricted`).", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` was used with a different request in the last 24 hours (`idempotency_key_reused`), or a request with it is still running (`idempotency_key_in_use`).", body = ErrorBody),
        (status = 413, description = "Too large: the body (`--max-body-bytes`), more images than `--max-images-per-request`, or more than the server admits at once (`--max-concurrent-images`).", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 415, description = "Unsupported content type: send application/json, multipart/form-data, image/* or application/octet-stream.", body = ErrorBody, headers(("x-request-id" = String))),
        (status = 429, description = "Not enough capacity for all the images at once (`overloaded`), or the account's requests per minute are used up (`rate_limited`); retry after `Retry-After` seconds.", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
        (status = 500, description = "Storing the results failed; nothing was stored or billed.", body = ErrorBody),
        (status = 503, description = "Not available: the model is still loading (`starting`), the server is draining (`draining`), or the database did not answer in time (`database_unavailable`).", body = ErrorBody, headers(
            ("x-request-id" = String),
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
    ),
)]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Response {
    let (request_id, idempotency_key, images) = match read_request(&caller, request, true).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let limit = state.limits.max_images_per_request;
    if images.len() > limit {
        return ApiError::too_large(
            "too_many_images",
            format!(
                "{} images in one request; the limit is {limit} (--max-images-per-request)",
                images.len()
            ),
        )
        .into_response();
    }
    let guard = match Idempotency::claim(&state, &caller, idempotency_key, "batch", &images).await {
        Ok(Ok(guard)) => guard,
        Ok(Err(replay)) => return replay,
        Err(error) => return error.into_response(),
    };
    // All permits at once: a batch request is admitted whole or refused whole, like single ones.
    let mut permits = match state.engine.try_admit(images.len()) {
        Ok(permits) => permits,
        Err(error) => return guard.fail(ApiError::from(error)).await,
    };
    let tasks = images.into_iter().map(|image| {
        let permit = permits
            .split_one()
            .expect("one permit per image; this is a bug");
        describe_one(&state, permit, image)
    });
    let results = join_all(tasks).await;
    let (mut queue_ms, mut inference_ms) = (0, 0);
    let mut described = Vec::new();
    let data: Vec<Value> = results
        .into_iter()
        .map(|result| match result {
            Ok(timed) => {
                queue_ms = queue_ms.max(timed.queue_ms);
                inference_ms = inference_ms.max(timed.inference_ms);
                let value = serde_json::to_value(&timed.body).expect("serialisable; this is a bug");
                described.push(timed.body);
                value
            }
            Err(error) => {
                // Inside the 200 list, no error answer carries it to `observe`.
                if let Some(reason) = error.metric_reason() {
                    state.engine.metrics().reject(reason);
                }
                serde_json::to_value(error.body()).expect("serialisable; this is a bug")
            }
        })
        .collect();
    let body = json!({"object": "list", "data": data}).to_string();
    // When no image succeeded there is nothing to replay: a retry should run again.
    let completion = if described.is_empty() {
        None
    } else {
        guard.completion(StatusCode::OK, &body)
    };
    let stored = completion.is_some();
    if let Err(error) = state
        .store
        .save_created(caller.account_id(), &request_id, &described, completion)
        .await
    {
        return guard.fail(ApiError::from(error)).await;
    }
    if stored {
        guard.answered();
    } else {
        guard.release().await;
    }
    let mut response = (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    timing_headers(response.headers_mut(), queue_ms, inference_ms);
    response
}

/// What both create routes check and read before any work: the `describe` scope, restricted
/// processing, the request id, the `Idempotency-Key` and the images.
async fn read_request(
    caller: &Caller,
    request: Request,
    allow_many: bool,
) -> Result<(String, Option<String>, Vec<ImageRequest>), ApiError> {
    caller.require(Scope::Describe)?;
    caller.require_unrestricted()?;
    let request_id = request_id(request.headers());
    let idempotency_key = idempotency::header_key(request.headers())?;
    let images = read_images(request, allow_many).await?;
    Ok((request_id, idempotency_key, images))
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
    Ok(body_of(state, described, describe, response))
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
    describe: DescribeOptions,
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
    let mut asked = serde_json::Map::new();
    if let Some(max) = options.max_chars {
        asked.insert("max_chars".into(), max.into());
    }
    if let Some(max) = describe.max_new_tokens {
        asked.insert("max_new_tokens".into(), max.into());
    }
    if let Some(beams) = describe.num_beams {
        asked.insert("num_beams".into(), beams.into());
    }
    let now = now_ms();
    Timed {
        body: Description {
            object: "description",
            id: crate::store::new_id("desc"),
            text,
            provenance: Provenance::Ai,
            version: 1,
            detail: describe.detail.as_str().to_string(),
            model: state.model_name.clone(),
            asset_id: options.asset_id,
            metadata: options.metadata,
            image: ImageFacts {
                width: facts.width,
                height: facts.height,
                format: facts.format.as_str().to_string(),
                byte_size: facts.byte_size as u64,
                sha256: facts.sha256,
            },
            options: Value::Object(asked),
            generated_tokens: generated.generated_tokens() as u64,
            finish_reason: generated.finish_reason.as_str().to_string(),
            truncated,
            created_at: now,
            updated_at: now,
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
