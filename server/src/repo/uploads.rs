//! Upload sessions (the `uploads` table): finding them and moving them between
//! states. Every transition but [`fail`] (the completer's own verdict on a session
//! it holds) is conditional on the state it leaves, so two processes (or a request
//! and the sweeper) never both make it; the durable offset moves only from the
//! offset its writer started at ([`advance`]).

use chrono::{DateTime, Utc};
use entities::{upload, UploadMethod, UploadStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

/// The states of a session that is still being written or completed.
const IN_FLIGHT: [UploadStatus; 2] = [UploadStatus::Open, UploadStatus::Completing];

/// The session, whatever its state.
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<upload::Model>, DbErr> {
    upload::Entity::find_by_id(id).one(conn).await
}

/// Move the session from `from` to `to`, recording `reason`; `false` when it was not
/// in `from` (someone else moved it first).
pub async fn transition<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    from: UploadStatus,
    to: UploadStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let moved = upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(to))
        .col_expr(upload::Column::FailureReason, Expr::value(reason.to_string()))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Status.eq(from))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected > 0)
}

/// The sessions of `video_id` still being written or completed.
pub async fn in_flight_of_video<C: ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<Vec<upload::Model>, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::VideoId.eq(video_id))
        .filter(upload::Column::Status.is_in(IN_FLIGHT))
        .all(conn)
        .await
}

/// How many other sessions of `video_id` than `except` are still in flight (the
/// partial uploads of a tus concatenation share their video).
pub async fn others_in_flight<C: ConnectionTrait>(conn: &C, video_id: Uuid, except: Uuid) -> Result<u64, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::VideoId.eq(video_id))
        .filter(upload::Column::Id.ne(except))
        .filter(upload::Column::Status.is_in(IN_FLIGHT))
        .count(conn)
        .await
}

/// Ended sessions (ABORTED, EXPIRED, FAILED, COMPLETED) whose storage was not swept
/// yet, created before `created_before` and untouched since `updated_before`;
/// oldest first, at most `limit`.
pub async fn ended_unswept<C: ConnectionTrait>(
    conn: &C,
    created_before: DateTime<Utc>,
    updated_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<upload::Model>, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::Status.is_in([
            UploadStatus::Aborted,
            UploadStatus::Expired,
            UploadStatus::Failed,
            UploadStatus::Completed,
        ]))
        .filter(upload::Column::StagingSweptAt.is_null())
        .filter(upload::Column::CreatedAt.lt(created_before))
        .filter(upload::Column::UpdatedAt.lt(updated_before))
        .order_by_asc(upload::Column::CreatedAt)
        .limit(limit)
        .all(conn)
        .await
}

/// Record that the session's storage was swept.
pub async fn mark_swept<C: ConnectionTrait>(conn: &C, id: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
    upload::Entity::update_many()
        .col_expr(upload::Column::StagingSweptAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// OPEN sessions that expired before `now`, soonest-expired first, at most `limit`.
pub async fn expired_open<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<upload::Model>, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::ExpiresAt.lt(now))
        .order_by_asc(upload::Column::ExpiresAt)
        .limit(limit)
        .all(conn)
        .await
}

/// Put sessions left COMPLETING since before `updated_before` (their completer
/// died) back to OPEN; returns how many.
pub async fn reopen_stuck<C: ConnectionTrait>(
    conn: &C,
    updated_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    Ok(upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(UploadStatus::Open))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Status.eq(UploadStatus::Completing))
        .filter(upload::Column::UpdatedAt.lt(updated_before))
        .exec(conn)
        .await?
        .rows_affected)
}

/// OPEN tus sessions holding every byte (offset = declared size), untouched since
/// `updated_before`: their completion failed and is tried again. At most `limit`.
pub async fn full_tus_open<C: ConnectionTrait>(
    conn: &C,
    updated_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<upload::Model>, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::Method.eq(UploadMethod::Tus))
        .filter(Expr::col(upload::Column::OffsetBytes).eq(Expr::col(upload::Column::DeclaredSize)))
        .filter(upload::Column::UpdatedAt.lt(updated_before))
        .limit(limit)
        .all(conn)
        .await
}

/// A new session row.
pub async fn create<C: ConnectionTrait>(conn: &C, row: upload::ActiveModel) -> Result<upload::Model, DbErr> {
    row.insert(conn).await
}

