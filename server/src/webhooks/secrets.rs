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

use sea_orm::{DatabaseConnection, DbErr};

pub use crate::keys::sealed::{SecretBox, SecretError};

/// Seal every secret stored in plain text, and re-seal those sealed under a retired
/// key; returns how many rows changed. Each update is conditional on the value read,
/// so concurrent passes (replicas starting together) leave one sealed value.
pub async fn seal_stored_secrets(db: &DatabaseConnection, secrets: &SecretBox) -> Result<u64, DbErr> {
    let rows = crate::repo::webhooks::all(db).await?;
    let mut changed = 0;
    for row in rows.into_iter().filter(|row| !secrets.is_current(&row.secret)) {
        let sealed = match secrets.open(row.id, &row.secret).and_then(|plain| secrets.seal(row.id, &plain)) {
            Ok(sealed) => sealed,
            Err(err) => {
                tracing::warn!(endpoint_id = %row.id, error = %err, "webhook secret left as stored");
                continue;
            }
        };
        changed += crate::repo::webhooks::replace_secret(db, row.id, &row.secret, sealed).await?;
    }
    if changed > 0 {
        tracing::info!(changed, "sealed stored webhook secrets under the current key");
    }
    Ok(changed)
}
