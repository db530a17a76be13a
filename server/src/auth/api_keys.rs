//! API keys for scripts: `rh_live_<32 base62>_<6 base62 checksum>`.
//!
//! The secret is shown once; only its SHA-256 is stored. The checksum lets us (and
//! secret scanners) reject a mistyped or made-up key without touching the database.
//! `last_used_at` is written at most once a minute per key, not on every request.

use chrono::{Duration, Utc};
use entities::{api_key, Role};
use rand::Rng;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::principal::{lower_role, AuthMethod, Principal};
use crate::auth::roles::rank;
use crate::error::{AppError, AppResult};
use crate::repo::api_keys::{self as repo, NewApiKey};

pub const KEY_PREFIX: &str = "rh_live_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// How much of the random part is kept (with `rh_live_`) to tell keys apart.
const VISIBLE_LEN: usize = 6;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// A key just created: the secret exists only here and in the response.
pub struct CreatedApiKey {
    pub model: api_key::Model,
    pub secret: String,
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n =
        u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    let mut out = String::with_capacity(CHECKSUM_LEN);
    for _ in 0..CHECKSUM_LEN {
        out.push(char::from(BASE62[(n % 62) as usize]));
        n /= 62;
    }
    out
}

/// A new random secret with its checksum.
pub fn generate_secret() -> String {
    generate_prefixed(KEY_PREFIX)
}

/// A new random secret `{prefix}{32 base62}_{6 base62 checksum}`: the shape of API
/// keys, shared with worker tokens (`auth::worker_tokens`).
pub(crate) fn generate_prefixed(prefix: &str) -> String {
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..RANDOM_LEN).map(|_| char::from(BASE62[rng.gen_range(0..BASE62.len())])).collect();
    let body = format!("{prefix}{random}");
    let sum = checksum(&body);
    format!("{body}_{sum}")
}

/// Shape and checksum only; says nothing about whether the key exists.
pub fn is_well_formed(secret: &str) -> bool {
    is_well_formed_prefixed(KEY_PREFIX, secret)
}

/// Shape and checksum of a secret made by [`generate_prefixed`] with `prefix`.
pub(crate) fn is_well_formed_prefixed(prefix: &str, secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix(prefix) else { return false };
    let Some((random, sum)) = rest.split_once('_') else { return false };
    random.len() == RANDOM_LEN
        && sum.len() == CHECKSUM_LEN
        && random.bytes().all(|b| b.is_ascii_alphanumeric())
        && checksum(&format!("{prefix}{random}")) == sum
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Create a key for `owner_id`. `role` defaults to, and may not exceed, `ceiling`
/// (the caller's effective role).
pub async fn create_api_key(
    db: &impl ConnectionTrait,
    owner_id: Uuid,
    ceiling: Role,
    name: &str,
    role: Option<Role>,
) -> AppResult<CreatedApiKey> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::bad_input("key name must be 1 to 100 characters"));
    }
    let role = role.unwrap_or(ceiling);
    if rank(role) > rank(ceiling) {
        return Err(AppError::forbidden("an API key's role cannot be above your own"));
    }
    let secret = generate_secret();
    let key = NewApiKey {
        user_id: owner_id,
        name: name.to_string(),
        role,
        prefix: secret[..KEY_PREFIX.len() + VISIBLE_LEN].to_string(),
        secret_hash: hash_secret(&secret),
    };
    let model = repo::insert(db, key).await?;
    Ok(CreatedApiKey { model, secret })
}

/// The caller's live keys, newest first.
pub async fn list_api_keys(db: &DatabaseConnection, owner_id: Uuid) -> AppResult<Vec<api_key::Model>> {
    Ok(repo::live_of(db, owner_id).await?)
}

/// Revoke one of the owner's keys; `NOT_FOUND` for anyone else's.
pub async fn revoke_api_key(db: &impl ConnectionTrait, owner_id: Uuid, id: Uuid) -> AppResult<bool> {
    if !repo::revoke_owned(db, owner_id, id).await? {
        let exists = repo::find_owned(db, owner_id, id).await?.is_some();
        if !exists {
            return Err(AppError::not_found("API key"));
        }
    }
    Ok(true)
}

/// The principal behind a key, or `None` for an unknown, revoked or malformed key
/// or a disabled owner.
pub async fn authenticate_api_key(db: &DatabaseConnection, secret: &str) -> AppResult<Option<Principal>> {
    if !is_well_formed(secret) {
        return Ok(None);
    }
    let found = repo::find_live_by_hash_with_owner(db, &hash_secret(secret)).await?;
    let Some((key, Some(owner))) = found else { return Ok(None) };
    if owner.disabled {
        return Ok(None);
    }
    record_use(db, &key).await?;
    Ok(Some(Principal {
        user_id: owner.id,
        role: lower_role(key.role, owner.role),
        method: AuthMethod::ApiKey,
        family_id: None,
        api_key_id: Some(key.id),
    }))
}

/// Conditional, so concurrent requests and replicas write at most once a minute.
async fn record_use(db: &DatabaseConnection, key: &api_key::Model) -> AppResult<()> {
    let now = Utc::now();
    let stale_before = now - Duration::seconds(LAST_USED_RESOLUTION_SECS);
    if key.last_used_at.is_some_and(|at| at > stale_before) {
        return Ok(());
    }
    repo::touch_last_used(db, key.id, now, stale_before).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_a_checksum() {
        let secret = generate_secret();
        assert!(secret.starts_with(KEY_PREFIX));
        assert_eq!(secret.len(), KEY_PREFIX.len() + RANDOM_LEN + 1 + CHECKSUM_LEN);
        assert!(is_well_formed(&secret));
        let mut typo = secret.clone().into_bytes();
        typo[KEY_PREFIX.len() + 3] = if typo[KEY_PREFIX.len() + 3] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!is_well_formed("rh_live_short_abcdef"));
    }
}
