//! `Idempotency-Key` records: the first request with a key claims it, its answer is stored in
//! the same transaction as its descriptions, and a replay within the window gets that answer
//! back without new work or new billing.
//!
//! A claim is held by one request (its `claim_id`) under a lease the request renews while it
//! runs. A request that ends without an answer (it failed, or its client left) deletes its claim;
//! a process that dies stops renewing, so its keys are free within [`CLAIM_LEASE_MS`].

use sqlx::{Any, Row, Transaction};

use super::ids::AccountId;
use super::{Result, Store, StoreError, new_id, now_ms};

/// How long a claim holds without renewal: the longest a retry waits (409
/// `idempotency_key_in_use`) after the process running the first request died.
pub const CLAIM_LEASE_MS: i64 = 30_000;
/// How often a running request renews its claim: a third of the lease, so that one or two
/// failed renewals (a database hiccup) do not let another request take the key over.
pub const CLAIM_RENEW_MS: i64 = 10_000;

/// What the store says about an idempotency key at the start of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use (or an expired or abandoned one): go ahead under this claim, renew it while
    /// running, then complete or release it.
    Fresh { claim_id: String },
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
    pub account_id: &'a AccountId,
    pub key: &'a str,
    /// The claim this request holds: the answer is written only while it still holds it.
    pub claim_id: &'a str,
    pub status: u16,
    pub body: &'a str,
}

impl Completion<'_> {
    /// Fails (and so rolls the whole transaction back: nothing stored, nothing billed) when the
    /// claim was lost, because then another request with the key is doing the same work.
    pub(crate) async fn write(&self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        let written = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2, lease_until = NULL WHERE account_id = $3 AND idempotency_key = $4 AND claim_id = $5 AND status IS NULL",
        )
        .bind(self.status as i64)
        .bind(self.body)
        .bind(self.account_id.as_str())
        .bind(self.key)
        .bind(self.claim_id)
        .execute(&mut **tx)
        .await?;
        if written.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                "this request's Idempotency-Key claim lapsed (its lease was not renewed in time) and another request took the key over; retry with the same key to get that request's answer".into(),
            ));
        }
        Ok(())
    }
}

impl Store {
    /// Claims `key` for a request on `route` whose parsed content hashes to `request_hash`.
    pub async fn claim_idempotency_key(
        &self,
        account_id: &AccountId,
        key: &str,
        route: &str,
        request_hash: &str,
        window_ms: i64,
    ) -> Result<Claim> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // An expired record, or a claim whose lease ran out (its process died), no longer holds
        // the key.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2 AND (expires_at <= $3 OR (status IS NULL AND lease_until <= $3))",
        )
        .bind(account_id.as_str())
        .bind(key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let claim_id = new_id("claim");
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, route, request_hash, created_at, expires_at, claim_id, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account_id, idempotency_key) DO NOTHING",
        )
        .bind(account_id.as_str())
        .bind(key)
        .bind(route)
        .bind(request_hash)
        .bind(now)
        .bind(now + window_ms)
        .bind(&claim_id)
        .bind(now + CLAIM_LEASE_MS)
        .execute(&mut *tx)
        .await?;
        let claim = if inserted.rows_affected() == 1 {
            Claim::Fresh { claim_id }
        } else {
            let row = sqlx::query(
                "SELECT route, request_hash, status, response FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2",
            )
            .bind(account_id.as_str())
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

    /// Extends a running request's claim by [`CLAIM_LEASE_MS`] from now; false when the claim
    /// is no longer this request's (answered, released, or taken over after it lapsed).
    pub async fn renew_idempotency_claim(
        &self,
        account_id: &AccountId,
        key: &str,
        claim_id: &str,
    ) -> Result<bool> {
        let renewed = sqlx::query(
            "UPDATE idempotency_keys SET lease_until = $1 WHERE account_id = $2 AND idempotency_key = $3 AND claim_id = $4 AND status IS NULL",
        )
        .bind(now_ms() + CLAIM_LEASE_MS)
        .bind(account_id.as_str())
        .bind(key)
        .bind(claim_id)
        .execute(self.pool())
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives the key back after a request that ended without an answer to replay (it failed, or
    /// its client left), so that a retry runs again: failures are neither stored nor billed.
    /// Only this request's own unanswered claim is deleted, never a later request's.
    pub async fn release_idempotency_key(
        &self,
        account_id: &AccountId,
        key: &str,
        claim_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2 AND claim_id = $3 AND status IS NULL",
        )
        .bind(account_id.as_str())
        .bind(key)
        .bind(claim_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
