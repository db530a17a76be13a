//! Sign-in sessions: refresh-token families (one per sign-in) and the rotating
//! refresh tokens in them, stored as hashes. Starting a family, claiming a token
//! for rotation (the conditional update that settles two concurrent refreshes),
//! revoking one family, all of an account's, or all but the caller's, and the live
//! sessions behind `User.sessions` / `revokeSession`.

use chrono::{DateTime, Duration, Utc};
use entities::{refresh_token, refresh_token_family, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use uuid::Uuid;

use crate::config::Settings;
use crate::error::{AppError, AppResult};

/// A session about to start: who signed in, when, and from where.
#[derive(Debug, Clone)]
pub struct NewFamily {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Insert a new family (session), neither used since nor revoked.
pub async fn insert_family<C: ConnectionTrait>(
    conn: &C,
    family: NewFamily,
) -> Result<refresh_token_family::Model, DbErr> {
    refresh_token_family::ActiveModel {
        id: Set(family.id),
        user_id: Set(family.user_id),
        created_at: Set(family.created_at),
        last_used_at: Set(family.created_at),
        revoked_at: Set(None),
        revoked_reason: Set(None),
        user_agent: Set(family.user_agent),
        ip: Set(family.ip),
    }
    .insert(conn)
    .await
}

/// The family (session), revoked or not.
pub async fn find_family<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<refresh_token_family::Model>, DbErr> {
    refresh_token_family::Entity::find_by_id(id).one(conn).await
}

/// The family with its account, in one query (the account is `None` once its row
/// is gone).
pub async fn find_family_with_user<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Option<(refresh_token_family::Model, Option<user::Model>)>, DbErr> {
    refresh_token_family::Entity::find_by_id(id).find_also_related(user::Entity).one(conn).await
}

/// Mark the family used at `at` (a refresh).
pub async fn touch_family<C: ConnectionTrait>(conn: &C, id: Uuid, at: DateTime<Utc>) -> Result<(), DbErr> {
    refresh_token_family::Entity::update_many()
        .col_expr(refresh_token_family::Column::LastUsedAt, Expr::value(at))
        .filter(refresh_token_family::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Revoke family `id` with `reason` unless it is revoked already; returns how many
/// were revoked (0 or 1).
pub async fn revoke_family<C: ConnectionTrait>(conn: &C, id: Uuid, reason: &str) -> Result<u64, DbErr> {
    revoke_families(conn, Condition::all().add(refresh_token_family::Column::Id.eq(id)), reason).await
}

/// Revoke with `reason` the families `which` selects that are not revoked already;
/// returns how many were revoked. Every revocation of a session is this statement.
async fn revoke_families<C: ConnectionTrait>(conn: &C, which: Condition, reason: &str) -> Result<u64, DbErr> {
    Ok(refresh_token_family::Entity::update_many()
        .col_expr(refresh_token_family::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(refresh_token_family::Column::RevokedReason, Expr::value(reason))
        .filter(which)
        .filter(refresh_token_family::Column::RevokedAt.is_null())
        .exec(conn)
        .await?
        .rows_affected)
}

/// Insert refresh token `id` of family `family_id`, stored as `token_hash`, not yet
/// rotated.
pub async fn insert_refresh_token<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    family_id: Uuid,
    token_hash: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<refresh_token::Model, DbErr> {
    refresh_token::ActiveModel {
        id: Set(id),
        family_id: Set(family_id),
        token_hash: Set(token_hash),
        created_at: Set(created_at),
        expires_at: Set(expires_at),
        rotated_at: Set(None),
        replaced_by: Set(None),
    }
    .insert(conn)
    .await
}

/// Claim the refresh token stored as `token_hash` for rotation at `now`: marks it
/// rotated only if it was not rotated yet and has not expired, so of two concurrent
/// claims exactly one wins. `true` for the winner.
pub async fn claim_refresh_token<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    Ok(refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(token_hash))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .filter(refresh_token::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?
        .rows_affected
        == 1)
}

/// The refresh token stored as `token_hash`, whatever its state.
pub async fn find_refresh_token<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
) -> Result<Option<refresh_token::Model>, DbErr> {
    refresh_token::Entity::find().filter(refresh_token::Column::TokenHash.eq(token_hash)).one(conn).await
}

/// The refresh token stored as `token_hash` with its family, in one query.
pub async fn find_refresh_token_with_family<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
) -> Result<Option<(refresh_token::Model, Option<refresh_token_family::Model>)>, DbErr> {
    refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(token_hash))
        .find_also_related(refresh_token_family::Entity)
        .one(conn)
        .await
}

/// Record that refresh token `id` was exchanged for `new_id` (set once the new row
/// exists: it is a foreign key).
pub async fn set_replaced_by<C: ConnectionTrait>(conn: &C, id: Uuid, new_id: Uuid) -> Result<(), DbErr> {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::ReplacedBy, Expr::value(new_id))
        .filter(refresh_token::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// When a session (refresh-token family) stops being usable on its own: its
/// absolute lifetime, or its newest refresh token's expiry (issued at its last use).
fn session_cutoffs(settings: &Settings, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let secs = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 4).min(10 * 365 * 86_400));
    (now - secs(settings.auth.session_max_lifetime_secs), now - secs(settings.auth.refresh_token_ttl_secs))
}

