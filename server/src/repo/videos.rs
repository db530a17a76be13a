//! Videos: who may see and change one, and loading it with that check applied.
//!
//! | viewer                  | PUBLIC | UNLISTED | PRIVATE | hidden by a moderator |
//! | ----------------------- | ------ | -------- | ------- | --------------------- |
//! | anonymous / stranger    | yes    | by id    | no      | no                    |
//! | owner                   | yes    | yes      | yes     | yes                   |
//! | moderator / admin       | yes    | yes      | yes     | yes                   |
//!
//! A video the caller may not read answers NOT_FOUND, never FORBIDDEN, so private
//! videos do not reveal that they exist. Deleted videos are gone for everyone.

use entities::{upload, video, UploadStatus, Visibility};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::auth::principal::Principal;
use crate::auth::roles::{has_permission, Permission};
use crate::error::AppError;

/// Owner, or a moderator/admin.
pub fn is_owner_or_moderator(viewer: Option<&Principal>, video: &video::Model) -> bool {
    viewer.is_some_and(|p| p.user_id == video.owner_id || has_permission(p.role, Permission::ModerateVideos))
}

/// May `viewer` read this video when asking for it by id?
pub fn can_read_by_id(viewer: Option<&Principal>, video: &video::Model) -> bool {
    if video.deleted_at.is_some() {
        return false;
    }
    if is_owner_or_moderator(viewer, video) {
        return true;
    }
    video.hidden_at.is_none() && matches!(video.visibility, Visibility::Public | Visibility::Unlisted)
}

/// May `viewer` see this video in a listing (not by id)? UNLISTED videos are listed
/// only to their owner and moderators.
pub fn can_list(viewer: Option<&Principal>, video: &video::Model) -> bool {
    if video.deleted_at.is_some() {
        return false;
    }
    if is_owner_or_moderator(viewer, video) {
        return true;
    }
    video.hidden_at.is_none() && video.visibility == Visibility::Public
}

/// May `principal` change this video (edit, upload to it, delete, re-transcode)?
pub fn can_write(principal: &Principal, video: &video::Model) -> bool {
    if video.deleted_at.is_some() {
        return false;
    }
    (principal.user_id == video.owner_id && has_permission(principal.role, Permission::WriteOwnVideos))
        || has_permission(principal.role, Permission::ModerateVideos)
}

/// The video by id if `viewer` may read it; NOT_FOUND otherwise.
pub async fn find_readable<C: ConnectionTrait>(
    conn: &C,
    viewer: Option<&Principal>,
    id: Uuid,
) -> Result<video::Model, AppError> {
    let video = video::Entity::find_by_id(id).one(conn).await.map_err(AppError::internal)?;
    match video {
        Some(video) if can_read_by_id(viewer, &video) => Ok(video),
        _ => Err(AppError::not_found("video")),
    }
}

/// The video by id if `principal` may change it: NOT_FOUND when it may not even
/// read it, FORBIDDEN when it may read but not write.
pub async fn find_writable<C: ConnectionTrait>(
    conn: &C,
    principal: &Principal,
    id: Uuid,
) -> Result<video::Model, AppError> {
    let video = find_readable(conn, Some(principal), id).await?;
    if can_write(principal, &video) {
        Ok(video)
    } else {
        Err(AppError::forbidden("you may not change this video"))
    }
}

/// Bytes counted against a user's quota: sources of videos not deleted, plus the
/// declared size of uploads still open or completing.
// SUM(bigint) is numeric on PostgreSQL; the casts keep both backends at BIGINT.
pub async fn storage_used_bytes<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<i64, AppError> {
    let stored: Option<i64> = video::Entity::find()
        .select_only()
        .column_as(Expr::cust("CAST(SUM(source_size_bytes) AS BIGINT)"), "total")
        .filter(video::Column::OwnerId.eq(user_id))
        .filter(video::Column::DeletedAt.is_null())
        .into_tuple::<Option<i64>>()
        .one(conn)
        .await
        .map_err(AppError::internal)?
        .flatten();
    let pending: Option<i64> = upload::Entity::find()
        .select_only()
        .column_as(Expr::cust("CAST(SUM(declared_size) AS BIGINT)"), "total")
        .filter(upload::Column::UserId.eq(user_id))
        .filter(upload::Column::Status.is_in([UploadStatus::Open, UploadStatus::Completing]))
        .into_tuple::<Option<i64>>()
        .one(conn)
        .await
        .map_err(AppError::internal)?
        .flatten();
    Ok(stored.unwrap_or(0) + pending.unwrap_or(0))
}
