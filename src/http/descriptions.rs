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
use super::error::ApiError;
use super::input::{ImageRequest, ImageSource, ResponseOptions, read_images, truncate_at_word};
use crate::engine::{Described, Permits};
use crate::model::Detail;
use crate::model::generate::FinishReason;

/// The description resource as returned to clients.
#[derive(Debug, Serialize)]
pub struct DescriptionBody {
    pub object: &'static str,
    pub id: String,
    pub text: String,
    pub detail: &'static str,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub image: ImageBody,
    pub generated_tokens: usize,
    pub finish_reason: FinishReason,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct ImageBody {
    pub width: u32,
    pub height: u32,
    pub format: &'static str,
    pub byte_size: usize,
    pub sha256: String,
}

struct Timed {
    body: DescriptionBody,
    queue_ms: u128,
    inference_ms: u128,
}

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
