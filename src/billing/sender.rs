//! Outbox → Stripe: claims due meter reports with a lease, sends each outside any transaction,
//! and moves the row on by the outcome (sent, retry with backoff, failed). Also the operator's
//! view of dead reports and their retry.

use serde::Serialize;
use sqlx::Row;

use super::BillingError;
use super::batcher::MAX_EVENT_AGE_SECS;
use super::stripe::{MeterEvent, Outcome};
use crate::store::{Backend, Store, StoreError};

/// An in-doubt row older than this stops retrying: Stripe's identifier dedup lasts "at least
/// 24 hours", so a later resend could be counted twice. An operator reconciles it.
const IN_DOUBT_LIMIT_MS: i64 = 20 * 3_600_000;

/// Statuses an operator must look at.
pub const DEAD_STATUSES: [&str; 3] = ["failed", "expired", "needs_reconcile"];

/// A report as the sender holds it between claim and finalize.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event: MeterEvent,
    pub attempts: i64,
}

/// Claims up to `limit` due reports for `owner` until `lease_ms` from now (database clock).
/// PostgreSQL skips rows another replica is claiming right now; SQLite's single writer
/// (`BEGIN IMMEDIATE`) serialises claims. Committed at once: no transaction spans the HTTP call.
pub async fn claim(
    store: &Store,
    owner: &str,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>, BillingError> {
    let backend = store.backend();
    let now = backend.now_ms();
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let due = format!(
        "status = 'pending' AND next_attempt_at <= {now} AND (lease_until IS NULL OR lease_until < {now})"
    );
    let sql = format!(
        "UPDATE meter_reports SET lease_owner = $1, lease_until = {now} + $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM meter_reports WHERE {due} ORDER BY next_attempt_at LIMIT $3 {lock}) \
           AND {due} \
         RETURNING id, stripe_customer_id, event_name, value, event_ts, key_gen, attempts"
    );
    let mut tx = store.begin_write().await?;
    let rows = sqlx::query(&sql)
        .bind(owner)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let key_gen: i64 = row.try_get("key_gen")?;
            Ok(Claimed {
                event: MeterEvent {
                    identifier: id.clone(),
                    event_name: row.try_get("event_name")?,
                    customer: row.try_get("stripe_customer_id")?,
                    value: row.try_get("value")?,
                    timestamp: row.try_get("event_ts")?,
                    idempotency_key: format!("{id}:{key_gen}"),
                },
                id,
                attempts: row.try_get("attempts")?,
            })
        })
        .collect()
}

/// Whether the report is too old for Stripe to take (it refuses timestamps past 35 days).
pub fn too_old(claimed: &Claimed, now_secs: i64) -> bool {
    now_secs - claimed.event.timestamp > MAX_EVENT_AGE_SECS
}

/// What `finalize` did to a claimed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalized {
    /// Moved on by the outcome.
    Done,
    /// In doubt for longer than Stripe's identifier dedup is promised: the row stopped retrying
    /// (`needs_reconcile`) and waits for an operator.
    GaveUp,
    /// Another replica took the row over after the lease ran out: nothing changed.
    NotOurs,
}

