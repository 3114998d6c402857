//! Durable bulk jobs, on every replica: the item runner (`runner`: leased claims, fair across
//! accounts, spare capacity only, retries of transient fetch failures) and the webhook sender
//! (`webhooks`, signed by `signature`). Items become describe requests as single requests do
//! (`options`); what a failure means for an item is `outcome`'s. All state is in SQL, so a
//! replica that dies loses nothing: its leases run out and another replica takes over.

pub mod options;
pub mod outcome;
pub mod runner;
pub mod signature;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::describe::DescribeService;
use crate::fetch::ImageFetcher;
use crate::metrics::Metrics;
use crate::store::Store;

/// The item runner's settings (from `altimage serve`'s flags).
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Items described at once by this replica (`--job-concurrency`); 0 runs no items here.
    pub concurrency: usize,
    /// Admission permits left to interactive requests (`--job-reserve-images`): an item starts
    /// only while more than this many are free.
    pub reserve_images: usize,
    /// How long a claim holds without renewal (`--job-lease-secs`): how soon a dead replica's
    /// items are taken over.
    pub lease: Duration,
    /// Attempts of an item whose failures may pass (a fetch timeout, an upstream 5xx).
    pub max_attempts: i64,
    /// The wait before the first retry; doubles per attempt.
    pub retry_base: Duration,
    /// How often an idle runner looks for work.
    pub poll_interval: Duration,
    /// Items per job (`--max-job-items`).
    pub max_items: usize,
    /// Queued or running jobs per account (`--max-active-jobs`).
    pub max_active_jobs: i64,
    pub webhook: WebhookConfig,
}

/// The webhook sender's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// One attempt, connect to answer.
    pub timeout: Duration,
    /// The first retry's wait; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long after the event retries go on (a day by default).
    pub retry_for: Duration,
    pub poll_interval: Duration,
}

/// The handle: limits for the API, the guarded client that checks `webhook_url`, a wake-up for
/// the runner after a submission, and the stop switch.
#[derive(Clone)]
pub struct Jobs {
    wake: mpsc::Sender<()>,
    stop: Arc<watch::Sender<bool>>,
    fetcher: Arc<ImageFetcher>,
    max_items: usize,
    max_active_jobs: i64,
}

impl Jobs {
    /// Starts the runner and the webhook sender. The task ends after `shutdown`, once the items
    /// running here are finished.
    pub fn start(
        store: Store,
        describe: DescribeService,
        fetcher: Arc<ImageFetcher>,
        metrics: Arc<Metrics>,
        config: JobsConfig,
    ) -> (Jobs, tokio::task::JoinHandle<()>) {
        let (wake, wake_receiver) = mpsc::channel(1);
        let (stop, stop_receiver) = watch::channel(false);
        let owner = crate::store::new_id("runner");
        let sender = webhooks::Sender {
            store: store.clone(),
            fetcher: fetcher.clone(),
            metrics: metrics.clone(),
            config: config.webhook.clone(),
            owner: owner.clone(),
        };
        let handle = Jobs {
            wake,
            stop: Arc::new(stop),
            fetcher,
            max_items: config.max_items,
            max_active_jobs: config.max_active_jobs,
        };
        let runs_items = config.concurrency > 0;
        let runner = runner::Runner {
            store,
            describe,
            metrics,
            config,
            owner,
        };
        let webhook_stop = stop_receiver.clone();
        let task = tokio::spawn(async move {
            let items = async {
                if runs_items {
                    runner.run(wake_receiver, stop_receiver).await;
                }
            };
            tokio::join!(items, sender.run(webhook_stop));
        });
        (handle, task)
    }

    /// Looks for work now instead of at the next poll.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Stops claiming; what runs finishes.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// The same SSRF check an image URL's first hop gets.
    pub fn check_webhook_url(&self, url: &str) -> Result<(), crate::fetch::ImageUrlError> {
        self.fetcher.check_target(url)
    }

    pub fn max_items(&self) -> usize {
        self.max_items
    }

    pub fn max_active_jobs(&self) -> i64 {
        self.max_active_jobs
    }
}
