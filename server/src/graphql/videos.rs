//! The catalogue in GraphQL: the `Video` type and its queries and mutations.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{ComplexObject, Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use entities::video;
use uuid::Uuid;

use crate::auth::principal::{Principal, RequestAuth};
use crate::auth::roles::{require_principal, AuthenticatedGuard, Permission, PermissionGuard};
use crate::error::AppError;
use crate::error::GqlResultExt;
use crate::graphql::accounts::User;
use crate::graphql::loaders::{ProgressOf, RenditionsOf, TotalsOf, VideoDataLoader};
use crate::graphql::moderation::ModerationEntry;
use crate::graphql::progress::Progress;
use crate::graphql::views::VideoStats;
use crate::playback;
use crate::repo::videos::{self as repo, ListCursor, ListFilter, NewVideo, VideoChanges};
use crate::state::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::Visibility")]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::VideoStatus")]
pub enum VideoStatus {
    Draft,
    Uploading,
    Processing,
    Ready,
    Failed,
}

/// The authenticated caller, if any (anonymous callers may read public videos).
pub fn viewer<'a>(ctx: &'a Context<'_>) -> Option<&'a Principal> {
    match ctx.data_opt::<RequestAuth>() {
        Some(RequestAuth::Authenticated(principal)) => Some(principal),
        _ => None,
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct VideoOwner {
    pub id: ID,
}

/// A video. Built from a row the caller has already been allowed to read.
#[derive(Debug, Clone)]
pub struct Video(pub video::Model);

impl From<video::Model> for Video {
    fn from(model: video::Model) -> Self {
        Self(model)
    }
}

#[Object]
impl Video {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    async fn tags(&self) -> &[String] {
        &self.0.tags.0
    }

    async fn visibility(&self) -> Visibility {
        self.0.visibility.into()
    }

    async fn status(&self) -> VideoStatus {
        self.0.status.into()
    }

    async fn owner(&self) -> VideoOwner {
        VideoOwner { id: ID(self.0.owner_id.to_string()) }
    }

    /// Seconds, once probed.
    async fn duration(&self) -> Option<f64> {
        self.0.duration_ms.map(|ms| ms as f64 / 1000.0)
    }

    async fn width(&self) -> Option<i32> {
        self.0.width
    }

    async fn height(&self) -> Option<i32> {
        self.0.height
    }

    /// Why processing failed, in words a person understands.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// The HLS renditions that are ready, tallest first. On a first transcode the
    /// lowest one is here from PLAYABLE on, playable through its `playlistUrl` while
    /// the ladder is encoded: an EVENT playlist that grows until RENDITION_READY.
    async fn renditions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Rendition>> {
        let state = ctx.data::<AppState>()?;
        let loader = ctx.data::<VideoDataLoader>()?;
        let rows = loader.load_one(RenditionsOf(self.0.id)).await.map_err(|e| e.extend())?.unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|row| {
                let url = playback::rendition_url(state, &self.0, &row);
                Rendition { playlist_url: Some(url), ..Rendition::from(row) }
            })
            .collect())
    }

    /// Poster image (JPEG), once the video is READY. Signed for private videos.
    async fn thumbnail_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.ready_url(ctx, "thumbs/poster.jpg")
    }

    /// Storyboard WebVTT index (its cues point into a sprite sheet next to it), once READY.
    async fn storyboard_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.ready_url(ctx, "thumbs/storyboard.vtt")
    }

    /// Progressive MP4 download (faststart, top rung), once READY, if one was made.
    /// Supports Range.
    async fn mp4_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        match &self.0.downloads {
            Some(downloads) if !downloads.0.iter().any(|d| d.format == "MP4") => Ok(None),
            _ => self.ready_url(ctx, "mp4/video.mp4"),
        }
    }

    /// The single-file downloads (MP4 and/or WebM) of the current outputs, once
    /// READY: those the transcode was asked for. Served under `/media` with Range,
    /// signed for private videos. Empty for a video transcoded by an earlier release
    /// (its `mp4Url` still works).
    async fn downloads(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Download>> {
        let Some(downloads) = &self.0.downloads else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(downloads.0.len());
        for download in &downloads.0 {
            let format = match download.format.as_str() {
                "MP4" => crate::graphql::jobs::OutputFormat::Mp4,
                "WEBM" => crate::graphql::jobs::OutputFormat::Webm,
                _ => continue,
            };
            let extension = if format == crate::graphql::jobs::OutputFormat::Mp4 { "mp4" } else { "webm" };
            let Some(url) = self.ready_url(ctx, &format!("mp4/video.{extension}"))? else { return Ok(Vec::new()) };
            out.push(Download { format, url, width: download.width, height: download.height, size: download.bytes });
        }
        Ok(out)
    }

    /// HLS master playlist, once READY. Signed for private videos: every playlist
    /// and segment fetched through it carries the signature.
    async fn playback_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.ready_url(ctx, "hls/master.m3u8")
    }

    /// Views counted and seconds watched over the video's life.
    async fn stats(&self, ctx: &Context<'_>) -> async_graphql::Result<VideoStats> {
        let loader = ctx.data::<VideoDataLoader>()?;
        let (views, watch_seconds) =
            loader.load_one(TotalsOf(self.0.id)).await.map_err(|e| e.extend())?.unwrap_or((0, 0.0));
        Ok(VideoStats { views, watch_seconds })
    }

    /// Hidden by a moderator: it plays only for its owner and moderators.
    async fn hidden(&self) -> bool {
        self.0.hidden_at.is_some()
    }

    /// Why a moderator hid the video; shown only to its owner and moderators.
    async fn hidden_reason(&self, ctx: &Context<'_>) -> Option<&str> {
        if repo::is_owner_or_moderator(viewer(ctx), &self.0) {
            self.0.hidden_reason.as_deref()
        } else {
            None
        }
    }

    /// Moderation decisions on this video, oldest first. Moderators and admins only.
    #[graphql(guard = "PermissionGuard(Permission::ModerateVideos)")]
    async fn moderation_log(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<ModerationEntry>>> {
        let state = ctx.data::<AppState>()?;
        let rows = crate::repo::moderation::moderation_log(&state.db, self.0.id).await.gql()?;
        Ok(Some(rows.into_iter().map(ModerationEntry::from).collect()))
    }

    /// Progress of the processing job now running, if any.
    async fn progress(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Progress>> {
        let loader = ctx.data::<VideoDataLoader>()?;
        let progress = loader.load_one(ProgressOf(self.0.id)).await.map_err(|e| e.extend())?;
        Ok(progress.map(Progress::from))
    }
}

impl Video {
    /// The URL of one of the video's outputs, when it is READY. The caller already
    /// may read this video (a `Video` is only built for such callers).
    fn ready_url(&self, ctx: &Context<'_>, path: &str) -> async_graphql::Result<Option<String>> {
        if self.0.status != entities::VideoStatus::Ready {
            return Ok(None);
        }
        let state = ctx.data::<AppState>()?;
        Ok(Some(playback::media_url(state, &self.0, path)))
    }
}

/// A single-file download of a video.
#[derive(SimpleObject, Debug, Clone)]
pub struct Download {
    /// MP4 or WEBM.
    pub format: crate::graphql::jobs::OutputFormat,
    /// Signed for private videos; supports Range.
    pub url: String,
    pub width: i32,
    pub height: i32,
    /// Bytes.
    pub size: i64,
}

/// One rung of the HLS ladder.
#[derive(SimpleObject, Debug, Clone)]
pub struct Rendition {
    /// e.g. "720p".
    pub name: String,
    pub width: i32,
    pub height: i32,
    /// Bits per second.
    pub bitrate: i64,
    /// This rendition's media playlist (signed for private videos).
    pub playlist_url: Option<String>,
}

impl From<entities::rendition::Model> for Rendition {
    fn from(model: entities::rendition::Model) -> Self {
        Self { name: model.name, width: model.width, height: model.height, bitrate: model.bitrate, playlist_url: None }
    }
}

#[derive(InputObject, Debug)]
pub struct CreateVideoInput {
    /// 1 to 200 characters after trimming.
    pub title: String,
    /// At most 5000 characters.
    pub description: Option<String>,
    /// At most 20; each 1 to 40 characters, trimmed and lowercased, duplicates dropped.
    pub tags: Option<Vec<String>>,
    /// PRIVATE when omitted.
    pub visibility: Option<Visibility>,
}

/// Fields left out (or null) stay as they are.
#[derive(InputObject, Debug)]
pub struct UpdateVideoInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<Visibility>,
}

