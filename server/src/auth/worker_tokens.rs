//! Worker tokens: what a remote worker (`reelhouse worker --server URL`) presents in
//! the first message on the worker channel. `rhw_<32 base62>_<6 base62 checksum>`,
//! shown once, stored as SHA-256 like API keys. A token carries the capacity and
//! tags its workers may claim (a worker may announce less, never more).

use chrono::Utc;
use entities::worker_token;
use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::repo::worker_tokens::{self as repo, NewWorkerToken};

pub const TOKEN_PREFIX: &str = "rhw_";
const VISIBLE_LEN: usize = 6;
/// Most jobs one worker (one token's connection) may run at once.
pub const MAX_CAPACITY: i32 = 64;
const MAX_TAGS: usize = 16;
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// A token just minted: the secret exists only here and in the response.
pub struct CreatedWorkerToken {
    pub model: worker_token::Model,
    pub secret: String,
}

fn generate_secret() -> String {
    super::api_keys::generate_prefixed(TOKEN_PREFIX)
}

/// Shape and checksum only; says nothing about whether the token exists.
pub fn is_well_formed(secret: &str) -> bool {
    super::api_keys::is_well_formed_prefixed(TOKEN_PREFIX, secret)
}

fn hash_secret(secret: &str) -> String {
    super::api_keys::hash_secret(secret)
}

/// Tags: 1 to 32 of `[a-z0-9_-]`, at most 16, deduplicated, sorted.
pub fn normalize_tags(tags: &[String]) -> AppResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim().to_ascii_lowercase();
        let valid = (1..=32).contains(&tag.len())
            && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(AppError::bad_input("a tag is 1 to 32 characters of a-z, 0-9, '-' and '_'"));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(AppError::bad_input(format!("at most {MAX_TAGS} tags")));
    }
    out.sort();
    Ok(out)
}

/// Tags as stored (`a,b`) and back.
pub fn join_tags(tags: &[String]) -> String {
    tags.join(",")
}

pub fn split_tags(stored: &str) -> Vec<String> {
    stored.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// Mint a token. `capacity` defaults to 1 and lies in 1..=[`MAX_CAPACITY`].
pub async fn create_worker_token(
    db: &impl ConnectionTrait,
    created_by: Option<Uuid>,
    name: &str,
    capacity: Option<i32>,
    tags: &[String],
) -> AppResult<CreatedWorkerToken> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::bad_input("a worker token's name must be 1 to 100 characters"));
    }
    let capacity = capacity.unwrap_or(1);
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(AppError::bad_input(format!("capacity must be between 1 and {MAX_CAPACITY}")));
    }
    let tags = normalize_tags(tags)?;
    let secret = generate_secret();
    let token = NewWorkerToken {
        name: name.to_string(),
        prefix: secret[..TOKEN_PREFIX.len() + VISIBLE_LEN].to_string(),
        secret_hash: hash_secret(&secret),
        capacity,
        tags: join_tags(&tags),
        created_by,
    };
    let model = repo::insert(db, token).await?;
    Ok(CreatedWorkerToken { model, secret })
}

/// Every token, live ones first, newest first.
pub async fn list_worker_tokens(db: &impl ConnectionTrait) -> AppResult<Vec<worker_token::Model>> {
    let mut rows = repo::all_newest_first(db).await?;
    rows.sort_by_key(|row| row.revoked_at.is_some());
    Ok(rows)
}

/// Revoke a token: `NOT_FOUND` if there is none; `false` if it was revoked already.
pub async fn revoke_worker_token(db: &impl ConnectionTrait, id: Uuid) -> AppResult<bool> {
    if repo::revoke(db, id).await? {
        return Ok(true);
    }
    match repo::find(db, id).await? {
        Some(_) => Ok(false),
        None => Err(AppError::not_found("worker token")),
    }
}

/// Why a presented token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Malformed or unknown.
    Invalid,
    Revoked,
}

/// Check a presented secret: the live token it names. The database is asked only
/// for well-formed secrets.
pub async fn verify_worker_token(
    db: &impl ConnectionTrait,
    secret: &str,
) -> AppResult<Result<worker_token::Model, TokenRefusal>> {
    if !is_well_formed(secret) {
        return Ok(Err(TokenRefusal::Invalid));
    }
    let Some(row) = repo::find_by_hash(db, &hash_secret(secret)).await? else {
        return Ok(Err(TokenRefusal::Invalid));
    };
    if row.revoked_at.is_some() {
        return Ok(Err(TokenRefusal::Revoked));
    }
    let now = Utc::now();
    if row.last_used_at.is_none_or(|at| (now - at).num_seconds() >= LAST_USED_RESOLUTION_SECS) {
        repo::touch_last_used(db, row.id, now).await?;
    }
    Ok(Ok(row))
}

/// Whether token `id` is still live (a connection re-checks on every heartbeat, so
/// a revocation on another API replica reaches it within one heartbeat).
pub async fn is_live(db: &impl ConnectionTrait, id: Uuid) -> AppResult<bool> {
    Ok(repo::find(db, id).await?.is_some_and(|row| row.revoked_at.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_and_checksummed() {
        let secret = generate_secret();
        assert!(secret.starts_with("rhw_"), "{secret}");
        assert!(is_well_formed(&secret));
        let mut typo = secret.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!is_well_formed(&secret.replacen("rhw_", "rh_live_", 1)));
        assert!(!is_well_formed(""));
    }

    #[test]
    fn tags_are_normalised_and_checked() {
        let tags = normalize_tags(&["GPU".into(), "fast".into(), "gpu".into()]).unwrap();
        assert_eq!(tags, vec!["fast".to_string(), "gpu".to_string()]);
        assert!(normalize_tags(&["a,b".into()]).is_err());
        assert!(normalize_tags(&["".into()]).is_err());
        assert_eq!(split_tags(&join_tags(&tags)), tags);
        assert!(split_tags("").is_empty());
    }
}
