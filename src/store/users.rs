//! People who log in to the console: users, the accounts they belong to with a role
//! (memberships), their second factor (the sealed TOTP secret, the replay guard, recovery codes).
//! Passwords arrive already hashed: hashing is the console's job, off the async workers.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::accounts::{NewAccount, insert_account};
use super::ids::{AccountId, UserId};
use super::secrets::sha256_hex;
use super::{Result, Store, StoreError, check_string, now_ms};
use crate::strings::Shape;

/// What a member may do in an account; the console's capability table reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == value)
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub email_verified_at: Option<i64>,
    /// Sealed with the console key; the console opens it.
    pub totp_secret: Option<String>,
    pub mfa_enrolled_at: Option<i64>,
    pub last_account_id: Option<AccountId>,
    pub created_at: i64,
}

/// A user's place in one account.
#[derive(Debug, Clone)]
pub struct Membership {
    pub account_id: AccountId,
    pub account_name: String,
    pub role: Role,
}

/// A member as the account's members page shows them.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: UserId,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub mfa_enrolled: bool,
    pub joined_at: i64,
}

pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password_hash: String,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, email_verified_at, totp_secret, mfa_enrolled_at, last_account_id, created_at";

fn user_from_row(row: &AnyRow) -> Result<User> {
    let last_account: Option<String> = row.try_get("last_account_id")?;
    Ok(User {
        id: UserId::trusted(row.try_get("id")?),
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        email_verified_at: row.try_get("email_verified_at")?,
        totp_secret: row.try_get("totp_secret")?,
        mfa_enrolled_at: row.try_get("mfa_enrolled_at")?,
        last_account_id: last_account.map(AccountId::trusted),
        created_at: row.try_get("created_at")?,
    })
}

fn parse_role(value: &str) -> Result<Role> {
    Role::parse(value).ok_or_else(|| StoreError::Corrupt(format!("unknown role `{value}`")))
}

/// The form emails are stored and looked up in.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn check_user(new: &NewUser) -> Result<()> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(StoreError::Invalid(
            "the name must be 1 to 200 characters".into(),
        ));
    }
    check_string("name", name, Shape::Line)?;
    let email = normalise_email(&new.email);
    let (local, domain) = email.split_once('@').unwrap_or(("", ""));
    if email.len() > 254 || local.is_empty() || !domain.contains('.') || domain.ends_with('.') {
        return Err(StoreError::Invalid(
            "enter an email address such as name@example.com".into(),
        ));
    }
    check_string("email", &email, Shape::Line)
}

pub(super) async fn insert_user<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    new: &NewUser,
    verified_at: Option<i64>,
) -> Result<UserId> {
    check_user(new)?;
    let id = UserId::generate();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, email_verified_at, created_at, password_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id.as_str())
    .bind(normalise_email(&new.email))
    .bind(new.name.trim())
    .bind(&new.password_hash)
    .bind(verified_at)
    .bind(now)
    .execute(executor)
    .await
    .map_err(|error| match StoreError::from(error) {
        StoreError::Conflict(_) => StoreError::Conflict("a user with this email exists".into()),
        other => other,
    })?;
    Ok(id)
}

pub(super) async fn insert_membership<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    account_id: &AccountId,
    user_id: &UserId,
    role: Role,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (account_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(account_id.as_str())
    .bind(user_id.as_str())
    .bind(role.as_str())
    .bind(now_ms())
    .execute(executor)
    .await?;
    Ok(())
}

impl Store {
    /// Sign-up: the user, a new account they own, together. `verified` for an owner the operator
    /// creates from the command line (they vouch for the address).
    pub async fn create_user_with_account(
        &self,
        user: NewUser,
        company: Option<String>,
        verified: bool,
    ) -> Result<(UserId, AccountId)> {
        check_user(&user)?;
        let company = company
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        if let Some(company) = &company {
            if company.chars().count() > 200 {
                return Err(StoreError::Invalid(
                    "the company must be at most 200 characters".into(),
                ));
            }
            check_string("company", company, Shape::Line)?;
        }
        let mut tx = self.begin_write().await?;
        let account_id = insert_account(
            &mut *tx,
            NewAccount {
                name: company
                    .clone()
                    .unwrap_or_else(|| user.name.trim().to_string()),
                email: normalise_email(&user.email),
                stripe_customer_id: None,
                rate_limit_per_minute: None,
            },
        )
        .await?;
        sqlx::query("UPDATE accounts SET company = $1 WHERE id = $2")
            .bind(&company)
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?;
        let user_id = insert_user(&mut *tx, &user, verified.then(now_ms)).await?;
        insert_membership(&mut *tx, &account_id, &user_id, Role::Owner).await?;
        sqlx::query("UPDATE users SET last_account_id = $1 WHERE id = $2")
            .bind(account_id.as_str())
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((user_id, account_id))
    }

