//! The request log: one row per authenticated request (time, route template, status, latency,
//! request id, key id, client IP, user agent; never a body, never a key), written in batches by
//! the request-log writer (`crate::http::request_log`); listed per account, summed per day for
//! `/v1/usage`, and aggregated across accounts for analytics, leaving out every account that
//! objected or is restricted. Kept 2 years (`retention`); IP and user agent erased on purge.

use std::sync::LazyLock;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::ids::AccountId;
use super::usage::{MS_PER_DAY, format_day};
use super::{Result, Store, StoreError};

/// The id prefix of logged requests.
pub const PREFIX: &str = "rlog";

/// One request, as the writer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLogEntry {
    pub account_id: AccountId,
    pub key_id: String,
    pub request_id: String,
    pub method: String,
    /// The route template, never the raw path.
    pub route: String,
    pub status: u16,
    pub latency_ms: u64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// When the request arrived, Unix milliseconds.
    pub created_at: i64,
}

/// One logged request, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub id: String,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub method: String,
    pub route: String,
    pub status: i64,
    pub latency_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
}

/// Which requests a listing shows; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter<'a> {
    pub status: Option<u16>,
    pub route: Option<&'a str>,
    /// Arrived at or after, Unix ms.
    pub from: Option<i64>,
    /// Arrived before, Unix ms.
    pub to: Option<i64>,
}

/// Requests of one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestDay {
    /// Days since the epoch.
    pub day: i64,
    pub requests: i64,
    /// Answered with a status of 400 or more.
    pub errors: i64,
    /// Nearest-rank percentiles of the latency; `None` on a day without requests.
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

/// Requests of one UTC day on one route, summed over every account that allows analytics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub route: String,
    pub requests: i64,
    pub errors: i64,
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

const COLUMNS: &str =
    "id, key_id, request_id, method, route, status, latency_ms, ip, user_agent, created_at";

/// Rows per multi-row INSERT (11 parameters a row, far below SQLite's and PostgreSQL's limits).
/// A batch is cut into chunks of these sizes, largest first: four statements only, each
/// prepared once per connection and then cached, whatever the batch sizes.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

static INSERTS: LazyLock<Vec<String>> =
    LazyLock::new(|| CHUNKS.iter().map(|&rows| insert_statement(rows)).collect());

/// `INSERT INTO request_log (…) VALUES ($1, …, $11), … ` for `rows` rows.
fn insert_statement(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=11).map(|p| format!("${}", row * 11 + p)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO request_log (id, account_id, key_id, request_id, method, route, status, latency_ms, ip, user_agent, created_at) VALUES {}",
        values.join(", ")
    )
}

fn from_row(row: &AnyRow) -> Result<LoggedRequest> {
    Ok(LoggedRequest {
        id: row.try_get("id")?,
        key_id: row.try_get("key_id")?,
        request_id: row.try_get("request_id")?,
        method: row.try_get("method")?,
        route: row.try_get("route")?,
        status: row.try_get("status")?,
        latency_ms: row.try_get("latency_ms")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        created_at: row.try_get("created_at")?,
    })
}

/// `rlog_` and a UUIDv7 made from the arrival time, so that ids sort by arrival and the
/// listing's cursor and time filter agree.
fn entry_id(created_at: i64) -> String {
    let at = created_at.max(0) as u64;
    let timestamp =
        uuid::Timestamp::from_unix(uuid::NoContext, at / 1000, (at % 1000) as u32 * 1_000_000);
    format!("{PREFIX}_{}", uuid::Uuid::new_v7(timestamp).simple())
}

/// The smallest id of an entry that arrived at `ms` or later. A UUIDv7 starts with its Unix
/// milliseconds in 12 hex digits, so a time range is an id range: the listing, the statistics,
/// analytics and retention all use the primary key or `(account_id, id)`, and the table needs no
/// index on `created_at` (fewer indexes to maintain on every write).
pub fn id_at(ms: i64) -> String {
    format!(
        "{PREFIX}_{:012x}{}",
        ms.clamp(0, (1 << 48) - 1),
        "0".repeat(20)
    )
}

/// The percentile columns of a statement over `ranked` (rows with `n`, their group's size, and
/// `rn`, their rank by latency): nearest rank, ceil(p × n).
const PERCENTILES: &str = "MIN(CASE WHEN rn = (n * 50 + 99) / 100 THEN latency_ms END) AS p50, \
     MIN(CASE WHEN rn = (n * 95 + 99) / 100 THEN latency_ms END) AS p95";

