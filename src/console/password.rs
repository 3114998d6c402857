//! Passwords: the policy (length, not a known-bad password; no composition rules, after NIST
//! SP 800-63B), and argon2id hashing on the blocking pool with a bound on how many run at once
//! (each holds 19 MiB and tens of milliseconds of a core). Unknown emails are checked against a
//! dummy hash so the answer's timing does not tell which emails have users.

use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use tokio::sync::Semaphore;

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;

/// Passwords long enough to pass the length rule that are still among the first an attacker
/// tries (from public breach lists). A short list: the length rule does most of the work.
const KNOWN_BAD: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789abc",
    "1q2w3e4r5t6y",
    "1qaz2wsx3edc",
    "aaaaaaaaaaaa",
    "abc123abc123",
    "abcdefghijkl",
    "iloveyou1234",
    "letmeinletmein",
    "password1234",
    "password12345",
    "password123456",
    "passwordpassword",
    "qwerty123456",
    "qwertyuiop12",
    "qwertyuiop123",
    "qwertyuiopasdfgh",
    "welcome12345",
    "changeme1234",
    "administrator",
    "altimage1234",
    "correcthorsebatterystaple",
];

/// Why a new password is refused, in words for the form.
pub fn check_new(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(format!(
            "Use at least {MIN_CHARS} characters; a few words together are easy to remember."
        ));
    }
    if chars > MAX_CHARS {
        return Err(format!("Use at most {MAX_CHARS} characters."));
    }
    let lower = password.to_lowercase();
    let first = lower.chars().next();
    if KNOWN_BAD.contains(&lower.as_str()) || lower.chars().all(|c| Some(c) == first) {
        return Err("This password is among the first that attackers try; choose another.".into());
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.len() >= 4 && lower.contains(&local) {
        return Err("Do not use your email address in your password.".into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the stored password hash cannot be read: {0}")]
    BadHash(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies with argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane).
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

/// A hash of a random password, checked against when the email is unknown.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_now(&crate::store::secrets::random_token()).expect("hashing a random password")
});

fn hash_now(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source failed");
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn verify_now(password: &str, stored: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored).map_err(|e| PasswordError::BadHash(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

impl Passwords {
    /// `concurrency`: hashes at once (memory: 19 MiB each).
    pub fn new(concurrency: usize) -> Passwords {
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?
    }

    /// Whether `password` matches `stored`; with `None` (no such user) it checks a dummy hash
    /// and answers false, taking as long as a real check.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || match stored {
            Some(stored) => verify_now(&password, &stored),
            None => verify_now(&password, &DUMMY_HASH).map(|_| false),
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_length_and_known_bad_passwords() {
        assert!(check_new("short", "a@b.co").is_err());
        assert!(check_new("password1234", "a@b.co").is_err());
        assert!(check_new("zzzzzzzzzzzzzz", "a@b.co").is_err());
        assert!(check_new("annika.berg-2026!", "annika.berg@shop.example").is_err());
        assert!(check_new(&"x".repeat(129), "a@b.co").is_err());
        assert!(check_new("lantern orbit meadow", "a@b.co").is_ok());
        assert!(check_new("ünïcödé-wörds-ok", "a@b.co").is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_and_the_format_is_argon2id() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("lantern orbit meadow".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("lantern orbit meadow".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("lantern orbit meadoW".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("anything".into(), None).await.unwrap());
        assert!(
            passwords
                .verify("x".into(), Some("not a hash".into()))
                .await
                .is_err()
        );
    }
}
