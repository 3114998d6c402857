//! The review state of descriptions: what a person decided (approved or rejected), who and
//! when. An edit sends a description back to `unreviewed`: an approval covers the words that
//! were approved, not the ones that replaced them.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::ids::{AccountId, DescriptionId};
use super::{Result, Store, StoreError, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Nobody has decided yet (every new description, and every edited one).
    Unreviewed,
    /// Fit to publish.
    Approved,
    /// Not fit to publish.
    Rejected,
}

impl ReviewStatus {
    pub const ALL: [ReviewStatus; 3] = [
        ReviewStatus::Unreviewed,
        ReviewStatus::Approved,
        ReviewStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Unreviewed => "unreviewed",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }
}

/// A description's review state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    pub status: ReviewStatus,
    /// A user id (`usr_…`) for a decision in the console, a key id (`key_…`) for one through
    /// the API.
    pub by: Option<String>,
    pub at: Option<i64>,
}

pub(crate) fn review_from_row(row: &AnyRow) -> Result<Review> {
    let status: String = row.try_get("review_status")?;
    Ok(Review {
        status: ReviewStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("review status `{status}`")))?,
        by: row.try_get("reviewed_by")?,
        at: row.try_get("reviewed_at")?,
    })
}

/// Which descriptions a bulk decision leaves alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReviewGuard {
    /// Skip those whose worst lint finding is an error (approving them is usually a mistake;
    /// the caller can say it is not).
    pub skip_lint_errors: bool,
}

/// What a bulk decision did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewOutcome {
    pub changed: Vec<DescriptionId>,
    /// Left alone by the guard.
    pub skipped: Vec<DescriptionId>,
    /// Not the account's (or gone).
    pub not_found: Vec<DescriptionId>,
}

impl Store {
    /// Sets the review state of the account's descriptions `ids`, in one transaction.
    pub async fn set_review(
        &self,
        account_id: &AccountId,
        ids: &[DescriptionId],
        status: ReviewStatus,
        by: &str,
        guard: ReviewGuard,
    ) -> Result<ReviewOutcome> {
        let now = now_ms();
        let mut outcome = ReviewOutcome::default();
        let mut tx = self.begin_write().await?;
        for id in ids {
            let row = sqlx::query(
                "SELECT lint_level FROM descriptions WHERE id = $1 AND account_id = $2",
            )
            .bind(id.as_str())
            .bind(account_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                outcome.not_found.push(id.clone());
                continue;
            };
            let lint_level: Option<i64> = row.try_get("lint_level")?;
            if status == ReviewStatus::Approved
                && guard.skip_lint_errors
                && lint_level.is_some_and(|level| level >= 3)
            {
                outcome.skipped.push(id.clone());
                continue;
            }
            let (by, at) = match status {
                ReviewStatus::Unreviewed => (None, None),
                _ => (Some(by), Some(now)),
            };
            sqlx::query(
                "UPDATE descriptions SET review_status = $1, reviewed_by = $2, reviewed_at = $3 WHERE id = $4 AND account_id = $5",
            )
            .bind(status.as_str())
            .bind(by)
            .bind(at)
            .bind(id.as_str())
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?;
            outcome.changed.push(id.clone());
        }
        tx.commit().await?;
        Ok(outcome)
    }
}
