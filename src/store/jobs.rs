//! Bulk jobs (`jobs`): created with all their items in one transaction (the `Idempotency-Key`
//! and the per-account queue limit checked inside it), read, listed, cancelled. A job's counts
//! move in the transaction that moves an item on (`job_items`), and the job finishes there too,
//! queueing its webhook event in the same transaction (`webhook_deliveries`).

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::ids::{AccountId, JobId};
use super::{Result, Store, StoreError, new_id};

/// Items inserted per statement: 8 parameters each, far below both databases' limits.
const INSERT_CHUNK: usize = 200;

/// Job statuses that still have work to do.
pub const ACTIVE_STATUSES: [&str; 2] = ["queued", "running"];
/// Every job status, for the gauges.
pub const JOB_STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// One image of a new job, as submitted (validated by the caller).
#[derive(Debug, Clone, Default)]
pub struct NewItem {
    pub image_url: String,
    pub asset_id: Option<String>,
    /// Product context, as `ContextOptions::to_json` writes it.
    pub context: Option<Value>,
    pub metadata: Option<Value>,
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The options every item is described with (JSON).
    pub options: Value,
    pub webhook_url: Option<String>,
    pub items: Vec<NewItem>,
    /// The `Idempotency-Key` and the hash of the request it came with.
    pub idempotency: Option<(String, String)>,
}

/// What creating a job did.
#[derive(Debug)]
pub enum Created {
    New(Job),
    /// The same `Idempotency-Key` and request made this job before: nothing new was created.
    Replay(Job),
    /// The key was used with another request.
    KeyReused,
    /// The account already has this many jobs queued or running.
    TooManyActive {
        limit: i64,
    },
}

/// How far a job is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobCounts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Not started when the job was cancelled: never described, never billed.
    pub cancelled: i64,
    /// Not yet finished (claimed or waiting).
    pub pending: i64,
}

/// A job, as the API and its webhook events show it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: JobId,
    /// Always `job`.
    pub object: &'static str,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub counts: JobCounts,
    /// The options every item is described with.
    pub options: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

pub(crate) const JOB_COLUMNS: &str = "id, status, options, webhook_url, total_items, succeeded_items, failed_items, cancelled_items, created_at, started_at, finished_at";

pub(crate) fn job_from_row(row: &AnyRow) -> Result<Job> {
    let options: String = row.try_get("options")?;
    let total: i64 = row.try_get("total_items")?;
    let succeeded: i64 = row.try_get("succeeded_items")?;
    let failed: i64 = row.try_get("failed_items")?;
    let cancelled: i64 = row.try_get("cancelled_items")?;
    Ok(Job {
        id: JobId::trusted(row.try_get("id")?),
        object: "job",
        status: row.try_get("status")?,
        counts: JobCounts {
            total,
            succeeded,
            failed,
            cancelled,
            pending: (total - succeeded - failed - cancelled).max(0),
        },
        options: serde_json::from_str(&options)
            .map_err(|e| StoreError::Corrupt(format!("job options are not JSON: {e}")))?,
        webhook_url: row.try_get("webhook_url")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// One job of one account, through `executor` (the pool, or a transaction).
pub(crate) async fn select_job<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    account_id: &AccountId,
    id: &JobId,
) -> Result<Job> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND account_id = $2"
    ))
    .bind(id.as_str())
    .bind(account_id.as_str())
    .fetch_optional(executor)
    .await?
    .ok_or(StoreError::NotFound("job"))?;
    job_from_row(&row)
}

