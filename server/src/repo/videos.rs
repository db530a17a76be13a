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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, DurationRound, Utc};
use entities::{
    job, rendition, upload, video, JobKind, JobStatus, RenditionStatus, UploadStatus, VideoStatus, Visibility,
};
use sea_orm::sea_query::{Expr, Func, LikeExpr, SimpleExpr};
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::jobs::{self, NewJob};
use crate::access::videos::{CachedVideo, VideoCache};
use crate::domain::event::{DomainEvent, EventDetail, EventKind, ProgressInfo};
use crate::error::AppError;
use crate::hot_cache::Lookup;
use crate::identity::Principal;
use crate::identity::{has_permission, Permission};
use crate::storage::layout;

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

/// May `principal` change this video (edit its metadata or visibility, upload a
/// source to it, re-transcode it)? Only its owner: staff hide, unhide and delete
/// other people's videos (see [`can_delete`]) but never publish or rewrite them.
pub fn can_write(principal: &Principal, video: &video::Model) -> bool {
    video.deleted_at.is_none()
        && principal.user_id == video.owner_id
        && has_permission(principal.role, Permission::WriteOwnVideos)
}

/// May `principal` delete this video? Its owner, or a moderator or admin.
pub fn can_delete(principal: &Principal, video: &video::Model) -> bool {
    video.deleted_at.is_none()
        && (can_write(principal, video) || has_permission(principal.role, Permission::ModerateVideos))
}

/// The video row, whatever its state (deleted ones too).
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<video::Model>, DbErr> {
    video::Entity::find_by_id(id).one(conn).await
}

/// An UPLOADING video whose last upload ended goes back to DRAFT (its owner may
/// start a new upload).
pub async fn back_to_draft<C: ConnectionTrait>(conn: &C, id: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
    video::Entity::update_many()
        .col_expr(video::Column::Status, Expr::value(VideoStatus::Draft))
        .col_expr(video::Column::UpdatedAt, Expr::value(now))
        .filter(video::Column::Id.eq(id))
        .filter(video::Column::Status.eq(VideoStatus::Uploading))
        .exec(conn)
        .await?;
    Ok(())
}

/// Claim the video for an upload: UPLOADING, if it is in one of `claimable` and not
/// deleted. `false` when it is not (another upload holds it).
pub async fn claim_for_upload<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    claimable: Vec<VideoStatus>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let claimed = video::Entity::update_many()
        .col_expr(video::Column::Status, Expr::value(VideoStatus::Uploading))
        .col_expr(video::Column::UpdatedAt, Expr::value(now))
        .filter(video::Column::Id.eq(id))
        .filter(video::Column::Status.is_in(claimable))
        .filter(video::Column::DeletedAt.is_null())
        .exec(conn)
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// What an accepted upload tells about its video: the probe's facts and the source.
pub struct AcceptedSource<'a> {
    pub info: &'a crate::media::MediaInfo,
    pub source_key: &'a str,
    pub source_size: i64,
}

