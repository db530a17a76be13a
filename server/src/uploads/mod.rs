//! Uploads: sessions that bring a video's source bytes into storage.
//!
//! One `uploads` row per attempt. Bytes arrive one of three ways; none of them
//! gives a client anything that can write the video's source object
//! ([`crate::storage::layout::source`]) — only completion does, after it has
//! claimed the session:
//!
//! - `PRESIGNED`: one presigned `PUT` straight to storage (small files), to the
//!   upload's own staging key ([`crate::storage::layout::staging`]); completion
//!   moves it into place (local: rename; S3: copy + delete);
//! - `MULTIPART`: presigned part URLs of a storage multipart upload (large files)
//!   whose object is the source key: parts are invisible until the server
//!   completes the upload, and part URLs die with the multipart upload. At
//!   completion the server asks the store which parts arrived (`list_parts`),
//!   so clients never send ETags back;
//! - tus (`/uploads/{id}`, [`tus_store`]): the server streams PATCH bodies into
//!   multipart parts itself. Every session (also PRESIGNED/MULTIPART ones) has a
//!   tus URL; a client uses either the presigned path or tus, not both.
//!
//! Presigned URLs are bound to their session and its exact length
//! ([`crate::storage::UploadBinding`]), live `uploads.upload_url_ttl_secs` at most,
//! and (local disk) stop working the moment the session is not OPEN
//! (`UPLOAD_CLOSED`); on S3 a late `PUT` can only reach the staging key, which the
//! [`sweeper`] removes once every URL of the upload has expired.
//!
//! Completion ([`completion`]) verifies, probes and enqueues the transcode in one
//! transaction; [`abort`] and the [`sweeper`] clean up sessions that never finish.
//!
//! Video status: createUpload moves DRAFT/FAILED → UPLOADING; completion moves it to
//! PROCESSING (accepted) or FAILED (rejected, with a readable reason); abort and
//! expiry move it back to DRAFT, so the owner can simply try again.

pub mod abort;
pub mod buffer_budget;
pub mod completion;
pub mod concat;
pub mod gate;
pub mod session;
pub mod sweeper;
pub mod tickets;
pub mod tus_store;

use chrono::Utc;
use entities::{upload, video, UploadMethod, UploadStatus, VideoStatus};
use sea_orm::Set;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::principal::Principal;
use crate::config::uploads::UploadSettings;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::{layout, ObjectStore, MAX_PART_NUMBER, MAX_PART_SIZE, MIN_PART_SIZE};

/// What the upload service uses of the process: its narrow dependencies, provided
/// by the composition root (`state::AppState`).
pub trait UploadDeps: Send + Sync {
    fn db(&self) -> &sea_orm::DatabaseConnection;
    fn settings(&self) -> &crate::config::Settings;
    fn store(&self) -> &std::sync::Arc<dyn ObjectStore>;
    /// Publishes stored events after commit.
    fn publisher(&self) -> crate::events::Publisher;
    fn access_signals(&self) -> &crate::access::AccessSignals;
    fn tus_buffers(&self) -> &buffer_budget::BufferBudget;
    fn limiter(&self) -> &crate::limits::Limiter;
    /// The server's base URL, without a trailing `/`.
    fn public_url(&self) -> &str;
}

const MIB: u64 = 1024 * 1024;
/// Longest stored file name, in characters.
pub const MAX_FILENAME_CHARS: usize = 255;

/// What a client asks for when it starts an upload (GraphQL or tus POST).
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub video_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub checksum_sha256: Option<String>,
}

/// One multipart part the server uploaded itself (tus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub number: i32,
    pub etag: String,
}

