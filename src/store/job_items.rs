//! Job items (`job_items`): claimed with a lease by the runner of any replica, fairly across
//! accounts; moved on under that lease. A succeeded item's description, its usage row and the
//! item's `succeeded` are one transaction, guarded by the lease: a runner whose lease ran out
//! (another replica took the item over) stores nothing, so an item is stored and billed once
//! whatever crashes. The last item to finish finishes its job and queues the job's webhook event
//! in the same transaction.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::descriptions::{COLUMNS, Description, from_row};
use super::ids::{AccountId, JobId};
use super::jobs::{Job, select_job};
use super::{Backend, Result, Store, StoreError, now_ms};

/// An item as its claim returns it: what the runner needs to describe it.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    pub id: String,
    pub job_id: JobId,
    pub account_id: AccountId,
    pub position: i64,
    pub image_url: String,
    pub asset_id: Option<String>,
    pub context: Option<Value>,
    pub metadata: Option<Value>,
    /// The job's options.
    pub options: Value,
    /// Including the attempt this claim starts.
    pub attempts: i64,
}

/// The claim a runner holds on an item: its writes count only while it still holds it.
#[derive(Debug, Clone, Copy)]
pub struct ItemClaim<'a> {
    pub owner: &'a str,
    pub item_id: &'a str,
}

/// One item of a job's results, in input order.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub position: i64,
    pub image_url: String,
    pub asset_id: Option<String>,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: i64,
    /// The stored description (absent when it was deleted since).
    pub description: Option<Description>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

fn json(row: &AnyRow, name: &str) -> Result<Option<Value>> {
    let text: Option<String> = row.try_get(name)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("{name} is not JSON: {e}")))
    })
    .transpose()
}

impl Store {
    /// Claims the next due item for `owner` until `lease_ms` from now (database clock), or
    /// `None` when nothing is due. Fair share: the account whose jobs were served longest ago
    /// goes first, then its job served longest ago, then that job's first item in input order.
    /// An item whose lease ran out (its runner died) is due again. The jobs of an account whose
    /// processing is restricted, or that is deleted, wait.
    pub async fn claim_job_item(&self, owner: &str, lease_ms: i64) -> Result<Option<ClaimedItem>> {
        let backend = self.backend();
        let now = backend.now_ms();
        let due = format!(
            "i.status = 'pending' AND i.next_attempt_at <= {now} AND (i.lease_until IS NULL OR i.lease_until < {now})"
        );
        let mut tx = self.begin_write().await?;
        let account = sqlx::query(&format!(
            "SELECT j.account_id FROM jobs j WHERE j.status IN ('queued', 'running') \
               AND EXISTS (SELECT 1 FROM accounts a WHERE a.id = j.account_id AND a.restricted_by IS NULL AND a.deleted_at IS NULL) \
               AND EXISTS (SELECT 1 FROM job_items i WHERE i.job_id = j.id AND {due}) \
             GROUP BY j.account_id ORDER BY MAX(COALESCE(j.last_claim_at, 0)), MIN(j.id) LIMIT 1"
        ))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(account) = account else {
            return Ok(None);
        };
        let account: String = account.try_get("account_id")?;
        let lock = match backend {
            // Another replica claiming the same row waits for us, then re-checks `due` and
            // finds it leased; SKIP LOCKED makes it take the next one instead.
            Backend::Postgres => "FOR UPDATE OF i SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let candidate = sqlx::query(&format!(
            "SELECT i.id FROM job_items i JOIN jobs j ON j.id = i.job_id \
             WHERE j.account_id = $1 AND j.status IN ('queued', 'running') AND {due} \
             ORDER BY COALESCE(j.last_claim_at, 0), j.id, i.position LIMIT 1 {lock}"
        ))
        .bind(&account)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let item_id: String = candidate.try_get("id")?;
        let due_here = due.replace("i.", "");
        let claimed = sqlx::query(&format!(
            "UPDATE job_items SET lease_owner = $1, lease_until = {now} + $2, attempts = attempts + 1 \
             WHERE id = $3 AND {due_here} \
             RETURNING id, job_id, account_id, position, image_url, asset_id, context, metadata, attempts"
        ))
        .bind(owner)
        .bind(lease_ms)
        .bind(&item_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = claimed else {
            return Ok(None);
        };
        let job_id: String = row.try_get("job_id")?;
        let options = sqlx::query(&format!(
            "UPDATE jobs SET last_claim_at = {now}, status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, \
               started_at = COALESCE(started_at, {now}) WHERE id = $1 RETURNING options"
        ))
        .bind(&job_id)
        .fetch_one(&mut *tx)
        .await?;
        let options: String = options.try_get("options")?;
        tx.commit().await?;
        Ok(Some(ClaimedItem {
            id: row.try_get("id")?,
            job_id: JobId::trusted(job_id),
            account_id: AccountId::trusted(row.try_get("account_id")?),
            position: row.try_get("position")?,
            image_url: row.try_get("image_url")?,
            asset_id: row.try_get("asset_id")?,
            context: json(&row, "context")?,
            metadata: json(&row, "metadata")?,
            options: serde_json::from_str(&options)
                .map_err(|e| StoreError::Corrupt(format!("job options are not JSON: {e}")))?,
            attempts: row.try_get("attempts")?,
        }))
    }

