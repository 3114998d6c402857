//! Random one-time secrets (session ids, email and invitation tokens, recovery codes) and the
//! SHA-256 form they are stored in: 256 random bits cannot be brute-forced, so a fast hash is
//! enough (a slow password hash is for the low-entropy secrets people choose).

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// 256 bits from the OS, URL-safe base64 without padding (43 characters).
pub fn random_token() -> String {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).expect("the OS random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
}

/// What is stored instead of a secret: SHA-256, lower-case hex.
pub fn sha256_hex(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}
