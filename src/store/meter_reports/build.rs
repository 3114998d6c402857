//! Ledger → outbox: the batcher's SQL. Unreported usage rows are grouped per account, meter and
//! UTC hour into immutable meter reports; accounts without a Stripe customer are found and mapped.

use sqlx::Row;

use crate::store::ids::AccountId;
use crate::store::{Backend, Result, Store, new_id};

pub const MS_PER_HOUR: i64 = 3_600_000;

/// Any constant works, as long as nothing else in the database takes the same advisory lock.
const BATCHER_LOCK: i64 = 0x616c_7469_6d67; // "altimg"

/// What one batcher pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub reports: u64,
    pub ledger_rows: u64,
    /// Another replica held the batcher lock, so this pass did nothing.
    pub skipped: bool,
}

impl Store {
    /// Turns every unreported ledger row of an account with a Stripe customer into meter reports,
    /// one per account, kind and UTC hour. `event_names` maps a ledger kind to its meter event
    /// name (rows of other kinds are left); a report whose latest row is more than
    /// `max_event_age_secs` old is created `expired` instead of `pending`.
    ///
    /// One transaction, one batcher at a time (an advisory lock on PostgreSQL, the single writer on
    /// SQLite). Rows are claimed with `UPDATE … RETURNING`, and the report's value and time come from
    /// the returned rows only: a row committed between a SELECT and the UPDATE would otherwise be
    /// counted wrong under READ COMMITTED. A row committed after the claim simply lands in a later
    /// report of the same hour; the meter sums both.
    pub async fn build_meter_reports(
        &self,
        event_names: &[(&str, &str)],
        max_event_age_secs: i64,
    ) -> Result<BatchReport> {
        let backend = self.backend();
        let mut tx = self.begin_write().await?;
        if backend == Backend::Postgres {
            let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS locked")
                .bind(BATCHER_LOCK)
                .fetch_one(&mut *tx)
                .await?
                .try_get("locked")?;
            if !locked {
                tx.rollback().await?;
                return Ok(BatchReport {
                    skipped: true,
                    ..BatchReport::default()
                });
            }
        }
        let now: i64 = sqlx::query(&format!("SELECT {} AS now", backend.now_ms()))
            .fetch_one(&mut *tx)
            .await?
            .try_get("now")?;
        // Accounts without a customer are left out: their rows wait, still unreported, until an
        // operator (or --stripe-create-customers) maps one.
        let groups = sqlx::query(
            "SELECT u.account_id, u.kind, a.stripe_customer_id, u.occurred_at / 3600000 AS hour \
             FROM usage_events u JOIN accounts a ON a.id = u.account_id \
             WHERE u.report_id IS NULL AND a.stripe_customer_id IS NOT NULL \
             GROUP BY u.account_id, u.kind, a.stripe_customer_id, u.occurred_at / 3600000 \
             ORDER BY hour LIMIT 1000",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut done = BatchReport::default();
        for group in groups {
            let account_id: String = group.try_get("account_id")?;
            let kind: String = group.try_get("kind")?;
            let customer: String = group.try_get("stripe_customer_id")?;
            let hour: i64 = group.try_get("hour")?;
            let Some(&(_, event_name)) = event_names.iter().find(|(known, _)| *known == kind)
            else {
                tracing::warn!(kind, "ledger rows of an unknown kind are not billed");
                continue;
            };
            let id = new_id("mr");
            let bucket_start = hour * MS_PER_HOUR;
            let claimed = sqlx::query(
                "UPDATE usage_events SET report_id = $1 \
                 WHERE report_id IS NULL AND account_id = $2 AND kind = $3 \
                   AND occurred_at >= $4 AND occurred_at < $5 \
                 RETURNING quantity, occurred_at",
            )
            .bind(&id)
            .bind(&account_id)
            .bind(&kind)
            .bind(bucket_start)
            .bind(bucket_start + MS_PER_HOUR)
            .fetch_all(&mut *tx)
            .await?;
            if claimed.is_empty() {
                continue;
            }
            let mut value = 0i64;
            let mut latest = i64::MIN;
            for row in &claimed {
                value += row.try_get::<i64, _>("quantity")?;
                latest = latest.max(row.try_get::<i64, _>("occurred_at")?);
            }
            // Rows too old for Stripe's window still become a report, marked expired, so that an
            // operator sees them (and can re-date them with a retry) instead of them waiting forever.
            let event_ts = latest.div_euclid(1000);
            let status = if now / 1000 - event_ts > max_event_age_secs {
                tracing::error!(report_id = %id, account_id, "usage older than 34 days cannot be sent to Stripe; the report is marked expired");
                "expired"
            } else {
                "pending"
            };
            sqlx::query(
                "INSERT INTO meter_reports (id, account_id, stripe_customer_id, kind, event_name, value, event_ts, bucket_start, status, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind(&id)
            .bind(&account_id)
            .bind(&customer)
            .bind(&kind)
            .bind(event_name)
            .bind(value)
            .bind(event_ts)
            .bind(bucket_start)
            .bind(status)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            done.reports += 1;
            done.ledger_rows += claimed.len() as u64;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Accounts with unreported usage, no customer, not deleted, and no customer deleted by Stripe:
    /// the ones `--stripe-create-customers` creates a customer for. (id, name, email).
    pub async fn accounts_needing_customers(
        &self,
    ) -> Result<Vec<(AccountId, Option<String>, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT a.id, a.name, a.email FROM accounts a \
             WHERE a.stripe_customer_id IS NULL AND a.deleted_at IS NULL AND a.stripe_customer_deleted_at IS NULL \
               AND EXISTS (SELECT 1 FROM usage_events u WHERE u.account_id = a.id AND u.report_id IS NULL) \
             ORDER BY a.id LIMIT 100",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    AccountId::trusted(row.try_get("id")?),
                    row.try_get("name")?,
                    row.try_get("email")?,
                ))
            })
            .collect()
    }

    /// Maps a created customer unless the account got one meanwhile (an operator, another replica).
    pub async fn set_customer_if_unmapped(
        &self,
        account_id: &AccountId,
        customer: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET stripe_customer_id = $1 WHERE id = $2 AND stripe_customer_id IS NULL",
        )
        .bind(customer)
        .bind(account_id.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