    /// Extends a claim while its item runs. `false`: the claim is gone (the job was cancelled,
    /// or the lease ran out and another replica took the item).
    pub async fn renew_job_item(&self, claim: ItemClaim<'_>, lease_ms: i64) -> Result<bool> {
        let now = self.backend().now_ms();
        let renewed = sqlx::query(&format!(
            "UPDATE job_items SET lease_until = {now} + $1 WHERE id = $2 AND lease_owner = $3 AND status = 'pending'"
        ))
        .bind(lease_ms)
        .bind(claim.item_id)
        .bind(claim.owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives a claimed item back, due again after `delay_ms`. `count_attempt: false` when the
    /// attempt never started (no spare capacity, shutting down), so it does not use up retries;
    /// `error` keeps why a retried attempt failed.
    pub async fn release_job_item(
        &self,
        claim: ItemClaim<'_>,
        delay_ms: i64,
        count_attempt: bool,
        error: Option<(&str, &str)>,
    ) -> Result<()> {
        let now = self.backend().now_ms();
        let (code, message) = error.unzip();
        sqlx::query(&format!(
            "UPDATE job_items SET lease_owner = NULL, lease_until = NULL, next_attempt_at = {now} + $1, \
               attempts = attempts - $2, error_code = COALESCE($3, error_code), error_message = COALESCE($4, error_message) \
             WHERE id = $5 AND lease_owner = $6 AND status = 'pending'"
        ))
        .bind(delay_ms)
        .bind(i64::from(!count_attempt))
        .bind(code)
        .bind(message.map(truncate))
        .bind(claim.item_id)
        .bind(claim.owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Fails a claimed item for good with its error (never the job). `false`: the claim was
    /// gone, nothing changed.
    pub async fn fail_job_item(
        &self,
        claim: ItemClaim<'_>,
        code: &str,
        message: &str,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let job = sqlx::query(
            "UPDATE job_items SET status = 'failed', error_code = $1, error_message = $2, lease_owner = NULL, lease_until = NULL, finished_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'pending' RETURNING job_id, account_id",
        )
        .bind(code)
        .bind(truncate(message))
        .bind(now)
        .bind(claim.item_id)
        .bind(claim.owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = job else {
            return Ok(false);
        };
        let (job_id, account_id) = (
            JobId::trusted(job.try_get("job_id")?),
            AccountId::trusted(job.try_get("account_id")?),
        );
        sqlx::query("UPDATE jobs SET failed_items = failed_items + 1 WHERE id = $1")
            .bind(job_id.as_str())
            .execute(&mut *tx)
            .await?;
        finish_if_done(&mut tx, &account_id, &job_id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a job item's description with its usage row and marks the item succeeded, in one
    /// transaction that holds only while `claim` does. `false`: the claim was gone (cancelled,
    /// or taken over after the lease ran out), and nothing was stored or billed.
    pub async fn save_job_item(
        &self,
        account_id: &AccountId,
        request_id: &str,
        description: &Description,
        claim: ItemClaim<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let item = sqlx::query(
            "UPDATE job_items SET status = 'succeeded', description_id = $1, error_code = NULL, error_message = NULL, lease_owner = NULL, lease_until = NULL, finished_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'pending' AND account_id = $5 RETURNING job_id",
        )
        .bind(description.id.as_str())
        .bind(now)
        .bind(claim.item_id)
        .bind(claim.owner)
        .bind(account_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(item) = item else {
            return Ok(false);
        };
        let job_id = JobId::trusted(item.try_get("job_id")?);
        self.insert_created(&mut tx, account_id, request_id, description)
            .await?;
        sqlx::query("UPDATE jobs SET succeeded_items = succeeded_items + 1 WHERE id = $1")
            .bind(job_id.as_str())
            .execute(&mut *tx)
            .await?;
        finish_if_done(&mut tx, account_id, &job_id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A page of a job's items in input order from `after_position` (exclusive), each with its
    /// description when it succeeded.
    pub async fn job_results_page(
        &self,
        account_id: &AccountId,
        job_id: &JobId,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<ItemResult>> {
        let rows = sqlx::query(
            "SELECT position, image_url, asset_id, status, attempts, description_id, error_code, error_message FROM job_items \
             WHERE job_id = $1 AND account_id = $2 AND position > $3 ORDER BY position LIMIT $4",
        )
        .bind(job_id.as_str())
        .bind(account_id.as_str())
        .bind(after_position)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut results = Vec::with_capacity(rows.len());
        for row in &rows {
            let description_id: Option<String> = row.try_get("description_id")?;
            let description = match description_id {
                Some(id) => sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM descriptions WHERE id = $1 AND account_id = $2"
                ))
                .bind(id)
                .bind(account_id.as_str())
                .fetch_optional(self.pool())
                .await?
                .as_ref()
                .map(from_row)
                .transpose()?,
                None => None,
            };
            results.push(ItemResult {
                position: row.try_get("position")?,
                image_url: row.try_get("image_url")?,
                asset_id: row.try_get("asset_id")?,
                status: row.try_get("status")?,
                attempts: row.try_get("attempts")?,
                description,
                error_code: row.try_get("error_code")?,
                error_message: row.try_get("error_message")?,
            });
        }
        Ok(results)
    }

    /// Items waiting or running over every job, and the age of the oldest in seconds (for the
    /// gauges).
    pub async fn pending_job_item_stats(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest, {} AS now FROM job_items WHERE status = 'pending'",
            self.backend().now_ms()
        ))
        .fetch_one(self.pool())
        .await?;
        let count: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let now: i64 = row.try_get("now")?;
        Ok((count, oldest.map_or(0, |o| (now - o).max(0) / 1000)))
    }
}

/// When every item of a running job is finished: the job is `succeeded` (or `failed` when no
/// item succeeded) and its webhook event is queued, in the caller's transaction.
async fn finish_if_done(
    tx: &mut Transaction<'static, Any>,
    account_id: &AccountId,
    job_id: &JobId,
    now: i64,
) -> Result<Option<Job>> {
    let finished = sqlx::query(
        "UPDATE jobs SET status = CASE WHEN succeeded_items = 0 THEN 'failed' ELSE 'succeeded' END, finished_at = $1 \
         WHERE id = $2 AND status IN ('queued', 'running') AND succeeded_items + failed_items + cancelled_items >= total_items",
    )
    .bind(now)
    .bind(job_id.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if finished == 0 {
        return Ok(None);
    }
    let job = select_job(&mut **tx, account_id, job_id).await?;
    super::webhook_deliveries::enqueue(tx, account_id, &job, now).await?;
    Ok(Some(job))
}

/// Errors can be long; the row keeps the start.
fn truncate(message: &str) -> String {
    message.chars().take(500).collect()
}
