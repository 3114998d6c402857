//! One error type for every HTTP answer that is not a success, one table from it to status codes,
//! and the JSON body `{"error": {"type", "code", "message"}}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::describe::{DescribeError, ValidationError};
use crate::engine::EngineError;
use crate::fetch::ImageUrlError;
use crate::model::preprocess::PreprocessError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad base64, missing image, invalid option.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error(
        "unsupported content type `{0}`: send image/*, application/octet-stream, multipart/form-data or application/json"
    )]
    UnsupportedMediaType(String),
    /// A size limit: body, image bytes, pixels, images per request.
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// The bytes are not an image we can read.
    #[error("{message}")]
    BadImage { code: &'static str, message: String },
    /// The image URL could not be fetched (host down, 404 there, timeout).
    #[error("{message}")]
    ImageUrlFailed { code: &'static str, message: String },
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after: Duration,
    },
    /// No API key, or one that is unknown, revoked or whose account is deleted.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// The key lacks the scope, or the account's processing is restricted.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// An `Idempotency-Key` reused with another request, or still in use.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The account's requests per minute are used up.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    NotFound(String),
    /// Refused by the HTTP layer around the handlers, never by a handler: a method the route
    /// does not take (405, with `Allow`), a body not sent in time (408), a transfer coding other
    /// than chunked (501). The last two close the connection.
    #[error("{message}")]
    Protocol {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}

/// The whole status table; a test walks it.
pub fn status_of(error: &ApiError) -> (StatusCode, &'static str) {
    match error {
        ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        ApiError::UnsupportedMediaType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error")
        }
        ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
        ApiError::BadImage { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error"),
        ApiError::ImageUrlFailed { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error")
        }
        ApiError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded_error"),
        ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable_error"),
        ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "authentication_error"),
        ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "permission_error"),
        ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict_error"),
        ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error"),
        ApiError::Protocol { status, .. } => (*status, "invalid_request_error"),
        ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::TooLarge {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::TooLarge { code, .. }
            | ApiError::BadImage { code, .. }
            | ApiError::ImageUrlFailed { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Protocol { code, .. } => code,
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotFound(_) => "not_found",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Overloaded { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. }
            | ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The body as a JSON value, for per-image errors inside a batch answer.
    pub fn body(&self) -> ErrorBody {
        let (_, kind) = status_of(self);
        ErrorBody {
            error: ErrorDetail {
                kind,
                code: self.code(),
                message: self.to_string(),
            },
        }
    }
}

/// The `reason` an answered error is counted under in `rejected_total`, carried from the error
/// to the `observe` middleware in the response's extensions: errors are counted in one place,
/// whichever layer or handler answered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub &'static str);

impl ApiError {
    /// The `rejected_total` reason of this error, or `None` when it is no refusal of work
    /// (conflicts, missing objects, server faults) or was counted where it happened (the
    /// queue and workers count what they drop: `expired`, `cancelled`; the accept loop counts
    /// `connections`).
    pub fn metric_reason(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::TooLarge { .. } => "too_large",
            ApiError::BadImage { .. } => "bad_image",
            ApiError::BadRequest { .. }
            | ApiError::UnsupportedMediaType(_)
            | ApiError::ImageUrlFailed { .. } => "bad_request",
            ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded { .. } => "overloaded",
            // Short of memory for preparing an image: capacity, like a full queue.
            ApiError::Unavailable {
                code: "out_of_memory",
                ..
            } => "overloaded",
            ApiError::Protocol { .. } => "protocol",
            ApiError::Conflict { .. }
            | ApiError::Unavailable { .. }
            | ApiError::Internal(_)
            | ApiError::NotFound(_) => return None,
        })
    }
}

