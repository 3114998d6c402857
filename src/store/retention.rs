//! Retention: purges deleted accounts after their grace period (their request log and audit
//! events stay with IP address and user agent erased), ledger rows, sent meter reports and the
//! request log past 2 years, the anonymous billing aggregates and the audit log past 7 years,
//! expired idempotency records and old webhook event ids. Every step is
//! safe on several replicas at once: rows are rolled up from what a `DELETE … RETURNING` took,
//! so two replicas never count the same row twice.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::audit::{self, Actor, AuditEvent, action};
use super::ids::AccountId;
use super::usage::MS_PER_DAY;
use super::{Result, Store, now_ms};

/// What the data-retention rules keep, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Ledger rows are kept this long (after they were reported to billing).
    pub usage_ms: i64,
    /// Rolled-up billing aggregates are kept this long.
    pub aggregates_ms: i64,
    /// The request log is kept this long (from each request's arrival).
    pub request_log_ms: i64,
    /// Audit events are kept this long: as long as the billing records.
    pub audit_ms: i64,
    /// Applied Stripe webhook event ids are kept this long, to recognise redeliveries (Stripe
    /// retries for up to 3 days).
    pub webhook_events_ms: i64,
    /// Whether unreported ledger rows may be purged too: true when billing is off, since they
    /// will never be reported. False also holds a deleted account's purge until its usage is
    /// reported or it has no Stripe customer.
    pub purge_unreported: bool,
}

impl RetentionPolicy {
    pub const YEAR_MS: i64 = 365 * MS_PER_DAY;

    pub fn standard(billing_enabled: bool) -> Self {
        RetentionPolicy {
            usage_ms: 2 * Self::YEAR_MS,
            aggregates_ms: 7 * Self::YEAR_MS,
            request_log_ms: 2 * Self::YEAR_MS,
            audit_ms: 7 * Self::YEAR_MS,
            webhook_events_ms: 30 * MS_PER_DAY,
            purge_unreported: !billing_enabled,
        }
    }
}

/// What one purge run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub accounts: u64,
    pub descriptions: u64,
    pub usage_rows: u64,
    pub aggregates: u64,
    pub idempotency_keys: u64,
    pub meter_reports: u64,
    pub webhook_events: u64,
    /// Expired console sessions, used-up email tokens and stale login-throttle rows.
    pub console_rows: u64,
    pub request_log_rows: u64,
    pub audit_events: u64,
}

impl Store {
    /// One pass of every retention rule, as of `now` (Unix ms).
    pub async fn purge(&self, now: i64, policy: RetentionPolicy) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let due = sqlx::query(&format!(
            "SELECT id FROM accounts WHERE purge_after IS NOT NULL AND purge_after <= $1 AND purged_at IS NULL{}",
            billable_guard(policy)
        ))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        for row in due {
            let id = AccountId::trusted(row.try_get("id")?);
            let purged = self.purge_account(&id, now, policy).await?;
            // Zero when another replica purged it first.
            report.accounts += purged.accounts;
            report.descriptions += purged.descriptions;
            report.usage_rows += purged.usage_rows;
            report.meter_reports += purged.meter_reports;
        }