#[derive(InputObject, Debug, Default)]
pub struct VideoFilter {
    pub owner_id: Option<ID>,
    pub status: Option<VideoStatus>,
    pub visibility: Option<Visibility>,
    /// Videos carrying this tag (compared after trimming and lowercasing).
    pub tag: Option<String>,
    /// Case-insensitive substring of the title; `%` and `_` match themselves.
    /// (Embedded SQLite folds case for ASCII letters only.)
    pub search: Option<String>,
    /// `true`: only the caller's own videos (needs authentication).
    pub mine: Option<bool>,
}

const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;
const CURSOR_VERSION: &str = "v1";

/// Opaque cursor: `v1:{created_at micros}:{id}`, base64url.
pub fn encode_cursor(cursor: ListCursor) -> String {
    let raw = format!("{CURSOR_VERSION}:{}:{}", cursor.created_at.timestamp_micros(), cursor.id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_cursor(cursor: &str) -> Result<ListCursor, AppError> {
    let invalid = || AppError::bad_input("invalid cursor");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = raw.splitn(3, ':');
    if parts.next() != Some(CURSOR_VERSION) {
        return Err(invalid());
    }
    let micros: i64 = parts.next().and_then(|m| m.parse().ok()).ok_or_else(invalid)?;
    let created_at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let id = parts.next().and_then(|id| Uuid::parse_str(id).ok()).ok_or_else(invalid)?;
    Ok(ListCursor { created_at, id })
}

/// A video id from the client; malformed is the caller's mistake, not a miss.
pub(crate) fn parse_video_id(id: &ID) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input("malformed video id"))
}