/// Every error answer: `{"error": {"type", "code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The class of error (`status_of`); its values are listed from the code in `openapi.rs`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "invalid_request_error")]
    pub kind: &'static str,
    /// A stable machine-readable reason, e.g. `invalid_json`, `image_too_large`, `overloaded`.
    #[schema(value_type = String, example = "invalid_detail")]
    pub code: &'static str,
    /// For humans; may change between versions. Never contains image bytes.
    #[schema(example = "unknown detail `epic`: expected brief, detailed or paragraph")]
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = status_of(&self);
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let retry_after = self.retry_after();
        let rejected = self.metric_reason().map(Rejected);
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        // After a body that was not (fully) read, the connection's framing is lost.
        let close = matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::NOT_IMPLEMENTED
        );
        let mut response = (status, Json(self.body())).into_response();
        if let Some(rejected) = rejected {
            response.extensions_mut().insert(rejected);
        }
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"altimage\""),
            );
        }
        if let Some(after) = retry_after {
            let seconds = after.as_secs().max(1).to_string();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds).expect("digits; this is a bug"),
            );
        }
        response
    }
}

impl From<&EngineError> for ApiError {
    fn from(error: &EngineError) -> Self {
        match error {
            EngineError::Overloaded { retry_after } => ApiError::Overloaded {
                message: error.to_string(),
                retry_after: *retry_after,
            },
            EngineError::Draining { retry_after } => ApiError::Unavailable {
                code: "draining",
                message: error.to_string(),
                retry_after: *retry_after,
            },
            EngineError::QueueTimeout { retry_after } => ApiError::Unavailable {
                code: "queue_timeout",
                message: error.to_string(),
                retry_after: *retry_after,
            },
            EngineError::Image(image) => image.into(),
            EngineError::TooManyImages { .. } => {
                ApiError::too_large("too_many_images", error.to_string())
            }
            EngineError::Inference(message) => {
                ApiError::Internal(format!("inference failed: {message}"))
            }
        }
    }
}

impl From<&StoreError> for ApiError {
    fn from(error: &StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(format!("no such {what}")),
            StoreError::Invalid(message) => {
                ApiError::bad_request("invalid_request", message.clone())
            }
            StoreError::Conflict(message) => ApiError::Conflict {
                code: "conflict",
                message: message.clone(),
            },
            StoreError::Unavailable(message) => ApiError::Unavailable {
                code: "database_unavailable",
                message: format!("the database did not answer in time: {message}"),
                retry_after: Duration::from_secs(2),
            },
            // Corrupt rows, driver errors, migrations: the server's fault, not the caller's.
            // The database's own words stay in the log: they name tables, columns and values.
            other => {
                tracing::error!(error = %other, "database failure");
                ApiError::Internal(
                    "the database failed; the server log has the cause (find it by this answer's x-request-id)".into(),
                )
            }
        }
    }
}

impl From<&PreprocessError> for ApiError {
    fn from(error: &PreprocessError) -> Self {
        let code = error.code();
        match error {
            PreprocessError::TooManyPixels { .. } | PreprocessError::MemoryLimit => {
                ApiError::too_large(code, error.to_string())
            }
            PreprocessError::InvalidConfig { .. } | PreprocessError::Internal(_) => {
                ApiError::Internal(error.to_string())
            }
            PreprocessError::OutOfMemory { .. } => ApiError::Unavailable {
                code,
                message: error.to_string(),
                retry_after: Duration::from_secs(2),
            },
            _ => ApiError::BadImage {
                code,
                message: error.to_string(),
            },
        }
    }
}

impl From<&ImageUrlError> for ApiError {
    fn from(error: &ImageUrlError) -> Self {
        let code = error.code();
        match error {
            ImageUrlError::InvalidUrl(_) | ImageUrlError::ForbiddenAddress(_) => {
                ApiError::bad_request(code, error.to_string())
            }
            ImageUrlError::TooLarge { .. } => ApiError::too_large(code, error.to_string()),
            _ => ApiError::ImageUrlFailed {
                code,
                message: error.to_string(),
            },
        }
    }
}

impl ApiError {
    /// A describe call's refusal, also for the per-image errors inside a batch answer.
    pub fn from_describe(error: &DescribeError) -> Self {
        match error {
            DescribeError::Invalid(invalid) => {
                ApiError::bad_request(invalid.code, invalid.message.clone())
            }
            DescribeError::ImageTooLarge { .. } => {
                ApiError::too_large("image_too_large", error.to_string())
            }
            DescribeError::Fetch(fetch) => fetch.into(),
            DescribeError::Engine(engine) => engine.into(),
            DescribeError::Store(store) => store.into(),
            DescribeError::IdempotencyKeyReused => ApiError::Conflict {
                code: "idempotency_key_reused",
                message: error.to_string(),
            },
            DescribeError::IdempotencyKeyInUse => ApiError::Conflict {
                code: "idempotency_key_in_use",
                message: error.to_string(),
            },
        }
    }
}

