//! What clients see of jobs: the job (also the `data.job` of its webhook events, which the store
//! serialises from the same row), its counts, its webhook deliveries, and the secret answer.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::v1::resources::list;
use crate::store::{jobs, webhook_deliveries};

/// How far a job is.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCounts {
    /// Items in the job.
    pub total: i64,
    /// Described, stored and billed once each.
    pub succeeded: i64,
    /// Failed with their error (in the results); not billed.
    pub failed: i64,
    /// Never started because the job was cancelled; not billed.
    pub cancelled: i64,
    /// Not finished yet.
    pub pending: i64,
}

/// A bulk job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    #[schema(example = "job_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// Always `job`.
    #[schema(value_type = String, example = "job")]
    pub object: &'static str,
    /// `queued` (nothing started), `running`, `succeeded` (every item finished, at least one
    /// described), `failed` (every item failed) or `cancelled`.
    #[schema(example = "running")]
    pub status: String,
    pub counts: JobCounts,
    /// The options every item is described with, as sent.
    #[schema(value_type = Object, example = json!({"outputs": ["alt_text"], "language": "en"}))]
    pub options: Value,
    /// Where the job's events are POSTed; absent when none was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When its first item was claimed.
    pub started_at: Option<i64>,
    /// When its last item finished, or it was cancelled.
    pub finished_at: Option<i64>,
}

impl From<jobs::Job> for Job {
    fn from(job: jobs::Job) -> Self {
        Job {
            id: job.id.into(),
            object: "job",
            status: job.status,
            counts: JobCounts {
                total: job.counts.total,
                succeeded: job.counts.succeeded,
                failed: job.counts.failed,
                cancelled: job.counts.cancelled,
                pending: job.counts.pending,
            },
            options: job.options,
            webhook_url: job.webhook_url,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

/// One POST of a job event to its `webhook_url`, with every attempt's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// Also the event's `id` and the `Altimage-Delivery` header: the same on every retry.
    #[schema(example = "whd_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// `job.succeeded`, `job.failed` or `job.cancelled`.
    #[schema(example = "job.succeeded")]
    pub event: String,
    pub url: String,
    /// `pending` (waiting for an attempt), `delivered` (the receiver answered 2xx) or `failed`
    /// (no 2xx within the retry window, a day by default).
    pub status: String,
    pub attempts: i64,
    /// The receiver's last HTTP status, when it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When the next attempt is due, while `pending`.
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
}

impl From<webhook_deliveries::Delivery> for WebhookDelivery {
    fn from(row: webhook_deliveries::Delivery) -> Self {
        WebhookDelivery {
            id: row.id,
            event: row.event,
            url: row.url,
            status: row.status,
            attempts: row.attempts,
            last_status: row.last_status,
            last_error: row.last_error,
            created_at: row.created_at,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
        }
    }
}

/// A new webhook signing secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecret {
    /// Always `webhook_secret`.
    #[schema(value_type = String, example = "webhook_secret")]
    pub object: &'static str,
    /// The key of `Altimage-Signature`'s HMAC-SHA256. Store it now: it is not shown again.
    #[schema(example = "whsec_5d1c0a4b9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b")]
    pub secret: String,
}

list!(
    /// A page of jobs.
    JobPage of Job, "Newest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);
list!(
    /// A page of a job's webhook deliveries.
    WebhookDeliveryPage of WebhookDelivery, "Oldest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);
