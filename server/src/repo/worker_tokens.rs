//! Worker tokens (the `worker_tokens` table), stored as the SHA-256 of their
//! secret: minting one, listing, revoking, finding one by id or by hash, and the
//! throttled `last_used_at`.

use chrono::{DateTime, Utc};
use entities::worker_token;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

/// A token about to be minted; its secret exists only as `secret_hash`.
#[derive(Debug, Clone)]
pub struct NewWorkerToken {
    pub name: String,
    /// The visible start of the secret, to tell tokens apart.
    pub prefix: String,
    pub secret_hash: String,
    pub capacity: i32,
    /// Normalised tags as stored (`a,b`).
    pub tags: String,
    pub created_by: Option<Uuid>,
}

/// Insert a new token, never used, not revoked.
pub async fn insert<C: ConnectionTrait>(conn: &C, token: NewWorkerToken) -> Result<worker_token::Model, DbErr> {
    worker_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(token.name),
        prefix: Set(token.prefix),
        secret_hash: Set(token.secret_hash),
        capacity: Set(token.capacity),
        tags: Set(token.tags),
        created_by: Set(token.created_by),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await
}

/// Every token, revoked ones included, newest first.
pub async fn all_newest_first<C: ConnectionTrait>(conn: &C) -> Result<Vec<worker_token::Model>, DbErr> {
    worker_token::Entity::find().order_by_desc(worker_token::Column::CreatedAt).all(conn).await
}

/// The token, revoked or not.
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<worker_token::Model>, DbErr> {
    worker_token::Entity::find_by_id(id).one(conn).await
}

/// The token stored as `secret_hash`, revoked or not.
pub async fn find_by_hash<C: ConnectionTrait>(
    conn: &C,
    secret_hash: &str,
) -> Result<Option<worker_token::Model>, DbErr> {
    worker_token::Entity::find().filter(worker_token::Column::SecretHash.eq(secret_hash)).one(conn).await
}

/// Revoke token `id` unless it is revoked already; `true` when this call revoked it.
pub async fn revoke<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<bool, DbErr> {
    let result = worker_token::Entity::update_many()
        .col_expr(worker_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(worker_token::Column::Id.eq(id))
        .filter(worker_token::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Set token `id`'s `last_used_at` to `now`.
pub async fn touch_last_used<C: ConnectionTrait>(conn: &C, id: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
    worker_token::Entity::update_many()
        .col_expr(worker_token::Column::LastUsedAt, Expr::value(now))
        .filter(worker_token::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}