/// The video is PROCESSING with its source and the probe's facts (its error cleared).
pub async fn accept_source<C: ConnectionTrait>(
    conn: &C,
    current: video::Model,
    source: AcceptedSource<'_>,
    now: DateTime<Utc>,
) -> Result<video::Model, DbErr> {
    let info = source.info;
    let mut video = sea_orm::IntoActiveModel::into_active_model(current);
    video.status = Set(VideoStatus::Processing);
    video.error = Set(None);
    video.duration_ms = Set(info.duration.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    video.width = Set(i32::try_from(info.width).ok());
    video.height = Set(i32::try_from(info.height).ok());
    video.frame_rate = Set((info.frame_rate > 0.0).then_some(info.frame_rate));
    video.rotation = Set(i32::try_from(info.rotation).ok());
    video.has_audio = Set(Some(info.has_audio));
    video.container = Set(info.container.clone().or_else(|| info.container_caps.clone()));
    video.video_codec = Set(info.video_codec.clone().or_else(|| info.video_caps.clone()));
    video.audio_codec = Set(info.audio_codec.clone());
    video.source_key = Set(Some(source.source_key.to_string()));
    video.source_size_bytes = Set(Some(source.source_size));
    video.updated_at = Set(now);
    video.update(conn).await
}

/// The video is FAILED with `reason`.
pub async fn mark_failed<C: ConnectionTrait>(
    conn: &C,
    current: video::Model,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<video::Model, DbErr> {
    let mut video = sea_orm::IntoActiveModel::into_active_model(current);
    video.status = Set(VideoStatus::Failed);
    video.error = Set(Some(reason.to_string()));
    video.updated_at = Set(now);
    video.update(conn).await
}

/// The video row, locked for update until the transaction ends: the one way a
/// video row is locked (a PostgreSQL row lock; SQLite has one writer already).
/// Writers that must not interleave on one video (its event sequence, the outcome
/// of a transcode, renditions) take it first.
pub async fn lock<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<video::Model>, DbErr> {
    let query = video::Entity::find_by_id(id);
    if conn.get_database_backend() == DbBackend::Postgres {
        query.lock_exclusive().one(conn).await
    } else {
        query.one(conn).await
    }
}

/// The video by id if `viewer` may read it; NOT_FOUND otherwise.
pub async fn find_readable<C: ConnectionTrait>(
    conn: &C,
    viewer: Option<&Principal>,
    id: Uuid,
) -> Result<video::Model, AppError> {
    let video = find(conn, id).await.map_err(AppError::internal)?;
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

/// The video by id if `principal` may delete it; NOT_FOUND / FORBIDDEN as
/// [`find_writable`].
pub async fn find_deletable<C: ConnectionTrait>(
    conn: &C,
    principal: &Principal,
    id: Uuid,
) -> Result<video::Model, AppError> {
    let video = find_readable(conn, Some(principal), id).await?;
    if can_delete(principal, &video) {
        Ok(video)
    } else {
        Err(AppError::forbidden("you may not delete this video"))
    }
}

/// Bytes counted against a user's quota: sources and transcode outputs of videos
/// not deleted, plus the declared size of uploads still open or completing.
// SUM(bigint) is numeric on PostgreSQL; the casts keep both backends at BIGINT.
pub async fn storage_used_bytes<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<i64, AppError> {
    let stored: Option<i64> = video::Entity::find()
        .select_only()
        .column_as(Expr::cust("CAST(SUM(COALESCE(source_size_bytes, 0) + output_bytes) AS BIGINT)"), "total")
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

// ---------------------------------------------------------------------------
// Catalogue: input rules, listing, create, update, delete.
// ---------------------------------------------------------------------------

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 40;
/// Largest search string accepted by `videos(filter: { search })`.
pub const MAX_SEARCH_CHARS: usize = 200;

/// A title: trimmed, 1..=200 characters, no control characters.
pub fn normalize_title(title: &str) -> Result<String, AppError> {
    let title = title.trim();
    let chars = title.chars().count();
    if chars == 0 {
        return Err(AppError::bad_input("title must not be empty"));
    }
    if chars > MAX_TITLE_CHARS {
        return Err(AppError::bad_input(format!("title must be at most {MAX_TITLE_CHARS} characters")));
    }
    if title.chars().any(char::is_control) {
        return Err(AppError::bad_input("title must not contain control characters"));
    }
    Ok(title.to_string())
}

/// A description: at most 5000 characters (kept as written, line breaks allowed).
pub fn normalize_description(description: &str) -> Result<String, AppError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::bad_input(format!("description must be at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    if description.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(AppError::bad_input("description must not contain control characters"));
    }
    Ok(description.to_string())
}

/// One tag: trimmed, lowercased, 1..=40 characters. Quotes, backslashes and control
/// characters are refused so a tag reads the same in every JSON encoder.
pub fn normalize_tag(tag: &str) -> Result<String, AppError> {
    let tag = tag.trim().to_lowercase();
    let chars = tag.chars().count();
    if chars == 0 {
        return Err(AppError::bad_input("tags must not be empty"));
    }
    if chars > MAX_TAG_CHARS {
        return Err(AppError::bad_input(format!("each tag must be at most {MAX_TAG_CHARS} characters")));
    }
    if tag.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(AppError::bad_input("tags must not contain quotes, backslashes or control characters"));
    }
    Ok(tag)
}

/// Tags: each normalized, duplicates dropped (first occurrence kept), at most 20.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, AppError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = normalize_tag(tag)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(AppError::bad_input(format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

/// `created_at` is kept at microsecond precision, what PostgreSQL stores, so a
/// cursor taken from a row compares equal to the row on every backend.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}

/// A new video, already validated.
#[derive(Debug, Clone)]
pub struct NewVideo {
    pub owner_id: Uuid,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
}

/// Insert a DRAFT video.
pub async fn create_video<C: ConnectionTrait>(conn: &C, new: NewVideo) -> Result<video::Model, AppError> {
    let now = now_micros();
    video::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(new.owner_id),
        title: Set(new.title),
        description: Set(new.description),
        tags: Set(new.tags.into()),
        visibility: Set(new.visibility),
        status: Set(VideoStatus::Draft),
        error: Set(None),
        duration_ms: Set(None),
        width: Set(None),
        height: Set(None),
        frame_rate: Set(None),
        rotation: Set(None),
        has_audio: Set(None),
        container: Set(None),
        video_codec: Set(None),
        audio_codec: Set(None),
        source_key: Set(None),
        source_size_bytes: Set(None),
        hidden_at: Set(None),
        hidden_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
        event_seq: Set(0),
        output_bytes: Set(0),
        output_version: Set(None),
        downloads: Set(None),
    }
    .insert(conn)
    .await
    .map_err(AppError::internal)
}

/// Changes to a video's metadata, already validated; `None` leaves a field as is.
#[derive(Debug, Clone, Default)]
pub struct VideoChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<Visibility>,
}

/// Apply `changes` to a video the caller may write (see [`find_writable`]).
pub async fn update_video<C: ConnectionTrait>(
    conn: &C,
    video: video::Model,
    changes: VideoChanges,
) -> Result<video::Model, AppError> {
    let mut active: video::ActiveModel = video.into();
    if let Some(title) = changes.title {
        active.title = Set(title);
    }
    if let Some(description) = changes.description {
        active.description = Set(description);
    }
    if let Some(tags) = changes.tags {
        active.tags = Set(tags.into());
    }
    if let Some(visibility) = changes.visibility {
        active.visibility = Set(visibility);
    }
    active.updated_at = Set(Utc::now());
    active.update(conn).await.map_err(AppError::internal)
}

/// Soft-delete a video the caller may write, in one transaction: mark it deleted,
/// abort its open uploads, cancel its jobs, record DELETED and enqueue the
/// removal of its objects (done asynchronously, with retries, by the job runner).
/// Returns the DELETED event, to publish after commit. A video already deleted
/// (also by a concurrent call) is NOT_FOUND.
// No `err` here: the caller logs an AppError once, at the level its code deserves.
#[tracing::instrument(skip_all, fields(video_id = %id, user_id = %principal.user_id))]
pub async fn delete_video(
    db: &DatabaseConnection,
    principal: &Principal,
    id: Uuid,
    max_attempts: i32,
) -> Result<DomainEvent, AppError> {
    let txn = crate::db::begin_write(db).await.map_err(AppError::internal)?;
    // Write first, changing nothing: the transaction holds the write lock (SQLite)
    // or the row lock (PostgreSQL) before it reads, so a concurrent delete waits
    // here and then finds the video gone, instead of failing to upgrade a stale read.
    video::Entity::update_many()
        .col_expr(video::Column::UpdatedAt, Expr::col(video::Column::UpdatedAt).into())
        .filter(video::Column::Id.eq(id))
        .exec(&txn)
        .await
        .map_err(AppError::internal)?;
    let video = find_deletable(&txn, principal, id).await?;
    let (deleted, event) = mark_deleted_in(&txn, video).await?.ok_or_else(|| AppError::not_found("video"))?;
    jobs::enqueue(
        &txn,
        NewJob {
            kind: JobKind::DeleteObjects,
            video_id: Some(deleted.id),
            owner_id: Some(deleted.owner_id),
            priority: jobs::DEFAULT_PRIORITY,
            payload: serde_json::json!({ "prefix": layout::video_prefix(deleted.owner_id, deleted.id) }),
            max_attempts,
        },
    )
    .await
    .map_err(AppError::internal)?;
    txn.commit().await.map_err(AppError::internal)?;
    Ok(event)
}

/// Mark `video` deleted inside `txn`: conditional on `deleted_at IS NULL` (`None`
/// when it already was), its open uploads aborted, its jobs cancelled, DELETED
/// recorded. Removing its objects is the caller's (a DELETE_OBJECTS job for one
/// video, the DELETE_USER job's prefix for a whole account). Returns the deleted
/// row and the DELETED event, to publish after commit.
pub async fn mark_deleted_in(
    txn: &DatabaseTransaction,
    video: video::Model,
) -> Result<Option<(video::Model, DomainEvent)>, DbErr> {
    let now = Utc::now();
    // Conditional on `deleted_at IS NULL`: of two concurrent deletes one wins.
    let marked = video::Entity::update_many()
        .col_expr(video::Column::DeletedAt, Expr::value(now))
        .col_expr(video::Column::UpdatedAt, Expr::value(now))
        .filter(video::Column::Id.eq(video.id))
        .filter(video::Column::DeletedAt.is_null())
        .exec(txn)
        .await?;
    if marked.rows_affected != 1 {
        return Ok(None);
    }
    upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(UploadStatus::Aborted.to_value()))
        .col_expr(upload::Column::FailureReason, Expr::value("video deleted"))
        .col_expr(upload::Column::UpdatedAt, Expr::value(now))
        .filter(upload::Column::VideoId.eq(video.id))
        .filter(upload::Column::Status.is_in([UploadStatus::Open, UploadStatus::Completing]))
        .exec(txn)
        .await?;
    // Nobody has leased a QUEUED job: it is cancelled outright. A RUNNING one is
    // asked to stop; its worker sees `cancel_requested` and finishes it.
    job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Cancelled.to_value()))
        .col_expr(job::Column::CancelRequested, Expr::value(true))
        .col_expr(job::Column::FinishedAt, Expr::value(now))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::VideoId.eq(video.id))
        .filter(job::Column::Status.eq(JobStatus::Queued))
        .exec(txn)
        .await?;
    job::Entity::update_many()
        .col_expr(job::Column::CancelRequested, Expr::value(true))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::VideoId.eq(video.id))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .exec(txn)
        .await?;
    let deleted = video::Model { deleted_at: Some(now), updated_at: now, ..video };
    let event = crate::repo::outbox::record(txn, &deleted, EventKind::Deleted, EventDetail::default()).await?;
    Ok(Some((deleted, event)))
}

