//! Webhook signatures: `Altimage-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the account's secret, as Stripe signs its own. A receiver recomputes it,
//! compares in constant time, and refuses a `t` too far from its clock (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

/// Whether `header` is a valid signature of `body` with `secret`, made within `tolerance_secs`
/// of `now` (what the README's receiver sample does).
pub fn verify(secret: &str, header: &str, body: &str, now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if (now - timestamp).abs() > tolerance_secs {
        return false;
    }
    let expected = hex(&mac(secret, timestamp, body));
    signatures.iter().any(|candidate| {
        use subtle::ConstantTimeEq;
        candidate.as_bytes().ct_eq(expected.as_bytes()).into()
    })
}

fn mac(secret: &str, timestamp: i64, body: &str) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let header = sign("whsec_a", 1_700_000_000, "{\"x\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify("whsec_a", &header, "{\"x\":1}", 1_700_000_100, 300));
        assert!(!verify("whsec_b", &header, "{\"x\":1}", 1_700_000_100, 300));
        assert!(!verify("whsec_a", &header, "{\"x\":2}", 1_700_000_100, 300));
        assert!(!verify("whsec_a", &header, "{\"x\":1}", 1_700_001_000, 300));
        // RFC 4231 test case 2: the HMAC itself is the standard one.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
