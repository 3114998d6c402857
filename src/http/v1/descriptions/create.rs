//! `POST /v1/descriptions` and `POST /v1/descriptions/batch`: read the wire, hand the requests to
//! the describe service, render its answer (stored for `Idempotency-Key` replays) with the
//! timing headers.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::body::{
    DescriptionForm, DescriptionJson, DescriptionsBatchForm, DescriptionsBatchJson, RawImage,
    RawImageQuery, read_images,
};
use crate::describe::{Answer, Call, DescribeRequest, Rendered};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::request_id;
use crate::http::v1::resources::Description;
use crate::store::keys::Scope;

/// The `Idempotency-Key` request header of the two POSTs.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// 1 to 255 visible ASCII characters, e.g. a UUID. A retry with the same key and the same
    /// request (image bytes or URLs, and options) within 24 hours answers the stored response
    /// with `Idempotent-Replayed: true` and is not billed again; the same key with another
    /// request is a 409. An attempt that failed is not kept, so its retry runs again.
    #[param(
        rename = "Idempotency-Key",
        max_length = 255,
        example = "3f0c2a9e-6b1d-4c55-9a7e-2f4b8d1c0e93"
    )]
    pub idempotency_key: Option<String>,
}

error_set!(
    /// What `POST /v1/descriptions` may answer besides its 201.
    pub CreateErrors: ApiKeyLayer {
        BadRequest => "Invalid request: malformed JSON or multipart, bad base64, no image or two, an unknown field or option, an invalid option value, a refused image URL (scheme, private address), or an invalid `Idempotency-Key`.",
        Forbidden => "The key lacks the `describe` scope (`missing_scope`), or the account's processing is restricted (`account_restricted`).",
        Conflict => "The `Idempotency-Key` was used with a different request in the last 24 hours (`idempotency_key_reused`), or a request with it is still running (`idempotency_key_in_use`).",
        TooLarge => "Too large: the body (`--max-body-bytes`), the image bytes (`--max-image-bytes`, sent or fetched) or its pixels (`--max-image-pixels`).",
        UnsupportedMediaType => "Unsupported content type: send image/*, application/octet-stream, multipart/form-data or application/json.",
        BadImage => "The bytes are not an image that can be read (empty, truncated, unknown format, or more elongated than 200:1: `image_aspect_ratio_unsupported`).",
        ImageUrlFailed => "The image URL could not be fetched (unreachable, upstream error status, timeout, too many redirects).",
        Unsupported => "The model cannot do what the options ask (`unsupported_by_model`): a language, an output, product context, sampling or `detail` it does not take; the message names a loaded model that can.",
        Overloaded => "At capacity (`--max-concurrent-images`, code `overloaded`); retry after `Retry-After` seconds.",
        Internal => "Inference failed (the worker is marked unhealthy until a run succeeds), or the database failed; nothing was stored or billed.",
        Unavailable => "Not available: the model is still loading (`starting`), the server is draining (`draining`), the image waited longer than `--max-queue-time-ms` (`queue_timeout`), the server is short of memory for preparing the image (`out_of_memory`), or the database did not answer in time (`database_unavailable`).",
    }
);

/// Describe one image
///
/// Send one image in one of three body forms and get its description.
///
/// * **Raw image**: the bytes as the body with `Content-Type: image/*` (any image type) or
///   `application/octet-stream`; options go in the query string.
/// * **Multipart form** (`multipart/form-data`): one file field `image` and optional text fields
///   for the options (`outputs` comma-separated, `context` and `metadata` as JSON text). Query
///   options are accepted too; form fields win.
/// * **JSON** (`application/json`): exactly one of `image_base64` (a data URL is accepted) and
///   `image_url` (http or https, fetched by the server), plus the options.
///
/// The format is sniffed from the bytes: JPEG, PNG, WebP, GIF, BMP or TIFF.
///
/// `outputs` asks for any of alt text, a product description, an SEO title and keywords, each
/// from its own prompt over the one image (the image is encoded once); `language`, `context`
/// and `tone` shape product copy. A model that cannot do what is asked answers 422 naming a
/// loaded model that can (`GET /v1/info` lists each model's outputs and languages).
///
/// The description is stored with the image's facts (never its bytes) and billed once (the
/// `created` meter of `GET /v1/usage`). Scope: `describe`; refused while the account's processing
/// is restricted.
#[utoipa::path(
    post,
    path = "/v1/descriptions",
    operation_id = "createDescription",
    params(RawImageQuery, IdempotencyKey),
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
            ("x-queue-time-ms" = u64, description = "Milliseconds the image waited for a batch."),
            ("x-inference-time-ms" = u64, description = "Milliseconds of model time for the image's batch."),
            ("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key` (then not billed again, and without the timing headers)."),
        )),
        CreateErrors,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let (head, images) = read_request(&caller, request, false).await?;
    let image = state
        .describe
        .validate(images)?
        .pop()
        .expect("read_images returns one image here; this is a bug");
    let answer = state
        .describe
        .describe_one(head.call(&caller, "create"), image, |description| {
            rendered(StatusCode::CREATED, &Description::from(description.clone()))
        })
        .await?;
    Ok(answer_response(answer))
}