/// Filters of a video listing, already validated.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub owner_id: Option<Uuid>,
    pub status: Option<VideoStatus>,
    pub visibility: Option<Visibility>,
    /// A normalized tag ([`normalize_tag`]).
    pub tag: Option<String>,
    /// Case-insensitive substring of the title.
    pub search: Option<String>,
}

/// Position in the listing order (`created_at DESC, id DESC`): rows strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl ListCursor {
    pub fn of(video: &video::Model) -> Self {
        Self { created_at: video.created_at, id: video.id }
    }
}

/// The rows of a listing `viewer` may see: the SQL twin of [`can_list`].
pub fn listable_by(viewer: Option<&Principal>) -> Condition {
    let public =
        Condition::all().add(video::Column::Visibility.eq(Visibility::Public)).add(video::Column::HiddenAt.is_null());
    let visible = match viewer {
        Some(p) if has_permission(p.role, Permission::ModerateVideos) => Condition::all(),
        Some(p) => Condition::any().add(video::Column::OwnerId.eq(p.user_id)).add(public),
        None => public,
    };
    Condition::all().add(video::Column::DeletedAt.is_null()).add(visible)
}

/// `%`, `_` and the escape character itself, escaped for `LIKE ... ESCAPE '!'`.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// Videos whose `tags` JSON array holds exactly `tag`. Placeholders are the
/// backend's own (`$1` on PostgreSQL, `?` on SQLite): sea-query binds only those.
fn has_tag(backend: DbBackend, tag: &str) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(r#""videos"."tags" @> $1"#, [serde_json::json!([tag])]),
        _ => Expr::cust_with_values(
            r#"EXISTS (SELECT 1 FROM json_each("videos"."tags") WHERE json_each.value = ?)"#,
            [tag.to_string()],
        ),
    }
}

