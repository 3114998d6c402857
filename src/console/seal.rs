//! Secrets the console must read back (TOTP secrets) are sealed with AES-256-GCM under the
//! console key, bound to the row they belong to (the user id as associated data, so a sealed
//! value copied onto another user does not open). The key lives in a file the operator backs up
//! with the database: losing it locks every member out of their second factor.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The key and a short id derived from it, written into each sealed value so that a value sealed
/// under another key is recognised as such instead of failing as "corrupt".
pub struct SealKey {
    key: LessSafeKey,
    id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "sealed under another console key (`{0}`): restore the console key file it was sealed with"
    )]
    OtherKey(String),
    #[error("a sealed value is damaged")]
    Damaged,
}

impl SealKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SealKey {
        let id = crate::store::secrets::sha256_hex(&hex(&bytes))[..8].to_string();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32-byte key"));
        SealKey { key, id }
    }

    /// Reads the key file (64 hex digits), creating it owner-only with a new random key when it
    /// does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<SealKey> {
        use anyhow::Context as _;
        if !path.exists() {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the OS random source failed");
            write_owner_only(path, &hex(&bytes)).with_context(|| {
                format!(
                    "cannot create the console key file {} (--console-secret-file)",
                    path.display()
                )
            })?;
            tracing::info!(path = %path.display(), "created the console key: back it up with the database, it seals every member's second factor");
        }
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the console key file {} (--console-secret-file)",
                path.display()
            )
        })?;
        let text = text.trim();
        let bytes = (text.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten()
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the console key file {} must hold 64 hex digits (256 bits); make one with `openssl rand -hex 32` (--console-secret-file)",
                    path.display()
                )
            })?;
        Ok(SealKey::from_bytes(bytes.try_into().expect("32 bytes")))
    }

    /// `v1.<key id>.<base64(nonce ‖ ciphertext ‖ tag)>`.
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source failed");
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_to.as_bytes()),
                &mut in_out,
            )
            .expect("AES-GCM sealing does not fail for small inputs");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        format!(
            "v1.{}.{}",
            self.id,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(sealed)
        )
    }

    pub fn open(&self, sealed: &str, bound_to: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Damaged);
        };
        if key_id != self.id {
            return Err(SealError::OtherKey(key_id.to_string()));
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Damaged)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Damaged);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let mut in_out = ciphertext.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Damaged)?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(bound_to.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Damaged)?;
        Ok(plaintext.to_vec())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let key = SealKey::from_bytes([7; 32]);
        let sealed = key.seal(b"JBSWY3DPEHPK3PXP", "usr_1");
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(key.open(&sealed, "usr_1").unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(matches!(
            key.open(&sealed, "usr_2"),
            Err(SealError::Damaged)
        ));
        let other = SealKey::from_bytes([8; 32]);
        assert!(matches!(
            other.open(&sealed, "usr_1"),
            Err(SealError::OtherKey(_))
        ));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(key.open(&tampered, "usr_1").is_err());
        assert_ne!(key.seal(b"x", "u"), key.seal(b"x", "u"), "nonces are fresh");
    }

    #[test]
    fn the_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console-secret");
        let first = SealKey::load_or_create(&path).unwrap();
        let sealed = first.seal(b"secret", "u");
        let again = SealKey::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, "u").unwrap(), b"secret");
        std::fs::write(&path, "not hex").unwrap();
        let error = SealKey::load_or_create(&path).err().unwrap().to_string();
        assert!(error.contains("--console-secret-file"), "{error}");
    }
}