/// The tus side of a session, kept in the row's `parts` JSON as `{"tus": {...}}`.
/// Every part but the last is exactly `part_size` bytes, so the durable offset
/// tells how many bytes of the staging tail object are valid:
/// `offset - parts.len() * part_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusState {
    pub part_size: u64,
    pub parts: Vec<StoredPart>,
    /// The `Upload-Metadata` header the client sent at creation, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// `Upload-Defer-Length: 1`: the length is not known yet; until a PATCH
    /// names it, the row's `declared_size` is the most the upload may hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// tus concatenation: a partial upload, or the final one made of partials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<Concat>,
    /// The bytes go into the multipart upload's one staging file at their offset
    /// (local disk, `uploads.tus_local_staging`): `parts` stays empty, there is no
    /// tail, and completion renames the file into place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
}

/// A session's role in tus concatenation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// Bytes to be concatenated later; never completes a video on its own.
    Partial,
    /// Made of these partial uploads, in order.
    Final { parts: Vec<uuid::Uuid> },
}

/// How a tus creation asks for its session.
#[derive(Debug, Clone, Default)]
pub struct TusOptions {
    /// The raw `Upload-Metadata`, returned by HEAD.
    pub metadata: Option<String>,
    /// `Upload-Defer-Length: 1` (the request's size is ignored).
    pub deferred: bool,
    /// `Upload-Concat: partial`.
    pub partial: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartsColumn {
    tus: TusState,
}

impl TusState {
    pub fn from_row(row: &upload::Model) -> Option<TusState> {
        row.parts.as_ref().and_then(|v| serde_json::from_value::<PartsColumn>(v.clone()).ok()).map(|p| p.tus)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "tus": self })
    }

    /// Bytes held in full parts.
    pub fn full_bytes(&self) -> u64 {
        self.parts.len() as u64 * self.part_size
    }

    pub fn is_partial(&self) -> bool {
        self.concat == Some(Concat::Partial)
    }

    pub fn is_final(&self) -> bool {
        matches!(self.concat, Some(Concat::Final { .. }))
    }
}

/// Whether new tus sessions of this process write one staging file (see
/// [`TusState::staged`]).
pub fn stages_tus(state: &dyn UploadDeps) -> bool {
    state.settings().uploads.tus_local_staging && state.store().supports_staged()
}

/// Whether the session's bytes may complete its video by themselves: not a
/// partial upload (it waits for a final one) and not one whose length is unknown.
pub fn completes_video(row: &upload::Model) -> bool {
    TusState::from_row(row).is_none_or(|tus| !tus.is_partial() && !tus.deferred)
}

/// The staging object holding tus bytes below one part.
pub fn tail_key(object_key: &str) -> String {
    format!("{object_key}.tus-tail")
}

/// The part size for an upload of `size` bytes: the configured size, clamped to
/// S3's rules and grown (in whole MiB) until 10000 parts hold the file.
pub fn part_size_for(settings: &UploadSettings, size: u64) -> u64 {
    let mut part = settings.part_size_bytes.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
    let needed = size.div_ceil(MAX_PART_NUMBER as u64);
    if needed > part {
        part = needed.div_ceil(MIB) * MIB;
    }
    part
}

/// Keep the last path component, drop control characters, limit the length.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(MAX_FILENAME_CHARS).collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        "upload".to_string()
    } else {
        cleaned.to_string()
    }
}

/// `video/mp4; codecs=...` → `video/mp4`, lowercased.
pub fn normalize_content_type(raw: &str) -> String {
    raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A content type from a file name, for tus clients that send no `filetype`.
pub fn content_type_from_filename(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" | "qt" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "mpg" | "mpeg" => "video/mpeg",
        "ts" | "m2ts" => "video/mp2t",
        "ogv" | "ogg" => "video/ogg",
        "3gp" => "video/3gpp",
        _ => return None,
    })
}

/// The session's public tus URL.
pub fn tus_url(state: &dyn UploadDeps, id: Uuid) -> String {
    format!("{}/uploads/{id}", state.public_url())
}

