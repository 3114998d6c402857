//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP, HMAC-SHA1, six digits, 30-second
//! steps) — what every authenticator app speaks — and the enrolment material: the secret in
//! base32, the `otpauth://` link and its QR code as inline SVG. Replay refusal is the store's
//! compare-and-set on the accepted step (`Store::accept_totp_step`).

use ring::hmac;

const STEP_SECS: u64 = 30;
const DIGITS: u32 = 6;
/// Steps either side of now that are accepted: clocks drift and people type slowly.
const SKEW_STEPS: u64 = 1;
pub const ISSUER: &str = "altimage";

/// A new 160-bit secret (RFC 4226's recommended length).
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    getrandom::fill(&mut secret).expect("the OS random source failed");
    secret
}

/// HOTP: the code for one counter value.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let digest = tag.as_ref();
    let offset = (digest[digest.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 10u32.pow(DIGITS)
}

pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The code for a moment, zero-padded.
pub fn code_at(secret: &[u8], unix_secs: u64) -> String {
    format!("{:06}", hotp(secret, step_at(unix_secs)))
}

/// The step a typed code matches (now, or one step either side), if any. Spaces are allowed
/// (apps show codes as "123 456"); anything but six digits matches nothing.
pub fn matching_step(secret: &[u8], typed: &str, unix_secs: u64) -> Option<u64> {
    let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let typed: u32 = digits.parse().ok()?;
    let now = step_at(unix_secs);
    (now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS)
        .rev()
        .find(|&step| constant_time_eq(hotp(secret, step), typed))
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    use subtle::ConstantTimeEq as _;
    a.to_be_bytes().ct_eq(&b.to_be_bytes()).into()
}

/// RFC 4648 base32 without padding: how authenticator apps take a secret typed by hand.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The secret in groups of four, for reading aloud or typing.
pub fn grouped(base32: &str) -> String {
    base32
        .as_bytes()
        .chunks(4)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Key URI Format authenticator apps read from the QR code.
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    let label = percent_encode(&format!("{ISSUER}:{account}"));
    format!(
        "otpauth://totp/{label}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        base32(secret)
    )
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The link as a QR code, an `<svg>` element to inline in the page (no image request, so the
/// strict CSP needs no `data:`).
pub fn qr_svg(uri: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    // The renderer writes a whole document; the page wants the element.
    let element = svg.find("<svg").map_or(svg.as_str(), |start| &svg[start..]);
    element.replacen(
        "<svg",
        "<svg role=\"img\" aria-label=\"QR code of the setup link\"",
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1, truncated to six digits.
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(code_at(secret, time), code, "at {time}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_its_neighbours_only() {
        let secret = new_secret();
        let now = 1_700_000_000;
        let code = code_at(&secret, now);
        assert_eq!(matching_step(&secret, &code, now), Some(step_at(now)));
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(matching_step(&secret, &spaced, now), Some(step_at(now)));
        assert_eq!(matching_step(&secret, &code, now + 30), Some(step_at(now)));
        assert_eq!(matching_step(&secret, &code, now + 95), None);
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "12345a", now), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(grouped("MZXW6YTBOI"), "MZXW 6YTB OI");
        let uri = otpauth_uri(b"foobar", "ann@example.com");
        assert!(
            uri.starts_with("otpauth://totp/altimage%3Aann@example.com?secret=MZXW6YTBOI"),
            "{uri}"
        );
        let svg = qr_svg(&uri);
        assert!(svg.starts_with("<svg role=\"img\""), "{}", &svg[..60]);
    }
}