/// The validated filter; `None` when it cannot match anything.
pub(crate) fn list_filter(filter: VideoFilter, viewer: Option<&Principal>) -> Result<Option<ListFilter>, AppError> {
    let mut owner_id = match &filter.owner_id {
        Some(id) => Some(Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input("malformed ownerId"))?),
        None => None,
    };
    if filter.mine == Some(true) {
        let me = viewer.ok_or_else(|| AppError::unauthenticated("`mine` needs authentication"))?.user_id;
        if owner_id.is_some_and(|owner| owner != me) {
            // Someone else's and mine at once: nothing.
            return Ok(None);
        }
        owner_id = Some(me);
    }
    let tag = filter.tag.as_deref().map(repo::normalize_tag).transpose()?;
    let search = match filter.search {
        Some(search) if search.chars().count() > repo::MAX_SEARCH_CHARS => {
            return Err(AppError::bad_input(format!("search must be at most {} characters", repo::MAX_SEARCH_CHARS)))
        }
        Some(search) if search.trim().is_empty() => None,
        Some(search) => Some(search.trim().to_string()),
        None => None,
    };
    Ok(Some(ListFilter {
        owner_id,
        status: filter.status.map(Into::into),
        visibility: filter.visibility.map(Into::into),
        tag,
        search,
    }))
}

#[derive(Default)]
pub struct VideosQuery;

#[Object]
impl VideosQuery {
    // `video(id)`: hot videos are read from memory (`access::videos`); who may
    // see the row is decided here, per request, as `repo::videos::find_readable` does.
    /// A video by id; null when it does not exist or the caller may not see it.
    async fn video(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Video>> {
        let state = ctx.data::<AppState>()?;
        let id = parse_video_id(&id).gql()?;
        let video = crate::repo::videos::load_cached(state.access_signals.videos(), &state.db, id).await.gql()?;
        Ok(video.filter(|video| repo::can_read_by_id(viewer(ctx), &video.row)).map(|video| Video(video.row.clone())))
    }

    /// Videos the caller may list, newest first. Anonymous callers and strangers
    /// see public videos; owners also their own; moderators and admins all.
    /// Unlisted videos are listed only to their owner and staff.
    async fn videos(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size: default 20, at most 100.")] first: Option<i32>,
        after: Option<String>,
        filter: Option<VideoFilter>,
    ) -> async_graphql::Result<Connection<String, Video>> {
        let state = ctx.data::<AppState>()?;
        let viewer = viewer(ctx);
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(AppError::bad_input(format!("first must be between 0 and {MAX_PAGE}")).extend());
        }
        let cursor = after.as_deref().map(decode_cursor).transpose().gql()?;
        let filter = list_filter(filter.unwrap_or_default(), viewer).gql()?;
        let limit = u64::try_from(first).unwrap_or(0);
        let mut rows = match filter {
            Some(filter) => repo::list_visible(&state.db, viewer, &filter, cursor, limit + 1).await.gql()?,
            None => Vec::new(),
        };
        let has_next = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let mut connection = Connection::new(cursor.is_some(), has_next);
        connection.edges.extend(rows.into_iter().map(|v| Edge::new(encode_cursor(ListCursor::of(&v)), Video::from(v))));
        Ok(connection)
    }
}

#[derive(Default)]
pub struct VideosMutation;