/// Validate a request, claim the video and create the session row. `tus` sessions
/// start their multipart upload now; others get one when they need it.
pub async fn open_session(
    state: &dyn UploadDeps,
    principal: &Principal,
    request: UploadRequest,
    tus: Option<TusOptions>,
) -> AppResult<(upload::Model, video::Model)> {
    let settings = &state.settings().uploads;
    if !state.settings().auth.unverified_can_upload {
        crate::auth::account_mail::require_verified(state.db(), principal.user_id).await?;
    }
    state.limiter().enforce(crate::limits::Policy::Upload, principal.user_id.to_string(), 1).await?;
    let options = tus.clone().unwrap_or_default();
    let mut request = request;
    if options.deferred {
        // The most it may hold until it says; the quota may shrink it (insert_session).
        request.size = i64::try_from(settings.max_size_bytes).unwrap_or(i64::MAX);
    }
    if request.size <= 0 {
        return Err(AppError::bad_input("the file is empty: an upload needs at least one byte"));
    }
    let size = request.size as u64;
    if size > settings.max_size_bytes {
        return Err(AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("the file is {size} bytes, more than the allowed {} bytes", settings.max_size_bytes),
        ));
    }
    let mut content_type = normalize_content_type(&request.content_type);
    if options.partial && content_type.is_empty() {
        // A partial upload is a piece of a file: the final upload says what the file is.
        content_type = "application/octet-stream".into();
    } else if !settings.allowed_content_types.iter().any(|t| t.eq_ignore_ascii_case(&content_type)) {
        return Err(AppError::new(
            ErrorCode::UnsupportedMedia,
            format!(
                "files of type `{}` are not accepted; send a video",
                request.content_type.chars().take(100).collect::<String>()
            ),
        ));
    }
    let checksum = match request.checksum_sha256.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Some(hex.to_ascii_lowercase()),
        Some(_) => return Err(AppError::bad_input("checksumSha256 must be 64 hexadecimal characters")),
    };
    let filename = sanitize_filename(&request.filename);

    // Look before touching storage; the conditional update below decides races.
    let video = crate::repo::videos::find_writable(state.db(), principal, request.video_id).await?;
    if !(options.partial && video.status == VideoStatus::Uploading) {
        ensure_uploadable(&video)?;
    }
    let method = if tus.is_some() {
        UploadMethod::Tus
    } else if size <= settings.multipart_threshold_bytes {
        UploadMethod::Presigned
    } else {
        UploadMethod::Multipart
    };
    let id = Uuid::now_v7();
    let object_key = match method {
        UploadMethod::Presigned => layout::staging(video.owner_id, video.id, id),
        // Partial uploads of one video are open side by side: each has its own key.
        UploadMethod::Tus if options.partial => layout::partial(video.owner_id, video.id, id),
        _ => layout::source(video.owner_id, video.id),
    };
    let multipart_id = match method {
        UploadMethod::Presigned => None,
        _ => Some(state.store().create_multipart(&object_key, Some(&content_type)).await?),
    };
    let result = insert_session(state, &video, id, method, &object_key, multipart_id.clone(), |row| {
        row.filename = Set(filename.clone());
        row.content_type = Set(content_type.clone());
        row.declared_size = Set(request.size);
        row.checksum_sha256 = Set(checksum.clone());
        row.user_id = Set(principal.user_id);
        if method == UploadMethod::Tus {
            let tus = TusState {
                part_size: part_size_for(settings, size),
                metadata: options.metadata.clone(),
                deferred: options.deferred,
                concat: options.partial.then_some(Concat::Partial),
                staged: stages_tus(state),
                ..TusState::default()
            };
            row.parts = Set(Some(tus.to_json()));
        }
    })
    .await;
    if result.is_err() {
        if let Some(id) = &multipart_id {
            if let Err(err) = state.store().abort_multipart(&object_key, id).await {
                tracing::warn!(error = %err, "could not abort a multipart upload of a refused session");
            }
        }
    }
    if let Ok((_, video)) = &result {
        // Its status is UPLOADING now (not an event).
        state.access_signals().video_changed(video.id).await;
    }
    result
}

