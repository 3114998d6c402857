//! The `Idempotency-Key` claim of a describe call: the request's fingerprint, and the guard that
//! holds the key's claim while the work runs.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{DescribeError, DescribeOptions};
use crate::model::Detail;
use crate::store::Store;
use crate::store::idempotency::{CLAIM_RENEW_MS, Claim, Completion};
use crate::store::ids::AccountId;

/// What an image is, for the fingerprint: its bytes' SHA-256 or its URL.
pub(super) enum Named<'a> {
    Sha256(&'a str),
    Url(&'a str),
}

/// A hash of what the request asks for (image bytes or URLs, and options), not of its wire form,
/// so that a retry with another multipart boundary or JSON spacing is still the same request.
pub(super) fn fingerprint<'a>(
    route: &str,
    images: impl IntoIterator<Item = (Named<'a>, Detail, &'a DescribeOptions)>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    for (image, detail, asked) in images {
        match image {
            Named::Sha256(sha256) => {
                hasher.update(b"\0bytes\0");
                hasher.update(hex_decode(sha256));
            }
            Named::Url(url) => {
                hasher.update(b"\0url\0");
                hasher.update(url.as_bytes());
            }
        }
        // The detail as the model runs it: an absent one is the default.
        let options = json!({
            "detail": detail.as_str(),
            "max_new_tokens": asked.max_new_tokens,
            "num_beams": asked.num_beams,
            "max_chars": asked.max_chars,
            "asset_id": asked.asset_id,
            "metadata": asked.metadata,
        });
        hasher.update(options.to_string().as_bytes());
        // Options that came with product copy; hashed only when set, so that the keys of
        // requests that predate them keep their fingerprints.
        let copy = json!({
            "model": asked.model,
            "outputs": asked.outputs,
            "language": asked.language,
            "context": asked.context.as_ref().map(|c| c.to_json()),
            "tone": asked.tone,
            "max_words": asked.max_words,
            "keyword_count": asked.keyword_count,
            "temperature": asked.temperature,
            "top_p": asked.top_p,
            "seed": asked.seed,
        });
        if copy
            .as_object()
            .is_some_and(|o| o.values().any(|v| !v.is_null()))
        {
            hasher.update(b"\0copy\0");
            hasher.update(copy.to_string().as_bytes());
        }
    }
    format!("{:x}", hasher.finalize())
}

/// The raw digest of a hex SHA-256, as the fingerprint hashed it before the hash was kept as hex.
fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// A claimed `Idempotency-Key` (or none). While the work runs a task renews the claim's lease.
/// The claim ends one of three ways: the transaction that stores the work completes it
/// ([`Idempotency::answered`]), a failure releases it ([`Idempotency::release`]), or the call is
/// dropped mid-request because the client left, and `Drop` releases it: no code after an
/// `.await` runs then, and a retry must not wait for a lease to lapse.
pub(super) struct Idempotency {
    store: Store,
    account_id: AccountId,
    held: Option<Held>,
}

struct Held {
    key: String,
    claim_id: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Completed or released: nothing left for `Drop` to do.
    settled: bool,
}

/// What claiming a key gave.
pub(super) enum Claimed {
    /// Go ahead; the guard holds the key (or there is none).
    Fresh(Idempotency),
    /// The stored answer of an earlier request with this key and fingerprint.
    Replay { status: u16, body: String },
}

impl Idempotency {
    pub(super) async fn claim(
        store: &Store,
        account_id: &AccountId,
        key: Option<String>,
        route: &str,
        fingerprint: impl FnOnce() -> String,
        window_ms: i64,
    ) -> Result<Claimed, DescribeError> {
        let guard = |held| Idempotency {
            store: store.clone(),
            account_id: account_id.clone(),
            held,
        };
        let Some(key) = key else {
            return Ok(Claimed::Fresh(guard(None)));
        };
        let claim = store
            .claim_idempotency_key(account_id, &key, route, &fingerprint(), window_ms)
            .await?;
        match claim {
            Claim::Fresh { claim_id } => {
                let renewal = tokio::spawn(renew(
                    store.clone(),
                    account_id.clone(),
                    key.clone(),
                    claim_id.clone(),
                ));
                Ok(Claimed::Fresh(guard(Some(Held {
                    key,
                    claim_id,
                    renewal,
                    settled: false,
                }))))
            }
            Claim::Replay { status, body } => Ok(Claimed::Replay { status, body }),
            Claim::Mismatch => Err(DescribeError::IdempotencyKeyReused),
            Claim::InProgress => Err(DescribeError::IdempotencyKeyInUse),
        }
    }

