//! Job webhooks: each account's signing secret (kept, not hashed: the server signs with it;
//! shown once when made), and the outbox of deliveries (`webhook_deliveries`): queued in the
//! transaction that finishes or cancels a job, claimed with a lease by the sender of any replica,
//! moved on after each attempt, listed per job.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::audit::{self, Actor, AuditEvent, action};
use super::ids::{AccountId, JobId};
use super::jobs::Job;
use super::{Result, Store, StoreError, new_id};

/// A delivery as its claim returns it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Also the `Altimage-Delivery` header and the event's `id`.
    pub id: String,
    pub url: String,
    /// The exact body to send.
    pub payload: String,
    /// The account's current secret; `None` when it was removed (then the delivery fails).
    pub secret: Option<String>,
    /// Including the attempt this claim starts.
    pub attempts: i64,
    /// Unix milliseconds (database clock): retries stop a day after this.
    pub created_at: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum DeliveryOutcome<'a> {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Try again after `delay_ms`, unless that is past `give_up_at` (Unix ms): then `failed`.
    Retry {
        status: Option<u16>,
        error: &'a str,
        delay_ms: i64,
        give_up_at: i64,
    },
}

/// A delivery as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: String,
    /// `job.succeeded`, `job.failed` or `job.cancelled`.
    pub event: String,
    pub url: String,
    /// `pending`, `delivered` or `failed` (gave up after a day of retries).
    pub status: String,
    pub attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery> {
    let status: String = row.try_get("status")?;
    let next: i64 = row.try_get("next_attempt_at")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        event: row.try_get("event")?,
        url: row.try_get("url")?,
        next_attempt_at: (status == "pending").then_some(next),
        status,
        attempts: row.try_get("attempts")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

/// Queues the event of a job that just finished or was cancelled, in the caller's transaction,
/// when the job has a webhook URL. The body is fixed now: every attempt sends the same bytes.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'static, Any>,
    account_id: &AccountId,
    job: &Job,
    now: i64,
) -> Result<()> {
    let Some(url) = &job.webhook_url else {
        return Ok(());
    };
    let id = new_id("whd");
    let event = format!("job.{}", job.status);
    let payload = serde_json::json!({
        "id": id,
        "object": "event",
        "type": event,
        "created_at": now,
        "data": { "job": job },
    });
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, account_id, job_id, event, url, payload, status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
    )
    .bind(&id)
    .bind(account_id.as_str())
    .bind(job.id.as_str())
    .bind(&event)
    .bind(url)
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// A new webhook signing secret for the account, replacing the old one at once. The secret
    /// is answered once; afterwards only whether one exists is shown.
    pub async fn rotate_webhook_secret(
        &self,
        account_id: &AccountId,
        actor: &Actor,
    ) -> Result<String> {
        let secret = format!("whsec_{}", random_hex(32)?);
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE accounts SET webhook_secret = $1 WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(&secret)
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::NotFound("account"));
        }
        let event = AuditEvent::new(Some(account_id), actor, action::WEBHOOK_SECRET_ROTATED);
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Whether the account has a webhook secret (jobs with a `webhook_url` need one).
    pub async fn has_webhook_secret(&self, account_id: &AccountId) -> Result<bool> {
        let row = sqlx::query("SELECT webhook_secret FROM accounts WHERE id = $1")
            .bind(account_id.as_str())
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => row
                .try_get::<Option<String>, _>("webhook_secret")?
                .is_some(),
            None => false,
        })
    }

    /// Claims up to `limit` due deliveries for `owner` until `lease_ms` from now.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let backend = self.backend();
        let now = backend.now_ms();
        let lock = match backend {
            super::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let due = format!(
            "status = 'pending' AND next_attempt_at <= {now} AND (lease_until IS NULL OR lease_until < {now})"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = {now} + $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE {due} ORDER BY next_attempt_at LIMIT $3 {lock}) AND {due} \
             RETURNING id, account_id, url, payload, attempts, created_at"
        ))
        .bind(owner)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let account_id: String = row.try_get("account_id")?;
            let secret = sqlx::query("SELECT webhook_secret FROM accounts WHERE id = $1")
                .bind(&account_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get::<Option<String>, _>("webhook_secret"))
                .transpose()?
                .flatten();
            claimed.push(ClaimedDelivery {
                id: row.try_get("id")?,
                url: row.try_get("url")?,
                payload: row.try_get("payload")?,
                secret,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Moves a claimed delivery on; nothing changes when another replica took it over. Returns
    /// the status it has now (`delivered`, `pending` or `failed`), or `None` when not ours.
    pub async fn finish_webhook_delivery(
        &self,
        owner: &str,
        id: &str,
        outcome: DeliveryOutcome<'_>,
    ) -> Result<Option<String>> {
        let now = self.backend().now_ms();
        let row = match outcome {
            DeliveryOutcome::Delivered { status } => {
                sqlx::query(&format!(
                    "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = {now}, last_status = $1, last_error = NULL, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $2 AND lease_owner = $3 AND status = 'pending' RETURNING status"
                ))
                .bind(i64::from(status))
                .bind(id)
                .bind(owner)
                .fetch_optional(self.pool())
                .await?
            }
            DeliveryOutcome::Retry {
                status,
                error,
                delay_ms,
                give_up_at,
            } => {
                sqlx::query(&format!(
                    "UPDATE webhook_deliveries SET \
                       status = CASE WHEN {now} + $1 > $2 THEN 'failed' ELSE 'pending' END, \
                       next_attempt_at = {now} + $1, last_status = $3, last_error = $4, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $5 AND lease_owner = $6 AND status = 'pending' RETURNING status"
                ))
                .bind(delay_ms)
                .bind(give_up_at)
                .bind(status.map(i64::from))
                .bind(error.chars().take(500).collect::<String>())
                .bind(id)
                .bind(owner)
                .fetch_optional(self.pool())
                .await?
            }
        };
        row.map(|row| row.try_get::<String, _>("status"))
            .transpose()
            .map_err(StoreError::from)
    }

    /// Gives back deliveries claimed but not attempted (shutdown).
    pub async fn release_webhook_deliveries(&self, owner: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            sqlx::query(
                "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL, attempts = attempts - 1 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// A job's deliveries, oldest first, a page at a time.
    pub async fn list_webhook_deliveries(
        &self,
        account_id: &AccountId,
        job_id: &JobId,
        starting_after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Delivery>, bool)> {
        // The job must be the account's: another account's id names nothing.
        super::jobs::select_job(self.pool(), account_id, job_id).await?;
        let rows = sqlx::query(
            "SELECT id, event, url, status, attempts, last_status, last_error, created_at, next_attempt_at, delivered_at \
             FROM webhook_deliveries WHERE job_id = $1 AND account_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(job_id.as_str())
        .bind(account_id.as_str())
        .bind(starting_after.unwrap_or("").to_string())
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
        let has_more = deliveries.len() as i64 > limit;
        deliveries.truncate(limit as usize);
        Ok((deliveries, has_more))
    }

    /// Deliveries waiting to be sent (for the gauge).
    pub async fn pending_webhook_deliveries(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }
}

/// `bytes` random bytes as hex, from the operating system.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)
        .map_err(|e| StoreError::Invalid(format!("no randomness from the system: {e}")))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}
