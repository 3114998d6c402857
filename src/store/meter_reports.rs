//! The meter-report outbox (`meter_reports`): reports built from unreported usage-ledger rows
//! (one report = one Stripe meter event), claimed with a lease, moved on after each attempt, and
//! the operator's view of dead reports and their retry. What to do after an attempt is billing's
//! decision ([`ReportFinal`]); this module only writes it. Building reports is in `build`.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::{self, Actor, AuditEvent, action};
use super::ids::AccountId;
use super::{Backend, Result, Store, StoreError, known_id};

mod build;
pub use build::{BatchReport, MS_PER_HOUR};

/// Statuses an operator must look at.
pub const DEAD_STATUSES: [&str; 3] = ["failed", "expired", "needs_reconcile"];

/// A report as a claim returns it: what the sender needs to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedReport {
    /// Also the meter event's identifier.
    pub id: String,
    pub stripe_customer_id: String,
    pub event_name: String,
    pub value: i64,
    /// Unix seconds.
    pub event_ts: i64,
    /// Bumped whenever the next attempt needs a fresh Idempotency-Key.
    pub key_gen: i64,
    /// Including the attempt this claim starts.
    pub attempts: i64,
}

/// How a claimed report moves on after an attempt. `result` is the row's `last_result`, `error`
/// its `last_error` (only its start is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFinal<'a> {
    /// Delivered: `sent`, and its ledger rows marked reported.
    Sent {
        livemode: Option<bool>,
        result: &'a str,
    },
    /// Due again after `delay_ms`. `new_key`: the next attempt gets a fresh Idempotency-Key.
    /// `in_doubt`: the attempt may have been processed; a row in doubt for longer than
    /// `in_doubt_limit_ms` stops retrying (`needs_reconcile`).
    Retry {
        delay_ms: i64,
        new_key: bool,
        in_doubt: bool,
        in_doubt_limit_ms: i64,
        result: &'a str,
        error: &'a str,
    },
    /// Not the row's fault: the attempt is given back and the row is due again after `delay_ms`.
    GiveBack {
        delay_ms: i64,
        result: &'a str,
        error: &'a str,
    },
    /// Refused for good: `failed`, until an operator retries it.
    Failed { result: &'a str, error: &'a str },
}

/// What finalizing did to a claimed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalized {
    /// Moved on as asked.
    Done,
    /// In doubt for longer than Stripe's identifier dedup is promised: the row stopped retrying
    /// (`needs_reconcile`) and waits for an operator.
    GaveUp,
    /// Another replica took the row over after the lease ran out: nothing changed.
    NotOurs,
}

/// A meter report as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MeterReport {
    /// Also the `identifier` of the Stripe meter event.
    pub id: String,
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

