//! One error type for every HTTP answer that is not a success: a unit [`ErrorKind`] that owns
//! the status and the error `type` (one table), a stable `code`, a message for people, and the
//! JSON body `{"error": {"type", "code", "message"}}`. Each layer's error converts here.

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

/// What went wrong, as a client acts on it. The status and the `type` of the body follow from
/// the kind alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// Malformed request: bad JSON, bad base64, missing image, invalid option.
    BadRequest,
    /// No API key, or one that is unknown, revoked or whose account is deleted.
    Unauthorized,
    /// The key lacks the scope, or the account's processing is restricted.
    Forbidden,
    NotFound,
    /// A method the route does not take (with `Allow`); from the router, never a handler.
    MethodNotAllowed,
    /// The body did not arrive in time; the connection is closed.
    RequestTimeout,
    /// An `Idempotency-Key` reused with another request or still in use; concurrent edits.
    Conflict,
    /// A size limit: body, image bytes, pixels, images per request.
    TooLarge,
    UnsupportedMediaType,
    /// The bytes are not an image we can read.
    BadImage,
    /// The image URL could not be fetched (host down, 404 there, timeout).
    ImageUrlFailed,
    /// A valid request the chosen model cannot do (a language, an output, product context);
    /// the message names a loaded model that can.
    Unsupported,
    /// At capacity (admission).
    Overloaded,
    /// The account's requests per minute are used up.
    RateLimited,
    Internal,
    /// A transfer coding other than chunked; the connection is closed.
    NotImplemented,
    /// Starting, draining, queue timeout, out of memory, database not answering.
    Unavailable,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::RequestTimeout,
        ErrorKind::Conflict,
        ErrorKind::TooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::BadImage,
        ErrorKind::ImageUrlFailed,
        ErrorKind::Unsupported,
        ErrorKind::Overloaded,
        ErrorKind::RateLimited,
        ErrorKind::Internal,
        ErrorKind::NotImplemented,
        ErrorKind::Unavailable,
    ];

    /// The whole table: status and the body's `type`.
    pub fn status_and_type(self) -> (StatusCode, &'static str) {
        use ErrorKind::*;
        match self {
            BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            Forbidden => (StatusCode::FORBIDDEN, "permission_error"),
            NotFound => (StatusCode::NOT_FOUND, "invalid_request_error"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error"),
            Conflict => (StatusCode::CONFLICT, "conflict_error"),
            TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error"),
            BadImage | ImageUrlFailed | Unsupported => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error")
            }
            Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded_error"),
            RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            NotImplemented => (StatusCode::NOT_IMPLEMENTED, "invalid_request_error"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable_error"),
        }
    }

    pub fn status(self) -> StatusCode {
        self.status_and_type().0
    }

    pub fn type_name(self) -> &'static str {
        self.status_and_type().1
    }
}

/// An error answer. Build it with the kind's constructor; `?` converts the other layers' errors.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    /// Sent as `Retry-After` (429 and 503 always have one).
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 or 503, with the `Retry-After` the client should honour.
    pub fn retry_later(
        kind: ErrorKind,
        code: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(kind, code, message)
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal_error", message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The body, also for the per-image errors inside a batch answer.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind.type_name(),
                code: self.code,
                message: self.message.clone(),
            },
        }
    }

    /// The `rejected_total` reason of this error, or `None` when it is no refusal of work
    /// (conflicts, missing objects, server faults) or was counted where it happened (the
    /// queue and workers count what they drop: `expired`, `cancelled`; the accept loop counts
    /// `connections`).
    pub fn metric_reason(&self) -> Option<&'static str> {
        use ErrorKind::*;
        Some(match self.kind {
            TooLarge => "too_large",
            BadImage => "bad_image",
            BadRequest | UnsupportedMediaType | ImageUrlFailed | Unsupported => "bad_request",
            Unauthorized | Forbidden => "unauthorized",
            RateLimited => "rate_limited",
            Overloaded => "overloaded",
            // Short of memory for preparing an image: capacity, like a full queue.
            Unavailable if self.code == "out_of_memory" => "overloaded",
            MethodNotAllowed | RequestTimeout | NotImplemented => "protocol",
            Conflict | Unavailable | Internal | NotFound => return None,
        })
    }
}

/// The `reason` an answered error is counted under in `rejected_total`, carried from the error
/// to the `observe` middleware in the response's extensions: errors are counted in one place,
/// whichever layer or handler answered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub &'static str);

/// Every error answer: `{"error": {"type", "code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The class of error: what a client does about it (retry later, fix the request, …).
    /// `code` says which one it is.
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
        let status = self.kind.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, code = self.code, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        if let Some(reason) = self.metric_reason() {
            response.extensions_mut().insert(Rejected(reason));
        }
        let headers = response.headers_mut();
        // After a body that was not (fully) read, the connection's framing is lost.
        if matches!(
            self.kind,
            ErrorKind::RequestTimeout | ErrorKind::NotImplemented
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.kind == ErrorKind::Unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"altimage\""),
            );
        }
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs().max(1).to_string();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds).expect("digits; this is a bug"),
            );
        }
        response
    }
}

