//! `POST /v1/stripe/webhook`: Stripe-Signature verification (HMAC-SHA256 over `t.body`, constant
//! time, timestamp tolerance) and the events billing acts on: `customer.deleted` unmaps the
//! customer. Each event id is applied once, in the same transaction as its effect.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::openapi::WebhookReceived;
use crate::store::{Store, StoreError};

/// The endpoint secret (`whsec_…`) and how old a signature may be.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secret: String,
    pub tolerance: Duration,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no `t=` timestamp or no `v1=` signature")]
    Malformed,
    #[error("no v1 signature matches (check --stripe-webhook-secret / STRIPE_WEBHOOK_SECRET)")]
    Mismatch,
    #[error("the signature timestamp is {0} s away from now, beyond the tolerance")]
    Stale(i64),
}

/// Verifies `header` (`t=…,v1=…[,v1=…]`) for `body`. Any matching `v1` passes, which covers
/// Stripe's secret rotation; `v0` and unknown parts are ignored. The timestamp is checked after
/// the signature, so an attacker learns nothing from the order of answers.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    tolerance: Duration,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = sign(timestamp, body, secret);
    let matched = signatures.iter().fold(false, |any, candidate| {
        any | bool::from(candidate.as_bytes().ct_eq(expected.as_bytes()))
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let skew = (now_secs - timestamp).abs();
    if skew > tolerance.as_secs() as i64 {
        return Err(SignatureError::Stale(skew));
    }
    Ok(())
}

/// The hex `v1` signature Stripe computes for `t.body`.
pub fn sign(timestamp: i64, body: &[u8], secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Seen before: nothing done.
    Duplicate,
    /// Not an event billing acts on; recorded so a redelivery is not looked at again.
    Ignored,
    /// `customer.deleted`: the accounts unmapped and the pending reports failed.
    CustomerDeleted { accounts: u64, reports: u64 },
}

/// Applies one verified event in one transaction with its dedup record.
pub async fn apply(store: &Store, event: &Value) -> Result<Applied, StoreError> {
    let id = event["id"].as_str().unwrap_or_default();
    let kind = event["type"].as_str().unwrap_or_default();
    if id.is_empty() || kind.is_empty() {
        return Err(StoreError::Invalid(
            "the event has no `id` or `type`".into(),
        ));
    }
    let now = store.backend().now_ms();
    let mut tx = store.begin_write().await?;
    let inserted = sqlx::query(&format!(
        "INSERT INTO stripe_webhook_events (event_id, type, received_at) VALUES ($1, $2, {now}) ON CONFLICT (event_id) DO NOTHING"
    ))
    .bind(id)
    .bind(kind)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(Applied::Duplicate);
    }
    let applied = match (kind, event["data"]["object"]["id"].as_str()) {
        ("customer.deleted", Some(customer)) => {
            // Later events for a deleted customer fail at Stripe, asynchronously: keep the usage
            // in the ledger (unreported, for manual invoicing or a new customer) instead.
            let accounts = sqlx::query(&format!(
                "UPDATE accounts SET stripe_customer_id = NULL, stripe_customer_deleted_at = {now} WHERE stripe_customer_id = $1"
            ))
            .bind(customer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let reports = sqlx::query(
                "UPDATE meter_reports SET status = 'failed', last_result = 'customer_deleted', last_error = 'the Stripe customer was deleted', lease_owner = NULL, lease_until = NULL \
                 WHERE stripe_customer_id = $1 AND status = 'pending'",
            )
            .bind(customer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tracing::warn!(
                customer,
                accounts,
                reports,
                "Stripe deleted a customer: its accounts are unmapped, their usage waits"
            );
            Applied::CustomerDeleted { accounts, reports }
        }
        _ => Applied::Ignored,
    };
    tx.commit().await?;
    Ok(applied)
}

/// The raw body is taken as bytes: the signature covers exactly what Stripe sent.
#[utoipa::path(
    post,
    path = "/v1/stripe/webhook",
    operation_id = "stripeWebhook",
    tag = "billing",
    summary = "Stripe webhook endpoint",
    description = "For Stripe, not for API clients: no bearer token; each delivery is verified by \
        its `Stripe-Signature` header (HMAC-SHA256 with `--stripe-webhook-secret` / \
        `STRIPE_WEBHOOK_SECRET`, any `v1` signature, timestamp within \
        `--stripe-webhook-tolerance-secs`). Billing acts on `customer.deleted` (the customer's \
        accounts are unmapped and their pending reports failed); other events are acknowledged \
        and ignored. Each event id is applied once; a redelivery answers 200 and does nothing. \
        The route exists only when a webhook secret is set.",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature header, `t=TIMESTAMP,v1=HEX[,v1=HEX]`.", example = "t=1764393600,v1=7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, exactly as Stripe sent it (the signature covers the raw bytes)."),
    responses(
        (status = 200, description = "Received: applied, ignored, or a duplicate.", body = WebhookReceived),
        (status = 400, description = "Refused: no `Stripe-Signature`, a malformed one, no matching `v1` signature, or a timestamp beyond the tolerance (`invalid_signature`); a body that is not JSON (`invalid_json`); an event without `id` or `type` (`invalid_event`).", body = ErrorBody),
        (status = 413, description = "The body exceeds `--max-body-bytes` (`body_too_large`); Stripe's events are a few KiB.", body = ErrorBody),
        (status = 404, description = "The webhook is off: the server runs without a webhook secret.", body = ErrorBody),
        (status = 503, description = "The event could not be applied (the database failed or did not answer; code `unavailable`), so Stripe redelivers it later; or the model is still loading (`starting`).", body = ErrorBody),
    ),
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookReceived>, ApiError> {
    let Some(config) = state.billing.webhook.clone() else {
        return Err(ApiError::NotFound("no such route".into()));
    };
    let body = body.map_err(crate::http::input::body_error)?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now_secs = crate::store::now_ms() / 1000;
    if let Err(refused) = verify(header, &body, &config.secret, config.tolerance, now_secs) {
        tracing::warn!(%refused, "Stripe webhook refused");
        return Err(ApiError::bad_request(
            "invalid_signature",
            refused.to_string(),
        ));
    }
    let event: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the event is not JSON: {e}"))
    })?;
    crate::http::extract::check_json(&event)?;
    match apply(&state.store, &event).await {
        Ok(applied) => {
            if let Applied::CustomerDeleted { reports, .. } = applied {
                state
                    .engine
                    .metrics()
                    .billing_events
                    .with_label_values(&["customer_deleted"])
                    .inc_by(reports);
                if let Some(billing) = state.billing.billing.as_ref() {
                    billing.wake();
                }
            }
            Ok(Json(WebhookReceived { received: true }))
        }
        Err(StoreError::Invalid(message)) => Err(ApiError::bad_request("invalid_event", message)),
        // Stripe retries a failed delivery for days: a 503 lets it come back (it keeps its own
        // schedule; Retry-After is there like on every 503 of this API).
        Err(e) => {
            tracing::warn!(error = %e, "Stripe webhook not applied; Stripe will redeliver");
            Err(ApiError::Unavailable {
                code: "unavailable",
                message: "the event could not be applied now; redeliver it".into(),
                retry_after: Duration::from_secs(60),
            })
        }
    }
}

