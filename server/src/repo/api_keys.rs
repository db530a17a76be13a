//! API keys (the `api_keys` table), stored as the SHA-256 of their secret: creating
//! one, an owner's live keys, revoking, finding a key by its hash with its owner,
//! and the throttled `last_used_at`.

use chrono::{DateTime, Utc};
use entities::{api_key, user, Role};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

/// A key about to be created; its secret exists only as `secret_hash`.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub user_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The visible start of the secret, to tell keys apart.
    pub prefix: String,
    pub secret_hash: String,
}

/// Insert a new key, never used, not revoked.
pub async fn insert<C: ConnectionTrait>(conn: &C, key: NewApiKey) -> Result<api_key::Model, DbErr> {
    api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(key.user_id),
        name: Set(key.name),
        role: Set(key.role),
        prefix: Set(key.prefix),
        secret_hash: Set(key.secret_hash),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await
}

/// The owner's keys that are not revoked, newest first.
pub async fn live_of<C: ConnectionTrait>(conn: &C, owner_id: Uuid) -> Result<Vec<api_key::Model>, DbErr> {
    api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(owner_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .order_by_desc(api_key::Column::CreatedAt)
        .all(conn)
        .await
}

/// Revoke key `id` if it is the owner's and not revoked yet; `true` when this call
/// revoked it.
pub async fn revoke_owned<C: ConnectionTrait>(conn: &C, owner_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::UserId.eq(owner_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Key `id` if it is the owner's, revoked or not.
pub async fn find_owned<C: ConnectionTrait>(
    conn: &C,
    owner_id: Uuid,
    id: Uuid,
) -> Result<Option<api_key::Model>, DbErr> {
    api_key::Entity::find_by_id(id).filter(api_key::Column::UserId.eq(owner_id)).one(conn).await
}

/// The live (not revoked) key stored as `secret_hash`, with its owner, in one query.
pub async fn find_live_by_hash_with_owner<C: ConnectionTrait>(
    conn: &C,
    secret_hash: &str,
) -> Result<Option<(api_key::Model, Option<user::Model>)>, DbErr> {
    api_key::Entity::find()
        .filter(api_key::Column::SecretHash.eq(secret_hash))
        .filter(api_key::Column::RevokedAt.is_null())
        .find_also_related(user::Entity)
        .one(conn)
        .await
}

/// Set key `id`'s `last_used_at` to `now` unless it was set at or after
/// `stale_before` (conditional, so concurrent requests and replicas write it once).
pub async fn touch_last_used<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<(), DbErr> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .filter(
            Condition::any()
                .add(api_key::Column::LastUsedAt.is_null())
                .add(api_key::Column::LastUsedAt.lt(stale_before)),
        )
        .exec(conn)
        .await?;
    Ok(())
}
