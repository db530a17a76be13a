//! One-use account tokens, the secret in a mail link: 32 random bytes (base64url
//! in the link); only their SHA-256 is stored. A token works once, until it
//! expires, and for its purpose only; issuing a new one of a purpose retires the
//! account's earlier unused ones of that purpose (the latest mail's link is the one
//! that works).

use base64::Engine;
use chrono::{DateTime, Utc};
use entities::{account_token, AccountTokenPurpose};
use rand::RngCore;
use sea_orm::{ConnectionTrait, DbErr};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AppError;
use crate::repo::account_tokens::{self as repo, NewAccountToken};

/// A token just issued: the secret goes into the mail, never into the database.
pub struct IssuedToken {
    pub id: Uuid,
    pub secret: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The stored form of a token's secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// Issue a token for `user_id`. `email` is the address it proves (VERIFY_EMAIL,
/// CHANGE_EMAIL) or was sent to (RESET_PASSWORD).
pub async fn issue<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    purpose: AccountTokenPurpose,
    email: &str,
    ttl: std::time::Duration,
) -> Result<IssuedToken, DbErr> {
    let now = Utc::now();
    repo::retire_unused(conn, user_id, purpose, now).await?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let id = Uuid::now_v7();
    let token = NewAccountToken {
        id,
        user_id,
        purpose,
        token_hash: hash_secret(&secret),
        email: email.to_string(),
        created_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::hours(1)),
    };
    repo::insert(conn, token).await?;
    Ok(IssuedToken { id, secret })
}

/// The token row for `secret` if it is usable for one of `purposes` (not used, not
/// expired); `BAD_USER_INPUT` saying which is wrong otherwise. Does not use it up.
pub async fn find_usable<C: ConnectionTrait>(
    conn: &C,
    secret: &str,
    purposes: &[AccountTokenPurpose],
) -> Result<account_token::Model, AppError> {
    let row = repo::find_by_hash(conn, &hash_secret(secret)).await?;
    let Some(row) = row.filter(|row| purposes.contains(&row.purpose)) else {
        return Err(AppError::bad_input("this link is not valid"));
    };
    if row.used_at.is_some() {
        return Err(AppError::bad_input("this link was already used (or a newer one was sent)"));
    }
    if row.expires_at <= Utc::now() {
        return Err(AppError::bad_input("this link has expired; ask for a new one"));
    }
    Ok(row)
}

/// Use the token up, inside the caller's transaction: [`find_usable`], then mark it
/// used only if nobody else did meanwhile (so two concurrent uses cannot both win).
pub async fn consume<C: ConnectionTrait>(
    conn: &C,
    secret: &str,
    purposes: &[AccountTokenPurpose],
) -> Result<account_token::Model, AppError> {
    let row = find_usable(conn, secret, purposes).await?;
    let now: DateTime<Utc> = Utc::now();
    if !repo::mark_used(conn, row.id, now).await? {
        return Err(AppError::bad_input("this link was already used (or a newer one was sent)"));
    }
    Ok(account_token::Model { used_at: Some(now), ..row })
}