#[Object]
impl VideosMutation {
    /// Create a video (DRAFT, PRIVATE unless told otherwise); upload its bytes next.
    #[graphql(guard = "PermissionGuard(Permission::WriteOwnVideos)")]
    async fn create_video(&self, ctx: &Context<'_>, input: CreateVideoInput) -> async_graphql::Result<Video> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let new = (|| -> Result<NewVideo, AppError> {
            Ok(NewVideo {
                owner_id: principal.user_id,
                title: repo::normalize_title(&input.title)?,
                description: repo::normalize_description(input.description.as_deref().unwrap_or(""))?,
                tags: repo::normalize_tags(input.tags.as_deref().unwrap_or(&[]))?,
                visibility: input.visibility.map_or(entities::Visibility::Private, Into::into),
            })
        })()
        .gql()?;
        let video = repo::create_video(&state.db, new).await.gql()?;
        Ok(video.into())
    }

    /// Change a video's metadata or visibility: its owner only (staff hide or delete).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn update_video(&self, ctx: &Context<'_>, id: ID, input: UpdateVideoInput) -> async_graphql::Result<Video> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_video_id(&id).gql()?;
        let changes = (|| -> Result<VideoChanges, AppError> {
            Ok(VideoChanges {
                title: input.title.as_deref().map(repo::normalize_title).transpose()?,
                description: input.description.as_deref().map(repo::normalize_description).transpose()?,
                tags: input.tags.as_deref().map(repo::normalize_tags).transpose()?,
                visibility: input.visibility.map(Into::into),
            })
        })()
        .gql()?;
        let video = repo::find_writable(&state.db, principal, id).await.gql()?;
        let video = repo::update_video(&state.db, video, changes).await.gql()?;
        // Visibility may have changed: no instance serves the old row from memory
        // once this answers.
        state.access_signals.video_changed(id).await;
        Ok(video.into())
    }

    /// Delete a video: it disappears at once, its uploads and jobs stop, and its
    /// stored objects are removed in the background (retried until done).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn delete_video(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_video_id(&id).gql()?;
        let open_uploads = crate::uploads::abort::open_of_video(state, id).await.gql()?;
        let event = repo::delete_video(&state.db, principal, id, state.settings.jobs.max_attempts).await.gql()?;
        // The DELETED event reaches other instances' caches too, but without waiting:
        // this does, so the video is gone everywhere once this answers.
        state.access_signals.video_changed(id).await;
        state.publisher().publish(event);
        crate::uploads::abort::cleanup_ended(state, &open_uploads).await;
        Ok(true)
    }
}

/// Storage use and quota, on the caller's own account (`me`).
#[ComplexObject]
impl User {
    /// Bytes stored: sources, every transcode output (renditions, downloads,
    /// thumbnails, storyboards) and uploads in progress.
    async fn storage_used_bytes(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let state = ctx.data::<AppState>()?;
        let user_id = Uuid::parse_str(self.id.as_str()).map_err(|e| AppError::internal(e).extend())?;
        repo::storage_used_bytes(&state.db, user_id).await.gql()
    }

    /// Bytes this account may store; null when there is no quota.
    async fn storage_quota_bytes(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i64>> {
        let state = ctx.data::<AppState>()?;
        let user_id = Uuid::parse_str(self.id.as_str()).map_err(|e| AppError::internal(e).extend())?;
        let user =
            crate::repo::users::find_any(&state.db, user_id).await.map_err(|e| AppError::internal(e).extend())?;
        Ok(crate::repo::usage::storage_quota(user.as_ref(), &state.settings))
    }

    /// Seconds of media processing this account used today (UTC).
    async fn processing_seconds_today(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        let state = ctx.data::<AppState>()?;
        let user_id = Uuid::parse_str(self.id.as_str()).map_err(|e| AppError::internal(e).extend())?;
        crate::repo::usage::processing_seconds_today(&state.db, user_id)
            .await
            .map_err(|e| AppError::internal(e).extend())
    }

    /// Seconds of media processing this account may use per UTC day; null when
    /// there is no budget. Jobs past it wait for the next day.
    async fn processing_budget_seconds_per_day(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i64>> {
        let state = ctx.data::<AppState>()?;
        let user_id = Uuid::parse_str(self.id.as_str()).map_err(|e| AppError::internal(e).extend())?;
        crate::repo::usage::processing_budget_of(&state.db, user_id, &state.settings)
            .await
            .map_err(|e| AppError::internal(e).extend())
    }

    /// The account's live sign-in sessions, most recently used first. Only the
    /// user themself and admins may read them.
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::user_admin::Session>> {
        super::user_admin::sessions_of(ctx, &self.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn cursors_round_trip_and_refuse_tampering() {
        let cursor = ListCursor { created_at: repo::now_micros(), id: Uuid::now_v7() };
        assert_eq!(decode_cursor(&encode_cursor(cursor)).unwrap(), cursor);
        let raw = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        for bad in [
            String::new(),
            "not base64!".into(),
            raw("v2:1:00000000-0000-0000-0000-000000000000"),
            raw("v1:x:00000000-0000-0000-0000-000000000000"),
            raw("v1:1:not-a-uuid"),
            raw("v1:1"),
        ] {
            let err = decode_cursor(&bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadUserInput, "{bad:?}");
        }
    }
}
