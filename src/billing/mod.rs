//! Stripe metered billing: ledger → outbox (`meter_reports`) → sender, on every replica. The
//! handle is cheap to clone; one task owns the loop (batcher, customer creation, sender, circuit
//! breaker, gauges). Exactly once = at-least-once sending + Stripe's identifier dedup + the
//! Idempotency-Key replay; leases only save work.

pub mod batcher;
pub mod sender;
pub mod stripe;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::store::meter_reports::Finalized;
use crate::store::{Store, StoreError};
use sender::Claimed;
use stripe::{Outcome, Stripe};

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Stripe: {0}")]
    Stripe(String),
}

/// The Stripe meter event name of each ledger kind.
#[derive(Debug, Clone)]
pub struct MeterNames {
    pub created: String,
    pub retrieved: String,
}

impl MeterNames {
    /// (ledger kind, meter event name) pairs, as the batcher takes them.
    pub fn by_kind(&self) -> [(&str, &str); 2] {
        [("created", &self.created), ("retrieved", &self.retrieved)]
    }
}

/// Everything the billing loop needs from the command line.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub secret_key: String,
    pub api_base: String,
    /// Per Stripe request.
    pub timeout: Duration,
    pub flush_interval: Duration,
    /// Longest wait between two attempts of one report.
    pub retry_max: Duration,
    pub meters: MeterNames,
    pub create_customers: bool,
}

/// Reports claimed per round trip to the database.
const CLAIM_BATCH: i64 = 32;
/// Stripe requests in flight at once per replica (at most one per customer and meter).
const SEND_CONCURRENCY: usize = 8;
/// How long a replica stops sending after Stripe refused the key, the permissions or the URL.
const CIRCUIT_PAUSE: Duration = Duration::from_secs(60);
/// First retry delay; doubles per attempt up to `--billing-retry-max-secs`.
const RETRY_BASE: Duration = Duration::from_secs(2);

/// The handle: wakes the loop (after an operator's retry or a new customer mapping) and stops it.
#[derive(Clone)]
pub struct Billing {
    wake: mpsc::Sender<()>,
    stop: Arc<watch::Sender<bool>>,
}

impl Billing {
    /// Starts the loop. The returned task ends after `shutdown`, once what it was sending is
    /// finished or released.
    pub fn start(
        store: Store,
        config: BillingConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Billing, tokio::task::JoinHandle<()>), BillingError> {
        let stripe = Stripe::new(
            &config.secret_key,
            &config.api_base,
            config.timeout,
            metrics.clone(),
        )?;
        let (wake, wake_receiver) = mpsc::channel(1);
        let (stop, stop_receiver) = watch::channel(false);
        let worker = Worker {
            store,
            stripe,
            // The lease must outlast one request (its timeout) and the finalize after it, or a
            // second replica would send the same row while the first is still waiting; a resend
            // would be deduplicated, but it is wasted work.
            lease_ms: 2 * config.timeout.as_millis() as i64 + 10_000,
            owner: crate::store::new_id("sender"),
            config,
            metrics,
            circuit_until: None,
        };
        let task = tokio::spawn(worker.run(wake_receiver, stop_receiver));
        Ok((
            Billing {
                wake,
                stop: Arc::new(stop),
            },
            task,
        ))
    }

    /// Runs a pass now instead of at the next flush. A full channel means one is already due.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Asks the loop to finish what it is sending, release what it claimed and stop.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// The task that owns the loop's state.
struct Worker {
    store: Store,
    stripe: Stripe,
    config: BillingConfig,
    metrics: Arc<Metrics>,
    owner: String,
    lease_ms: i64,
    circuit_until: Option<Instant>,
}

impl Worker {
    async fn run(mut self, mut wake: mpsc::Receiver<()>, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, flush_secs = self.config.flush_interval.as_secs_f64(), "billing started");
        loop {
            if let Err(error) = self.pass(&stop).await {
                tracing::warn!(%error, "billing pass failed; retrying at the next flush");
            }
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.flush_interval) => {}
                _ = wake.recv() => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        tracing::info!("billing stopped");
    }

    /// One pass: customers, batcher, then send until nothing is due.
    async fn pass(&mut self, stop: &watch::Receiver<bool>) -> Result<(), BillingError> {
        if self.config.create_customers && !self.circuit_open() {
            self.create_customers().await?;
        }
        let built = batcher::build_reports(&self.store, &self.config.meters).await?;
        if built.reports > 0 {
            tracing::debug!(
                reports = built.reports,
                ledger_rows = built.ledger_rows,
                "meter reports built"
            );
        }
        while !self.circuit_open() && !*stop.borrow() {
            let claimed =
                sender::claim(&self.store, &self.owner, self.lease_ms, CLAIM_BATCH).await?;
            let full = claimed.len() as i64 == CLAIM_BATCH;
            if claimed.is_empty() {
                break;
            }
            self.send_all(claimed, stop).await?;
            if !full {
                break;
            }
        }
        let (pending, oldest) = self.store.pending_meter_report_stats().await?;
        self.metrics.billing_reports_pending.set(pending);
        self.metrics.billing_oldest_pending_seconds.set(oldest);
        Ok(())
    }

    fn circuit_open(&self) -> bool {
        self.circuit_until
            .is_some_and(|until| Instant::now() < until)
    }

