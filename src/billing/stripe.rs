//! The Stripe client (async-stripe over rustls) and the classification of every answer into
//! what the outbox row does next (research note §6.5).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stripe::{ApiErrorsCode, ApiErrorsType, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::BillingMeterEvent;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_core::customer::CreateCustomer;

use super::BillingError;

/// The prefix of Stripe's answer to an identifier it has already accepted. Stripe gives no
/// error code for it, so the message is the only signal (langfuse #16292 and others match it too).
pub const DUPLICATE_PREFIX: &str = "An event already exists with identifier";

/// One meter event to send: an outbox row as the sender claimed it.
#[derive(Debug, Clone)]
pub struct MeterEvent {
    pub identifier: String,
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    /// Unix seconds.
    pub timestamp: i64,
    pub idempotency_key: String,
}

/// What an answer means for the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stripe has the event: accepted now, or an unreadable 2xx (it was accepted all the same).
    Sent { livemode: Option<bool> },
    /// Stripe already had this identifier: an earlier attempt got through.
    Duplicate,
    /// Retry later. `new_key`: Stripe may have stored a failed answer under the old
    /// Idempotency-Key (it replays 5xx for 24 h), so the next attempt needs a fresh one.
    /// `in_doubt`: the attempt may have been processed.
    Retry {
        new_key: bool,
        in_doubt: bool,
        reason: String,
    },
    /// The key, the permissions or the base URL is wrong: every row would fail alike, so stop
    /// sending for a while instead of burning attempts.
    CircuitOpen { reason: String },
    /// Stripe refused this row for good (unknown customer or meter, timestamp outside the window).
    Failed { reason: String },
}