fn report_from_row(row: &AnyRow) -> Result<MeterReport> {
    Ok(MeterReport {
        id: row.try_get("id")?,
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

impl Store {
    /// Claims up to `limit` due reports for `owner` until `lease_ms` from now (database clock).
    /// PostgreSQL skips rows another replica is claiming right now; SQLite's single writer
    /// (`BEGIN IMMEDIATE`) serialises claims. Committed at once: no transaction spans the HTTP call.
    pub async fn claim_meter_reports(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedReport>> {
        let backend = self.backend();
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
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_ms)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedReport {
                    id: row.try_get("id")?,
                    stripe_customer_id: row.try_get("stripe_customer_id")?,
                    event_name: row.try_get("event_name")?,
                    value: row.try_get("value")?,
                    event_ts: row.try_get("event_ts")?,
                    key_gen: row.try_get("key_gen")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Moves a claimed row on as `finalize` says. Guarded by the lease owner: when another replica
    /// took the row over after the lease ran out, this changes nothing (its resend is
    /// deduplicated).
    pub async fn finalize_meter_report(
        &self,
        owner: &str,
        id: &str,
        finalize: ReportFinal<'_>,
    ) -> Result<Finalized> {
        let backend = self.backend();
        let now = backend.now_ms();
        let mut tx = self.begin_write().await?;
        let finalized = match finalize {
            ReportFinal::Sent { livemode, result } => {
                let touched = sqlx::query(&format!(
                    "UPDATE meter_reports SET status = 'sent', sent_at = {now}, stripe_livemode = $1, last_result = $2, last_error = NULL, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $3 AND lease_owner = $4 AND status = 'pending'"
                ))
                .bind(livemode.map(i64::from))
                .bind(result)
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if touched == 1 {
                    // The ledger rows are now reported: the 2-year retention clock may start.
                    sqlx::query(&format!(
                        "UPDATE usage_events SET reported_at = {now} WHERE report_id = $1"
                    ))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                ours(touched)
            }
            ReportFinal::Retry {
                delay_ms,
                new_key,
                in_doubt,
                in_doubt_limit_ms,
                result,
                error,
            } => sqlx::query(&format!(
                "UPDATE meter_reports SET next_attempt_at = {now} + $1, key_gen = key_gen + $2, \
                   in_doubt_since = CASE WHEN $3 = 1 AND in_doubt_since IS NULL THEN {now} ELSE in_doubt_since END, \
                   status = CASE WHEN in_doubt_since IS NOT NULL AND in_doubt_since < {now} - $4 THEN 'needs_reconcile' ELSE status END, \
                   last_result = $5, last_error = $6, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $7 AND lease_owner = $8 AND status = 'pending' RETURNING status"
            ))
            .bind(delay_ms)
            .bind(i64::from(new_key))
            .bind(i64::from(in_doubt))
            .bind(in_doubt_limit_ms)
            .bind(result)
            .bind(truncate(error))
            .bind(id)
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
            ReportFinal::GiveBack {
                delay_ms,
                result,
                error,
            } => ours(sqlx::query(&format!(
                "UPDATE meter_reports SET next_attempt_at = {now} + $1, attempts = attempts - 1, last_result = $2, last_error = $3, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $4 AND lease_owner = $5 AND status = 'pending'"
            ))
            .bind(delay_ms)
            .bind(result)
            .bind(truncate(error))
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()),
            ReportFinal::Failed { result, error } => ours(sqlx::query(
                "UPDATE meter_reports SET status = 'failed', last_result = $1, last_error = $2, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $3 AND lease_owner = $4 AND status = 'pending'",
            )
            .bind(result)
            .bind(truncate(error))
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()),
        };
        tx.commit().await?;
        Ok(finalized)
    }

    /// Marks a claimed row expired without sending it.
    pub async fn expire_meter_report(&self, owner: &str, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE meter_reports SET status = 'expired', last_result = 'expired', last_error = 'older than 34 days: Stripe refuses it', lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives back rows claimed but not sent (shutdown): another replica, or this one after a
    /// restart, can take them at once instead of waiting for the lease to run out.
    pub async fn release_meter_reports(&self, owner: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            sqlx::query(
                "UPDATE meter_reports SET lease_owner = NULL, lease_until = NULL, attempts = attempts - 1 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Pending outbox rows and the age of the oldest, in seconds (for the gauges).
    pub async fn pending_meter_report_stats(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest, {} AS now FROM meter_reports WHERE status = 'pending'",
            self.backend().now_ms()
        ))
        .fetch_one(self.pool())
        .await?;
        let count: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let now: i64 = row.try_get("now")?;
        Ok((count, oldest.map_or(0, |o| (now - o).max(0) / 1000)))
    }

    /// Reports in one status (dead ones by default), oldest first, a page at a time.
    pub async fn list_meter_reports(
        &self,
        status: Option<&str>,
        limit: i64,
        starting_after: Option<&str>,
    ) -> Result<(Vec<MeterReport>, bool)> {
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
            .fetch_all(self.pool())
            .await?;
        let mut reports = rows
            .iter()
            .map(report_from_row)
            .collect::<Result<Vec<_>>>()?;
        let has_more = reports.len() as i64 > limit;
        reports.truncate(limit as usize);
        Ok((reports, has_more))
    }

    /// An operator's retry of a dead report: pending again, due now, with a fresh Idempotency-Key
    /// and the same identifier (so it still cannot be counted twice). An expired report is
    /// re-dated to now, which bills it in the current period. Only dead reports can be retried.
    pub async fn retry_meter_report(&self, id: &str, actor: &Actor) -> Result<MeterReport> {
        known_id(id, "mr", "meter report")?;
        let now = self.backend().now_ms();
        let mut tx = self.begin_write().await?;
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
        let account_id = AccountId::trusted(report.account_id.clone());
        let event = AuditEvent::new(Some(&account_id), actor, action::BILLING_REPORT_RETRIED)
            .target(id)
            .details(serde_json::json!({ "meter": report.meter, "value": report.value }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(report)
    }
}

fn ours(rows_affected: u64) -> Finalized {
    if rows_affected == 1 {
        Finalized::Done
    } else {
        Finalized::NotOurs
    }
}

/// Stripe's messages can be long; the row keeps the start.
fn truncate(reason: &str) -> String {
    reason.chars().take(500).collect()
}
