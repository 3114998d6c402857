//! Accounts: creation, lookup, settings (Stripe customer, rate limit), restricted processing and
//! deletion requests; each change audited in its own transaction.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::{self, Actor, AuditEvent, action};
use super::ids::AccountId;
use super::{Result, Store, StoreError, check_string, now_ms};
use crate::strings::Shape;

/// Who restricted an account's processing. The account may lift only its own restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestrictedBy {
    Admin,
    Account,
}

impl RestrictedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestrictedBy::Admin => "admin",
            RestrictedBy::Account => "account",
        }
    }

    pub(crate) fn parse(value: &str) -> Option<Self> {
        match value {
            "admin" => Some(RestrictedBy::Admin),
            "account" => Some(RestrictedBy::Account),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub id: AccountId,
    /// Absent once the account is purged.
    pub name: Option<String>,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    /// Requests per minute for this account; absent: the server's `--rate-limit-per-minute`.
    pub rate_limit_per_minute: Option<i64>,
    /// Set while processing is restricted: new descriptions are refused, reads still work.
    pub restricted_by: Option<RestrictedBy>,
    pub restricted_at: Option<i64>,
    /// Set while the account objects to its usage being used for analytics and service
    /// improvement (`store::consents`).
    pub objected_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When deletion was requested; the account is hidden from then on.
    pub deleted_at: Option<i64>,
    /// When the purge job deletes the account's data.
    pub purge_after: Option<i64>,
    pub purged_at: Option<i64>,
    /// The company the console's sign-up named, if any.
    pub company: Option<String>,
    /// Members must use a second factor to log in to the console.
    pub require_mfa: bool,
}

pub(crate) const ACCOUNT_COLUMNS: &str = "id, name, email, stripe_customer_id, rate_limit_per_minute, restricted_by, restricted_at, objected_at, created_at, deleted_at, purge_after, purged_at, company, require_mfa";

pub(crate) fn account_from_row(row: &AnyRow) -> Result<Account> {
    let restricted_by: Option<String> = row.try_get("restricted_by")?;
    Ok(Account {
        id: AccountId::trusted(row.try_get("id")?),
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        stripe_customer_id: row.try_get("stripe_customer_id")?,
        rate_limit_per_minute: row.try_get("rate_limit_per_minute")?,
        restricted_by: restricted_by.as_deref().and_then(RestrictedBy::parse),
        restricted_at: row.try_get("restricted_at")?,
        objected_at: row.try_get("objected_at")?,
        created_at: row.try_get("created_at")?,
        deleted_at: row.try_get("deleted_at")?,
        purge_after: row.try_get("purge_after")?,
        purged_at: row.try_get("purged_at")?,
        company: row.try_get("company")?,
        require_mfa: row.try_get::<i64, _>("require_mfa")? != 0,
    })
}

#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub name: String,
    pub email: String,
    pub stripe_customer_id: Option<String>,
    pub rate_limit_per_minute: Option<i64>,
}

/// A change to an account's settings; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub stripe_customer_id: Option<Option<String>>,
    pub rate_limit_per_minute: Option<Option<i64>>,
}

fn check_new(name: &str, email: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid(
            "`name` must be 1 to 200 characters".into(),
        ));
    }
    if email.len() > 320 || !email.contains('@') {
        return Err(StoreError::Invalid(
            "`email` must be an email address".into(),
        ));
    }
    check_string("name", name, Shape::Line)?;
    check_string("email", email, Shape::Line)
}

fn check_customer(customer: Option<&str>) -> Result<()> {
    match customer {
        Some(customer) => check_string("stripe_customer_id", customer, Shape::Line),
        None => Ok(()),
    }
}

fn check_rate_limit(limit: Option<i64>) -> Result<()> {
    match limit {
        Some(limit) if !(1..=1_000_000).contains(&limit) => Err(StoreError::Invalid(
            "`rate_limit_per_minute` must be between 1 and 1000000".into(),
        )),
        _ => Ok(()),
    }
}

fn customer_conflict(error: StoreError) -> StoreError {
    match error {
        StoreError::Conflict(_) => StoreError::Conflict(
            "this `stripe_customer_id` already belongs to another account".into(),
        ),
        other => other,
    }
}

