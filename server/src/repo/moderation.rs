//! Moderation: hiding and unhiding videos, each decision recorded with its reason.
//! A hidden video plays only for its owner and moderators (see `repo::videos` for
//! the read rules and `playback` for the signature it then needs).

use entities::{moderation_action, video, ModerationActionKind};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use crate::error::{AppError, ErrorCode};
use crate::identity::{has_permission, Permission};
use crate::identity::{ClientInfo, Principal};
use crate::repo::audit::{AuditAction, AuditEntry, AuditOutcome};
use crate::repo::videos::{find_readable, now_micros};

pub const MAX_REASON_CHARS: usize = 1000;

/// A reason: trimmed, at most 1000 characters; empty means none.
pub fn normalize_reason(reason: &str) -> Result<Option<String>, AppError> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::bad_input(format!("reason must be at most {MAX_REASON_CHARS} characters")));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AppError::bad_input("reason must not contain control characters"));
    }
    Ok((!reason.is_empty()).then(|| reason.to_string()))
}

/// Hide (`Hide`) or unhide (`Unhide`) a video and record the decision (in the
/// moderation log and the audit log), in one transaction. Hiding a hidden video replaces its reason (and is recorded);
/// unhiding a visible one is a CONFLICT. Only moderators and admins.
#[tracing::instrument(skip_all, fields(video_id = %id, moderator_id = %moderator.user_id, action = ?action))]
pub async fn moderate(
    db: &DatabaseConnection,
    moderator: &Principal,
    id: Uuid,
    action: ModerationActionKind,
    reason: Option<String>,
    client: &ClientInfo,
) -> Result<video::Model, AppError> {
    if !has_permission(moderator.role, Permission::ModerateVideos) {
        return Err(AppError::forbidden("only moderators may hide or unhide videos"));
    }
    if action == ModerationActionKind::Hide && reason.is_none() {
        return Err(AppError::bad_input("a reason is required to hide a video"));
    }
    let txn = crate::db::begin_write(db).await.map_err(AppError::internal)?;
    // Write first, changing nothing, so concurrent decisions on one video queue up
    // here instead of both acting on a stale read (see `repo::videos::delete_video`).
    video::Entity::update_many()
        .col_expr(video::Column::UpdatedAt, Expr::col(video::Column::UpdatedAt).into())
        .filter(video::Column::Id.eq(id))
        .exec(&txn)
        .await
        .map_err(AppError::internal)?;
    let video = find_readable(&txn, Some(moderator), id).await?;
    if action == ModerationActionKind::Unhide && video.hidden_at.is_none() {
        return Err(AppError::new(ErrorCode::Conflict, "the video is not hidden"));
    }
    let now = now_micros();
    let mut active: video::ActiveModel = video.into();
    match action {
        ModerationActionKind::Hide => {
            active.hidden_at = Set(Some(now));
            active.hidden_reason = Set(reason.clone());
        }
        ModerationActionKind::Unhide => {
            active.hidden_at = Set(None);
            active.hidden_reason = Set(None);
        }
    }
    active.updated_at = Set(now);
    let video = active.update(&txn).await.map_err(AppError::internal)?;
    moderation_action::ActiveModel {
        id: Set(Uuid::now_v7()),
        video_id: Set(id),
        moderator_id: Set(moderator.user_id),
        action: Set(action),
        reason: Set(reason.clone()),
        created_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(AppError::internal)?;
    let audited = match action {
        ModerationActionKind::Hide => AuditAction::VideoHidden,
        ModerationActionKind::Unhide => AuditAction::VideoUnhidden,
    };
    let entry = AuditEntry::new(audited, AuditOutcome::Success)
        .actor(moderator.user_id)
        .target(id)
        .detail(serde_json::json!({ "reason": reason }));
    crate::repo::audit::record(&txn, client, entry).await?;
    txn.commit().await.map_err(AppError::internal)?;
    Ok(video)
}

/// A video's moderation decisions, oldest first.
pub async fn moderation_log<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
) -> Result<Vec<moderation_action::Model>, AppError> {
    moderation_action::Entity::find()
        .filter(moderation_action::Column::VideoId.eq(video_id))
        .order_by_asc(moderation_action::Column::CreatedAt)
        .order_by_asc(moderation_action::Column::Id)
        .all(conn)
        .await
        .map_err(AppError::internal)
}
