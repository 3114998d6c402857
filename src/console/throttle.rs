//! The console's throttling rules over the store's failure counts: per user (login and second
//! factor alike), waits that double after five failures, up to 15 minutes; per client address,
//! at most 100 failures an hour. Never a permanent lock-out.

use std::time::Duration;

use crate::store::Store;
use crate::store::login_throttle::ThrottleRule;

pub const PER_USER: ThrottleRule = ThrottleRule {
    free_failures: 5,
    window_ms: 60 * 60 * 1000,
    first_wait_ms: 1000,
    max_wait_ms: 15 * 60 * 1000,
};

pub const PER_ADDRESS: ThrottleRule = ThrottleRule {
    free_failures: 100,
    window_ms: 60 * 60 * 1000,
    first_wait_ms: 60 * 1000,
    max_wait_ms: 60 * 60 * 1000,
};

pub fn user_key(email: &str) -> String {
    format!("user:{}", crate::store::users::normalise_email(email))
}

pub fn address_key(ip: Option<&str>) -> Option<String> {
    ip.map(|ip| format!("ip:{ip}"))
}

/// How long until the first of `keys` that is blocked may try again.
pub async fn wait(
    store: &Store,
    keys: &[Option<String>],
) -> crate::store::Result<Option<Duration>> {
    let now = crate::store::now_ms();
    let mut longest = None;
    for key in keys.iter().flatten() {
        if let Some(until) = store.blocked_until(key).await? {
            let wait = Duration::from_millis((until - now).max(1000) as u64);
            longest = longest.max(Some(wait));
        }
    }
    Ok(longest)
}

/// Counts a failure against each key (the user's with the user rule, the address's with its).
pub async fn fail(store: &Store, user: &str, address: Option<&str>) -> crate::store::Result<()> {
    store.record_login_failure(user, PER_USER).await?;
    if let Some(address) = address {
        store.record_login_failure(address, PER_ADDRESS).await?;
    }
    Ok(())
}
