//! `Idempotency-Key` records: the first request with a key claims it, its answer is stored in
//! the same transaction as its descriptions, and a replay within the window gets that answer
//! back without new work or new billing.

use sqlx::{Any, Row, Transaction};

use super::{Result, Store, now_ms};

/// A claim older than this whose request never finished (the process died) may be taken over.
const ABANDONED_AFTER_MS: i64 = 10 * 60 * 1000;

/// What the store says about an idempotency key at the start of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use (or an expired or abandoned one): go ahead, then complete or release it.
    Fresh,
    /// Already answered: return this status and JSON body.
    Replay { status: u16, body: String },
    /// Used before with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// The stored answer, written by the transaction that stores the request's work.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub account_id: &'a str,
    pub key: &'a str,
    pub status: u16,
    pub body: &'a str,
}

impl Completion<'_> {
    pub(crate) async fn write(&self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 WHERE account_id = $3 AND idempotency_key = $4",
        )
        .bind(self.status as i64)
        .bind(self.body)
        .bind(self.account_id)
        .bind(self.key)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Claims `key` for a request on `route` whose parsed content hashes to `request_hash`.
    pub async fn claim_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
        route: &str,
        request_hash: &str,
        window_ms: i64,
    ) -> Result<Claim> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // An expired record, or a claim whose request died, no longer holds the key.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2 AND (expires_at <= $3 OR (status IS NULL AND created_at <= $4))",
        )
        .bind(account_id)
        .bind(key)
        .bind(now)
        .bind(now - ABANDONED_AFTER_MS)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, route, request_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, idempotency_key) DO NOTHING",
        )
        .bind(account_id)
        .bind(key)
        .bind(route)
        .bind(request_hash)
        .bind(now)
        .bind(now + window_ms)
        .execute(&mut *tx)
        .await?;
        let claim = if inserted.rows_affected() == 1 {
            Claim::Fresh
        } else {
            let row = sqlx::query(
                "SELECT route, request_hash, status, response FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2",
            )
            .bind(account_id)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let same = row.try_get::<String, _>("route")? == route
                && row.try_get::<String, _>("request_hash")? == request_hash;
            let status: Option<i64> = row.try_get("status")?;
            match (same, status) {
                (false, _) => Claim::Mismatch,
                (true, None) => Claim::InProgress,
                (true, Some(status)) => Claim::Replay {
                    status: status as u16,
                    body: row
                        .try_get::<Option<String>, _>("response")?
                        .unwrap_or_default(),
                },
            }
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// Gives the key back after a request that failed, so that a retry runs again (failures
    /// are neither stored nor billed, so there is nothing to replay).
    pub async fn release_idempotency_key(&self, account_id: &str, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2 AND status IS NULL",
        )
        .bind(account_id)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
