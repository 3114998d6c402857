//! Per-account request rate limit (GCRA: a smooth bucket of `limit` requests per minute with a
//! burst of `limit`), and the `RateLimit-*` header values it yields. Kept per replica, in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests per minute for the account.
    pub limit: u64,
    /// Requests that could be made right now after this one.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// When refused: seconds until one request is allowed.
    pub retry_after_secs: u64,
}

/// One owner of every account's bucket state; the critical section is a map lookup and some
/// arithmetic, so a mutex is cheaper than a channel round trip.
pub struct RateLimiter {
    origin: Instant,
    /// Account id → theoretical arrival time (µs since `origin`).
    arrivals: Mutex<HashMap<String, u64>>,
}

const MINUTE_US: u64 = 60_000_000;

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter {
            origin: Instant::now(),
            arrivals: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, account_id: &str, limit_per_minute: u64) -> Decision {
        let now = self.origin.elapsed().as_micros() as u64;
        self.check_at(account_id, limit_per_minute, now)
    }

    fn check_at(&self, account_id: &str, limit: u64, now: u64) -> Decision {
        let limit = limit.max(1);
        let interval = MINUTE_US / limit;
        // A full bucket admits `limit` requests at once.
        let tolerance = interval * (limit - 1);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        if arrivals.len() > 100_000 {
            // Forget accounts whose bucket is full again: they are indistinguishable from new.
            arrivals.retain(|_, arrival| *arrival > now);
        }
        let arrival = arrivals.get(account_id).copied().unwrap_or(now).max(now);
        if arrival - now > tolerance {
            let wait = arrival - now - tolerance;
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_secs: ceil_secs(arrival - now),
                retry_after_secs: ceil_secs(wait).max(1),
            };
        }
        let next = arrival + interval;
        arrivals.insert(account_id.to_string(), next);
        let used = next - now;
        Decision {
            allowed: true,
            limit,
            remaining: (interval * limit).saturating_sub(used) / interval,
            reset_secs: ceil_secs(used),
            retry_after_secs: 0,
        }
    }
}

fn ceil_secs(micros: u64) -> u64 {
    Duration::from_micros(micros).as_secs() + u64::from(!micros.is_multiple_of(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_the_limit_then_refuses() {
        let limiter = RateLimiter::new();
        for expected_remaining in (0..5).rev() {
            let decision = limiter.check_at("a", 5, 0);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
        }
        let refused = limiter.check_at("a", 5, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // One request is earned back every 12 s.
        assert_eq!(refused.retry_after_secs, 12);
        assert_eq!(refused.reset_secs, 60);
        // Another account is not affected.
        assert!(limiter.check_at("b", 5, 0).allowed);
    }

    #[test]
    fn requests_are_earned_back_over_time() {
        let limiter = RateLimiter::new();
        for _ in 0..5 {
            assert!(limiter.check_at("a", 5, 0).allowed);
        }
        assert!(!limiter.check_at("a", 5, 11_000_000).allowed);
        let after = limiter.check_at("a", 5, 12_000_000);
        assert!(after.allowed);
        assert_eq!(after.remaining, 0);
        // A minute of silence fills the bucket again.
        let later = limiter.check_at("a", 5, 200_000_000);
        assert!(later.allowed);
        assert_eq!(later.remaining, 4);
    }
}