/// By value, for `?`: each maps as its reference does.
macro_rules! from_owned {
    ($($error:ty),*) => {$(
        impl From<$error> for ApiError {
            fn from(error: $error) -> Self {
                ApiError::from(&error)
            }
        }
    )*};
}

from_owned!(EngineError, StoreError, PreprocessError, ImageUrlError);

impl From<DescribeError> for ApiError {
    fn from(error: DescribeError) -> Self {
        ApiError::from_describe(&error)
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::bad_request(error.code, error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_type_and_code() {
        let after = Duration::from_secs(2);
        let table: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::bad_request("invalid_json", "x"),
                400,
                "invalid_json",
            ),
            (
                ApiError::UnsupportedMediaType("text/plain".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::too_large("body_too_large", "x"),
                413,
                "body_too_large",
            ),
            (
                ApiError::BadImage {
                    code: "image_decode_failed",
                    message: "x".into(),
                },
                422,
                "image_decode_failed",
            ),
            (
                ApiError::ImageUrlFailed {
                    code: "upstream_status",
                    message: "x".into(),
                },
                422,
                "upstream_status",
            ),
            (
                ApiError::Overloaded {
                    message: "x".into(),
                    retry_after: after,
                },
                429,
                "overloaded",
            ),
            (
                ApiError::Unavailable {
                    code: "draining",
                    message: "x".into(),
                    retry_after: after,
                },
                503,
                "draining",
            ),
            (
                ApiError::Unauthorized {
                    code: "invalid_api_key",
                    message: "x".into(),
                },
                401,
                "invalid_api_key",
            ),
            (
                ApiError::Forbidden {
                    code: "missing_scope",
                    message: "x".into(),
                },
                403,
                "missing_scope",
            ),
            (
                ApiError::Conflict {
                    code: "idempotency_key_reused",
                    message: "x".into(),
                },
                409,
                "idempotency_key_reused",
            ),
            (
                ApiError::RateLimited {
                    message: "x".into(),
                    retry_after: after,
                },
                429,
                "rate_limited",
            ),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (
                ApiError::Protocol {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    code: "method_not_allowed",
                    message: "x".into(),
                },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::Protocol {
                    status: StatusCode::REQUEST_TIMEOUT,
                    code: "body_timeout",
                    message: "x".into(),
                },
                408,
                "body_timeout",
            ),
            (ApiError::Internal("x".into()), 500, "internal_error"),
        ];
        for (error, status, code) in table {
            assert_eq!(status_of(&error).0.as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code);
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                status == 429 || status == 503
            );
            assert_eq!(
                response.headers().contains_key(header::WWW_AUTHENTICATE),
                status == 401
            );
            assert_eq!(
                response.headers().contains_key(header::CONNECTION),
                status == 408 || status == 501
            );
        }
    }

    #[test]
    fn engine_and_image_errors_map_to_client_or_server_faults() {
        let after = Duration::from_secs(1);
        assert_eq!(
            status_of(&EngineError::Overloaded { retry_after: after }.into()).0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(&EngineError::QueueTimeout { retry_after: after }.into()).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&EngineError::Inference("x".into()).into()).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let bomb = PreprocessError::TooManyPixels {
            width: 1,
            height: 1,
            limit: 0,
        };
        assert_eq!(status_of(&bomb.into()).0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            status_of(&PreprocessError::UnsupportedFormat.into()).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let short = ApiError::from(PreprocessError::OutOfMemory { megabytes: 120 });
        assert_eq!(status_of(&short).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(short.code(), "out_of_memory");
        let aspect = PreprocessError::AspectRatioUnsupported {
            width: 1,
            height: 40_000_000,
        };
        assert_eq!(
            status_of(&aspect.into()).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
