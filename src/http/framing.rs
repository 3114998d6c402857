//! Checks on how a request is framed, before any handler reads it: transfer codings other than
//! chunked are refused (501), and a body must arrive within `--body-read-timeout-secs` (408).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::error::{ApiError, ErrorKind};

/// hyper decodes `chunked` and takes any list that ends with it as plain chunked, so
/// `gzip, chunked` would hand a handler compressed bytes as if they were the image. Only
/// `chunked` alone is accepted; anything else is 501, as RFC 9112 §6.1 asks of a server that
/// does not understand a coding.
pub async fn refuse_transfer_codings(request: Request, next: Next) -> Response {
    let codings: Vec<_> = request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .collect();
    let plain_chunked = match codings.as_slice() {
        [] => true,
        [only] => only
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")),
        _ => false,
    };
    if !plain_chunked {
        return ApiError::new(
            ErrorKind::NotImplemented,
            "unsupported_transfer_encoding",
            "only `Transfer-Encoding: chunked` is supported; send the body uncompressed",
        )
        .into_response();
    }
    next.run(request).await
}

/// Bounds the time from a request's head to the end of its body. A client that sends its body
/// more slowly (a slow-loris upload holding a connection and a buffer) is answered 408 and its
/// connection closed; the handler saw only an unreadable body.
pub async fn body_deadline(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if expired.load(Ordering::Relaxed) {
        return ApiError::new(ErrorKind::RequestTimeout, "body_timeout", format!(
                "the request body did not arrive within {} s (--body-read-timeout-secs); send it faster or in a smaller request",
                timeout.as_secs()
            ))
        .into_response();
    }
    response
}

/// A body that fails once its deadline passes, and says so through `expired`.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
