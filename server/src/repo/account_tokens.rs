//! One-use account tokens (the `account_tokens` table: the secrets of mail links,
//! stored as their SHA-256): issuing one, retiring an account's earlier unused ones
//! of a purpose, finding one by hash, and using one up.

use chrono::{DateTime, Utc};
use entities::{account_token, AccountTokenPurpose};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

/// A token about to be issued; its secret exists only as `token_hash`.
#[derive(Debug, Clone)]
pub struct NewAccountToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub purpose: AccountTokenPurpose,
    pub token_hash: String,
    /// The address it proves or was sent to.
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Mark the account's unused tokens of `purpose` used at `now` (a newer one replaces them).
pub async fn retire_unused<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    purpose: AccountTokenPurpose,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    account_token::Entity::update_many()
        .col_expr(account_token::Column::UsedAt, Expr::value(now))
        .filter(account_token::Column::UserId.eq(user_id))
        .filter(account_token::Column::Purpose.eq(purpose))
        .filter(account_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Insert a new token, not used yet.
pub async fn insert<C: ConnectionTrait>(conn: &C, token: NewAccountToken) -> Result<account_token::Model, DbErr> {
    account_token::ActiveModel {
        id: Set(token.id),
        user_id: Set(token.user_id),
        purpose: Set(token.purpose),
        token_hash: Set(token.token_hash),
        new_email: Set(Some(token.email)),
        expires_at: Set(token.expires_at),
        used_at: Set(None),
        created_at: Set(token.created_at),
    }
    .insert(conn)
    .await
}

/// The token stored as `token_hash`, whatever its purpose and state.
pub async fn find_by_hash<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
) -> Result<Option<account_token::Model>, DbErr> {
    account_token::Entity::find().filter(account_token::Column::TokenHash.eq(token_hash)).one(conn).await
}

/// Mark token `id` used at `now` only if nobody did meanwhile; `true` when this
/// call used it.
pub async fn mark_used<C: ConnectionTrait>(conn: &C, id: Uuid, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let updated = account_token::Entity::update_many()
        .col_expr(account_token::Column::UsedAt, Expr::value(now))
        .filter(account_token::Column::Id.eq(id))
        .filter(account_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}