/// Checks and inserts a new account through `executor` (the pool, or a transaction); returns
/// its id.
pub(super) async fn insert_account<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    new: NewAccount,
) -> Result<AccountId> {
    check_new(&new.name, &new.email)?;
    check_customer(new.stripe_customer_id.as_deref())?;
    check_rate_limit(new.rate_limit_per_minute)?;
    let id = AccountId::generate();
    sqlx::query(
        "INSERT INTO accounts (id, name, email, stripe_customer_id, rate_limit_per_minute, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.as_str())
    .bind(new.name.trim())
    .bind(new.email.trim())
    .bind(new.stripe_customer_id.filter(|c| !c.is_empty()))
    .bind(new.rate_limit_per_minute)
    .bind(now_ms())
    .execute(executor)
    .await
    .map_err(|e| customer_conflict(e.into()))?;
    Ok(id)
}

impl Store {
    pub async fn create_account(&self, new: NewAccount, actor: &Actor) -> Result<Account> {
        let mut tx = self.begin_write().await?;
        let id = insert_account(&mut *tx, new).await?;
        audit::record(
            &mut tx,
            &AuditEvent::new(Some(&id), actor, action::ACCOUNT_CREATED),
        )
        .await?;
        tx.commit().await?;
        self.account(&id).await
    }

    /// Any account that has not been purged, deleted or not (admin view).
    pub async fn account(&self, id: &AccountId) -> Result<Account> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 AND purged_at IS NULL"
        ))
        .bind(id.as_str())
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound("account"))?;
        account_from_row(&row)
    }

    /// Accounts newest first, after the cursor `starting_after` (an account id).
    pub async fn list_accounts(
        &self,
        limit: i64,
        starting_after: Option<&str>,
    ) -> Result<(Vec<Account>, bool)> {
        let rows = match starting_after {
            Some(cursor) => {
                sqlx::query(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE purged_at IS NULL AND id < $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(cursor)
                .bind(limit + 1)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE purged_at IS NULL ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit + 1)
                .fetch_all(self.pool())
                .await?
            }
        };
        let has_more = rows.len() as i64 > limit;
        let accounts = rows
            .iter()
            .take(limit as usize)
            .map(account_from_row)
            .collect::<Result<_>>()?;
        Ok((accounts, has_more))
    }

    pub async fn update_account(
        &self,
        id: &AccountId,
        update: AccountUpdate,
        actor: &Actor,
    ) -> Result<Account> {
        let current = self.account(id).await?;
        if current.deleted_at.is_some() {
            return Err(StoreError::Invalid(
                "the account is being deleted; it cannot be changed".into(),
            ));
        }
        // The names of the fields given, for the audit log (never their values: they may be
        // personal data, and the log outlives the account).
        let fields: Vec<&str> = [
            ("name", update.name.is_some()),
            ("email", update.email.is_some()),
            ("stripe_customer_id", update.stripe_customer_id.is_some()),
            (
                "rate_limit_per_minute",
                update.rate_limit_per_minute.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(field, given)| given.then_some(field))
        .collect();
        if fields.is_empty() {
            return Ok(current);
        }
        let name = update.name.unwrap_or(current.name.unwrap_or_default());
        let email = update.email.unwrap_or(current.email.unwrap_or_default());
        check_new(&name, &email)?;
        let customer = update
            .stripe_customer_id
            .unwrap_or(current.stripe_customer_id)
            .filter(|c| !c.is_empty());
        check_customer(customer.as_deref())?;
        let limit = update
            .rate_limit_per_minute
            .unwrap_or(current.rate_limit_per_minute);
        check_rate_limit(limit)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE accounts SET name = $1, email = $2, stripe_customer_id = $3, rate_limit_per_minute = $4 WHERE id = $5",
        )
        .bind(name.trim())
        .bind(email.trim())
        .bind(customer)
        .bind(limit)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| customer_conflict(e.into()))?;
        let event = AuditEvent::new(Some(id), actor, action::ACCOUNT_UPDATED)
            .details(serde_json::json!({ "fields": fields }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        self.account(id).await
    }

    /// Restricts processing (`Some(by)`) or lifts it (`None`). The account itself cannot lift
    /// a restriction the operator set.
    pub async fn set_restricted(
        &self,
        id: &AccountId,
        restricted: bool,
        by: RestrictedBy,
        actor: &Actor,
    ) -> Result<Account> {
        let current = self.account(id).await?;
        if current.deleted_at.is_some() {
            return Err(StoreError::NotFound("account"));
        }
        if !restricted
            && by == RestrictedBy::Account
            && current.restricted_by == Some(RestrictedBy::Admin)
        {
            return Err(StoreError::Invalid(
                "processing was restricted by the operator; only the operator can lift it".into(),
            ));
        }
        // Restricting again by the same party, or lifting what is not restricted, changes
        // nothing and is not audited.
        if (restricted && current.restricted_by == Some(by))
            || (!restricted && current.restricted_by.is_none())
        {
            return Ok(current);
        }
        let (stored_by, at) = if restricted {
            (Some(by.as_str()), Some(now_ms()))
        } else {
            (None, None)
        };
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE accounts SET restricted_by = $1, restricted_at = $2 WHERE id = $3")
            .bind(stored_by)
            .bind(at)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let event = if restricted {
            AuditEvent::new(Some(id), actor, action::ACCOUNT_RESTRICTED)
                .details(serde_json::json!({ "by": by.as_str() }))
        } else {
            AuditEvent::new(Some(id), actor, action::ACCOUNT_RESTRICTION_LIFTED).details(
                serde_json::json!({ "was_by": current.restricted_by.map(RestrictedBy::as_str) }),
            )
        };
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        self.account(id).await
    }

    /// Deletion: every key revoked and the account hidden at once, in one transaction; the
    /// purge job deletes its data after `grace`. Asking again keeps the first date.
    pub async fn request_deletion(
        &self,
        id: &AccountId,
        grace: Duration,
        actor: &Actor,
    ) -> Result<Account> {
        let now = now_ms();
        let purge_after = now + grace.as_millis() as i64;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE accounts SET deleted_at = $1, purge_after = $2 WHERE id = $3 AND deleted_at IS NULL AND purged_at IS NULL",
        )
        .bind(now)
        .bind(purge_after)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            let event = AuditEvent::new(Some(id), actor, action::ACCOUNT_DELETION_REQUESTED)
                .details(serde_json::json!({ "purge_after": purge_after }));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        if updated.rows_affected() == 0 {
            // Already deleted (idempotent) or unknown.
            let account = self.account(id).await?;
            return Ok(account);
        }
        self.account(id).await
    }
}
