//! The webhook sender, on every replica: claims due deliveries with a lease, POSTs each through
//! the SSRF-guarded client with its signature, delivery id and event, and moves it on: delivered
//! on 2xx, else retried with a doubling backoff until a day (`--webhook-retry-for-secs`) after
//! the event, then failed (listed in the API with the last status and error).

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::WebhookConfig;
use super::signature::sign;
use crate::fetch::ImageFetcher;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::webhook_deliveries::{ClaimedDelivery, DeliveryOutcome};

/// Deliveries claimed per round trip, and sent at once.
const CLAIM_BATCH: i64 = 16;
const SEND_CONCURRENCY: usize = 8;

pub(super) struct Sender {
    pub store: Store,
    pub fetcher: Arc<ImageFetcher>,
    pub metrics: Arc<Metrics>,
    pub config: WebhookConfig,
    pub owner: String,
}

impl Sender {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            match self.pass().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "webhook pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One batch; `true` when the batch was full (more may be due).
    async fn pass(&self) -> Result<bool, crate::store::StoreError> {
        // The lease outlasts one attempt and its bookkeeping.
        let lease_ms = 2 * self.config.timeout.as_millis() as i64 + 10_000;
        let claimed = self
            .store
            .claim_webhook_deliveries(&self.owner, lease_ms, CLAIM_BATCH)
            .await?;
        let full = claimed.len() as i64 == CLAIM_BATCH;
        futures_util::stream::iter(claimed)
            .map(|delivery| self.attempt(delivery))
            .buffer_unordered(SEND_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        Ok(full)
    }

    async fn attempt(&self, delivery: ClaimedDelivery) {
        let result = match &delivery.secret {
            None => Err((
                None,
                "the account has no webhook secret (POST /v1/webhook_secret)".to_string(),
            )),
            Some(secret) => {
                let timestamp = crate::store::now_ms() / 1000;
                let headers = [
                    (
                        "altimage-signature",
                        sign(secret, timestamp, &delivery.payload),
                    ),
                    ("altimage-delivery", delivery.id.clone()),
                    ("altimage-event", event_of(&delivery.payload)),
                ];
                match self
                    .fetcher
                    .post_json(
                        &delivery.url,
                        &headers,
                        delivery.payload.clone(),
                        self.config.timeout,
                    )
                    .await
                {
                    Ok(status) if (200..300).contains(&status) => Ok(status),
                    Ok(status) => {
                        Err((Some(status), format!("the receiver answered HTTP {status}")))
                    }
                    Err(error) => Err((None, error.to_string())),
                }
            }
        };
        let outcome = match &result {
            Ok(status) => DeliveryOutcome::Delivered { status: *status },
            Err((status, error)) => DeliveryOutcome::Retry {
                status: *status,
                error,
                delay_ms: self.backoff_ms(delivery.attempts),
                give_up_at: delivery.created_at + self.config.retry_for.as_millis() as i64,
            },
        };
        let result_label = match self
            .store
            .finish_webhook_delivery(&self.owner, &delivery.id, outcome)
            .await
        {
            Ok(Some(status)) if status == "delivered" => "delivered",
            Ok(Some(status)) if status == "failed" => "failed",
            Ok(Some(_)) => "retry",
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, delivery = %delivery.id, "recording a webhook attempt failed");
                return;
            }
        };
        if let Err((_, error)) = &result {
            tracing::info!(delivery = %delivery.id, attempts = delivery.attempts, %error, result = result_label, "webhook delivery failed");
        }
        self.metrics
            .webhook_deliveries
            .with_label_values(&[result_label])
            .inc();
    }

    /// The wait after attempt `attempts`: the base, doubled per attempt, at most the cap.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let base = self.config.retry_base.as_millis() as i64;
        let cap = self.config.retry_max.as_millis() as i64;
        base.saturating_mul(1i64 << (attempts - 1).clamp(0, 30))
            .min(cap)
    }
}

/// The `type` of the event in a stored payload.
fn event_of(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}