        let mut tx = self.begin_write().await?;
        let old = now - policy.usage_ms;
        let sql = if policy.purge_unreported {
            "DELETE FROM usage_events WHERE occurred_at < $1 RETURNING account_id, kind, quantity, occurred_at"
        } else {
            "DELETE FROM usage_events WHERE occurred_at < $1 AND reported_at IS NOT NULL RETURNING account_id, kind, quantity, occurred_at"
        };
        let taken = sqlx::query(sql).bind(old).fetch_all(&mut *tx).await?;
        report.usage_rows += archive(&mut tx, &taken).await?;
        let cutoff_day = (now - policy.aggregates_ms).div_euclid(MS_PER_DAY);
        report.aggregates = sqlx::query("DELETE FROM usage_archive WHERE day < $1")
            .bind(cutoff_day)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        report.idempotency_keys =
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        // Sent reports go with the ledger rows they summed. Dead ones stay for an operator: their
        // rows are marked with the report and would otherwise never be billed nor rolled up.
        report.meter_reports +=
            sqlx::query("DELETE FROM meter_reports WHERE status = 'sent' AND created_at < $1")
                .bind(old)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        report.webhook_events =
            sqlx::query("DELETE FROM stripe_webhook_events WHERE received_at < $1")
                .bind(now - policy.webhook_events_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        report.console_rows = purge_console_rows(&mut tx, now).await?;
        // By id, which begins with the arrival time: the primary key is the index.
        report.request_log_rows = sqlx::query("DELETE FROM request_log WHERE id < $1")
            .bind(super::request_log::id_at(now - policy.request_log_ms))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        report.audit_events = sqlx::query("DELETE FROM audit_events WHERE created_at < $1")
            .bind(now - policy.audit_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(report)
    }

    /// Deletes one account's data in one transaction and leaves an anonymous row behind as the
    /// anchor of its billing aggregates.
    async fn purge_account(
        &self,
        account_id: &AccountId,
        now: i64,
        policy: RetentionPolicy,
    ) -> Result<PurgeReport> {
        let mut tx = self.begin_write().await?;
        // Another replica may have purged it since the SELECT, or the sender may not have
        // reported its last usage yet: then there is nothing to do now.
        let claimed = sqlx::query(&format!(
            "UPDATE accounts SET name = NULL, email = NULL, stripe_customer_id = NULL, rate_limit_per_minute = NULL, restricted_by = NULL, restricted_at = NULL, webhook_secret = NULL, purged_at = $1 WHERE id = $2 AND purged_at IS NULL{}",
            billable_guard(policy)
        ))
        .bind(now)
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(PurgeReport::default());
        }
        sqlx::query("DELETE FROM description_versions WHERE account_id = $1")
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?;
        let descriptions = sqlx::query("DELETE FROM descriptions WHERE account_id = $1")
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1")
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE account_id = $1")
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?;
        let taken = sqlx::query(
            "DELETE FROM usage_events WHERE account_id = $1 RETURNING account_id, kind, quantity, occurred_at",
        )
        .bind(account_id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let usage_rows = archive(&mut tx, &taken).await?;
        // Its reports carry the Stripe customer id the account row no longer has. While billing
        // is on, the guard above leaves one pending only when an operator unmapped the customer,
        // which says not to bill it; with billing off none is ever sent.
        // Its jobs hold its image URLs, asset ids and metadata; its webhook secret goes with
        // the account row's other data above.
        for table in ["webhook_deliveries", "job_items", "jobs"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
                .bind(account_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        // Its people: sessions, invitations and memberships; a user left in no account goes too,
        // with their recovery codes, tokens and sessions (by cascade).
        for table in ["console_sessions", "invitations", "memberships"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
                .bind(account_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "DELETE FROM users WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id)",
        )
        .execute(&mut *tx)
        .await?;
        let meter_reports = sqlx::query("DELETE FROM meter_reports WHERE account_id = $1")
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The request log stays for its 2 years (analytics), without what identifies a person
        // or a client: the IP address, the user agent, and the request id a caller may have
        // chosen. The audit log stays with the billing records, erased the same way, and a
        // person's id with it (key, operator and system ids name no one).
        sqlx::query(
            "UPDATE request_log SET ip = NULL, user_agent = NULL, request_id = NULL WHERE account_id = $1",
        )
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE audit_events SET ip = NULL, user_agent = NULL, \
             actor_id = CASE WHEN actor_kind = 'user' THEN NULL ELSE actor_id END WHERE account_id = $1",
        )
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(Some(account_id), &Actor::system(), action::ACCOUNT_PURGED)
            .details(serde_json::json!({ "descriptions": descriptions }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        tracing::info!(
            %account_id,
            descriptions,
            usage_rows,
            meter_reports,
            "purged a deleted account"
        );
        Ok(PurgeReport {
            accounts: 1,
            descriptions,
            usage_rows,
            meter_reports,
            ..PurgeReport::default()
        })
    }
}

/// Console rows past use: sessions at their absolute expiry, email tokens a week after theirs
/// (kept that long so a late click is told "expired", not "unknown"), throttle rows whose window
/// and block are a day behind.
async fn purge_console_rows(tx: &mut Transaction<'static, Any>, now: i64) -> Result<u64> {
    let day = MS_PER_DAY;
    let mut removed = 0;
    for (sql, cutoff) in [
        ("DELETE FROM console_sessions WHERE expires_at <= $1", now),
        (
            "DELETE FROM email_tokens WHERE expires_at <= $1",
            now - 7 * day,
        ),
        (
            "DELETE FROM login_throttle WHERE window_start <= $1 AND (blocked_until IS NULL OR blocked_until <= $1)",
            now - day,
        ),
    ] {
        removed += sqlx::query(sql)
            .bind(cutoff)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(removed)
}

/// With billing on, a deleted account is purged only once Stripe has all its usage: every
/// ledger row reported, or no customer to bill (never mapped, unmapped by an operator, or deleted
/// in Stripe). Purging first would delete usage the sender has yet to report.
fn billable_guard(policy: RetentionPolicy) -> &'static str {
    if policy.purge_unreported {
        ""
    } else {
        " AND (stripe_customer_id IS NULL OR NOT EXISTS (SELECT 1 FROM usage_events u WHERE u.account_id = accounts.id AND u.reported_at IS NULL))"
    }
}

/// Adds deleted ledger rows to the per-day aggregates. Returns how many rows were archived.
async fn archive(tx: &mut Transaction<'static, Any>, taken: &[sqlx::any::AnyRow]) -> Result<u64> {
    let mut totals: BTreeMap<(String, i64, String), i64> = BTreeMap::new();
    for row in taken {
        let account: String = row.try_get("account_id")?;
        let kind: String = row.try_get("kind")?;
        let quantity: i64 = row.try_get("quantity")?;
        let occurred_at: i64 = row.try_get("occurred_at")?;
        *totals
            .entry((account, occurred_at.div_euclid(MS_PER_DAY), kind))
            .or_default() += quantity;
    }
    for ((account, day, kind), quantity) in totals {
        sqlx::query(
            "INSERT INTO usage_archive (account_id, day, kind, quantity) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, day, kind) DO UPDATE SET quantity = usage_archive.quantity + excluded.quantity",
        )
        .bind(account)
        .bind(day)
        .bind(kind)
        .bind(quantity)
        .execute(&mut **tx)
        .await?;
    }
    Ok(taken.len() as u64)
}

/// Runs `purge` every `interval` until `stop` fires; errors are logged and retried next tick.
pub async fn purge_loop(
    store: Store,
    policy: RetentionPolicy,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match store.purge(now_ms(), policy).await {
            Ok(report) if report != PurgeReport::default() => {
                tracing::info!(?report, "retention purge")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention purge failed; retrying next time"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
