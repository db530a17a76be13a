//! Webhook signing secrets at rest.
//!
//! The server signs every delivery with the endpoint's secret, so the secret cannot
//! be hashed; it is sealed instead, with XChaCha20-Poly1305 under a key derived from
//! the master secret (`keys::ServerKeys::webhook_secrets`), a random 24-byte nonce,
//! and the endpoint id as associated data (a sealed secret copied onto another row
//! does not open). Stored form: `enc1:{kid}:{base64url(nonce ‖ ciphertext)}`, where
//! `kid` names the key, so a database dump alone gives nothing away and secrets keep
//! opening across a master-secret rotation (keys of `auth.previous_jwt_secrets`).
//!
//! **Existing rows.** A value without the `enc1:` prefix is a secret stored before
//! sealing and is used as is, so nothing breaks while old rows remain; every `serve`
//! process runs [`seal_stored_secrets`] at startup, which seals such rows (and
//! re-seals rows sealed under a retired key) with conditional updates, so replicas
//! starting together do not fight.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use entities::webhook_endpoint;
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::keys::ServerKeys;

const PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the webhook secret was sealed with a key that is no longer configured (kid {0})")]
    UnknownKey(String),
    #[error("the stored webhook secret is malformed or was tampered with")]
    Corrupt,
    #[error("the webhook secret key has the wrong length")]
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
    Ok((crate::auth::tokens::key_id(key), aead))
}

impl SecretBox {
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Result<Self, SecretError> {
        Ok(Self {
            current: cipher(current)?,
            previous: previous.iter().map(|key| cipher(key)).collect::<Result<_, _>>()?,
        })
    }

    pub fn from_keys(keys: &ServerKeys) -> Result<Self, SecretError> {
        Self::new(&keys.webhook_secrets, &keys.previous_webhook_secrets)
    }

    /// Seal `secret` for the endpoint `endpoint_id`.
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

/// Seal every secret stored in plain text, and re-seal those sealed under a retired
/// key; returns how many rows changed. Each update is conditional on the value read,
/// so concurrent passes (replicas starting together) leave one sealed value.
pub async fn seal_stored_secrets(db: &DatabaseConnection, secrets: &SecretBox) -> Result<u64, DbErr> {
    let rows = webhook_endpoint::Entity::find().all(db).await?;
    let mut changed = 0;
    for row in rows.into_iter().filter(|row| !secrets.is_current(&row.secret)) {
        let sealed = match secrets.open(row.id, &row.secret).and_then(|plain| secrets.seal(row.id, &plain)) {
            Ok(sealed) => sealed,
            Err(err) => {
                tracing::warn!(endpoint_id = %row.id, error = %err, "webhook secret left as stored");
                continue;
            }
        };
        changed += webhook_endpoint::Entity::update_many()
            .col_expr(webhook_endpoint::Column::Secret, Expr::value(sealed))
            .filter(webhook_endpoint::Column::Id.eq(row.id))
            .filter(webhook_endpoint::Column::Secret.eq(row.secret))
            .exec(db)
            .await?
            .rows_affected;
    }
    if changed > 0 {
        tracing::info!(changed, "sealed stored webhook secrets under the current key");
    }
    Ok(changed)
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
