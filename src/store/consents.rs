//! Objection to analytics (GDPR Art. 21): an account can object to its usage being used for
//! analytics and service improvement, withdraw the objection and object again. The account row
//! holds the current state (`objected_at`, which every analytics query reads); `consent_events`
//! holds each change with its time, for the account export; each change is audited in the same
//! transaction.

use serde::Serialize;
use sqlx::Row;

use super::accounts::Account;
use super::audit::{self, Actor, AuditEvent, action};
use super::ids::AccountId;
use super::{Result, Store, StoreError, new_id, now_ms};

/// The one purpose an account can object to today.
pub const ANALYTICS: &str = "analytics";

/// One change of an account's choice.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentEvent {
    pub id: String,
    /// `analytics`: usage used for analytics and service improvement.
    pub purpose: String,
    /// `objected` or `given` (the objection withdrawn).
    pub decision: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Store {
    /// Objects (`true`) or withdraws the objection (`false`). Asking for the state the account
    /// is already in changes nothing and records nothing.
    pub async fn set_objection(
        &self,
        account_id: &AccountId,
        objected: bool,
        actor: &Actor,
    ) -> Result<Account> {
        let current = self.account(account_id).await?;
        if current.deleted_at.is_some() {
            return Err(StoreError::NotFound("account"));
        }
        if current.objected_at.is_some() == objected {
            return Ok(current);
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // Guarded on the state, so that two requests at once record one change.
        let update = if objected {
            sqlx::query(
                "UPDATE accounts SET objected_at = $1 WHERE id = $2 AND objected_at IS NULL",
            )
            .bind(now)
            .bind(account_id.as_str())
        } else {
            sqlx::query(
                "UPDATE accounts SET objected_at = NULL WHERE id = $1 AND objected_at IS NOT NULL",
            )
            .bind(account_id.as_str())
        };
        let changed = update.execute(&mut *tx).await?.rows_affected();
        if changed == 1 {
            let decision = if objected { "objected" } else { "given" };
            sqlx::query(
                "INSERT INTO consent_events (id, account_id, purpose, decision, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(new_id("cns"))
            .bind(account_id.as_str())
            .bind(ANALYTICS)
            .bind(decision)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let what = if objected {
                action::CONSENT_OBJECTED
            } else {
                action::CONSENT_GIVEN
            };
            let event = AuditEvent::new(Some(account_id), actor, what)
                .details(serde_json::json!({"purpose": ANALYTICS}));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.account(account_id).await
    }

    /// Every objection and consent of the account, oldest first.
    pub async fn consent_events(&self, account_id: &AccountId) -> Result<Vec<ConsentEvent>> {
        let rows = sqlx::query(
            "SELECT id, purpose, decision, created_at FROM consent_events WHERE account_id = $1 ORDER BY id",
        )
        .bind(account_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ConsentEvent {
                    id: row.try_get("id")?,
                    purpose: row.try_get("purpose")?,
                    decision: row.try_get("decision")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }
}