impl Store {
    /// Creates a job and all its items in one transaction. A repeated `Idempotency-Key` with the
    /// same request answers the job it made; the per-account limit counts queued and running
    /// jobs. `now` is the application clock (items keep input order by `position`).
    pub async fn create_job(
        &self,
        account_id: &AccountId,
        job: NewJob,
        max_active: i64,
        now: i64,
    ) -> Result<Created> {
        let mut tx = self.begin_write().await?;
        if let Some((key, hash)) = &job.idempotency {
            let existing = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS}, request_hash FROM jobs WHERE account_id = $1 AND idempotency_key = $2"
            ))
            .bind(account_id.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                let stored: Option<String> = row.try_get("request_hash")?;
                return Ok(if stored.as_deref() == Some(hash.as_str()) {
                    Created::Replay(job_from_row(&row)?)
                } else {
                    Created::KeyReused
                });
            }
        }
        let active: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE account_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(account_id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if active >= max_active {
            return Ok(Created::TooManyActive { limit: max_active });
        }
        let id = JobId::generate();
        let (key, hash) = job.idempotency.clone().unzip();
        sqlx::query(
            "INSERT INTO jobs (id, account_id, status, options, webhook_url, total_items, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.as_str())
        .bind(account_id.as_str())
        .bind(job.options.to_string())
        .bind(&job.webhook_url)
        .bind(job.items.len() as i64)
        .bind(key)
        .bind(hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (chunk_index, chunk) in job.items.chunks(INSERT_CHUNK).enumerate() {
            insert_items(
                &mut tx,
                account_id,
                &id,
                chunk_index * INSERT_CHUNK,
                chunk,
                now,
            )
            .await?;
        }
        let created = select_job(&mut *tx, account_id, &id).await?;
        tx.commit().await?;
        Ok(Created::New(created))
    }

    /// One job of the account.
    pub async fn get_job(&self, account_id: &AccountId, id: &JobId) -> Result<Job> {
        select_job(self.pool(), account_id, id).await
    }

    /// The account's jobs, newest first, a page at a time.
    pub async fn list_jobs(
        &self,
        account_id: &AccountId,
        starting_after: Option<&JobId>,
        limit: i64,
    ) -> Result<(Vec<Job>, bool)> {
        // The same parameters either way: an empty cursor is "from the newest".
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(account_id.as_str())
        .bind(starting_after.map_or("", JobId::as_str).to_string())
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let has_more = jobs.len() as i64 > limit;
        jobs.truncate(limit as usize);
        Ok((jobs, has_more))
    }

    /// Cancels a queued or running job: items not finished are cancelled (an item being
    /// described now is not stored: its claim is gone), what is done stays done and billed. A
    /// finished job is answered as it is. Returns the job and whether this call cancelled it.
    pub async fn cancel_job(&self, account_id: &AccountId, id: &JobId) -> Result<(Job, bool)> {
        let now = super::now_ms();
        let mut tx = self.begin_write().await?;
        let cancelled = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1 WHERE id = $2 AND account_id = $3 AND status IN ('queued', 'running')",
        )
        .bind(now)
        .bind(id.as_str())
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if cancelled {
            let items = sqlx::query(
                "UPDATE job_items SET status = 'cancelled', lease_owner = NULL, lease_until = NULL, finished_at = $1 WHERE job_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE jobs SET cancelled_items = cancelled_items + $1 WHERE id = $2")
                .bind(items as i64)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let job = select_job(&mut *tx, account_id, id).await?;
        if cancelled {
            super::webhook_deliveries::enqueue(&mut tx, account_id, &job, now).await?;
        }
        tx.commit().await?;
        Ok((job, cancelled))
    }

    /// Jobs per status, over every account (for the gauges).
    pub async fn job_status_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
            .collect()
    }
}

async fn insert_items(
    tx: &mut Transaction<'static, Any>,
    account_id: &AccountId,
    job_id: &JobId,
    first_position: usize,
    items: &[NewItem],
    now: i64,
) -> Result<()> {
    let mut sql = String::from(
        "INSERT INTO job_items (id, job_id, account_id, position, image_url, asset_id, context, metadata, status, next_attempt_at, created_at) VALUES ",
    );
    for index in 0..items.len() {
        let p = index * 8;
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending', {now}, {now})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8
        ));
    }
    let mut query = sqlx::query(&sql);
    for (offset, item) in items.iter().enumerate() {
        query = query
            .bind(new_id("item"))
            .bind(job_id.as_str())
            .bind(account_id.as_str())
            .bind((first_position + offset) as i64)
            .bind(&item.image_url)
            .bind(&item.asset_id)
            .bind(item.context.as_ref().map(Value::to_string))
            .bind(item.metadata.as_ref().map(Value::to_string));
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