/// One page of the videos `viewer` may list, newest first, strictly after `after`;
/// at most `limit` rows.
pub async fn list_visible<C: ConnectionTrait>(
    conn: &C,
    viewer: Option<&Principal>,
    filter: &ListFilter,
    after: Option<ListCursor>,
    limit: u64,
) -> Result<Vec<video::Model>, AppError> {
    let mut condition = listable_by(viewer);
    if let Some(owner) = filter.owner_id {
        condition = condition.add(video::Column::OwnerId.eq(owner));
    }
    if let Some(status) = filter.status {
        condition = condition.add(video::Column::Status.eq(status));
    }
    if let Some(visibility) = filter.visibility {
        condition = condition.add(video::Column::Visibility.eq(visibility));
    }
    if let Some(tag) = &filter.tag {
        condition = condition.add(has_tag(conn.get_database_backend(), tag));
    }
    if let Some(search) = &filter.search {
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        condition = condition.add(
            Expr::expr(Func::lower(Expr::col((video::Entity, video::Column::Title))))
                .like(LikeExpr::new(pattern).escape('!')),
        );
    }
    if let Some(after) = after {
        condition = condition.add(Condition::any().add(video::Column::CreatedAt.lt(after.created_at)).add(
            Condition::all().add(video::Column::CreatedAt.eq(after.created_at)).add(video::Column::Id.lt(after.id)),
        ));
    }
    video::Entity::find()
        .filter(condition)
        .order_by_desc(video::Column::CreatedAt)
        .order_by_desc(video::Column::Id)
        .limit(limit)
        .all(conn)
        .await
        .map_err(AppError::internal)
}