    /// What the storing transaction writes so that a replay gets this answer.
    pub(super) fn completion<'b>(&'b self, status: u16, body: &'b str) -> Option<Completion<'b>> {
        self.held.as_ref().map(|held| Completion {
            account_id: &self.account_id,
            key: &held.key,
            claim_id: &held.claim_id,
            status,
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
                .store
                .release_idempotency_key(&self.account_id, &held.key, &held.claim_id)
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "could not release an idempotency key; its lease lapses by itself");
            }
            // Only now: if the client leaves during the release, `Drop` releases again.
            held.settled = true;
        }
    }

    /// Releases the key and hands `error` on.
    pub(super) async fn fail<T>(self, error: impl Into<DescribeError>) -> Result<T, DescribeError> {
        self.release().await;
        Err(error.into())
    }
}

impl Drop for Idempotency {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        held.renewal.abort();
        if held.settled {
            return;
        }
        // The call was dropped mid-request (the client left). Dropped futures cannot await, so
        // the release runs on its own; if it cannot, the lease lapses by itself.
        let (store, account_id) = (self.store.clone(), self.account_id.clone());
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
async fn renew(store: Store, account_id: AccountId, key: String, claim_id: String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored fingerprints outlive a deploy (24 hours): a retry across an upgrade must still
    /// match. This is the value the handler computed before the describe service existed.
    #[test]
    fn the_fingerprint_is_stable_across_versions() {
        let sha = format!("{:x}", Sha256::digest(b"png bytes"));
        let asked = DescribeOptions {
            detail: Some("paragraph".into()),
            max_chars: Some(80),
            ..DescribeOptions::default()
        };
        let default = DescribeOptions::default();
        let print = fingerprint(
            "batch",
            [
                (Named::Sha256(&sha), Detail::Paragraph, &asked),
                (
                    Named::Url("https://example.com/a.png"),
                    Detail::Brief,
                    &default,
                ),
            ],
        );
        let mut hasher = Sha256::new();
        hasher.update(b"batch");
        hasher.update(b"\0bytes\0");
        hasher.update(Sha256::digest(b"png bytes"));
        // The options object exactly as the handler wrote it then, key order included.
        let options = |detail: &str, max_chars: Option<usize>| {
            json!({
                "detail": detail,
                "max_new_tokens": None::<usize>,
                "num_beams": None::<usize>,
                "max_chars": max_chars,
                "asset_id": None::<String>,
                "metadata": None::<serde_json::Value>,
            })
            .to_string()
        };
        hasher.update(options("paragraph", Some(80)).as_bytes());
        hasher.update(b"\0url\0https://example.com/a.png");
        hasher.update(options("brief", None).as_bytes());
        assert_eq!(print, format!("{:x}", hasher.finalize()));
    }

    #[test]
    fn product_copy_options_are_part_of_the_fingerprint() {
        let sha = format!("{:x}", Sha256::digest(b"png bytes"));
        let print = |asked: &DescribeOptions| {
            fingerprint("create", [(Named::Sha256(&sha), Detail::Brief, asked)])
        };
        let plain = DescribeOptions::default();
        let german = DescribeOptions {
            language: Some("de".into()),
            ..DescribeOptions::default()
        };
        let french = DescribeOptions {
            language: Some("fr".into()),
            ..DescribeOptions::default()
        };
        let reseeded = DescribeOptions {
            seed: Some(2),
            ..german.clone()
        };
        let prints = [
            print(&plain),
            print(&german),
            print(&french),
            print(&reseeded),
        ];
        let distinct: std::collections::HashSet<&String> = prints.iter().collect();
        assert_eq!(distinct.len(), prints.len(), "{prints:?}");
        assert_eq!(print(&german), print(&german.clone()));
    }
}