fn ensure_uploadable(video: &video::Model) -> AppResult<()> {
    if matches!(video.status, VideoStatus::Draft | VideoStatus::Failed) {
        Ok(())
    } else {
        let status = serde_json::to_value(video.status).ok().and_then(|v| v.as_str().map(str::to_string));
        Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "the video is {}; uploads are accepted only for DRAFT or FAILED videos",
                status.unwrap_or_default()
            ),
        ))
    }
}

/// Most partial uploads one video may have open at once (and a final may name).
pub const MAX_PARTIALS: usize = 16;

/// How a new session claims its video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The video's one session: DRAFT/FAILED → UPLOADING.
    Whole,
    /// One of several partial uploads (tus concatenation) of the same user: the
    /// first claims the video, the others join while only partials are open.
    Partial,
}

async fn insert_session(
    state: &dyn UploadDeps,
    video: &video::Model,
    id: Uuid,
    method: UploadMethod,
    object_key: &str,
    multipart_id: Option<String>,
    fill: impl FnOnce(&mut upload::ActiveModel),
) -> AppResult<(upload::Model, video::Model)> {
    let settings = &state.settings().uploads;
    let now = Utc::now();
    let txn = crate::db::begin_write(state.db()).await?;
    let mut row = upload::ActiveModel {
        id: Set(id),
        video_id: Set(video.id),
        method: Set(method),
        status: Set(UploadStatus::Open),
        offset_bytes: Set(0),
        object_key: Set(object_key.to_string()),
        s3_upload_id: Set(multipart_id),
        parts: Set(None),
        expires_at: Set(now
            + chrono::Duration::seconds(
                i64::try_from(settings.session_ttl_secs).unwrap_or(i64::MAX / 2).min(365 * 24 * 3600),
            )),
        failure_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        completed_at: Set(None),
        ..Default::default()
    };
    fill(&mut row);
    let size = match &row.declared_size {
        sea_orm::ActiveValue::Set(size) => *size,
        _ => 0,
    };
    let tus = match &row.parts {
        sea_orm::ActiveValue::Set(Some(parts)) => serde_json::from_value::<PartsColumn>(parts.clone()).ok(),
        _ => None,
    };
    let deferred = tus.as_ref().is_some_and(|p| p.tus.deferred);
    let claim = if tus.as_ref().is_some_and(|p| p.tus.is_partial()) { Claim::Partial } else { Claim::Whole };
    let user_id = match &row.user_id {
        sea_orm::ActiveValue::Set(user_id) => *user_id,
        _ => video.owner_id,
    };
    // Concurrent uploads of one owner are serialised on the owner's row, so two of
    // them cannot both fit into the same remaining quota (SQLite has a single writer
    // already).
    let owner = crate::repo::users::lock(&txn, video.owner_id).await?;
    let mut size = size;
    if let Some(quota) = crate::repo::usage::storage_quota(owner.as_ref(), state.settings()) {
        let used = crate::repo::videos::storage_used_bytes(&txn, video.owner_id).await?;
        if deferred && used < quota {
            // Length unknown: reserve what is left of the quota (at most the largest
            // file) until a PATCH names the length.
            size = size.min(quota - used);
            row.declared_size = Set(size);
        }
        if used.saturating_add(size) > quota {
            return Err(AppError::new(
                ErrorCode::PayloadTooLarge,
                format!("the storage quota is exceeded: {used} of {quota} bytes are used and the file has {size}"),
            ));
        }
    }
    // Only one session per video: the status flip is the claim. Partial uploads
    // may join a video that only partial uploads of the same user hold.
    let mut claimable = vec![VideoStatus::Draft, VideoStatus::Failed];
    if claim == Claim::Partial {
        let open = crate::repo::uploads::in_flight_of_video(&txn, video.id).await?;
        let all_partials = open.iter().all(|r| {
            r.user_id == user_id
                && r.status == UploadStatus::Open
                && TusState::from_row(r).is_some_and(|t| t.is_partial())
        });
        if !open.is_empty() && all_partials {
            if open.len() >= MAX_PARTIALS {
                return Err(AppError::new(
                    ErrorCode::Conflict,
                    format!("a video may have at most {MAX_PARTIALS} partial uploads open at once"),
                ));
            }
            let total = open.iter().map(|r| r.declared_size).fold(size, i64::saturating_add);
            if u64::try_from(total).unwrap_or(u64::MAX) > settings.max_size_bytes {
                return Err(AppError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the partial uploads of this video would hold {total} bytes, more than the allowed {} bytes",
                        settings.max_size_bytes
                    ),
                ));
            }
            claimable.push(VideoStatus::Uploading);
        }
    }
    if !crate::repo::videos::claim_for_upload(&txn, video.id, claimable, now).await? {
        return Err(AppError::new(ErrorCode::Conflict, "the video already has an upload in progress"));
    }
    let row = crate::repo::uploads::create(&txn, row).await?;
    let video = crate::repo::videos::find(&txn, video.id).await?.ok_or_else(|| AppError::not_found("video"))?;
    txn.commit().await?;
    metrics::counter!("reelhouse_uploads_created_total", "method" => method_label(method)).increment(1);
    Ok((row, video))
}