/// The account's live sessions: not revoked, within their lifetime, with a refresh
/// token that has not expired; most recently used first.
pub async fn live_sessions<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    settings: &Settings,
) -> Result<Vec<refresh_token_family::Model>, DbErr> {
    let (created_after, used_after) = session_cutoffs(settings, Utc::now());
    refresh_token_family::Entity::find()
        .filter(refresh_token_family::Column::UserId.eq(user_id))
        .filter(refresh_token_family::Column::RevokedAt.is_null())
        .filter(refresh_token_family::Column::CreatedAt.gt(created_after))
        .filter(refresh_token_family::Column::LastUsedAt.gt(used_after))
        .order_by_desc(refresh_token_family::Column::LastUsedAt)
        .order_by_desc(refresh_token_family::Column::Id)
        .all(conn)
        .await
}

/// Revoke session `id`. `owner`: only if it belongs to that account (a caller's
/// own sessions); `None`: anyone's (an admin). `NOT_FOUND` when there is no such
/// session for that owner; otherwise the session and whether this call ended it
/// (`false`: it had already ended).
pub async fn revoke_session(
    txn: &DatabaseTransaction,
    id: Uuid,
    owner: Option<Uuid>,
    reason: &str,
) -> AppResult<(refresh_token_family::Model, bool)> {
    let mut query = refresh_token_family::Entity::find_by_id(id);
    if let Some(owner) = owner {
        query = query.filter(refresh_token_family::Column::UserId.eq(owner));
    }
    let family = query.one(txn).await?.ok_or_else(|| AppError::not_found("session"))?;
    let revoked = revoke_family(txn, id, reason).await? == 1;
    Ok((family, revoked))
}

/// Revoke every live session of a user; returns how many were revoked.
pub async fn revoke_all_sessions(db: &impl ConnectionTrait, user_id: Uuid, reason: &str) -> AppResult<u64> {
    Ok(revoke_families(db, Condition::all().add(refresh_token_family::Column::UserId.eq(user_id)), reason).await?)
}

/// Revoke every live session of a user but `keep` (the caller's own, when it has
/// one); returns how many were revoked.
pub async fn revoke_other_sessions<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<u64, DbErr> {
    let mut others = Condition::all().add(refresh_token_family::Column::UserId.eq(user_id));
    if let Some(current) = keep {
        others = others.add(refresh_token_family::Column::Id.ne(current));
    }
    revoke_families(conn, others, reason).await
}
