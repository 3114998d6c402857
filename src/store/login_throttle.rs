//! Failed logins counted in the database, so that every replica sees the same count: per user,
//! a wait that doubles after the fifth failure (up to a cap); per client address, a ceiling per
//! hour. No permanent lock-out: that would let anyone lock a user out.

use sqlx::Row;

use super::{Result, Store, now_ms};

/// The throttle's rules (the console's defaults are in `console::throttle`).
#[derive(Debug, Clone, Copy)]
pub struct ThrottleRule {
    /// Failures allowed within `window_ms` before waits begin.
    pub free_failures: i64,
    pub window_ms: i64,
    /// The first wait after the free failures; each further failure doubles it.
    pub first_wait_ms: i64,
    pub max_wait_ms: i64,
}

impl ThrottleRule {
    fn wait_after(&self, failures: i64) -> Option<i64> {
        let over = failures - self.free_failures;
        if over < 0 {
            return None;
        }
        let doubled = self.first_wait_ms.saturating_mul(1_i64 << over.min(40));
        Some(doubled.min(self.max_wait_ms))
    }
}

impl Store {
    /// When the key may try again, if it is blocked now.
    pub async fn blocked_until(&self, key: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT blocked_until FROM login_throttle WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        let until: Option<i64> = match row {
            Some(row) => row.try_get("blocked_until")?,
            None => None,
        };
        Ok(until.filter(|&until| until > now_ms()))
    }

    /// Counts a failure for `key`; returns when it is blocked until, if the failure blocks it.
    pub async fn record_login_failure(&self, key: &str, rule: ThrottleRule) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT window_start, failures FROM login_throttle WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let (window_start, failures) = match row {
            Some(row) => {
                let start: i64 = row.try_get("window_start")?;
                let failures: i64 = row.try_get("failures")?;
                if now - start > rule.window_ms {
                    (now, 1)
                } else {
                    (start, failures + 1)
                }
            }
            None => (now, 1),
        };
        let blocked_until = rule.wait_after(failures).map(|wait| now + wait);
        sqlx::query(
            "INSERT INTO login_throttle (key, window_start, failures, blocked_until) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, failures = excluded.failures, blocked_until = excluded.blocked_until",
        )
        .bind(key)
        .bind(window_start)
        .bind(failures)
        .bind(blocked_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(blocked_until)
    }

    /// A success forgets the user's failures (the address's ceiling stays: it guards against
    /// one client trying many users).
    pub async fn clear_login_failures(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_throttle WHERE key = $1")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        let rule = ThrottleRule {
            free_failures: 5,
            window_ms: 3_600_000,
            first_wait_ms: 1_000,
            max_wait_ms: 900_000,
        };
        assert_eq!(rule.wait_after(4), None);
        assert_eq!(rule.wait_after(5), Some(1_000));
        assert_eq!(rule.wait_after(6), Some(2_000));
        assert_eq!(rule.wait_after(9), Some(16_000));
        assert_eq!(rule.wait_after(30), Some(900_000));
        assert_eq!(rule.wait_after(10_000), Some(900_000));
    }
}