    pub async fn user(&self, id: &UserId) -> Result<User> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        user_from_row(&row)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(normalise_email(email))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn mark_email_verified(&self, id: &UserId) -> Result<()> {
        sqlx::query(
            "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL",
        )
        .bind(now_ms())
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A new password ends every session of the user (a reset is often a takeover's cure).
    pub async fn set_password(&self, id: &UserId, password_hash: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now_ms())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Enrolment: the sealed secret, the step of the code that proved it (so that code cannot be
    /// used again), and fresh recovery codes (their hashes), in one transaction.
    pub async fn enrol_totp(
        &self,
        id: &UserId,
        sealed_secret: &str,
        step: u64,
        recovery_codes: &[String],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_last_step = $2, mfa_enrolled_at = $3 WHERE id = $4",
        )
        .bind(sealed_secret)
        .bind(step as i64)
        .bind(now_ms())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        for code in recovery_codes {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(id.as_str())
                .bind(sha256_hex(code))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Accepts a TOTP time step once: only a step later than the last accepted one passes, by a
    /// compare-and-set, so a code seen over a shoulder or replayed by a second request fails
    /// even when two requests race.
    pub async fn accept_totp_step(&self, id: &UserId, step: u64) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step as i64)
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Uses a recovery code once; false when it is unknown or used.
    pub async fn use_recovery_code(&self, id: &UserId, code: &str) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now_ms())
        .bind(id.as_str())
        .bind(sha256_hex(code))
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub async fn unused_recovery_codes(&self, id: &UserId) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(id.as_str())
        .fetch_one(self.pool())
        .await?
        .try_get("n")?)
    }

    /// The accounts a user belongs to that still exist, by name.
    pub async fn memberships(&self, user_id: &UserId) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT m.account_id, m.role, a.name FROM memberships m JOIN accounts a ON a.id = m.account_id WHERE m.user_id = $1 AND a.purged_at IS NULL ORDER BY a.name, m.account_id",
        )
        .bind(user_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Membership {
                    account_id: AccountId::trusted(row.try_get("account_id")?),
                    account_name: row
                        .try_get::<Option<String>, _>("name")?
                        .unwrap_or_default(),
                    role: parse_role(&row.try_get::<String, _>("role")?)?,
                })
            })
            .collect()
    }

    /// The user's role in the account, `None` when they are not a member.
    pub async fn role_in(&self, account_id: &AccountId, user_id: &UserId) -> Result<Option<Role>> {
        let row =
            sqlx::query("SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2")
                .bind(account_id.as_str())
                .bind(user_id.as_str())
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| parse_role(&row.try_get::<String, _>("role")?))
            .transpose()
    }

    pub async fn members(&self, account_id: &AccountId) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT u.id, u.name, u.email, u.mfa_enrolled_at, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 ORDER BY m.created_at, u.id",
        )
        .bind(account_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user_id: UserId::trusted(row.try_get("id")?),
                    name: row.try_get("name")?,
                    email: row.try_get("email")?,
                    role: parse_role(&row.try_get::<String, _>("role")?)?,
                    mfa_enrolled: row.try_get::<Option<i64>, _>("mfa_enrolled_at")?.is_some(),
                    joined_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Changes a member's role, or removes them (`None`); the member's sessions in the account
    /// end with it, so a demotion takes effect at once. The last owner can be neither demoted nor
    /// removed: an account always has someone who can delete it.
    pub async fn change_membership(
        &self,
        account_id: &AccountId,
        user_id: &UserId,
        role: Option<Role>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let current =
            sqlx::query("SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2")
                .bind(account_id.as_str())
                .bind(user_id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound("member"))?;
        let current = parse_role(&current.try_get::<String, _>("role")?)?;
        if current == Role::Owner && role != Some(Role::Owner) {
            let owners: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM memberships WHERE account_id = $1 AND role = 'owner'",
            )
            .bind(account_id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if owners <= 1 {
                return Err(StoreError::Invalid(
                    "the account's last owner cannot be removed or demoted: make another member an owner first".into(),
                ));
            }
        }
        match role {
            Some(role) => {
                sqlx::query(
                    "UPDATE memberships SET role = $1 WHERE account_id = $2 AND user_id = $3",
                )
                .bind(role.as_str())
                .bind(account_id.as_str())
                .bind(user_id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM memberships WHERE account_id = $1 AND user_id = $2")
                    .bind(account_id.as_str())
                    .bind(user_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM console_sessions WHERE account_id = $1 AND user_id = $2")
            .bind(account_id.as_str())
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_last_account(&self, user_id: &UserId, account_id: &AccountId) -> Result<()> {
        sqlx::query("UPDATE users SET last_account_id = $1 WHERE id = $2")
            .bind(account_id.as_str())
            .bind(user_id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