/// Moves a claimed row on by its outcome. Guarded by the lease owner: when another replica took
/// the row over after the lease ran out, this changes nothing (its resend is deduplicated).
pub async fn finalize(
    store: &Store,
    owner: &str,
    claimed: &Claimed,
    outcome: &Outcome,
    retry_delay_ms: i64,
) -> Result<Finalized, BillingError> {
    let backend = store.backend();
    let now = backend.now_ms();
    let mut tx = store.begin_write().await?;
    let finalized = match outcome {
        Outcome::Sent { .. } | Outcome::Duplicate => {
            let livemode = match outcome {
                Outcome::Sent {
                    livemode: Some(live),
                } => Some(i64::from(*live)),
                _ => None,
            };
            let touched = sqlx::query(&format!(
                "UPDATE meter_reports SET status = 'sent', sent_at = {now}, stripe_livemode = $1, last_result = $2, last_error = NULL, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $3 AND lease_owner = $4 AND status = 'pending'"
            ))
            .bind(livemode)
            .bind(outcome.label())
            .bind(&claimed.id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if touched == 1 {
                // The ledger rows are now reported: the 2-year retention clock may start.
                sqlx::query(&format!(
                    "UPDATE usage_events SET reported_at = {now} WHERE report_id = $1"
                ))
                .bind(&claimed.id)
                .execute(&mut *tx)
                .await?;
            }
            ours(touched)
        }
        Outcome::Retry {
            new_key,
            in_doubt,
            reason,
        } => sqlx::query(&format!(
            "UPDATE meter_reports SET next_attempt_at = {now} + $1, key_gen = key_gen + $2, \
               in_doubt_since = CASE WHEN $3 = 1 AND in_doubt_since IS NULL THEN {now} ELSE in_doubt_since END, \
               status = CASE WHEN in_doubt_since IS NOT NULL AND in_doubt_since < {now} - $4 THEN 'needs_reconcile' ELSE status END, \
               last_result = $5, last_error = $6, lease_owner = NULL, lease_until = NULL \
             WHERE id = $7 AND lease_owner = $8 AND status = 'pending' RETURNING status"
        ))
        .bind(retry_delay_ms)
        .bind(i64::from(*new_key))
        .bind(i64::from(*in_doubt))
        .bind(IN_DOUBT_LIMIT_MS)
        .bind(outcome.label())
        .bind(truncate(reason))
        .bind(&claimed.id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get::<String, _>("status"))
        .transpose()?
        .map_or(Finalized::NotOurs, |status| {
            if status == "needs_reconcile" {
                Finalized::GaveUp
            } else {
                Finalized::Done
            }
        }),
        // Not the row's fault: give the attempt back; the replica pauses, the row stays due.
        Outcome::CircuitOpen { reason } => ours(sqlx::query(&format!(
            "UPDATE meter_reports SET next_attempt_at = {now} + $1, attempts = attempts - 1, last_result = $2, last_error = $3, lease_owner = NULL, lease_until = NULL \
             WHERE id = $4 AND lease_owner = $5 AND status = 'pending'"
        ))
        .bind(retry_delay_ms)
        .bind(outcome.label())
        .bind(truncate(reason))
        .bind(&claimed.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected()),
        Outcome::Failed { reason } => ours(sqlx::query(
            "UPDATE meter_reports SET status = 'failed', last_result = $1, last_error = $2, lease_owner = NULL, lease_until = NULL \
             WHERE id = $3 AND lease_owner = $4 AND status = 'pending'",
        )
        .bind(outcome.label())
        .bind(truncate(reason))
        .bind(&claimed.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected()),
    };
    tx.commit().await?;
    Ok(finalized)
}

fn ours(rows_affected: u64) -> Finalized {
    if rows_affected == 1 {
        Finalized::Done
    } else {
        Finalized::NotOurs
    }
}

/// Marks a claimed row expired without sending it.
pub async fn expire(store: &Store, owner: &str, claimed: &Claimed) -> Result<(), BillingError> {
    sqlx::query(
        "UPDATE meter_reports SET status = 'expired', last_result = 'expired', last_error = 'older than 34 days: Stripe refuses it', lease_owner = NULL, lease_until = NULL \
         WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
    )
    .bind(&claimed.id)
    .bind(owner)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Gives back rows claimed but not sent (shutdown): another replica, or this one after a
/// restart, can take them at once instead of waiting for the lease to run out.
pub async fn release(store: &Store, owner: &str, ids: &[String]) -> Result<(), BillingError> {
    for id in ids {
        sqlx::query(
            "UPDATE meter_reports SET lease_owner = NULL, lease_until = NULL, attempts = attempts - 1 WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

/// Pending outbox rows and the age of the oldest, in seconds (for the gauges).
pub async fn pending_stats(store: &Store) -> Result<(i64, i64), BillingError> {
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest, {} AS now FROM meter_reports WHERE status = 'pending'",
        store.backend().now_ms()
    ))
    .fetch_one(store.pool())
    .await?;
    let count: i64 = row.try_get("n")?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    let now: i64 = row.try_get("now")?;
    Ok((count, oldest.map_or(0, |o| (now - o).max(0) / 1000)))
}

/// A meter report as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeterReport {
    /// Also the `identifier` of the Stripe meter event.
    #[schema(example = "mr_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub object: &'static str,
    pub account_id: String,
    pub stripe_customer_id: String,
    /// `created` or `retrieved`.
    pub meter: String,
    pub event_name: String,
    pub value: i64,
    /// Unix seconds: the meter event's `timestamp`.
    pub event_ts: i64,
    /// `pending`, `sent`, `failed`, `expired` or `needs_reconcile`.
    pub status: String,
    pub attempts: i64,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const REPORT_COLUMNS: &str = "id, account_id, stripe_customer_id, kind, event_name, value, event_ts, status, attempts, last_result, last_error, created_at, sent_at";

fn report_from_row(row: &sqlx::any::AnyRow) -> Result<MeterReport, StoreError> {
    Ok(MeterReport {
        id: row.try_get("id")?,
        object: "meter_report",
        account_id: row.try_get("account_id")?,
        stripe_customer_id: row.try_get("stripe_customer_id")?,
        meter: row.try_get("kind")?,
        event_name: row.try_get("event_name")?,
        value: row.try_get("value")?,
        event_ts: row.try_get("event_ts")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        last_result: row.try_get("last_result")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

/// Reports in one status (dead ones by default), oldest first, a page at a time.
pub async fn list_reports(
    store: &Store,
    status: Option<&str>,
    limit: i64,
    starting_after: Option<&str>,
) -> Result<(Vec<MeterReport>, bool), StoreError> {
    // The same number of parameters either way; `$1 = ''` keeps the default filter's shape.
    let dead = DEAD_STATUSES.map(|s| format!("'{s}'")).join(", ");
    let filter = match status {
        Some(_) => "status = $1".to_string(),
        None => format!("status IN ({dead}) AND $1 = ''"),
    };
    let sql = format!(
        "SELECT {REPORT_COLUMNS} FROM meter_reports WHERE {filter} AND id > $2 ORDER BY id LIMIT $3"
    );
    let query = sqlx::query(&sql).bind(status.unwrap_or("").to_string());
    let rows = query
        .bind(starting_after.unwrap_or("").to_string())
        .bind(limit + 1)
        .fetch_all(store.pool())
        .await?;
    let mut reports = rows
        .iter()
        .map(report_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = reports.len() as i64 > limit;
    reports.truncate(limit as usize);
    Ok((reports, has_more))
}

/// An operator's retry of a dead report: pending again, due now, with a fresh Idempotency-Key and
/// the same identifier (so it still cannot be counted twice). An expired report is re-dated to
/// now, which bills it in the current period. Only dead reports can be retried.
pub async fn retry_report(store: &Store, id: &str) -> Result<MeterReport, StoreError> {
    if !crate::strings::is_id(id, "mr") {
        return Err(StoreError::NotFound("meter report"));
    }
    let now = store.backend().now_ms();
    let mut tx = store.begin_write().await?;
    let done = sqlx::query(&format!(
        "UPDATE meter_reports SET \
           event_ts = CASE WHEN status = 'expired' THEN {now} / 1000 ELSE event_ts END, \
           status = 'pending', next_attempt_at = {now}, key_gen = key_gen + 1, in_doubt_since = NULL, \
           lease_owner = NULL, lease_until = NULL, last_result = 'operator_retry' \
         WHERE id = $1 AND status IN ('failed', 'expired', 'needs_reconcile')"
    ))
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row = sqlx::query(&format!(
        "SELECT {REPORT_COLUMNS} FROM meter_reports WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound("meter report"))?;
    let report = report_from_row(&row)?;
    if done == 0 {
        return Err(StoreError::Conflict(format!(
            "meter report {id} is {}: only failed, expired or needs_reconcile reports can be retried",
            report.status
        )));
    }
    tx.commit().await?;
    Ok(report)
}

/// Stripe's messages can be long; the row keeps the start.
fn truncate(reason: &str) -> String {
    reason.chars().take(500).collect()
}