/// Move the sessions `ids` that are in `from` to `to` (stamping `completed_at` when
/// `to` is COMPLETED); returns how many moved.
pub async fn set_status<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
    from: UploadStatus,
    to: UploadStatus,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut update = upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(to))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now));
    if to == UploadStatus::Completed {
        update = update.col_expr(upload::Column::CompletedAt, Expr::value(now));
    }
    let moved = update
        .filter(upload::Column::Id.is_in(ids.to_vec()))
        .filter(upload::Column::Status.eq(from))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected)
}

/// Claim `owner`'s OPEN partial uploads `ids` for a concatenation (→ COMPLETING);
/// returns how many were claimed (all or the caller gives up).
pub async fn claim_parts<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
    owner: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    Ok(upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(UploadStatus::Completing))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.is_in(ids.to_vec()))
        .filter(upload::Column::UserId.eq(owner))
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .exec(conn)
        .await?
        .rows_affected)
}

/// Refresh `updated_at` of the sessions `ids` still in `status` (a long join shows
/// the sweeper it is alive).
pub async fn touch<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
    status: UploadStatus,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    upload::Entity::update_many()
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.is_in(ids.to_vec()))
        .filter(upload::Column::Status.eq(status))
        .exec(conn)
        .await?;
    Ok(())
}

/// A COMPLETING session's bytes now live at `key`; `false` if it left COMPLETING.
pub async fn set_object_key<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let moved = upload::Entity::update_many()
        .col_expr(upload::Column::ObjectKey, Expr::value(key.to_string()))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Status.eq(UploadStatus::Completing))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected == 1)
}

/// A COMPLETING session is COMPLETED with all `declared_size` bytes; `false` if it
/// left COMPLETING meanwhile.
pub async fn complete<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    declared_size: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let finished = upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(UploadStatus::Completed))
        .col_expr(upload::Column::OffsetBytes, Expr::value(declared_size))
        .col_expr(upload::Column::CompletedAt, Expr::value(now))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Status.eq(UploadStatus::Completing))
        .exec(conn)
        .await?;
    Ok(finished.rows_affected == 1)
}

/// The session is FAILED with `reason` (its bytes were refused).
pub async fn fail<C: ConnectionTrait>(conn: &C, id: Uuid, reason: &str, now: DateTime<Utc>) -> Result<(), DbErr> {
    upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(UploadStatus::Failed))
        .col_expr(upload::Column::FailureReason, Expr::value(reason.to_string()))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// `user_id`'s tus sessions of `video_id` that are OPEN or COMPLETED (the final
/// uploads a concatenation may already have made).
pub async fn tus_of_video_by<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<upload::Model>, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::VideoId.eq(video_id))
        .filter(upload::Column::UserId.eq(user_id))
        .filter(upload::Column::Method.eq(UploadMethod::Tus))
        .filter(upload::Column::Status.is_in([UploadStatus::Open, UploadStatus::Completed]))
        .all(conn)
        .await
}

/// Record an OPEN, still empty session's multipart upload, object key and tus
/// state; only if its multipart upload is still `current` (none, or the same).
/// `false` when it changed meanwhile.
pub async fn set_multipart<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    current: Option<&str>,
    upload_id: &str,
    object_key: &str,
    parts: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let update = upload::Entity::update_many()
        .col_expr(upload::Column::S3UploadId, Expr::value(upload_id.to_string()))
        .col_expr(upload::Column::ObjectKey, Expr::value(object_key.to_string()))
        .col_expr(upload::Column::Parts, Expr::value(parts))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::OffsetBytes.eq(0));
    let update = match current {
        Some(current) => update.filter(upload::Column::S3UploadId.eq(current.to_string())),
        None => update.filter(upload::Column::S3UploadId.is_null()),
    };
    Ok(update.exec(conn).await?.rows_affected == 1)
}

/// Move an OPEN session's durable offset from `from` to `to` with its tus state:
/// the update that owns the offset. `false` when another writer moved it first.
pub async fn advance<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    from: i64,
    to: i64,
    parts: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = upload::Entity::update_many()
        .col_expr(upload::Column::OffsetBytes, Expr::value(to))
        .col_expr(upload::Column::Parts, Expr::value(parts))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::OffsetBytes.eq(from))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// A deferred-length session learns its length (`declared_size`) with its tus
/// state; only while OPEN at `offset`. `false` when it changed meanwhile.
pub async fn set_length<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    offset: i64,
    length: i64,
    parts: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let updated = upload::Entity::update_many()
        .col_expr(upload::Column::DeclaredSize, Expr::value(length))
        .col_expr(upload::Column::Parts, Expr::value(parts))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::OffsetBytes.eq(offset))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}
