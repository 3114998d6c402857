//! Invitations to join an account: a hashed one-time token, mailed and shown for copying, with
//! a role no higher than the inviter's; claimed once by a compare-and-set that also makes the
//! membership, so two people racing with one link cannot both get in.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::ids::{AccountId, UserId};
use super::secrets::{random_token, sha256_hex};
use super::users::{NewUser, Role, insert_membership, insert_user, normalise_email};
use super::{Result, Store, StoreError, check_string, new_id, now_ms};
use crate::strings::Shape;

#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: String,
    pub account_id: AccountId,
    pub account_name: String,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Invitation {
    pub fn is_open(&self, now: i64) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Who claims an invitation: a user who already exists (logged in with the invited address),
/// or a new one.
pub enum Claimant {
    Existing(UserId),
    New(NewUser),
}

const COLUMNS: &str = "i.id, i.account_id, a.name, i.email, i.role, i.created_at, i.expires_at, i.accepted_at, i.revoked_at";

fn invitation_from_row(row: &AnyRow) -> Result<Invitation> {
    let role: String = row.try_get("role")?;
    Ok(Invitation {
        id: row.try_get("id")?,
        account_id: AccountId::trusted(row.try_get("account_id")?),
        account_name: row
            .try_get::<Option<String>, _>("name")?
            .unwrap_or_default(),
        email: row.try_get("email")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown role `{role}`")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        accepted_at: row.try_get("accepted_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// A new invitation; returns it with the raw token (the only copy).
    pub async fn create_invitation(
        &self,
        account_id: &AccountId,
        email: &str,
        role: Role,
        invited_by: &UserId,
        lifetime_ms: i64,
    ) -> Result<(Invitation, String)> {
        let email = normalise_email(email);
        if email.len() > 254 || !email.contains('@') {
            return Err(StoreError::Invalid(
                "enter the email address to invite".into(),
            ));
        }
        check_string("email", &email, Shape::Line)?;
        let member = sqlx::query(
            "SELECT 1 AS x FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 AND u.email = $2",
        )
        .bind(account_id.as_str())
        .bind(&email)
        .fetch_optional(self.pool())
        .await?;
        if member.is_some() {
            return Err(StoreError::Conflict(format!("{email} is already a member")));
        }
        let token = random_token();
        let id = new_id("inv");
        let now = now_ms();
        sqlx::query(
            "INSERT INTO invitations (id, account_id, email, role, token_hash, invited_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(account_id.as_str())
        .bind(&email)
        .bind(role.as_str())
        .bind(sha256_hex(&token))
        .bind(invited_by.as_str())
        .bind(now)
        .bind(now + lifetime_ms)
        .execute(self.pool())
        .await?;
        Ok((self.invitation(account_id, &id).await?, token))
    }

    pub async fn invitation(&self, account_id: &AccountId, id: &str) -> Result<Invitation> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN accounts a ON a.id = i.account_id WHERE i.id = $1 AND i.account_id = $2"
        ))
        .bind(id)
        .bind(account_id.as_str())
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound("invitation"))?;
        invitation_from_row(&row)
    }

    /// The invitation behind a link, whatever its state (the page explains an expired one).
    pub async fn invitation_by_token(&self, token: &str) -> Result<Option<Invitation>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN accounts a ON a.id = i.account_id WHERE i.token_hash = $1 AND a.deleted_at IS NULL"
        ))
        .bind(sha256_hex(token))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    /// The account's invitations still open, newest first.
    pub async fn open_invitations(&self, account_id: &AccountId) -> Result<Vec<Invitation>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN accounts a ON a.id = i.account_id WHERE i.account_id = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > $2 ORDER BY i.id DESC"
        ))
        .bind(account_id.as_str())
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(invitation_from_row).collect()
    }

    pub async fn revoke_invitation(&self, account_id: &AccountId, id: &str) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND account_id = $3 AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(account_id.as_str())
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("invitation"));
        }
        Ok(())
    }

    /// Claims an open invitation: marks it accepted (once), creates the user if new, and makes
    /// the membership, in one transaction. `None` when the link is no longer open (used,
    /// revoked, expired, or the other racer won).
    pub async fn claim_invitation(
        &self,
        token: &str,
        claimant: Claimant,
    ) -> Result<Option<(UserId, AccountId, Role)>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE invitations SET accepted_at = $1 WHERE token_hash = $2 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(sha256_hex(token))
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = sqlx::query("SELECT account_id, role FROM invitations WHERE token_hash = $1")
            .bind(sha256_hex(token))
            .fetch_one(&mut *tx)
            .await?;
        let account_id = AccountId::trusted(row.try_get("account_id")?);
        let role: String = row.try_get("role")?;
        let role = Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown role `{role}`")))?;
        let user_id = match claimant {
            Claimant::Existing(user_id) => user_id,
            Claimant::New(user) => insert_user(&mut *tx, &user, Some(now)).await?,
        };
        insert_membership(&mut *tx, &account_id, &user_id, role)
            .await
            .map_err(|error| match error {
                StoreError::Conflict(_) => {
                    StoreError::Conflict("you are already a member of this account".into())
                }
                other => other,
            })?;
        tx.commit().await?;
        Ok(Some((user_id, account_id, role)))
    }
}
