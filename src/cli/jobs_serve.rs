//! `serve`'s bulk-job flags and their conversion into the job runner's and the webhook sender's
//! settings.

use std::time::Duration;

use clap::Args;

use crate::jobs::{JobsConfig, WebhookConfig};

/// Bulk jobs: how much of the engine they may use, how a dead replica's items are taken over,
/// how failures are retried, and how webhooks are delivered.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Job items this replica describes at once. More finishes catalogues sooner but puts more
    /// rows beside interactive ones in each batch (their latency); 0 runs no job items here
    /// (an API-only replica: jobs are still accepted and run elsewhere).
    #[arg(long, env = "ALTIMAGE_JOB_CONCURRENCY", default_value_t = 2)]
    pub job_concurrency: usize,

    /// Admission permits (--max-concurrent-images) kept for interactive requests: a job item
    /// starts only while more than this many are free. Higher protects interactive traffic
    /// under load; lower lets jobs use more of an idle server.
    #[arg(long, env = "ALTIMAGE_JOB_RESERVE_IMAGES", default_value_t = 4)]
    pub job_reserve_images: usize,

    /// How long a replica's claim on an item holds without renewal (renewed every third of
    /// it). Shorter: a dead replica's items are taken over sooner; longer: a slow database
    /// cannot make two replicas describe the same item (it would still be stored once).
    #[arg(long, env = "ALTIMAGE_JOB_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_lease_secs: u64,

    /// Attempts of an item whose failure may pass (a fetch timeout, an unreachable host, an
    /// upstream 5xx or 429, an inference failure) before it fails with that error.
    #[arg(long, env = "ALTIMAGE_JOB_MAX_ATTEMPTS", default_value_t = 4, value_parser = clap::value_parser!(i64).range(1..))]
    pub job_max_attempts: i64,

    /// The wait before an item's first retry; doubles per attempt. Longer is kinder to a
    /// struggling image host; shorter finishes sooner.
    #[arg(long, env = "ALTIMAGE_JOB_RETRY_BASE_MS", default_value_t = 2_000)]
    pub job_retry_base_ms: u64,

    /// How often an idle replica looks for job items and webhook deliveries (a submission to
    /// this replica wakes it at once). Shorter reacts sooner to other replicas' submissions;
    /// longer queries the database less.
    #[arg(long, env = "ALTIMAGE_JOB_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_poll_ms: u64,

    /// Items in one job. The whole job is checked and stored in one transaction when it is
    /// submitted (and the body must fit --max-body-bytes): larger catalogues go in several jobs.
    #[arg(long, env = "ALTIMAGE_MAX_JOB_ITEMS", default_value_t = 100_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_job_items: usize,

    /// Jobs an account may have queued or running at once; more is a 429. Keeps one account
    /// from filling the database with work the others wait behind.
    #[arg(long, env = "ALTIMAGE_MAX_ACTIVE_JOBS", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_active_jobs: i64,

    /// Time limit of one webhook POST, connect to answer.
    #[arg(long, env = "ALTIMAGE_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// The wait before a failed webhook's first retry; doubles per attempt up to
    /// --webhook-retry-max-secs.
    #[arg(long, env = "ALTIMAGE_WEBHOOK_RETRY_BASE_MS", default_value_t = 30_000)]
    pub webhook_retry_base_ms: u64,

    /// The longest wait between two attempts of one webhook.
    #[arg(long, env = "ALTIMAGE_WEBHOOK_RETRY_MAX_SECS", default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_max_secs: u64,

    /// How long after the event a webhook is retried before it is marked failed (a day by
    /// default). The delivery stays listed either way.
    #[arg(long, env = "ALTIMAGE_WEBHOOK_RETRY_FOR_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_for_secs: u64,
}

impl JobsArgs {
    pub fn config(&self) -> JobsConfig {
        let poll_interval = Duration::from_millis(self.job_poll_ms);
        JobsConfig {
            concurrency: self.job_concurrency,
            reserve_images: self.job_reserve_images,
            lease: Duration::from_secs(self.job_lease_secs),
            max_attempts: self.job_max_attempts,
            retry_base: Duration::from_millis(self.job_retry_base_ms),
            poll_interval,
            max_items: self.max_job_items,
            max_active_jobs: self.max_active_jobs,
            webhook: WebhookConfig {
                timeout: Duration::from_millis(self.webhook_timeout_ms),
                retry_base: Duration::from_millis(self.webhook_retry_base_ms),
                retry_max: Duration::from_secs(self.webhook_retry_max_secs),
                retry_for: Duration::from_secs(self.webhook_retry_for_secs),
                poll_interval,
            },
        }
    }
}
