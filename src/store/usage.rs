//! The usage ledger: one append-only row per billable event (`created`, `retrieved`), written in
//! the same transaction as the work it bills; reports per day and meter. Billing reads it.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::ids::AccountId;
use super::{Result, Store, StoreError, new_id};

pub const MS_PER_DAY: i64 = 86_400_000;

/// Counts for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// Descriptions created.
    pub created: i64,
    /// Descriptions retrieved (`GET /v1/descriptions/{id}`).
    pub retrieved: i64,
}

/// One ledger row, as the account export shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UsageEvent {
    pub id: String,
    pub meter: String,
    pub quantity: i64,
    pub occurred_at: i64,
    pub description_id: String,
    pub request_id: String,
    pub reported_at: Option<i64>,
}

impl Store {
    /// Appends one ledger row inside the caller's transaction, timed by the database clock.
    pub(crate) async fn record_usage(
        &self,
        tx: &mut Transaction<'static, Any>,
        account_id: &AccountId,
        kind: &str,
        source_ref: &str,
        request_id: &str,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO usage_events (id, account_id, kind, quantity, occurred_at, source_ref, request_id) VALUES ($1, $2, $3, 1, {}, $4, $5)",
            self.backend().now_ms()
        ))
        .bind(new_id("use"))
        .bind(account_id.as_str())
        .bind(kind)
        .bind(source_ref)
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Counts per UTC day in `[from_day, to_day]` (days since the epoch), from the ledger and
    /// from the archive that keeps rolled-up counts after ledger rows are purged. Days without
    /// usage are listed with zeros, so charts need no gap filling.
    pub async fn usage_by_day(
        &self,
        account_id: &AccountId,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<UsageDay>> {
        if to_day < from_day || to_day - from_day > 366 {
            return Err(StoreError::Invalid(
                "`from` must not be after `to`, and the range is at most 366 days".into(),
            ));
        }
        let rows = sqlx::query(
            "SELECT day, kind, CAST(SUM(quantity) AS BIGINT) AS total FROM ( \
                SELECT occurred_at / 86400000 AS day, kind, quantity FROM usage_events \
                    WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
                UNION ALL \
                SELECT day, kind, quantity FROM usage_archive \
                    WHERE account_id = $1 AND day >= $4 AND day <= $5 \
             ) AS events GROUP BY day, kind",
        )
        .bind(account_id.as_str())
        .bind(from_day * MS_PER_DAY)
        .bind((to_day + 1) * MS_PER_DAY)
        .bind(from_day)
        .bind(to_day)
        .fetch_all(self.pool())
        .await?;
        let mut days: Vec<UsageDay> = (from_day..=to_day)
            .map(|day| UsageDay {
                date: format_day(day),
                created: 0,
                retrieved: 0,
            })
            .collect();
        for row in rows {
            let day: i64 = row.try_get("day")?;
            let kind: String = row.try_get("kind")?;
            let total: i64 = row.try_get("total")?;
            let Some(entry) = days.get_mut((day - from_day) as usize) else {
                continue;
            };
            match kind.as_str() {
                "created" => entry.created += total,
                "retrieved" => entry.retrieved += total,
                _ => {}
            }
        }
        Ok(days)
    }

    /// Ledger rows of an account in id (time) order after `after`, a page at a time (for the
    /// account export).
    pub async fn usage_events_page(
        &self,
        account_id: &AccountId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UsageEvent>> {
        let rows = sqlx::query(
            "SELECT id, kind, quantity, occurred_at, source_ref, request_id, reported_at FROM usage_events WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(account_id.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageEvent {
                    id: row.try_get("id")?,
                    meter: row.try_get("kind")?,
                    quantity: row.try_get("quantity")?,
                    occurred_at: row.try_get("occurred_at")?,
                    description_id: row.try_get("source_ref")?,
                    request_id: row.try_get("request_id")?,
                    reported_at: row.try_get("reported_at")?,
                })
            })
            .collect()
    }

    /// The rolled-up counts kept after ledger rows were purged, oldest first.
    pub async fn archived_usage(&self, account_id: &AccountId) -> Result<Vec<ArchivedUsage>> {
        let rows = sqlx::query(
            "SELECT day, kind, quantity FROM usage_archive WHERE account_id = $1 ORDER BY day, kind",
        )
        .bind(account_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ArchivedUsage {
                    date: format_day(row.try_get("day")?),
                    meter: row.try_get("kind")?,
                    quantity: row.try_get("quantity")?,
                })
            })
            .collect()
    }
}

/// Usage of one day and meter whose ledger rows were purged.
#[derive(Debug, Clone, Serialize)]
pub struct ArchivedUsage {
    pub date: String,
    pub meter: String,
    pub quantity: i64,
}

/// `YYYY-MM-DD` for a day number (days since 1970-01-01), proleptic Gregorian.
pub fn format_day(day: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day number of a `YYYY-MM-DD` date, or `None` when it is not one.
pub fn parse_day(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let day = era * 146_097 + doe - 719_468;
    // Reject 2026-02-31 and friends: the day must print back as given.
    (format_day(day) == date).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_dates() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2000-02-29"), Some(11_016));
        assert_eq!(format_day(11_016), "2000-02-29");
        for day in (0..2_900_000).step_by(997) {
            assert_eq!(parse_day(&format_day(day)), Some(day), "{day}");
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-01x",
            "",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }
}