/// READY renditions of each of the videos, tallest first (a video without any is
/// absent from the map). One query for any number of videos.
pub async fn ready_renditions_of<C: ConnectionTrait>(
    conn: &C,
    video_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<rendition::Model>>, AppError> {
    let rows = rendition::Entity::find()
        .filter(rendition::Column::VideoId.is_in(video_ids.iter().copied()))
        .filter(rendition::Column::Status.eq(RenditionStatus::Ready))
        .order_by_desc(rendition::Column::Height)
        .order_by_asc(rendition::Column::Name)
        .all(conn)
        .await
        .map_err(AppError::internal)?;
    let mut by_video: HashMap<Uuid, Vec<rendition::Model>> = HashMap::new();
    for row in rows {
        by_video.entry(row.video_id).or_default().push(row);
    }
    Ok(by_video)
}

/// Progress of each video's most recent RUNNING job, for those that reported any.
/// One query for any number of videos.
pub async fn running_progress_of<C: ConnectionTrait>(
    conn: &C,
    video_ids: &[Uuid],
) -> Result<HashMap<Uuid, ProgressInfo>, AppError> {
    let running = job::Entity::find()
        .filter(job::Column::VideoId.is_in(video_ids.iter().copied()))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .order_by_desc(job::Column::CreatedAt)
        .order_by_desc(job::Column::Id)
        .all(conn)
        .await
        .map_err(AppError::internal)?;
    let mut by_video = HashMap::new();
    let mut seen = HashSet::new();
    for job in running {
        // Newest first: a video's first row is its most recent running job.
        let Some(video_id) = job.video_id else { continue };
        if !seen.insert(video_id) {
            continue;
        }
        let Some(progress) = job.progress else { continue };
        match serde_json::from_value::<ProgressInfo>(progress) {
            Ok(info) => {
                by_video.insert(video_id, info);
            }
            // A malformed report must not break reading the video.
            Err(err) => tracing::warn!(%video_id, error = %err, "unreadable job progress"),
        }
    }
    Ok(by_video)
}

/// The video by id, from memory or (then remembered) from the database:
/// its row, READY renditions and running progress. `None`: no such row.
pub async fn load_cached<C: ConnectionTrait>(
    cache: &VideoCache,
    conn: &C,
    id: Uuid,
) -> Result<Option<Arc<CachedVideo>>, AppError> {
    let ticket = match cache.lookup(id) {
        Lookup::Hit(video) => return Ok(Some(video)),
        Lookup::Miss => cache.ticket(),
        Lookup::Bypass => None,
    };
    let Some(row) = find(conn, id).await.map_err(AppError::internal)? else {
        return Ok(None);
    };
    // A row nobody may read any more (deleted) is kept without its details.
    let renditions = if row.deleted_at.is_some() {
        Vec::new()
    } else {
        ready_renditions_of(conn, &[id]).await?.remove(&id).unwrap_or_default()
    };
    let video = Arc::new(CachedVideo { row, renditions });
    if let Some(ticket) = ticket {
        cache.insert(ticket, id, video.clone());
    }
    Ok(Some(video))
}

// ---------------------------------------------------------------------------
// Transcode outcomes and renditions (`jobs::runner`, `jobs::transcode`,
// `jobs::remote`): a video's rendition rows, and the video after a transcode.
// ---------------------------------------------------------------------------

/// A FAILED video asked to be transcoded again is PROCESSING (its error cleared).
pub async fn processing_again<C: ConnectionTrait>(
    conn: &C,
    current: video::Model,
    now: DateTime<Utc>,
) -> Result<video::Model, DbErr> {
    let mut video = sea_orm::IntoActiveModel::into_active_model(current);
    video.status = Set(VideoStatus::Processing);
    video.error = Set(None);
    video.updated_at = Set(now);
    video.update(conn).await
}

/// What a successful transcode tells about its video (see [`mark_ready`]).
#[derive(Debug, Clone)]
pub struct TranscodedFacts {
    pub duration_ms: i64,
    pub width: i32,
    pub height: i32,
    pub frame_rate: f64,
    pub rotation: i32,
    pub has_audio: bool,
    pub container: Option<String>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub source_size_bytes: i64,
    pub output_bytes: i64,
    /// The outputs' version; `None` keeps the current one (outputs of an earlier
    /// release, rewritten in place).
    pub output_version: Option<String>,
    pub downloads: video::Downloads,
}

/// The video is READY with a transcode's facts (its error cleared).
pub async fn mark_ready<C: ConnectionTrait>(
    conn: &C,
    current: video::Model,
    facts: TranscodedFacts,
    now: DateTime<Utc>,
) -> Result<video::Model, DbErr> {
    let mut row = sea_orm::IntoActiveModel::into_active_model(current);
    row.status = Set(VideoStatus::Ready);
    row.error = Set(None);
    row.duration_ms = Set(Some(facts.duration_ms));
    row.width = Set(Some(facts.width));
    row.height = Set(Some(facts.height));
    row.frame_rate = Set(Some(facts.frame_rate));
    row.rotation = Set(Some(facts.rotation));
    row.has_audio = Set(Some(facts.has_audio));
    row.container = Set(facts.container);
    row.video_codec = Set(facts.video_codec);
    row.audio_codec = Set(facts.audio_codec);
    row.source_size_bytes = Set(Some(facts.source_size_bytes));
    row.output_bytes = Set(facts.output_bytes);
    if facts.output_version.is_some() {
        row.output_version = Set(facts.output_version);
    }
    row.downloads = Set(Some(facts.downloads));
    row.updated_at = Set(now);
    row.update(conn).await
}

/// Every rendition row of the video, whatever its status.
pub async fn renditions_of<C: ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<Vec<rendition::Model>, DbErr> {
    rendition::Entity::find().filter(rendition::Column::VideoId.eq(video_id)).all(conn).await
}

/// The video's rendition called `name`, if any.
pub async fn rendition_named<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    name: &str,
) -> Result<Option<rendition::Model>, DbErr> {
    rendition::Entity::find()
        .filter(rendition::Column::VideoId.eq(video_id))
        .filter(rendition::Column::Name.eq(name.to_string()))
        .one(conn)
        .await
}

