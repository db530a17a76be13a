//! Upload sessions (the `uploads` table): finding them and moving them between
//! states. Every transition is conditional on the state it leaves, so two
//! processes (or a request and the sweeper) never both make it.

use chrono::{DateTime, Utc};
use entities::{upload, UploadMethod, UploadStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
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
