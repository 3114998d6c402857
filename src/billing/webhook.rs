//! Stripe's webhook deliveries: Stripe-Signature verification (HMAC-SHA256 over `t.body`,
//! constant time, timestamp tolerance) and the events billing acts on: `customer.deleted` unmaps
//! the customer. Each event id is applied once, in the same transaction as its effect. The route,
//! `POST /v1/stripe/webhook`, is in `http::billing`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::store::webhook_events::{Applied, WebhookEffect};
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

/// Applies one verified event in one transaction with its dedup record. Billing acts on
/// `customer.deleted`; any other event is only recorded.
pub async fn apply(store: &Store, event: &Value) -> Result<Applied, StoreError> {
    let id = event["id"].as_str().unwrap_or_default();
    let kind = event["type"].as_str().unwrap_or_default();
    if id.is_empty() || kind.is_empty() {
        return Err(StoreError::Invalid(
            "the event has no `id` or `type`".into(),
        ));
    }
    let effect = match (kind, event["data"]["object"]["id"].as_str()) {
        ("customer.deleted", Some(customer)) => WebhookEffect::CustomerDeleted { customer },
        _ => WebhookEffect::None,
    };
    store.apply_webhook_event(id, kind, effect).await
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