/// A READY rendition to write (see [`upsert_rendition`]).
#[derive(Debug, Clone, Copy)]
pub struct ReadyRendition<'a> {
    pub name: &'a str,
    pub width: i32,
    pub height: i32,
    pub bitrate: i64,
    pub codecs: &'a str,
    pub playlist_key: &'a str,
}

/// Insert or refresh a READY rendition (unique per video and name).
pub async fn upsert_rendition<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    new: ReadyRendition<'_>,
) -> Result<(), DbErr> {
    let now = Utc::now();
    match rendition_named(conn, video_id, new.name).await? {
        Some(row) => {
            let mut row = sea_orm::IntoActiveModel::into_active_model(row);
            row.width = Set(new.width);
            row.height = Set(new.height);
            row.bitrate = Set(new.bitrate);
            row.codecs = Set(new.codecs.to_string());
            row.playlist_key = Set(new.playlist_key.to_string());
            row.status = Set(RenditionStatus::Ready);
            row.updated_at = Set(now);
            row.update(conn).await?;
        }
        None => {
            rendition::ActiveModel {
                id: Set(Uuid::now_v7()),
                video_id: Set(video_id),
                name: Set(new.name.to_string()),
                width: Set(new.width),
                height: Set(new.height),
                bitrate: Set(new.bitrate),
                codecs: Set(new.codecs.to_string()),
                playlist_key: Set(new.playlist_key.to_string()),
                status: Set(RenditionStatus::Ready),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(conn)
            .await?;
        }
    }
    Ok(())
}

/// Remove the video's renditions not called one of `keep`.
pub async fn delete_renditions_except<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    keep: Vec<String>,
) -> Result<(), DbErr> {
    rendition::Entity::delete_many()
        .filter(rendition::Column::VideoId.eq(video_id))
        .filter(rendition::Column::Name.is_not_in(keep))
        .exec(conn)
        .await?;
    Ok(())
}

