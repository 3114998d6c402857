//! The item loop, on every replica: claim the next due item (fairly across accounts, see
//! `Store::claim_job_item`) while fewer than `--job-concurrency` run here and spare capacity is
//! left, describe it through the describe service under a permit from spare capacity, renew its
//! lease while it runs, and move it on (stored, retried, given back or failed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::JobsConfig;
use super::options::claimed_request;
use super::outcome::{Outcome, classify};
use crate::describe::DescribeService;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::job_items::{ClaimedItem, ItemClaim};

/// How often the gauges are read from the database.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// What an item's task reports to the loop.
enum Step {
    Done,
    /// No spare permit: the loop waits a poll before claiming again.
    NoCapacity,
}

pub(super) struct Runner {
    pub store: Store,
    pub describe: DescribeService,
    pub metrics: Arc<Metrics>,
    pub config: JobsConfig,
    pub owner: String,
}

impl Runner {
    pub async fn run(self, mut wake: mpsc::Receiver<()>, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        tracing::info!(owner = %this.owner, concurrency = this.config.concurrency, reserve = this.config.reserve_images, "job runner started");
        let mut tasks: JoinSet<Step> = JoinSet::new();
        let mut paused_until: Option<Instant> = None;
        let mut gauges_at = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            if gauges_at <= Instant::now() {
                this.refresh_gauges().await;
                gauges_at = Instant::now() + GAUGE_INTERVAL;
            }
            let paused = paused_until.is_some_and(|until| Instant::now() < until);
            if !paused && tasks.len() < this.config.concurrency && this.has_spare() {
                match this
                    .store
                    .claim_job_item(&this.owner, this.lease_ms())
                    .await
                {
                    Ok(Some(item)) => {
                        let span = tracing::info_span!("job_item", job_id = %item.job_id, position = item.position, account_id = %item.account_id);
                        tasks.spawn(this.clone().process(item).instrument(span));
                        continue;
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "claiming a job item failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(this.config.poll_interval) => {}
                _ = wake.recv() => {}
                Some(step) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(Step::NoCapacity) = step {
                        paused_until = Some(Instant::now() + this.config.poll_interval);
                    }
                }
                _ = stop.changed() => {}
            }
        }
        // What runs here finishes (the engine's drain bounds it); nothing new is claimed.
        while tasks.join_next().await.is_some() {}
        tracing::info!("job runner stopped");
    }

    fn lease_ms(&self) -> i64 {
        self.config.lease.as_millis() as i64
    }

    /// Whether some model has more than the reserve free.
    fn has_spare(&self) -> bool {
        self.describe
            .models()
            .iter()
            .any(|m| m.engine.free_images() > self.config.reserve_images)
    }

    async fn refresh_gauges(&self) {
        let metrics = &self.metrics;
        if let Ok(counts) = self.store.job_status_counts().await {
            for status in crate::store::jobs::JOB_STATUSES {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                metrics.jobs.with_label_values(&[status]).set(n);
            }
        }
        if let Ok((pending, oldest)) = self.store.pending_job_item_stats().await {
            metrics.job_items_pending.set(pending);
            metrics.job_items_oldest_pending_seconds.set(oldest);
        }
        if let Ok(pending) = self.store.pending_webhook_deliveries().await {
            metrics.webhook_deliveries_pending.set(pending);
        }
    }

    async fn process(self: Arc<Self>, item: ClaimedItem) -> Step {
        let claim = ItemClaim {
            owner: &self.owner,
            item_id: &item.id,
        };
        let request = match claimed_request(&item) {
            Ok(request) => request,
            Err(message) => return self.fail(claim, "invalid_request", &message).await,
        };
        let valid = match self.describe.validator().validate(request) {
            Ok(valid) => valid,
            Err(invalid) => return self.fail(claim, invalid.code, &invalid.message).await,
        };
        let engine = &self.describe.models()[valid.model].engine;
        let Ok(permits) = engine.try_admit_spare(1, self.config.reserve_images) else {
            self.give_back(claim, self.config.poll_interval).await;
            return Step::NoCapacity;
        };
        let work =
            self.describe
                .describe_job_item(&item.account_id, &item.id, valid, permits, claim);
        let renew = self.renew_until_lost(claim);
        let result = tokio::select! {
            result = work => Some(result),
            () = renew => None,
        };
        match result {
            Some(Ok(Some(_))) => {
                self.counted("succeeded");
            }
            // Cancelled, or taken over after the lease ran out: dropping the work cancelled it
            // in the engine, and nothing was stored.
            None | Some(Ok(None)) => self.counted("lost"),
            Some(Err(error)) => match classify(&error) {
                Outcome::GiveBack => {
                    self.give_back(claim, self.config.retry_base).await;
                    return Step::NoCapacity;
                }
                Outcome::Retry { code, message } if item.attempts < self.config.max_attempts => {
                    let delay =
                        self.config.retry_base * 2u32.pow((item.attempts - 1).clamp(0, 10) as u32);
                    tracing::info!(
                        code,
                        attempts = item.attempts,
                        delay_ms = delay.as_millis() as u64,
                        "job item failed; retrying"
                    );
                    if let Err(error) = self
                        .store
                        .release_job_item(
                            claim,
                            delay.as_millis() as i64,
                            true,
                            Some((code, &message)),
                        )
                        .await
                    {
                        tracing::warn!(%error, "releasing a job item failed; its lease will run out");
                    }
                    self.counted("retried");
                }
                Outcome::Retry { code, message } | Outcome::Fail { code, message } => {
                    return self.fail(claim, code, &message).await;
                }
            },
        }
        Step::Done
    }

    /// Renews the claim every third of the lease; returns when it is gone.
    async fn renew_until_lost(&self, claim: ItemClaim<'_>) {
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.store.renew_job_item(claim, self.lease_ms()).await {
                Ok(true) => {}
                Ok(false) => return,
                // One failed renewal leaves two thirds of the lease: try again.
                Err(error) => tracing::warn!(%error, "renewing a job item's lease failed"),
            }
        }
    }

    async fn give_back(&self, claim: ItemClaim<'_>, delay: Duration) {
        if let Err(error) = self
            .store
            .release_job_item(claim, delay.as_millis() as i64, false, None)
            .await
        {
            tracing::warn!(%error, "giving a job item back failed; its lease will run out");
        }
    }

    async fn fail(&self, claim: ItemClaim<'_>, code: &str, message: &str) -> Step {
        tracing::info!(code, "job item failed");
        match self.store.fail_job_item(claim, code, message).await {
            Ok(true) => self.counted("failed"),
            Ok(false) => self.counted("lost"),
            Err(error) => {
                tracing::warn!(%error, "failing a job item failed; its lease will run out")
            }
        }
        Step::Done
    }

    fn counted(&self, result: &str) {
        self.metrics
            .job_items_processed
            .with_label_values(&[result])
            .inc();
    }
}
