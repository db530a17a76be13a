//! One-use account tokens, the secret in a mail link: 32 random bytes (base64url
//! in the link); only their SHA-256 is stored. A token works once, until it
//! expires, and for its purpose only; issuing a new one of a purpose retires the
//! account's earlier unused ones of that purpose (the latest mail's link is the one
//! that works).

use base64::Engine;
use chrono::{DateTime, Utc};
use entities::{account_token, AccountTokenPurpose};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AppError;

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
    account_token::Entity::update_many()
        .col_expr(account_token::Column::UsedAt, Expr::value(now))
        .filter(account_token::Column::UserId.eq(user_id))
        .filter(account_token::Column::Purpose.eq(purpose))
        .filter(account_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let id = Uuid::now_v7();
    account_token::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        purpose: Set(purpose),
        token_hash: Set(hash_secret(&secret)),
        new_email: Set(Some(email.to_string())),
        expires_at: Set(now + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::hours(1))),
        used_at: Set(None),
        created_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(IssuedToken { id, secret })
}

/// The token row for `secret` if it is usable for one of `purposes` (not used, not
/// expired); `BAD_USER_INPUT` saying which is wrong otherwise. Does not use it up.
pub async fn find_usable<C: ConnectionTrait>(
    conn: &C,
    secret: &str,
    purposes: &[AccountTokenPurpose],
) -> Result<account_token::Model, AppError> {
    let row = account_token::Entity::find()
        .filter(account_token::Column::TokenHash.eq(hash_secret(secret)))
        .one(conn)
        .await?;
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
    let updated = account_token::Entity::update_many()
        .col_expr(account_token::Column::UsedAt, Expr::value(now))
        .filter(account_token::Column::Id.eq(row.id))
        .filter(account_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    if updated.rows_affected == 0 {
        return Err(AppError::bad_input("this link was already used (or a newer one was sent)"));
    }
    Ok(account_token::Model { used_at: Some(now), ..row })
}
