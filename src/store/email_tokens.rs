//! One-time links sent by email: verify an address, reset a password. Stored as hashes, each
//! used once (a compare-and-set), each with an expiry.

use sqlx::Row;

use super::ids::UserId;
use super::secrets::{random_token, sha256_hex};
use super::{Result, Store, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    Verify,
    Reset,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Verify => "verify",
            TokenPurpose::Reset => "reset",
        }
    }
}

impl Store {
    /// A new token for `user` (the raw value goes into the mail, only its hash is kept). A
    /// reset also voids the user's earlier unused reset links: only the newest one works.
    pub async fn create_email_token(
        &self,
        user_id: &UserId,
        purpose: TokenPurpose,
        lifetime_ms: i64,
    ) -> Result<String> {
        let token = random_token();
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user_id.as_str())
        .bind(purpose.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO email_tokens (token_hash, user_id, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256_hex(&token))
        .bind(user_id.as_str())
        .bind(purpose.as_str())
        .bind(now)
        .bind(now + lifetime_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Uses a token: the user it was for, once, before it expires; `None` otherwise (unknown,
    /// used, expired or for another purpose — the caller says the same in every case).
    pub async fn consume_email_token(
        &self,
        token: &str,
        purpose: TokenPurpose,
    ) -> Result<Option<UserId>> {
        let now = now_ms();
        let hash = sha256_hex(token);
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT user_id FROM email_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(&hash)
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let user_id = UserId::trusted(row.try_get("user_id")?);
        let claimed = sqlx::query(
            "UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((claimed.rows_affected() == 1).then_some(user_id))
    }
}