impl From<&EngineError> for ApiError {
    fn from(error: &EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::Overloaded { retry_after } => {
                ApiError::retry_later(ErrorKind::Overloaded, "overloaded", message, *retry_after)
            }
            EngineError::Draining { retry_after } => {
                ApiError::retry_later(ErrorKind::Unavailable, "draining", message, *retry_after)
            }
            EngineError::QueueTimeout { retry_after } => ApiError::retry_later(
                ErrorKind::Unavailable,
                "queue_timeout",
                message,
                *retry_after,
            ),
            EngineError::Image(image) => image.into(),
            EngineError::TooManyImages { .. } => ApiError::too_large("too_many_images", message),
            EngineError::Inference(_) => ApiError::internal(message),
        }
    }
}

impl From<&StoreError> for ApiError {
    fn from(error: &StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(format!("no such {what}")),
            StoreError::Invalid(message) => {
                ApiError::bad_request("invalid_request", message.clone())
            }
            StoreError::Conflict(message) => {
                ApiError::new(ErrorKind::Conflict, "conflict", message.clone())
            }
            StoreError::Unavailable(message) => ApiError::retry_later(
                ErrorKind::Unavailable,
                "database_unavailable",
                format!("the database did not answer in time: {message}"),
                Duration::from_secs(2),
            ),
            // Corrupt rows, driver errors, migrations: the server's fault, not the caller's.
            // The database's own words stay in the log: they name tables, columns and values.
            other => {
                tracing::error!(error = %other, "database failure");
                ApiError::internal(
                    "the database failed; the server log has the cause (find it by this answer's x-request-id)",
                )
            }
        }
    }
}

impl From<&PreprocessError> for ApiError {
    fn from(error: &PreprocessError) -> Self {
        let (code, message) = (error.code(), error.to_string());
        match error {
            PreprocessError::TooManyPixels { .. } | PreprocessError::MemoryLimit => {
                ApiError::too_large(code, message)
            }
            PreprocessError::InvalidConfig { .. } | PreprocessError::Internal(_) => {
                ApiError::internal(message)
            }
            PreprocessError::OutOfMemory { .. } => ApiError::retry_later(
                ErrorKind::Unavailable,
                code,
                message,
                Duration::from_secs(2),
            ),
            _ => ApiError::new(ErrorKind::BadImage, code, message),
        }
    }
}

impl From<&ImageUrlError> for ApiError {
    fn from(error: &ImageUrlError) -> Self {
        let (code, message) = (error.code(), error.to_string());
        match error {
            ImageUrlError::InvalidUrl(_) | ImageUrlError::ForbiddenAddress(_) => {
                ApiError::bad_request(code, message)
            }
            ImageUrlError::TooLarge { .. } => ApiError::too_large(code, message),
            _ => ApiError::new(ErrorKind::ImageUrlFailed, code, message),
        }
    }
}

impl From<&ValidationError> for ApiError {
    fn from(error: &ValidationError) -> Self {
        if error.unsupported {
            ApiError::new(ErrorKind::Unsupported, error.code, error.message.clone())
        } else {
            ApiError::bad_request(error.code, error.message.clone())
        }
    }
}

impl From<&DescribeError> for ApiError {
    fn from(error: &DescribeError) -> Self {
        let message = error.to_string();
        match error {
            DescribeError::Invalid(invalid) => invalid.into(),
            DescribeError::ImageTooLarge { .. } => ApiError::too_large("image_too_large", message),
            DescribeError::Fetch(fetch) => fetch.into(),
            DescribeError::Engine(engine) => engine.into(),
            DescribeError::Store(store) => store.into(),
            DescribeError::IdempotencyKeyReused => {
                ApiError::new(ErrorKind::Conflict, "idempotency_key_reused", message)
            }
            DescribeError::IdempotencyKeyInUse => {
                ApiError::new(ErrorKind::Conflict, "idempotency_key_in_use", message)
            }
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

from_owned!(
    EngineError,
    StoreError,
    PreprocessError,
    ImageUrlError,
    ValidationError,
    DescribeError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_type_and_headers() {
        let after = Duration::from_secs(2);
        for kind in ErrorKind::ALL {
            let status = kind.status().as_u16();
            let error = if status == 429 || status == 503 {
                ApiError::retry_later(kind, "some_code", "x", after)
            } else {
                ApiError::new(kind, "some_code", "x")
            };
            assert_eq!(error.code(), "some_code");
            assert_eq!(error.body().error.kind, kind.type_name());
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{kind:?}");
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
        let statuses: std::collections::BTreeSet<(u16, &str)> = ErrorKind::ALL
            .iter()
            .map(|k| (k.status().as_u16(), k.type_name()))
            .collect();
        assert_eq!(
            statuses.len(),
            ErrorKind::ALL.len() - 2,
            "only 422 is shared (bad image, image URL, unsupported by the model)"
        );
    }

    #[test]
    fn engine_and_image_errors_map_to_client_or_server_faults() {
        let after = Duration::from_secs(1);
        let status = |error: ApiError| error.kind().status();
        assert_eq!(
            status(EngineError::Overloaded { retry_after: after }.into()),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(EngineError::QueueTimeout { retry_after: after }.into()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(EngineError::Inference("x".into()).into()),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let bomb = PreprocessError::TooManyPixels {
            width: 1,
            height: 1,
            limit: 0,
        };
        assert_eq!(status(bomb.into()), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            status(PreprocessError::UnsupportedFormat.into()),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let short = ApiError::from(PreprocessError::OutOfMemory { megabytes: 120 });
        assert_eq!(short.kind().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(short.code(), "out_of_memory");
        assert_eq!(short.metric_reason(), Some("overloaded"));
        let aspect = PreprocessError::AspectRatioUnsupported {
            width: 1,
            height: 40_000_000,
        };
        assert_eq!(status(aspect.into()), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