pub fn method_label(method: UploadMethod) -> &'static str {
    match method {
        UploadMethod::Presigned => "presigned",
        UploadMethod::Multipart => "multipart",
        UploadMethod::Tus => "tus",
    }
}

/// The session by id if `principal` owns it (or may write its video); NOT_FOUND
/// otherwise, so sessions of others do not reveal that they exist.
pub async fn find_for(state: &dyn UploadDeps, principal: &Principal, id: Uuid) -> AppResult<upload::Model> {
    let row = crate::repo::uploads::find(state.db(), id).await?.ok_or_else(|| AppError::not_found("upload"))?;
    if row.user_id == principal.user_id {
        return Ok(row);
    }
    match crate::repo::videos::find_writable(state.db(), principal, row.video_id).await {
        Ok(_) => Ok(row),
        Err(_) => Err(AppError::not_found("upload")),
    }
}

/// The session by id only for the user who opened it (the tus endpoint's rule).
pub async fn find_owned(state: &dyn UploadDeps, principal: &Principal, id: Uuid) -> AppResult<upload::Model> {
    match crate::repo::uploads::find(state.db(), id).await? {
        Some(row) if row.user_id == principal.user_id => Ok(row),
        _ => Err(AppError::not_found("upload")),
    }
}

/// Re-read a session by id for the user who opened it.
pub async fn find_owned_by_id(state: &dyn UploadDeps, id: Uuid, user_id: Uuid) -> AppResult<upload::Model> {
    match crate::repo::uploads::find(state.db(), id).await? {
        Some(row) if row.user_id == user_id => Ok(row),
        _ => Err(AppError::not_found("upload")),
    }
}

pub fn parse_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw.trim()).map_err(|_| AppError::not_found("upload"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitized() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\videos\\a.mp4"), "a.mp4");
        assert_eq!(sanitize_filename("a\u{0}b\nc.mp4"), "abc.mp4");
        assert_eq!(sanitize_filename(""), "upload");
        assert_eq!(sanitize_filename(".."), "upload");
        assert_eq!(sanitize_filename(&"x".repeat(1000)).chars().count(), MAX_FILENAME_CHARS);
    }

    #[test]
    fn part_sizes_follow_s3_rules() {
        let mut settings = UploadSettings { part_size_bytes: 1, ..UploadSettings::default() };
        assert_eq!(part_size_for(&settings, 10), MIN_PART_SIZE);
        settings.part_size_bytes = 16 * MIB;
        let huge = 1024 * 1024 * MIB; // 1 TiB
        let part = part_size_for(&settings, huge);
        assert!(huge.div_ceil(part) <= MAX_PART_NUMBER as u64);
        assert_eq!(part % MIB, 0);
    }

    #[test]
    fn content_types_normalize() {
        assert_eq!(normalize_content_type("Video/MP4; codecs=avc1"), "video/mp4");
        assert_eq!(content_type_from_filename("clip.MOV"), Some("video/quicktime"));
        assert_eq!(content_type_from_filename("clip"), None);
    }
}
