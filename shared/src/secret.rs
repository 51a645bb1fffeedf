//! Secrets as data: source secrets redacted in `Debug`, zeroed on drop, and the master key that
//! encrypts them at rest with AES-256-GCM.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64_URL;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A source secret exactly as the operator gave it (providers decide how to read it: Stripe uses
/// the `whsec_…` string as the key, Standard Webhooks base64-decodes what follows `whsec_`).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A fresh random secret: 32 random bytes, base64 without padding issues for copy-paste.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let s = B64.encode(bytes);
        bytes.zeroize();
        Self(s.into_bytes())
    }

    /// A fresh random secret safe to paste into a URL unencoded (Salesforce's `?token=`): 32
    /// random bytes as base64url without padding — no `+`, `/` or `=` that a query would mangle.
    pub fn generate_url_safe() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let s = B64_URL.encode(bytes);
        bytes.zeroize();
        Self(s.into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("is not valid base64 (make one with `hookline-worker keygen`)")]
    NotBase64,
    #[error("must decode to exactly 32 bytes, got {0} (make one with `hookline-worker keygen`)")]
    WrongLength(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("stored secret is too short to be an AES-GCM ciphertext")]
    Truncated,
    #[error(
        "stored secret cannot be decrypted with this HOOKLINE_SECRET_KEY (wrong key or tampered row)"
    )]
    Decrypt,
}

/// The master key (`HOOKLINE_SECRET_KEY`, base64 of 32 bytes).
#[derive(Clone, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

const NONCE_LEN: usize = 12;

impl SecretKey {
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let mut bytes = B64.decode(s.trim()).map_err(|_| KeyError::NotBase64)?;
        if bytes.len() != 32 {
            let n = bytes.len();
            bytes.zeroize();
            return Err(KeyError::WrongLength(n));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        bytes.zeroize();
        Ok(Self(key))
    }

    /// A new random key, base64-encoded, for `hookline-worker keygen`.
    pub fn generate_base64() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let s = B64.encode(key);
        key.zeroize();
        s
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0))
    }

    /// Encrypts `secret`, binding it to `context` (the source id) as associated data so a row's
    /// ciphertext cannot be moved to another source. Output: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, secret: &Secret, context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = aes_gcm::aead::Payload {
            msg: secret.expose(),
            aad: context.as_bytes(),
        };
        // Encryption with a valid key and a 12-byte nonce cannot fail for inputs under 64 GiB.
        let ct = self
            .cipher()
            .encrypt(&Nonce::from(nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Secret, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Truncated);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| SealError::Truncated)?;
        let payload = aes_gcm::aead::Payload {
            msg: ct,
            aad: context.as_bytes(),
        };
        self.cipher()
            .decrypt(&nonce, payload)
            .map(Secret)
            .map_err(|_| SealError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let s = Secret::from("whsec_abc");
        let sealed = key.seal(&s, "src_a");
        assert_eq!(key.open(&sealed, "src_a").unwrap(), s);
        assert!(matches!(
            key.open(&sealed, "src_b"),
            Err(SealError::Decrypt)
        ));
        let other = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        assert!(matches!(
            other.open(&sealed, "src_a"),
            Err(SealError::Decrypt)
        ));
        assert!(matches!(
            key.open(&sealed[..10], "src_a"),
            Err(SealError::Truncated)
        ));
    }

    #[test]
    fn key_errors_say_what_is_wrong() {
        assert!(matches!(
            SecretKey::from_base64("not base64!"),
            Err(KeyError::NotBase64)
        ));
        assert!(matches!(
            SecretKey::from_base64("AAAA"),
            Err(KeyError::WrongLength(3))
        ));
    }

    #[test]
    fn url_safe_secrets_survive_a_query_string() {
        for _ in 0..64 {
            let s = Secret::generate_url_safe();
            let text = std::str::from_utf8(s.expose()).unwrap();
            assert_eq!(text.len(), 43);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            let query = format!("token={text}");
            let (_, decoded) = form_urlencoded::parse(query.as_bytes()).next().unwrap();
            assert_eq!(decoded, text);
        }
    }

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
    }
}