/// Remove every rendition of the video.
pub async fn delete_renditions<C: ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<(), DbErr> {
    rendition::Entity::delete_many().filter(rendition::Column::VideoId.eq(video_id)).exec(conn).await?;
    Ok(())
}

/// Remove the video's rendition called `name`.
pub async fn delete_rendition<C: ConnectionTrait>(conn: &C, video_id: Uuid, name: &str) -> Result<(), DbErr> {
    rendition::Entity::delete_many()
        .filter(rendition::Column::VideoId.eq(video_id))
        .filter(rendition::Column::Name.eq(name))
        .exec(conn)
        .await?;
    Ok(())
}

/// How many of the video's renditions have their playlist under `prefix`.
pub async fn count_renditions_under<C: ConnectionTrait>(conn: &C, video_id: Uuid, prefix: &str) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    rendition::Entity::find()
        .filter(rendition::Column::VideoId.eq(video_id))
        .filter(rendition::Column::PlaylistKey.starts_with(prefix))
        .count(conn)
        .await
}

/// Remove the video's renditions whose playlist lies under `prefix`.
pub async fn delete_renditions_under<C: ConnectionTrait>(conn: &C, video_id: Uuid, prefix: &str) -> Result<(), DbErr> {
    rendition::Entity::delete_many()
        .filter(rendition::Column::VideoId.eq(video_id))
        .filter(rendition::Column::PlaylistKey.starts_with(prefix))
        .exec(conn)
        .await?;
    Ok(())
}

/// An earlier transcode of this video succeeded: it has READY renditions and a READY
/// event (a failed run's early rendition alone does not count).
pub async fn was_ready_before<C: ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<bool, DbErr> {
    use entities::event_outbox;
    use sea_orm::PaginatorTrait;
    let ready_renditions = rendition::Entity::find()
        .filter(rendition::Column::VideoId.eq(video_id))
        .filter(rendition::Column::Status.eq(RenditionStatus::Ready))
        .count(conn)
        .await?;
    if ready_renditions == 0 {
        return Ok(false);
    }
    let ready_events = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .filter(event_outbox::Column::Kind.eq(EventKind::Ready.as_str()))
        .count(conn)
        .await?;
    Ok(ready_events > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters() {
        assert_eq!(normalize_title("  Hello  ").unwrap(), "Hello");
        assert_eq!(normalize_title(&"é".repeat(200)).unwrap().chars().count(), 200);
        for bad in ["", "   ", "tab\tinside", "\u{0}"] {
            assert!(normalize_title(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_title(&"é".repeat(201)).is_err());
    }

    #[test]
    fn tags_are_normalized_deduplicated_and_bounded() {
        let tags: Vec<String> = [" Cats", "cats", "DOGS ", "dogs"].map(String::from).to_vec();
        assert_eq!(normalize_tags(&tags).unwrap(), ["cats", "dogs"]);
        let twenty_one: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(normalize_tags(&twenty_one).is_err());
        for bad in ["", " ", "a\"b", "back\\slash", "new\nline"] {
            assert!(normalize_tag(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_tag(&"t".repeat(40)).is_ok());
        assert!(normalize_tag(&"t".repeat(41)).is_err());
    }

    #[test]
    fn descriptions_keep_line_breaks_and_are_bounded() {
        assert_eq!(normalize_description("a\n\tb").unwrap(), "a\n\tb");
        assert!(normalize_description(&"d".repeat(5001)).is_err());
        assert!(normalize_description("bell\u{7}").is_err());
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("100%_done!"), "100!%!_done!!");
        assert_eq!(escape_like("plain"), "plain");
    }
}