error_set!(
    /// What `POST /v1/descriptions/batch` answers for the whole request (per-image errors are
    /// inside its 200 answer).
    pub BatchErrors: ApiKeyLayer {
        BadRequest => "Invalid request: malformed JSON or multipart, bad base64, an empty `images` list, an unknown field, an invalid option, or an invalid `Idempotency-Key`.",
        Forbidden => "The key lacks the `describe` scope (`missing_scope`), or the account's processing is restricted (`account_restricted`).",
        Conflict => "The `Idempotency-Key` was used with a different request in the last 24 hours (`idempotency_key_reused`), or a request with it is still running (`idempotency_key_in_use`).",
        TooLarge => "Too large: the body (`--max-body-bytes`), more images than `--max-images-per-request`, or more than the server admits at once (`--max-concurrent-images`).",
        UnsupportedMediaType => "Unsupported content type: send application/json, multipart/form-data, image/* or application/octet-stream.",
        Unsupported => "An image's options ask a model for what it cannot do (`unsupported_by_model`); the message names a loaded model that can. No image is run.",
        Overloaded => "Not enough capacity for all the images at once (`overloaded`); retry after `Retry-After` seconds.",
        Internal => "Storing the results failed; nothing was stored or billed.",
        Unavailable => "Not available: the model is still loading (`starting`), the server is draining (`draining`), or the database did not answer in time (`database_unavailable`).",
    }
);

/// The batch answer: one result per image, in order.
#[derive(Serialize, ToSchema)]
pub struct DescriptionList {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    /// One item per image, in the order sent.
    pub data: Vec<DescriptionOrError>,
}

/// A description, or the error body of an image that failed.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum DescriptionOrError {
    Description(Box<Description>),
    Error(ErrorBody),
}

/// Describe several images
///
/// Up to `--max-images-per-request` images in one request, admitted whole or refused whole. The
/// answer lists one description or one error per image, in order; an image that fails (bad
/// bytes, URL failure, queue timeout, inference failure) does not fail the others.
///
/// * **JSON**: `{"images": [...]}`, each item as the JSON body of `POST /v1/descriptions`.
/// * **Multipart**: several `image` file fields; the option fields apply to all of them.
/// * **Raw image**: as for `POST /v1/descriptions`, a batch of one.
///
/// Each description is stored and billed as by `POST /v1/descriptions`; failed images are
/// neither. Scope: `describe`; refused while the account's processing is restricted.
#[utoipa::path(
    post,
    path = "/v1/descriptions/batch",
    operation_id = "createDescriptions",
    params(RawImageQuery, IdempotencyKey),
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
            ("x-queue-time-ms" = u64, description = "The longest queue wait among the images."),
            ("x-inference-time-ms" = u64, description = "The longest model time among the images."),
            ("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key` (then not billed again, and without the timing headers)."),
        )),
        BatchErrors,
    ),
)]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
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
    let metrics = &state.metrics;
    let answer = state
        .describe
        .describe_many(head.call(&caller, "batch"), images, |results| {
            let data = results
                .iter()
                .map(|result| match result {
                    Ok(described) => DescriptionOrError::Description(Box::new(
                        described.description.clone().into(),
                    )),
                    Err(error) => {
                        let error = ApiError::from(error);
                        // Inside the 200 list, no error answer carries it to `observe`.
                        if let Some(reason) = error.metric_reason() {
                            metrics.reject(reason);
                        }
                        DescriptionOrError::Error(error.body())
                    }
                })
                .collect();
            let list = DescriptionList {
                object: "list",
                data,
            };
            rendered(StatusCode::OK, &list)
        })
        .await?;
    Ok(answer_response(answer))
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

fn rendered(status: StatusCode, body: &impl Serialize) -> Rendered {
    Rendered {
        status: status.as_u16(),
        body: serde_json::to_string(body).expect("serialisable; this is a bug"),
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
        Some((queue, inference)) => {
            let millis = |time: Duration| HeaderValue::from(time.as_millis() as u64);
            headers.insert("x-queue-time-ms", millis(queue));
            headers.insert("x-inference-time-ms", millis(inference));
        }
        None => {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
    }
    response
}
