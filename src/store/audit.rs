//! The audit log: append-only security events (keys created and revoked, restriction, deletion,
//! exports, webhook-secret rotations, operator actions), each written with [`record`] in the
//! transaction of the change it records, so that a change without its event cannot be committed.
//! The database refuses any update but the purge's erasure of `ip`, `user_agent` and `actor_id`
//! (a trigger, migration 0008); retention deletes rows after 7 years, with the billing records.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::ids::AccountId;
use super::{Result, Store, StoreError, now_ms};

/// Who acted. `user` is a console login (the console writes those events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
    Operator,
    Stripe,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Operator => "operator",
            ActorKind::Stripe => "stripe",
            ActorKind::System => "system",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "user" => ActorKind::User,
            "api_key" => ActorKind::ApiKey,
            "operator" => ActorKind::Operator,
            "stripe" => ActorKind::Stripe,
            "system" => ActorKind::System,
            other => return Err(StoreError::Corrupt(format!("audit actor kind `{other}`"))),
        })
    }
}

/// Who did something, and from where (`ip` and `user_agent` only for callers over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    /// The key id (`api_key`), the user id (`user`), `admin_token` or `cli` (`operator`).
    pub id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    /// The server itself: the first start's bootstrap, the retention job.
    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            id: None,
            ip: None,
            user_agent: None,
        }
    }

    /// The operator through the command line, which opens the database directly.
    pub fn cli() -> Actor {
        Actor {
            kind: ActorKind::Operator,
            id: Some("cli".into()),
            ip: None,
            user_agent: None,
        }
    }

    /// Stripe, through its signed webhook.
    pub fn stripe() -> Actor {
        Actor {
            kind: ActorKind::Stripe,
            id: None,
            ip: None,
            user_agent: None,
        }
    }
}

/// The actions this server records; the console adds its own (`login.*`, `member.*`, …).
pub mod action {
    pub const ACCOUNT_CREATED: &str = "account.created";
    pub const ACCOUNT_UPDATED: &str = "account.updated";
    pub const ACCOUNT_RESTRICTED: &str = "account.restricted";
    pub const ACCOUNT_RESTRICTION_LIFTED: &str = "account.restriction_lifted";
    pub const ACCOUNT_DELETION_REQUESTED: &str = "account.deletion_requested";
    pub const ACCOUNT_PURGED: &str = "account.purged";
    pub const KEY_CREATED: &str = "key.created";
    pub const KEY_REVOKED: &str = "key.revoked";
    pub const EXPORT_DOWNLOADED: &str = "export.downloaded";
    pub const WEBHOOK_SECRET_ROTATED: &str = "webhook_secret.rotated";
    pub const CONSENT_OBJECTED: &str = "consent.objected";
    pub const CONSENT_GIVEN: &str = "consent.given";
    pub const BILLING_REPORT_RETRIED: &str = "billing.report_retried";
    pub const BILLING_CUSTOMER_DELETED: &str = "billing.customer_deleted";
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// The account it is about; `None` for operator events about no single account.
    pub account_id: Option<AccountId>,
    pub actor: Actor,
    /// `noun.verb`, e.g. [`action::KEY_CREATED`].
    pub action: String,
    /// What was acted on when it is not the account itself (a key id, a report id).
    pub target: Option<String>,
    /// The facts of the change, as a JSON object; never a secret.
    pub details: Value,
}

impl AuditEvent {
    pub fn new(account_id: Option<&AccountId>, actor: &Actor, action: &str) -> AuditEvent {
        AuditEvent {
            account_id: account_id.cloned(),
            actor: actor.clone(),
            action: action.to_string(),
            target: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> AuditEvent {
        self.target = Some(target.into());
        self
    }

    pub fn details(mut self, details: Value) -> AuditEvent {
        self.details = details;
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAuditEvent {
    pub id: String,
    pub account_id: Option<AccountId>,
    pub actor_kind: ActorKind,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Value,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, account_id, actor_kind, actor_id, action, target, ip, user_agent, details, created_at";

fn from_row(row: &AnyRow) -> Result<StoredAuditEvent> {
    let account_id: Option<String> = row.try_get("account_id")?;
    let details: Option<String> = row.try_get("details")?;
    Ok(StoredAuditEvent {
        id: row.try_get("id")?,
        account_id: account_id.map(AccountId::trusted),
        actor_kind: ActorKind::parse(&row.try_get::<String, _>("actor_kind")?)?,
        actor_id: row.try_get("actor_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        details: match details {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("audit event details: {e}")))?,
            None => Value::Null,
        },
        created_at: row.try_get("created_at")?,
    })
}

/// Appends `event` inside the caller's transaction, the one that makes the change it records;
/// returns its id (`aud_` and a UUIDv7, so ids sort by time). Usable by any module that holds a
/// write transaction of this store (the console's included).
pub async fn record(tx: &mut Transaction<'static, Any>, event: &AuditEvent) -> Result<String> {
    let id = super::new_id("aud");
    let details = serde_json::to_string(&event.details).expect("a JSON value serialises");
    sqlx::query(&format!(
        "INSERT INTO audit_events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(&id)
    .bind(event.account_id.as_ref().map(AccountId::as_str))
    .bind(event.actor.kind.as_str())
    .bind(event.actor.id.as_deref())
    .bind(&event.action)
    .bind(event.target.as_deref())
    .bind(event.actor.ip.as_deref())
    .bind(event.actor.user_agent.as_deref())
    .bind(details)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Which events a listing shows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub account_id: Option<&'a AccountId>,
    pub action: Option<&'a str>,
}

impl Store {
    /// Records an event that goes with no change of its own (an export was downloaded).
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<String> {
        let mut tx = self.begin_write().await?;
        let id = record(&mut tx, event).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Events newest first, after the cursor `starting_after` (an event id).
    pub async fn list_audit_events(
        &self,
        filter: AuditFilter<'_>,
        starting_after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<StoredAuditEvent>, bool)> {
        // One statement for every filter: a flag switches each absent condition off.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_events \
             WHERE ($1 = 0 OR account_id = $2) AND ($3 = 0 OR action = $4) AND ($5 = 0 OR id < $6) \
             ORDER BY id DESC LIMIT $7"
        ))
        .bind(i64::from(filter.account_id.is_some()))
        .bind(filter.account_id.map(AccountId::as_str).unwrap_or(""))
        .bind(i64::from(filter.action.is_some()))
        .bind(filter.action.unwrap_or(""))
        .bind(i64::from(starting_after.is_some()))
        .bind(starting_after.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let has_more = rows.len() as i64 > limit;
        let events = rows
            .iter()
            .take(limit as usize)
            .map(from_row)
            .collect::<Result<_>>()?;
        Ok((events, has_more))
    }

    /// An account's events oldest first after `after`, a page at a time (the account export).
    pub async fn audit_events_page(
        &self,
        account_id: &AccountId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredAuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(account_id.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }
}
