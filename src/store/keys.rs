//! API keys: created with a recognisable prefix and shown once, stored only as a SHA-256 hash,
//! scoped, revocable at once; the lookup that authenticates a request; and a first start's
//! account with its key, made together (keys build on accounts, never the other way).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::accounts::{Account, NewAccount, RestrictedBy, insert_account};
use super::audit::{self, Actor, AuditEvent, action};
use super::ids::AccountId;
use super::{Backend, Result, Store, StoreError, check_string, known_id, new_id, now_ms};
use crate::strings::Shape;

/// Every secret starts with this, so leaked keys are easy to spot (secret scanners, logs).
pub const KEY_PREFIX: &str = "altk_";

/// Characters of the secret kept in clear for listings: the prefix and 8 more.
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 8;

/// `last_used_at` is written at most this often per key, so that authentication stays a read.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Create descriptions.
    Describe,
    /// Read descriptions, usage, the account and its export.
    Read,
    /// Edit and delete descriptions, restrict or delete the account.
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Describe, Scope::Read, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Describe => "describe",
            Scope::Read => "read",
            Scope::Manage => "manage",
        }
    }

    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "describe" => Ok(Scope::Describe),
            "read" => Ok(Scope::Read),
            "manage" => Ok(Scope::Manage),
            other => Err(StoreError::Invalid(format!(
                "unknown scope `{other}`: expected describe, read or manage"
            ))),
        }
    }
}

fn parse_scopes(stored: &str) -> Vec<Scope> {
    stored
        .split_whitespace()
        .filter_map(|s| Scope::parse(s).ok())
        .collect()
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const KEY_COLUMNS: &str =
    "id, account_id, name, prefix, scopes, created_at, last_used_at, revoked_at";

fn key_from_row(row: &AnyRow) -> Result<ApiKey> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        account_id: AccountId::trusted(row.try_get("account_id")?),
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: parse_scopes(&scopes),
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A key just created, with its secret: the only time the secret exists outside the caller.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// The account and key behind an authenticated request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: AccountId,
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub restricted_by: Option<RestrictedBy>,
    pub rate_limit_per_minute: Option<i64>,
}

fn hash_secret(secret: &str) -> String {
    super::secrets::sha256_hex(secret)
}

/// 256 random bits behind the recognisable prefix.
fn new_secret() -> String {
    format!("{KEY_PREFIX}{}", super::secrets::random_token())
}

/// Checks and inserts a new key for an existing account through `executor` (the pool, or a
/// transaction); returns its id and secret.
pub(super) async fn insert_key<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    account_id: &AccountId,
    name: &str,
    scopes: &[Scope],
) -> Result<(String, String)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(StoreError::Invalid(
            "a key's `name` must be 1 to 100 characters".into(),
        ));
    }
    check_string("name", name, Shape::Line)?;
    if scopes.is_empty() {
        return Err(StoreError::Invalid(
            "a key needs at least one scope: describe, read or manage".into(),
        ));
    }
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let stored_scopes = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let secret = new_secret();
    let id = new_id("key");
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, prefix, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(account_id.as_str())
    .bind(name)
    .bind(&secret[..SHOWN_CHARS])
    .bind(hash_secret(&secret))
    .bind(&stored_scopes)
    .bind(now_ms())
    .execute(executor)
    .await?;
    Ok((id, secret))
}

/// Serialises first starts on PostgreSQL (SQLite's `BEGIN IMMEDIATE` already does). Any constant
/// works, as long as nothing else in the database takes the same advisory lock.
const BOOTSTRAP_LOCK: i64 = 0x616c_7469_6d67_0001;

