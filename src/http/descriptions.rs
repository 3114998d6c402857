//! `POST /v1/descriptions` and `POST /v1/descriptions/batch`: admission, image fetch, the engine,
//! the description and its usage row stored in one transaction, `Idempotency-Key` replays, and
//! the answer with its timing headers.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::input::read_images;
use super::library::request_id;
use super::openapi::{
    DescriptionForm, DescriptionJson, DescriptionList, DescriptionsBatchForm,
    DescriptionsBatchJson, IdempotencyKey, RawImage, RawImageQuery,
};
use crate::describe::{Answer, Call, DescribeRequest, Rendered};
use crate::store::descriptions::Description;
use crate::store::keys::Scope;

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
    let run = async {
        let (head, images) = read_request(&caller, request, false).await?;
        let image = state
            .describe
            .validate(images)?
            .pop()
            .expect("read_images returns one image here; this is a bug");
        let answer = state
            .describe
            .describe_one(head.call(&caller, "create"), image, |description| {
                rendered(StatusCode::CREATED, description)
            })
            .await?;
        Ok::<_, ApiError>(answer_response(answer))
    };
    run.await.unwrap_or_else(ApiError::into_response)
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
    let run = async {
        let (head, images) = read_request(&caller, request, true).await?;
        let limit = state.limits.max_images_per_request;
        if images.len() > limit {
            return Err(ApiError::too_large(
                "too_many_images",
                format!(
                    "{} images in one request; the limit is {limit} (--max-images-per-request)",
                    images.len()
                ),
            ));
        }
        let images = state.describe.validate(images)?;
        let metrics = state.engine.metrics();
        let answer = state
            .describe
            .describe_many(head.call(&caller, "batch"), images, |results| {
                let data: Vec<Value> = results
                    .iter()
                    .map(|result| match result {
                        Ok(described) => serde_json::to_value(&described.description)
                            .expect("serialisable; this is a bug"),
                        Err(error) => {
                            let error = ApiError::from_describe(error);
                            // Inside the 200 list, no error answer carries it to `observe`.
                            if let Some(reason) = error.metric_reason() {
                                metrics.reject(reason);
                            }
                            serde_json::to_value(error.body()).expect("serialisable; this is a bug")
                        }
                    })
                    .collect();
                Rendered {
                    status: StatusCode::OK.as_u16(),
                    body: json!({"object": "list", "data": data}).to_string(),
                }
            })
            .await?;
        Ok(answer_response(answer))
    };
    run.await.unwrap_or_else(ApiError::into_response)
}

/// The request id and `Idempotency-Key` of a create call.
struct Head {
    request_id: String,
    idempotency_key: Option<String>,
}

impl Head {
    fn call<'a>(&'a self, caller: &'a Caller, route: &'static str) -> Call<'a> {
        Call {
            account_id: caller.account_id(),
            request_id: &self.request_id,
            idempotency_key: self.idempotency_key.as_deref(),
            route,
        }
    }
}

/// What both create routes check and read before any work: the `describe` scope, restricted
/// processing, the request id, the `Idempotency-Key` and the images.
async fn read_request(
    caller: &Caller,
    request: Request,
    allow_many: bool,
) -> Result<(Head, Vec<DescribeRequest>), ApiError> {
    caller.require(Scope::Describe)?;
    caller.require_unrestricted()?;
    let head = Head {
        request_id: request_id(request.headers()),
        idempotency_key: idempotency_key(request.headers())?,
    };
    let images = read_images(request, allow_many).await?;
    Ok((head, images))
}

/// The `Idempotency-Key` header, when sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

fn rendered(status: StatusCode, description: &Description) -> Rendered {
    Rendered {
        status: status.as_u16(),
        body: serde_json::to_string(description).expect("serialisable; this is a bug"),
    }
}

/// The JSON answer, with the timing headers of work that ran, or the replay marker.
fn answer_response(answer: Answer) -> Response {
    let (rendered, timings) = match answer {
        Answer::Replay(rendered) => (rendered, None),
        Answer::Done {
            rendered,
            queue_time,
            inference_time,
        } => (rendered, Some((queue_time, inference_time))),
    };
    let status = StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        rendered.body,
    )
        .into_response();
    let headers = response.headers_mut();
    match timings {
        Some((queue, inference)) => timing_headers(headers, queue, inference),
        None => {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
    }
    response
}

fn timing_headers(headers: &mut HeaderMap, queue: Duration, inference: Duration) {
    let millis = |time: Duration| HeaderValue::from(time.as_millis() as u64);
    headers.insert("x-queue-time-ms", millis(queue));
    headers.insert("x-inference-time-ms", millis(inference));
}
