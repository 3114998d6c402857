//! The `Idempotency-Key` of the create routes: the header, the request's fingerprint, and the
//! guard that holds the key's claim while the request runs.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::input::{ImageRequest, ImageSource};
use crate::store::Store;
use crate::store::idempotency::{CLAIM_RENEW_MS, Claim, Completion};

/// The `Idempotency-Key` header, when sent: 1 to 255 visible ASCII characters.
pub(super) fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// A hash of what the request asks for (image bytes or URLs, and options), not of its wire form,
/// so that a retry with another multipart boundary or JSON spacing is still the same request.
fn fingerprint(route: &str, images: &[ImageRequest]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    for image in images {
        match &image.source {
            ImageSource::Bytes(bytes) => {
                hasher.update(b"\0bytes\0");
                hasher.update(Sha256::digest(bytes));
            }
            ImageSource::Url(url) => {
                hasher.update(b"\0url\0");
                hasher.update(url.as_bytes());
            }
        }
        let options = json!({
            "detail": image.describe.detail.as_str(),
            "max_new_tokens": image.describe.max_new_tokens,
            "num_beams": image.describe.num_beams,
            "max_chars": image.response.max_chars,
            "asset_id": image.response.asset_id,
            "metadata": image.response.metadata,
        });
        hasher.update(options.to_string().as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// A claimed `Idempotency-Key` (or none). While the request runs a task renews the claim's
/// lease. The claim ends one of three ways: the transaction that stores the work completes it
/// ([`Idempotency::answered`]), a failure releases it ([`Idempotency::fail`]), or the handler is
/// dropped mid-request because the client left, and `Drop` releases it: no code after an
/// `.await` runs then, and a retry must not wait for a lease to lapse.
pub(super) struct Idempotency<'a> {
    state: &'a AppState,
    account_id: &'a str,
    held: Option<Held>,
}

struct Held {
    key: String,
    claim_id: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Completed or released: nothing left for `Drop` to do.
    settled: bool,
}

impl<'a> Idempotency<'a> {
    /// `Ok(Ok(guard))` to go ahead, `Ok(Err(answer))` to answer at once (a replay).
    pub(super) async fn claim(
        state: &'a AppState,
        caller: &'a Caller,
        key: Option<String>,
        route: &str,
        images: &[ImageRequest],
    ) -> Result<Result<Idempotency<'a>, Response>, ApiError> {
        let account_id = caller.account_id();
        let Some(key) = key else {
            return Ok(Ok(Idempotency {
                state,
                account_id,
                held: None,
            }));
        };
        let claim = state
            .store
            .claim_idempotency_key(
                account_id,
                &key,
                route,
                &fingerprint(route, images),
                state.access.idempotency_window_ms,
            )
            .await?;
        match claim {
            Claim::Fresh { claim_id } => {
                let renewal = tokio::spawn(renew(
                    state.store.clone(),
                    account_id.to_string(),
                    key.clone(),
                    claim_id.clone(),
                ));
                Ok(Ok(Idempotency {
                    state,
                    account_id,
                    held: Some(Held {
                        key,
                        claim_id,
                        renewal,
                        settled: false,
                    }),
                }))
            }
            Claim::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut response = (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(Err(response))
            }
            Claim::Mismatch => Err(ApiError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with a different request in the last 24 hours; use a new key".into(),
            }),
            Claim::InProgress => Err(ApiError::Conflict {
                code: "idempotency_key_in_use",
                message: "a request with this Idempotency-Key is still running; retry after it finishes".into(),
            }),
        }
    }

    /// What the storing transaction writes so that a replay gets this answer.
    pub(super) fn completion<'b>(
        &'b self,
        status: StatusCode,
        body: &'b str,
    ) -> Option<Completion<'b>> {
        self.held.as_ref().map(|held| Completion {
            account_id: self.account_id,
            key: &held.key,
            claim_id: &held.claim_id,
            status: status.as_u16(),
            body,
        })
    }

    /// The work and its answer are stored (the completion was committed with them).
    pub(super) fn answered(mut self) {
        if let Some(held) = self.held.as_mut() {
            held.settled = true;
        }
    }

    /// Gives the key back: the request ends without an answer to replay.
    pub(super) async fn release(mut self) {
        if let Some(held) = self.held.as_mut() {
            let released = self
                .state
                .store
                .release_idempotency_key(self.account_id, &held.key, &held.claim_id)
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "could not release an idempotency key; its lease lapses by itself");
            }
            // Only now: if the client leaves during the release, `Drop` releases again.
            held.settled = true;
        }
    }

    /// Releases the key and answers with `error`.
    pub(super) async fn fail(self, error: impl IntoResponse) -> Response {
        self.release().await;
        error.into_response()
    }
}

impl Drop for Idempotency<'_> {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        held.renewal.abort();
        if held.settled {
            return;
        }
        // The handler was dropped mid-request (the client left). Dropped futures cannot await,
        // so the release runs on its own; if it cannot, the lease lapses by itself.
        let (store, account_id) = (self.state.store.clone(), self.account_id.to_string());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match store
                    .release_idempotency_key(&account_id, &held.key, &held.claim_id)
                    .await
                {
                    Ok(()) => tracing::info!("idempotency key released: the client left mid-request"),
                    Err(error) => tracing::warn!(%error, "could not release an idempotency key; its lease lapses by itself"),
                }
            });
        }
    }
}

/// Renews a claim's lease until the claim is no longer this request's or the task is aborted.
async fn renew(store: Store, account_id: String, key: String, claim_id: String) {
    let period = std::time::Duration::from_millis(CLAIM_RENEW_MS as u64);
    loop {
        tokio::time::sleep(period).await;
        match store
            .renew_idempotency_claim(&account_id, &key, &claim_id)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => tracing::warn!(%error, "could not renew an idempotency key's lease"),
        }
    }
}