    async fn create_customers(&self) -> Result<(), BillingError> {
        for (account_id, name, email) in self.store.accounts_needing_customers().await? {
            match self
                .stripe
                .create_customer(account_id.as_str(), name.as_deref(), email.as_deref())
                .await
            {
                Ok(customer) => {
                    if self
                        .store
                        .set_customer_if_unmapped(&account_id, &customer)
                        .await?
                    {
                        tracing::info!(
                            %account_id,
                            customer,
                            "created a Stripe customer for the account"
                        );
                    }
                }
                Err(error) => {
                    tracing::warn!(%account_id, %error, "cannot create a Stripe customer; its usage waits");
                }
            }
        }
        Ok(())
    }

    /// Sends the claimed rows: one request at a time per (customer, meter), several groups at once.
    async fn send_all(
        &mut self,
        claimed: Vec<Claimed>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), BillingError> {
        let mut groups: BTreeMap<(String, String), Vec<Claimed>> = BTreeMap::new();
        for row in claimed {
            groups
                .entry((row.event.customer.clone(), row.event.event_name.clone()))
                .or_default()
                .push(row);
        }
        let circuit_tripped = AtomicBool::new(false);
        let this = &*self;
        let results = futures_util::stream::iter(groups.into_values())
            .map(|rows| this.send_group(rows, stop, &circuit_tripped))
            .buffer_unordered(SEND_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        if circuit_tripped.load(Ordering::Relaxed) {
            self.circuit_until = Some(Instant::now() + CIRCUIT_PAUSE);
        }
        results.into_iter().collect()
    }

    async fn send_group(
        &self,
        rows: Vec<Claimed>,
        stop: &watch::Receiver<bool>,
        circuit_tripped: &AtomicBool,
    ) -> Result<(), BillingError> {
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            if *stop.borrow() || circuit_tripped.load(Ordering::Relaxed) {
                let mut left = vec![row.id];
                left.extend(rows.map(|r| r.id));
                return Ok(self.store.release_meter_reports(&self.owner, &left).await?);
            }
            let now_secs = crate::store::now_ms() / 1000;
            if sender::too_old(&row, now_secs) {
                self.store.expire_meter_report(&self.owner, &row.id).await?;
                self.count("expired");
                continue;
            }
            let outcome = self.stripe.send_meter_event(&row.event).await;
            let delay = match &outcome {
                Outcome::CircuitOpen { reason } => {
                    tracing::error!(report_id = %row.id, reason, "Stripe refused the key, the permissions or the URL; sending paused (check STRIPE_SECRET_KEY and --stripe-api-base)");
                    circuit_tripped.store(true, Ordering::Relaxed);
                    // The pause belongs to this replica, not to the row: a replica with a
                    // working key (or this one restarted with it) takes the row at once.
                    Duration::ZERO
                }
                _ => backoff(row.attempts, self.config.retry_max),
            };
            match &outcome {
                Outcome::Failed { reason } => {
                    tracing::error!(report_id = %row.id, customer = %row.event.customer, reason, "Stripe refused a meter report for good; an operator can retry it (POST /v1/admin/billing/reports/{{id}}/retry)")
                }
                Outcome::Retry { reason, .. } => {
                    tracing::warn!(report_id = %row.id, attempts = row.attempts, retry_in_ms = delay.as_millis() as u64, reason, "meter report not delivered; retrying")
                }
                _ => {}
            }
            let finalized = sender::finalize(
                &self.store,
                &self.owner,
                &row,
                &outcome,
                delay.as_millis() as i64,
            )
            .await?;
            self.count(outcome.label());
            match finalized {
                Finalized::Done => {}
                Finalized::GaveUp => {
                    tracing::error!(report_id = %row.id, customer = %row.event.customer, "meter report in doubt for 20 hours: it stopped retrying, since a resend could now be counted twice by Stripe; check the customer's meter usage at Stripe, then retry it (POST /v1/admin/billing/reports/{{id}}/retry) or leave it");
                    self.count("needs_reconcile");
                }
                Finalized::NotOurs => {
                    tracing::info!(report_id = %row.id, "another replica took the report over; its resend is deduplicated by Stripe")
                }
            }
        }
        Ok(())
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .billing_events
            .with_label_values(&[result])
            .inc();
    }
}

/// Jittered exponential backoff: a random point in [½, 1] × min(max, base × 2^(attempts−1)), so
/// that replicas retrying after one outage do not arrive together.
pub fn backoff(attempts: i64, max: Duration) -> Duration {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    let ceiling = RETRY_BASE
        .saturating_mul(1u32 << exponent.min(16))
        .min(max)
        .max(Duration::from_millis(100));
    let mut random = [0u8; 8];
    // Without entropy the retry is simply not jittered; nothing else depends on it.
    let _ = getrandom::fill(&mut random);
    let fraction = 0.5 + 0.5 * (u64::from_le_bytes(random) as f64 / u64::MAX as f64);
    ceiling.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let max = Duration::from_secs(600);
        for (attempts, ceiling) in [(1, 2), (2, 4), (3, 8), (9, 512), (10, 600), (50, 600)] {
            for _ in 0..50 {
                let delay = backoff(attempts, max);
                let ceiling = Duration::from_secs(ceiling);
                assert!(
                    delay <= ceiling && delay >= ceiling / 2,
                    "{attempts}: {delay:?}"
                );
            }
        }
        assert!(backoff(5, Duration::from_secs(1)) <= Duration::from_secs(1));
    }
}