impl Store {
    /// The first start's account and key, created only when the database holds no account at
    /// all; `None` otherwise. The check and the creation are one transaction, serialised across
    /// replicas, so replicas starting together on an empty database create one account, not one
    /// each.
    pub async fn create_first_account(
        &self,
        new: NewAccount,
        key_name: &str,
        scopes: &[Scope],
    ) -> Result<Option<(Account, CreatedKey)>> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(BOOTSTRAP_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let accounts: i64 = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if accounts > 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let account_id = insert_account(&mut *tx, new).await?;
        let (key_id, secret) = insert_key(&mut *tx, &account_id, key_name, scopes).await?;
        let system = Actor::system();
        audit::record(
            &mut tx,
            &AuditEvent::new(Some(&account_id), &system, action::ACCOUNT_CREATED),
        )
        .await?;
        audit::record(
            &mut tx,
            &key_event(&account_id, &system, &key_id, key_name, scopes),
        )
        .await?;
        tx.commit().await?;
        let key = self.key(&account_id, &key_id).await?;
        Ok(Some((
            self.account(&account_id).await?,
            CreatedKey { key, secret },
        )))
    }

    pub async fn create_key(
        &self,
        account_id: &AccountId,
        name: &str,
        scopes: &[Scope],
        actor: &Actor,
    ) -> Result<CreatedKey> {
        let account = self.account(account_id).await?;
        if account.deleted_at.is_some() {
            return Err(StoreError::NotFound("account"));
        }
        let mut tx = self.begin_write().await?;
        let (id, secret) = insert_key(&mut *tx, account_id, name, scopes).await?;
        audit::record(&mut tx, &key_event(account_id, actor, &id, name, scopes)).await?;
        tx.commit().await?;
        let key = self.key(account_id, &id).await?;
        Ok(CreatedKey { key, secret })
    }

    pub async fn key(&self, account_id: &AccountId, key_id: &str) -> Result<ApiKey> {
        known_id(key_id, "key", "key")?;
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND account_id = $2"
        ))
        .bind(key_id)
        .bind(account_id.as_str())
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound("key"))?;
        key_from_row(&row)
    }

    pub async fn list_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKey>> {
        self.account(account_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY id"
        ))
        .bind(account_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key; the next request with it is refused (no cache stands in the way).
    pub async fn revoke_key(
        &self,
        account_id: &AccountId,
        key_id: &str,
        actor: &Actor,
    ) -> Result<ApiKey> {
        known_id(key_id, "key", "key")?;
        let mut tx = self.begin_write().await?;
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND account_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(key_id)
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Revoking again changes nothing and is not audited.
        if revoked == 1 {
            let event =
                AuditEvent::new(Some(account_id), actor, action::KEY_REVOKED).target(key_id);
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.key(account_id, key_id).await
    }

    /// The principal for a presented secret, or `None` when it is unknown, revoked, or its
    /// account is deleted. Looked up by hash, so the comparison leaks nothing about stored keys.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        if !secret.starts_with(KEY_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT k.id AS key_id, k.account_id, k.scopes, k.last_used_at, a.restricted_by, a.rate_limit_per_minute \
             FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL AND a.deleted_at IS NULL AND a.purged_at IS NULL",
        )
        .bind(hash_secret(secret))
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key_id: String = row.try_get("key_id")?;
        let last_used: Option<i64> = row.try_get("last_used_at")?;
        let now = now_ms();
        if last_used.is_none_or(|at| now - at >= LAST_USED_RESOLUTION_MS) {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&key_id)
                .execute(self.pool())
                .await?;
        }
        let scopes: String = row.try_get("scopes")?;
        let restricted_by: Option<String> = row.try_get("restricted_by")?;
        Ok(Some(Principal {
            account_id: AccountId::trusted(row.try_get("account_id")?),
            key_id,
            scopes: parse_scopes(&scopes),
            restricted_by: restricted_by.as_deref().and_then(RestrictedBy::parse),
            rate_limit_per_minute: row.try_get("rate_limit_per_minute")?,
        }))
    }
}

/// The audit event of a new key: its id, name and scopes (never the secret).
fn key_event(
    account_id: &AccountId,
    actor: &Actor,
    key_id: &str,
    name: &str,
    scopes: &[Scope],
) -> AuditEvent {
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    AuditEvent::new(Some(account_id), actor, action::KEY_CREATED)
        .target(key_id)
        .details(serde_json::json!({ "name": name.trim(), "scopes": scopes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = new_secret();
        let b = new_secret();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_refused() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()).unwrap(), scope);
        }
        assert!(Scope::parse("admin").is_err());
        assert_eq!(
            parse_scopes("describe read"),
            vec![Scope::Describe, Scope::Read]
        );
    }
}