/// Which errors the webhook answers with (the OpenAPI test holds the document to it).
pub fn webhook_returns(error: &ApiError) -> bool {
    match error {
        // A refused signature, a body that is not JSON, an event without `id` or `type`; an
        // unreadable body.
        ApiError::BadRequest { .. } => true,
        // A body over --max-body-bytes.
        ApiError::TooLarge { .. } => true,
        // No webhook secret: the route is not mounted and the fallback answers.
        ApiError::NotFound(_) => true,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
        // The store failed: Stripe redelivers.
        ApiError::Unavailable { .. } => true,
        // No API key on this route, so no scopes, restriction or rate limit; the body is read as
        // bytes whatever its type; no images; store failures all answer 503.
        ApiError::Unauthorized { .. }
        | ApiError::Forbidden { .. }
        | ApiError::RateLimited { .. }
        | ApiError::Conflict { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        | ApiError::Overloaded { .. }
        | ApiError::Internal(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn header(t: i64, body: &[u8], secret: &str) -> String {
        format!("t={t},v1={}", sign(t, body, secret))
    }

    #[test]
    fn a_correct_signature_passes_and_a_tampered_body_does_not() {
        let body = br#"{"id":"evt_1","type":"customer.deleted"}"#;
        let h = header(1_000, body, SECRET);
        assert_eq!(verify(Some(&h), body, SECRET, TOLERANCE, 1_000), Ok(()));
        assert_eq!(
            verify(
                Some(&h),
                br#"{"id":"evt_2","type":"customer.deleted"}"#,
                SECRET,
                TOLERANCE,
                1_000
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                Some(&header(1_000, body, "whsec_other")),
                body,
                SECRET,
                TOLERANCE,
                1_000
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance_both_ways() {
        let body = b"{}";
        let h = header(1_000, body, SECRET);
        assert_eq!(verify(Some(&h), body, SECRET, TOLERANCE, 1_300), Ok(()));
        assert_eq!(
            verify(Some(&h), body, SECRET, TOLERANCE, 1_301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(Some(&h), body, SECRET, TOLERANCE, 699),
            Err(SignatureError::Stale(301))
        );
    }

    #[test]
    fn any_v1_matches_and_other_schemes_are_ignored() {
        let body = b"{}";
        let good = sign(5, body, SECRET);
        let h = format!("t=5,v0={good},v1=deadbeef,v1={good},x=1");
        assert_eq!(verify(Some(&h), body, SECRET, TOLERANCE, 5), Ok(()));
        let only_v0 = format!("t=5,v0={good}");
        assert_eq!(
            verify(Some(&only_v0), body, SECRET, TOLERANCE, 5),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("v1=abc"), body, SECRET, TOLERANCE, 5),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(None, body, SECRET, TOLERANCE, 5),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn the_signature_is_stripes_hmac() {
        // HMAC-SHA256("whsec_test", "1.{}") computed independently with Python's hmac module.
        assert_eq!(
            sign(1, b"{}", SECRET),
            "7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094"
        );
    }
}