impl Store {
    /// Writes a batch in one transaction (the writer's only statement).
    pub async fn insert_request_log(&self, entries: &[RequestLogEntry]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let mut rest = entries;
        for (&rows, sql) in CHUNKS.iter().zip(INSERTS.iter()) {
            while rest.len() >= rows {
                let (chunk, tail) = rest.split_at(rows);
                rest = tail;
                let mut query = sqlx::query(sql);
                for entry in chunk {
                    query = query
                        .bind(entry_id(entry.created_at))
                        .bind(entry.account_id.as_str().to_string())
                        .bind(entry.key_id.clone())
                        .bind(entry.request_id.clone())
                        .bind(entry.method.clone())
                        .bind(entry.route.clone())
                        .bind(i64::from(entry.status))
                        .bind(i64::try_from(entry.latency_ms).unwrap_or(i64::MAX))
                        .bind(entry.ip.clone())
                        .bind(entry.user_agent.clone())
                        .bind(entry.created_at);
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// An account's requests newest first, after the cursor `starting_after` (a request-log id).
    pub async fn list_requests(
        &self,
        account_id: &AccountId,
        filter: RequestFilter<'_>,
        starting_after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<LoggedRequest>, bool)> {
        // One statement for every filter: a flag switches each absent condition off.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM request_log WHERE account_id = $1 \
             AND ($2 = 0 OR status = $3) AND ($4 = 0 OR route = $5) \
             AND ($6 = 0 OR id >= $7) AND ($8 = 0 OR id < $9) \
             AND ($10 = 0 OR id < $11) ORDER BY id DESC LIMIT $12"
        ))
        .bind(account_id.as_str())
        .bind(i64::from(filter.status.is_some()))
        .bind(i64::from(filter.status.unwrap_or(0)))
        .bind(i64::from(filter.route.is_some()))
        .bind(filter.route.unwrap_or(""))
        .bind(i64::from(filter.from.is_some()))
        .bind(id_at(filter.from.unwrap_or(0)))
        .bind(i64::from(filter.to.is_some()))
        .bind(id_at(filter.to.unwrap_or(0)))
        .bind(i64::from(starting_after.is_some()))
        .bind(starting_after.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let has_more = rows.len() as i64 > limit;
        let requests = rows
            .iter()
            .take(limit as usize)
            .map(from_row)
            .collect::<Result<_>>()?;
        Ok((requests, has_more))
    }

    /// An account's requests oldest first after `after`, a page at a time (the account export).
    pub async fn requests_page(
        &self,
        account_id: &AccountId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LoggedRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM request_log WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(account_id.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Requests, errors and latency percentiles per UTC day in `[from_day, to_day]`, every day
    /// listed (zeros and no percentiles on days without requests). The account's own numbers:
    /// not analytics, so an objection does not hide them from the account.
    pub async fn request_stats_by_day(
        &self,
        account_id: &AccountId,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<RequestDay>> {
        check_range(from_day, to_day)?;
        let rows = sqlx::query(&format!(
            "SELECT day, COUNT(*) AS requests, \
                    CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, {PERCENTILES} \
             FROM (SELECT created_at / 86400000 AS day, status, latency_ms, \
                          ROW_NUMBER() OVER (PARTITION BY created_at / 86400000 ORDER BY latency_ms) AS rn, \
                          COUNT(*) OVER (PARTITION BY created_at / 86400000) AS n \
                   FROM request_log WHERE account_id = $1 AND id >= $2 AND id < $3) AS ranked \
             GROUP BY day"
        ))
        .bind(account_id.as_str())
        .bind(id_at(from_day * MS_PER_DAY))
        .bind(id_at((to_day + 1) * MS_PER_DAY))
        .fetch_all(self.pool())
        .await?;
        let mut days: Vec<RequestDay> = (from_day..=to_day)
            .map(|day| RequestDay {
                day,
                requests: 0,
                errors: 0,
                latency_p50_ms: None,
                latency_p95_ms: None,
            })
            .collect();
        for row in rows {
            let day: i64 = row.try_get("day")?;
            let Some(entry) = days.get_mut((day - from_day) as usize) else {
                continue;
            };
            entry.requests = row.try_get("requests")?;
            entry.errors = row.try_get("errors")?;
            entry.latency_p50_ms = row.try_get("p50")?;
            entry.latency_p95_ms = row.try_get("p95")?;
        }
        Ok(days)
    }

    /// Requests per UTC day and route across accounts, for the operator's analytics: the rows
    /// of accounts that object to analytics, or whose processing is restricted, are left out,
    /// whenever they were logged. No account, key, IP or user agent leaves this query.
    pub async fn request_analytics(&self, from_day: i64, to_day: i64) -> Result<Vec<RouteDay>> {
        check_range(from_day, to_day)?;
        let rows = sqlx::query(&format!(
            "SELECT day, route, COUNT(*) AS requests, \
                    CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, {PERCENTILES} \
             FROM (SELECT r.created_at / 86400000 AS day, r.route, r.status, r.latency_ms, \
                          ROW_NUMBER() OVER (PARTITION BY r.created_at / 86400000, r.route ORDER BY r.latency_ms) AS rn, \
                          COUNT(*) OVER (PARTITION BY r.created_at / 86400000, r.route) AS n \
                   FROM request_log r JOIN accounts a ON a.id = r.account_id \
                   WHERE r.id >= $1 AND r.id < $2 \
                     AND a.objected_at IS NULL AND a.restricted_by IS NULL) AS ranked \
             GROUP BY day, route ORDER BY day, route"
        ))
        .bind(id_at(from_day * MS_PER_DAY))
        .bind(id_at((to_day + 1) * MS_PER_DAY))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RouteDay {
                    date: format_day(row.try_get("day")?),
                    route: row.try_get("route")?,
                    requests: row.try_get("requests")?,
                    errors: row.try_get("errors")?,
                    latency_p50_ms: row.try_get("p50")?,
                    latency_p95_ms: row.try_get("p95")?,
                })
            })
            .collect()
    }
}

fn check_range(from_day: i64, to_day: i64) -> Result<()> {
    if to_day < from_day || to_day - from_day > 366 {
        return Err(StoreError::Invalid(
            "`from` must not be after `to`, and the range is at most 366 days".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_arrival_and_have_the_id_form() {
        let early = entry_id(1_700_000_000_000);
        let late = entry_id(1_700_000_000_001);
        assert!(early < late, "{early} {late}");
        assert!(crate::strings::is_id(&early, PREFIX), "{early}");
        // Time ranges are id ranges.
        let at = 1_700_000_000_000;
        assert!(id_at(at) <= entry_id(at) && entry_id(at) < id_at(at + 1));
        assert!(entry_id(at - 1) < id_at(at));
        assert!(crate::strings::is_id(&id_at(at), PREFIX));
    }
}