impl Outcome {
    /// The `result` label of `altimage_billing_events_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Duplicate => "duplicate",
            Outcome::Retry { in_doubt: true, .. } => "in_doubt",
            Outcome::Retry { .. } => "retry",
            Outcome::CircuitOpen { .. } => "circuit_open",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// Maps one answer of async-stripe to the outcome (the table in research note §6.5).
pub fn classify(result: &Result<BillingMeterEvent, StripeError>) -> Outcome {
    let error = match result {
        Ok(event) => {
            return Outcome::Sent {
                livemode: Some(event.livemode),
            };
        }
        Err(error) => error,
    };
    let retry = |new_key, in_doubt, reason: String| Outcome::Retry {
        new_key,
        in_doubt,
        reason,
    };
    match error {
        StripeError::Stripe(api, status) => {
            let message = api.message.clone().unwrap_or_default();
            let reason = format!("{status} {}: {message}", api.type_.as_str());
            match (status, &api.type_) {
                (400, ApiErrorsType::InvalidRequestError)
                    if message.starts_with(DUPLICATE_PREFIX) =>
                {
                    Outcome::Duplicate
                }
                // Same key, other parameters: our bug. A fresh key lets the row go; the
                // identifier still keeps it from being counted twice.
                (_, ApiErrorsType::IdempotencyError) => retry(true, false, reason),
                // A concurrent request holds the key, or the rate limiter refused before the
                // idempotency layer stored anything: the same key stays right.
                (409 | 429, _) => retry(false, false, reason),
                (401 | 403 | 404, _) => Outcome::CircuitOpen { reason },
                (424 | 500..=599, _) => retry(true, true, reason),
                (400..=499, _) if api.code == Some(ApiErrorsCode::RateLimit) => {
                    retry(false, false, reason)
                }
                _ => Outcome::Failed { reason },
            }
        }
        // Only the success path produces this message: the 2xx body did not parse, so Stripe
        // accepted the event. Resending with the same key would replay the same body forever.
        StripeError::JSONDeserialize(message) if message.contains("request data") => {
            tracing::error!(
                message,
                "Stripe accepted a meter event but its answer did not parse: the API version and async-stripe disagree"
            );
            Outcome::Sent { livemode: None }
        }
        // A non-2xx body that is not a Stripe error (a proxy page): nothing was stored.
        StripeError::JSONDeserialize(message) => {
            retry(false, false, format!("unreadable error answer: {message}"))
        }
        // The connection was never made, so Stripe saw nothing.
        StripeError::ClientError(message) if message.contains("(Connect)") => {
            retry(false, false, format!("cannot connect: {message}"))
        }
        // The request may have been processed: the same key gets its answer replayed.
        StripeError::ClientError(message) => retry(false, true, message.clone()),
        StripeError::Timeout => retry(false, true, "timed out".into()),
        StripeError::ConfigError(message) => Outcome::CircuitOpen {
            reason: format!("configuration: {message}"),
        },
    }
}

/// The Stripe API client: cheap to clone.
#[derive(Clone)]
pub struct Stripe {
    client: stripe::Client,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Stripe {
    pub fn new(
        secret_key: &str,
        api_base: &str,
        timeout: Duration,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Stripe, BillingError> {
        // async-stripe appends `v1/…` to the base as a string: a base with a path needs its `/`.
        let base = if api_base.ends_with('/') {
            api_base.to_string()
        } else {
            format!("{api_base}/")
        };
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(BillingError::Config(format!(
                "--stripe-api-base `{api_base}` must be an http(s) URL"
            )));
        }
        let client = stripe::ClientBuilder::new(secret_key)
            .url(base)
            .timeout(timeout)
            .app_info("altimage", Some(env!("CARGO_PKG_VERSION").to_string()), None)
            .build()
            .map_err(|e| {
                BillingError::Config(format!(
                    "cannot build the Stripe client: {e} (check --stripe-secret-key / STRIPE_SECRET_KEY)"
                ))
            })?;
        Ok(Stripe { client, metrics })
    }

    /// One attempt (`RequestStrategy::Idempotent` never retries inside the client: the outbox
    /// owns retrying, durably, across restarts).
    pub async fn send_meter_event(&self, event: &MeterEvent) -> Outcome {
        let key = match stripe::IdempotencyKey::new(&event.idempotency_key) {
            Ok(key) => key,
            Err(error) => {
                return Outcome::Failed {
                    reason: format!("idempotency key refused: {error:?}"),
                };
            }
        };
        let payload = HashMap::from([
            ("stripe_customer_id".to_string(), event.customer.clone()),
            ("value".to_string(), event.value.to_string()),
        ]);
        let started = Instant::now();
        let result = CreateBillingMeterEvent::new(event.event_name.as_str(), payload)
            .identifier(event.identifier.as_str())
            .timestamp(event.timestamp)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await;
        self.metrics
            .billing_stripe_request_seconds
            .observe(started.elapsed().as_secs_f64());
        classify(&result)
    }

    /// Creates the customer for an account. The Idempotency-Key is derived from the account, so
    /// two replicas (or a retry within Stripe's 24 h key window) get the same customer back.
    pub async fn create_customer(
        &self,
        account_id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<String, BillingError> {
        let key = stripe::IdempotencyKey::new(format!("cust-create-{account_id}"))
            .map_err(|e| BillingError::Stripe(format!("idempotency key refused: {e:?}")))?;
        let mut request = CreateCustomer::new().metadata(HashMap::from([(
            "altimage_account_id".to_string(),
            account_id.to_string(),
        )]));
        if let Some(name) = name {
            request = request.name(name);
        }
        if let Some(email) = email {
            request = request.email(email);
        }
        let started = Instant::now();
        let result = request
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await;
        self.metrics
            .billing_stripe_request_seconds
            .observe(started.elapsed().as_secs_f64());
        result
            .map(|customer| customer.id.to_string())
            .map_err(|e| BillingError::Stripe(format!("creating a customer failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stripe::ApiErrors;

    fn api(
        status: u16,
        type_: ApiErrorsType,
        code: Option<ApiErrorsCode>,
        message: &str,
    ) -> Outcome {
        let errors = ApiErrors {
            advice_code: None,
            charge: None,
            code,
            decline_code: None,
            doc_url: None,
            message: Some(message.into()),
            network_advice_code: None,
            network_decline_code: None,
            param: None,
            payment_intent: None,
            payment_method: None,
            payment_method_type: None,
            request_log_url: None,
            setup_intent: None,
            source: None,
            type_,
        };
        classify(&Err(StripeError::Stripe(Box::new(errors), status)))
    }

    #[test]
    fn a_repeated_identifier_counts_as_delivered() {
        let outcome = api(
            400,
            ApiErrorsType::InvalidRequestError,
            None,
            "An event already exists with identifier mr_1.",
        );
        assert_eq!(outcome, Outcome::Duplicate);
    }

    #[test]
    fn every_answer_maps_to_the_documented_transition() {
        use ApiErrorsType::*;
        let retry = |o: Outcome| match o {
            Outcome::Retry {
                new_key, in_doubt, ..
            } => Some((new_key, in_doubt)),
            _ => None,
        };
        assert_eq!(
            retry(api(
                429,
                InvalidRequestError,
                Some(ApiErrorsCode::RateLimit),
                "slow down"
            )),
            Some((false, false))
        );
        assert_eq!(
            retry(api(
                409,
                IdempotencyError,
                Some(ApiErrorsCode::IdempotencyKeyInUse),
                "in use"
            )),
            Some((true, false))
        );
        assert_eq!(
            retry(api(
                409,
                InvalidRequestError,
                Some(ApiErrorsCode::IdempotencyKeyInUse),
                "in use"
            )),
            Some((false, false))
        );
        assert_eq!(
            retry(api(400, IdempotencyError, None, "other parameters")),
            Some((true, false))
        );
        for status in [424, 500, 502, 503, 504] {
            assert_eq!(
                retry(api(status, ApiError, None, "boom")),
                Some((true, true)),
                "{status}"
            );
        }
        for status in [401, 403, 404] {
            assert!(
                matches!(
                    api(status, InvalidRequestError, None, "no"),
                    Outcome::CircuitOpen { .. }
                ),
                "{status}"
            );
        }
        assert!(matches!(
            api(400, InvalidRequestError, None, "No such customer: 'cus_x'"),
            Outcome::Failed { .. }
        ));
        assert_eq!(
            retry(classify(&Err(StripeError::Timeout))),
            Some((false, true))
        );
        assert_eq!(
            retry(classify(&Err(StripeError::ClientError(
                "client error (Connect)".into()
            )))),
            Some((false, false))
        );
        assert_eq!(
            retry(classify(&Err(StripeError::ClientError(
                "connection reset".into()
            )))),
            Some((false, true))
        );
        assert_eq!(
            classify(&Err(StripeError::JSONDeserialize(
                "error deserializing request data".into()
            ))),
            Outcome::Sent { livemode: None }
        );
        assert_eq!(
            retry(classify(&Err(StripeError::JSONDeserialize(
                "error deserializing Stripe error".into()
            )))),
            Some((false, false))
        );
        assert!(matches!(
            classify(&Err(StripeError::ConfigError("bad".into()))),
            Outcome::CircuitOpen { .. }
        ));
    }
}
