//! Console sessions in our own table: the cookie's value is never stored, only its SHA-256, so
//! a copy of the database cannot be replayed as cookies. Rows are deleted by user or account
//! when a password changes, a member is removed or an account is deleted — which is why this is
//! a table and not an opaque session blob.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::ids::{AccountId, UserId};
use super::secrets::{random_token, sha256_hex};
use super::{Result, Store, StoreError, now_ms};

/// How far a session has got through login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStage {
    /// The password was right; the second factor is still due.
    Password,
    /// The password was right and the account requires MFA the user has not set up yet.
    Enrol,
    /// Logged in.
    Full,
}

impl SessionStage {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStage::Password => "password",
            SessionStage::Enrol => "enrol",
            SessionStage::Full => "full",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "password" => Ok(SessionStage::Password),
            "enrol" => Ok(SessionStage::Enrol),
            "full" => Ok(SessionStage::Full),
            other => Err(StoreError::Corrupt(format!(
                "unknown session stage `{other}`"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// The stored form; also the handle the sessions page revokes by (it cannot be turned back
    /// into a cookie).
    pub id_hash: String,
    pub user_id: UserId,
    pub account_id: AccountId,
    pub stage: SessionStage,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub reauth_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What a new session is for and where it came from.
pub struct NewSession<'a> {
    pub user_id: &'a UserId,
    pub account_id: &'a AccountId,
    pub stage: SessionStage,
    /// Absolute lifetime in milliseconds.
    pub lifetime_ms: i64,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

const COLUMNS: &str = "id_hash, user_id, account_id, stage, csrf_token, created_at, last_seen_at, expires_at, reauth_at, ip, user_agent";

fn session_from_row(row: &AnyRow) -> Result<ConsoleSession> {
    Ok(ConsoleSession {
        id_hash: row.try_get("id_hash")?,
        user_id: UserId::trusted(row.try_get("user_id")?),
        account_id: AccountId::trusted(row.try_get("account_id")?),
        stage: SessionStage::parse(&row.try_get::<String, _>("stage")?)?,
        csrf_token: row.try_get("csrf_token")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        reauth_at: row.try_get("reauth_at")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
    })
}

/// Characters of a user agent kept: enough to recognise a browser in the sessions list.
const USER_AGENT_CHARS: usize = 200;

async fn insert<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    new: &NewSession<'_>,
) -> Result<String> {
    let cookie = random_token();
    let now = now_ms();
    let user_agent = new
        .user_agent
        .map(|agent| agent.chars().take(USER_AGENT_CHARS).collect::<String>());
    sqlx::query(&format!(
        "INSERT INTO console_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $6, $8, $9)"
    ))
    .bind(sha256_hex(&cookie))
    .bind(new.user_id.as_str())
    .bind(new.account_id.as_str())
    .bind(new.stage.as_str())
    .bind(random_token())
    .bind(now)
    .bind(now + new.lifetime_ms)
    .bind(new.ip)
    .bind(user_agent)
    .execute(executor)
    .await?;
    Ok(cookie)
}

impl Store {
    /// A new session; returns the cookie's value (the only copy).
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<String> {
        insert(self.pool(), new).await
    }

    /// Replaces a session by a new one (new id, new CSRF token) in one transaction: at each step
    /// of login and at every change of privilege, so an id planted or seen before cannot ride
    /// along (session fixation).
    pub async fn rotate_session(&self, old_cookie: &str, new: &NewSession<'_>) -> Result<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(sha256_hex(old_cookie))
            .execute(&mut *tx)
            .await?;
        let cookie = insert(&mut *tx, new).await?;
        tx.commit().await?;
        Ok(cookie)
    }

    /// The live session behind a cookie: `None` when unknown, past its absolute lifetime or idle
    /// for longer than `idle_ms` (an expired row is deleted on the way).
    pub async fn live_session(&self, cookie: &str, idle_ms: i64) -> Result<Option<ConsoleSession>> {
        let id_hash = sha256_hex(cookie);
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM console_sessions WHERE id_hash = $1"
        ))
        .bind(&id_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let session = session_from_row(&row)?;
        let now = now_ms();
        if now >= session.expires_at || now >= session.last_seen_at + idle_ms {
            self.delete_session_by_hash(&id_hash).await?;
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Marks a session used, at most once per `resolution_ms`, so that most requests stay reads.
    pub async fn touch_session(&self, session: &ConsoleSession, resolution_ms: i64) -> Result<()> {
        let now = now_ms();
        if now - session.last_seen_at < resolution_ms {
            return Ok(());
        }
        sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(&session.id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a fresh check of the password or a second factor (for sensitive actions).
    pub async fn mark_reauthenticated(&self, session: &ConsoleSession) -> Result<()> {
        sqlx::query("UPDATE console_sessions SET reauth_at = $1 WHERE id_hash = $2")
            .bind(now_ms())
            .bind(&session.id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_session_by_hash(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Revokes one of the user's own sessions; false when it is not theirs (or gone).
    pub async fn revoke_user_session(&self, user_id: &UserId, id_hash: &str) -> Result<bool> {
        let deleted =
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1 AND user_id = $2")
                .bind(id_hash)
                .bind(user_id.as_str())
                .execute(self.pool())
                .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Ends every session of the user but `keep` (the one asking, if any).
    pub async fn revoke_other_sessions(&self, user_id: &UserId, keep: Option<&str>) -> Result<u64> {
        let deleted =
            sqlx::query("DELETE FROM console_sessions WHERE user_id = $1 AND id_hash <> $2")
                .bind(user_id.as_str())
                .bind(keep.unwrap_or(""))
                .execute(self.pool())
                .await?;
        Ok(deleted.rows_affected())
    }

    /// Ends every session in the account (deletion, restriction by the operator).
    pub async fn revoke_account_sessions(&self, account_id: &AccountId) -> Result<u64> {
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE account_id = $1")
            .bind(account_id.as_str())
            .execute(self.pool())
            .await?;
        Ok(deleted.rows_affected())
    }

    /// The user's sessions that have not expired, newest first.
    pub async fn user_sessions(&self, user_id: &UserId) -> Result<Vec<ConsoleSession>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM console_sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC"
        ))
        .bind(user_id.as_str())
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session_from_row).collect()
    }
}
