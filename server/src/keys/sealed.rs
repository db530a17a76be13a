//! Values sealed at rest (webhook signing secrets, TOTP secrets, account-mail
//! payloads): XChaCha20-Poly1305 under a key derived from the master secret, a random
//! 24-byte nonce, and the owning row's id as associated data (a sealed value copied
//! onto another row does not open). Stored form: `enc1:{kid}:{base64url(nonce ‖
//! ciphertext)}`, where `kid` ([`key_id`]) names the key, so values keep opening
//! across a master-secret rotation.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ServerKeys;

/// `kid` of a key: the first 8 bytes of its SHA-256, hex. Public, and says nothing about the key.
pub fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

const PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the value was sealed with a key that is no longer configured (kid {0})")]
    UnknownKey(String),
    #[error("the sealed value is malformed or was tampered with")]
    Corrupt,
    #[error("the sealing key has the wrong length")]
    BadKey,
}

/// The sealing key and the retired keys that still open.
pub struct SecretBox {
    current: (String, XChaCha20Poly1305),
    previous: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox").field("kid", &self.current.0).finish_non_exhaustive()
    }
}

fn cipher(key: &[u8]) -> Result<(String, XChaCha20Poly1305), SecretError> {
    let aead = XChaCha20Poly1305::new_from_slice(key).map_err(|_| SecretError::BadKey)?;
    Ok((key_id(key), aead))
}

impl SecretBox {
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Result<Self, SecretError> {
        Ok(Self {
            current: cipher(current)?,
            previous: previous.iter().map(|key| cipher(key)).collect::<Result<_, _>>()?,
        })
    }

    /// The box of webhook signing secrets.
    pub fn from_keys(keys: &ServerKeys) -> Result<Self, SecretError> {
        Self::new(&keys.webhook_secrets, &keys.previous_webhook_secrets)
    }

    /// Seal `secret` for the row `endpoint_id` (the associated data).
    pub fn seal(&self, endpoint_id: Uuid, secret: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload { msg: secret.as_bytes(), aad: endpoint_id.as_bytes() };
        let sealed = self.current.1.encrypt(&XNonce::from(nonce), payload).map_err(|_| SecretError::Corrupt)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob);
        Ok(format!("{PREFIX}{}:{encoded}", self.current.0))
    }

    /// The secret of a stored value: opened when sealed, as is when stored before sealing.
    pub fn open(&self, endpoint_id: Uuid, stored: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_string()) };
        let (kid, encoded) = rest.split_once(':').ok_or(SecretError::Corrupt)?;
        let aead = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(id, _)| id == kid)
            .map(|(_, aead)| aead)
            .ok_or_else(|| SecretError::UnknownKey(kid.to_string()))?;
        let blob =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| SecretError::Corrupt)?;
        if blob.len() < NONCE_LEN {
            return Err(SecretError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretError::Corrupt)?;
        let opened = aead
            .decrypt(&nonce, Payload { msg: sealed, aad: endpoint_id.as_bytes() })
            .map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(opened).map_err(|_| SecretError::Corrupt)
    }

    /// Sealed under the current key (nothing for the startup pass to do).
    pub fn is_current(&self, stored: &str) -> bool {
        stored.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':')).is_some_and(|(kid, _)| kid == self.current.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(key: u8, previous: &[u8]) -> SecretBox {
        let previous: Vec<Vec<u8>> = previous.iter().map(|k| vec![*k; 32]).collect();
        SecretBox::new(&[key; 32], &previous).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_for_their_endpoint_and_key() {
        let secrets = boxed(1, &[]);
        let id = Uuid::now_v7();
        let sealed = secrets.seal(id, "whsec_abc").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("whsec_abc"), "{sealed}");
        assert_ne!(sealed, secrets.seal(id, "whsec_abc").unwrap(), "a fresh nonce every time");
        assert_eq!(secrets.open(id, &sealed).unwrap(), "whsec_abc");
        assert!(matches!(secrets.open(Uuid::now_v7(), &sealed), Err(SecretError::Corrupt)), "moved to another row");
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(secrets.open(id, &tampered).is_err());
        assert!(matches!(boxed(2, &[]).open(id, &sealed), Err(SecretError::UnknownKey(_))));
        // After a rotation the retired key still opens, and the pass knows to re-seal.
        let rotated = boxed(2, &[1]);
        assert_eq!(rotated.open(id, &sealed).unwrap(), "whsec_abc");
        assert!(secrets.is_current(&sealed) && !rotated.is_current(&sealed));
    }

    #[test]
    fn secrets_stored_before_sealing_still_open() {
        let secrets = boxed(1, &[]);
        assert_eq!(secrets.open(Uuid::now_v7(), "whsec_legacy").unwrap(), "whsec_legacy");
        assert!(!secrets.is_current("whsec_legacy"));
    }
}
