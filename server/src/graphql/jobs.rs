//! Jobs in GraphQL: `transcode`, `cancelJob`, `retryJob`, `job`, `jobs`, `workers`.
//!
//! A job is visible to the owner of its video and to admins (`SeeAllJobs`); to
//! anybody else it does not exist (NOT_FOUND / null).

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ErrorExtensions, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::{job, worker, JobKind as DbJobKind, JobStatus as DbJobStatus, VideoStatus as DbVideoStatus};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::auth::principal::{ClientInfo, Principal};
use crate::auth::roles::{has_permission, require_principal, AuthenticatedGuard, Permission, PermissionGuard};
use crate::error::GqlResultExt;
use crate::error::{AppError, ErrorCode};
use crate::events::{ProgressInfo, Publisher};
use crate::graphql::progress::Progress;
use crate::jobs::{self, queue, DEFAULT_PRIORITY};
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::state::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::JobStatus")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Dead,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::JobKind")]
pub enum JobKind {
    Transcode,
    DeleteObjects,
    SendMail,
    DeleteUser,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::LogLevel")]
pub enum JobLogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Quality of a re-transcode.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TranscodePreset {
    Low,
    Medium,
    High,
}

impl TranscodePreset {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TranscodePreset::Low => "LOW",
            TranscodePreset::Medium => "MEDIUM",
            TranscodePreset::High => "HIGH",
        }
    }
}

/// An output a transcode can make. HLS is always among them (see the README's
/// "Outputs on request").
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum OutputFormat {
    /// The adaptive HLS ladder (playback, renditions, PLAYABLE).
    Hls,
    /// A progressive MP4 download (H.264/AAC, faststart).
    Mp4,
    /// A WebM download (VP8/Opus).
    Webm,
}

impl From<OutputFormat> for crate::media::mp4::OutputFormat {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Hls => Self::Hls,
            OutputFormat::Mp4 => Self::Mp4,
            OutputFormat::Webm => Self::Webm,
        }
    }
}

/// The formats a request asks for, checked (HLS among them), or the configured
/// default (`media.default_formats`) when it names none.
pub(crate) fn requested_formats(
    state: &AppState,
    formats: Option<Vec<OutputFormat>>,
) -> Result<Vec<crate::media::mp4::OutputFormat>, AppError> {
    match formats {
        None => Ok(state.settings.media.default_formats.clone()),
        Some(formats) => {
            let formats: Vec<crate::media::mp4::OutputFormat> = formats.into_iter().map(Into::into).collect();
            crate::media::mp4::normalize_formats(&formats).map_err(|e| AppError::new(ErrorCode::BadUserInput, e))
        }
    }
}

/// A line of a job's log (see the README's "Live job logs").
#[derive(SimpleObject, Debug, Clone)]
pub struct JobLogLine {
    /// Resume point for `jobLog(after:)` and `Job.log(after:)`: the job's line
    /// number (1, 2, 3, ...). A marker or the final line repeats the cursor of the
    /// line before it.
    pub cursor: String,
    pub at: DateTime<Utc>,
    pub level: JobLogLevel,
    pub message: String,
    /// On a marker line only: how many lines before it are no longer kept (the log
    /// keeps a job's newest `jobs.log_max_lines`). Null on every other line.
    pub dropped: Option<i32>,
    /// On the last line of a `jobLog` stream only: the state the job ended in (the
    /// stream ends after it). Null on every other line.
    pub job_status: Option<JobStatus>,
}

impl JobLogLine {
    /// A stored line, as `viewer_is_admin` may see it.
    pub(crate) fn stored(line: entities::job_log::Model, viewer_is_admin: bool) -> Self {
        let message = if viewer_is_admin { line.message } else { hide_worker(&line.message) };
        Self {
            cursor: line.seq.to_string(),
            at: line.at,
            level: line.level.into(),
            message,
            dropped: None,
            job_status: None,
        }
    }

    /// Stands for `count` lines after `after_seq` that are no longer kept.
    pub(crate) fn dropped_marker(after_seq: i64, count: i64) -> Self {
        Self {
            cursor: after_seq.to_string(),
            at: Utc::now(),
            level: JobLogLevel::Warn,
            message: format!("{count} earlier line(s) dropped: the log keeps a job's newest lines"),
            dropped: Some(i32::try_from(count).unwrap_or(i32::MAX)),
            job_status: None,
        }
    }

    /// The lines after `after_seq` as a reader sees them: a marker first when lines
    /// it has not seen were dropped.
    pub(crate) fn page(after_seq: i64, lines: Vec<entities::job_log::Model>, viewer_is_admin: bool) -> Vec<Self> {
        let mut out = Vec::with_capacity(lines.len() + 1);
        if let Some(first) = lines.first() {
            if first.seq > after_seq + 1 {
                out.push(Self::dropped_marker(first.seq - 1, first.seq - 1 - after_seq));
            }
        }
        out.extend(lines.into_iter().map(|line| Self::stored(line, viewer_is_admin)));
        out
    }
}

/// A transcode worker process (admins only).
#[derive(SimpleObject, Debug, Clone)]
pub struct Worker {
    pub id: ID,
    pub host: String,
    pub capacity: i32,
    pub current_jobs: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// LOCAL (attached to the database) or REMOTE (over the worker channel).
    pub kind: WorkerKind,
    /// A remote worker's token name.
    pub name: Option<String>,
    /// IDLE, BUSY or DRAINING.
    pub state: String,
    pub tags: Vec<String>,
    /// The GStreamer version a remote worker announced.
    pub gstreamer_version: Option<String>,
}

/// How a worker reaches the queue.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    Local,
    Remote,
}

impl From<worker::Model> for Worker {
    fn from(m: worker::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            host: m.host,
            capacity: m.capacity,
            current_jobs: m.current_jobs,
            version: m.version,
            started_at: m.started_at,
            last_seen_at: m.last_seen_at,
            kind: if m.kind == crate::jobs::remote::KIND_REMOTE { WorkerKind::Remote } else { WorkerKind::Local },
            name: m.name,
            state: m.state,
            tags: crate::auth::worker_tokens::split_tags(&m.tags),
            gstreamer_version: m.gstreamer_version,
        }
    }
}

/// What a QUEUED job waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum JobWait {
    /// The owner used up today's processing budget (their own, set by `setUserQuota`,
    /// or `jobs.processing_budget_secs_per_day`).
    ProcessingBudget,
    /// The delay before the next attempt of a job that failed.
    RetryBackoff,
}

/// A job of the durable queue. Built from a row the caller may see.
#[derive(Debug, Clone)]
pub struct Job(pub job::Model);

#[Object]
impl Job {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn video_id(&self) -> Option<ID> {
        self.0.video_id.map(|id| ID(id.to_string()))
    }

    async fn kind(&self) -> JobKind {
        self.0.kind.into()
    }

    async fn status(&self) -> JobStatus {
        self.0.status.into()
    }

    /// Higher runs first.
    async fn priority(&self) -> i32 {
        self.0.priority
    }

    async fn attempts(&self) -> i32 {
        self.0.attempts
    }

    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }

    /// The latest progress report of the current (or last) run.
    async fn progress(&self) -> Option<Progress> {
        self.0
            .progress
            .as_ref()
            .and_then(|value| serde_json::from_value::<ProgressInfo>(value.clone()).ok())
            .map(Progress::from)
    }

    /// The last error (of the last failed attempt, or why the job ended).
    async fn error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    async fn cancel_requested(&self) -> bool {
        self.0.cancel_requested
    }

    /// Why a QUEUED job is not running yet, when it is held back: its owner used up
    /// today's processing budget (it runs after midnight UTC), or it waits out the
    /// backoff before a retry. Null otherwise.
    async fn waiting_for(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<JobWait>> {
        if self.0.status != entities::JobStatus::Queued {
            return Ok(None);
        }
        let state = ctx.data::<AppState>()?;
        if let Some(owner) = self.0.owner_id {
            let budget = crate::repo::usage::processing_budget_of(&state.db, owner, &state.settings)
                .await
                .map_err(|e| AppError::internal(e).extend())?;
            if let Some(budget) = budget {
                let used = crate::repo::usage::processing_seconds_today(&state.db, owner)
                    .await
                    .map_err(|e| AppError::internal(e).extend())?;
                if used >= budget as f64 {
                    return Ok(Some(JobWait::ProcessingBudget));
                }
            }
        }
        Ok((self.0.run_after > Utc::now()).then_some(JobWait::RetryBackoff))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Not run before this instant (retry back-off).
    async fn run_after(&self) -> DateTime<Utc> {
        self.0.run_after
    }

    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }

    /// Stage transitions, warnings and attempts, oldest first: the lines after
    /// `after` (a line's `cursor`), all of them without. The log keeps the newest
    /// `jobs.log_max_lines`; when lines the reader has not seen were dropped, a
    /// marker line (`dropped`) comes first. Which worker (host) ran an attempt is
    /// shown to admins only. Live: `subscription jobLog`.
    async fn log(&self, ctx: &Context<'_>, after: Option<String>) -> async_graphql::Result<Vec<JobLogLine>> {
        let state = ctx.data::<AppState>()?;
        let admin = require_principal(ctx).map(sees_all).unwrap_or(false);
        let after = after.as_deref().map(parse_log_cursor).transpose().gql()?.unwrap_or(0);
        let lines = crate::repo::job_logs::page(&state.db, self.0.id, after, None).await.gql()?;
        Ok(JobLogLine::page(after, lines, admin))
    }
}

/// A `JobLogLine.cursor`: the number of a line (0: before the first).
pub(crate) fn parse_log_cursor(cursor: &str) -> Result<i64, AppError> {
    cursor
        .parse::<i64>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or_else(|| AppError::bad_input("`after` is not a valid log cursor"))
}

/// "attempt 1 of 5 leased by host-1234" → "attempt 1 of 5 leased by a worker"; the
/// same for "lease of host-1234 expired".
pub(crate) fn hide_worker(message: &str) -> String {
    if let Some(pos) = message.find(" leased by ") {
        return format!("{} leased by a worker", &message[..pos]);
    }
    if let (Some(start), Some(end)) = (message.find("lease of "), message.find(" expired")) {
        if start < end {
            return format!("{}lease of a worker{}", &message[..start], &message[end..]);
        }
    }
    message.to_string()
}

fn parse_id(id: &ID) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::not_found("job"))
}

/// Audit an admin's action on a job that is not theirs, or on a DEAD one. The
/// queue commits its own transaction, so this is written after it, best effort:
/// the job has changed either way and the caller must hear so.
async fn audit_admin_action(
    ctx: &Context<'_>,
    state: &AppState,
    principal: &Principal,
    action: AuditAction,
    job: &job::Model,
) {
    let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
    let entry = AuditEntry::new(action, AuditOutcome::Success)
        .actor(principal.user_id)
        .target(job.id)
        .detail(serde_json::json!({ "ownerId": job.owner_id, "videoId": job.video_id }));
    audit::record_or_log(&state.db, &client, entry).await;
}

pub(crate) fn sees_all(principal: &Principal) -> bool {
    has_permission(principal.role, Permission::SeeAllJobs)
}

fn can_see(principal: &Principal, job: &job::Model) -> bool {
    sees_all(principal) || job.owner_id == Some(principal.user_id)
}

/// The job if `principal` may see it; NOT_FOUND otherwise.
pub(crate) async fn find_visible(
    db: &DatabaseConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<job::Model, AppError> {
    match crate::repo::jobs::find(db, id).await.map_err(AppError::internal)? {
        Some(job) if can_see(principal, &job) => Ok(job),
        _ => Err(AppError::not_found("job")),
    }
}

/// Is a TRANSCODE job of the video QUEUED or RUNNING?
async fn transcode_in_progress<C: sea_orm::ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<bool, AppError> {
    crate::repo::jobs::transcode_in_progress(conn, video_id).await.map_err(AppError::internal)
}

fn publisher(state: &AppState) -> Publisher {
    state.publisher()
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// A job of one of the caller's videos (any job for admins); null otherwise.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Job>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let Ok(id) = Uuid::parse_str(id.as_str()) else { return Ok(None) };
        match find_visible(&state.db, principal, id).await {
            Ok(job) => Ok(Some(Job(job))),
            Err(err) if err.code() == ErrorCode::NotFound => Ok(None),
            Err(err) => Err(err.extend()),
        }
    }

    /// Jobs, newest first: the caller's own (all of them for admins).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<JobStatus>,
    ) -> async_graphql::Result<Connection<String, Job>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let owner = (!sees_all(principal)).then_some(principal.user_id);
        let query = crate::repo::jobs::listing(owner, status.map(DbJobStatus::from));
        super::paging::by_uuid(
            &state.db,
            query,
            job::Column::Id,
            |j| j.id,
            Job,
            super::paging::Page { first, after },
            true,
        )
        .await
        .gql()
    }

    /// Worker processes that announced themselves. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::SeeAllJobs)")]
    async fn workers(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Worker>> {
        let state = ctx.data::<AppState>()?;
        let rows = crate::repo::workers::list(&state.db).await.gql()?;
        Ok(rows.into_iter().map(Worker::from).collect())
    }
}

#[derive(Default)]
pub struct JobsMutation;

#[Object]
impl JobsMutation {
    /// Transcode a video (again) with a preset. CONFLICT while one is queued or running.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn transcode(
        &self,
        ctx: &Context<'_>,
        video_id: ID,
        preset: Option<TranscodePreset>,
        #[graphql(desc = "What to make; HLS must be among them. Default: the server's `media.default_formats`.")]
        formats: Option<Vec<OutputFormat>>,
    ) -> async_graphql::Result<Job> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        if !has_permission(principal.role, Permission::WriteOwnVideos) {
            return Err(AppError::forbidden("your role does not allow this").extend());
        }
        let video_id = Uuid::parse_str(video_id.as_str()).map_err(|_| AppError::not_found("video").extend())?;
        state.limiter.enforce(crate::limits::Policy::Transcode, principal.user_id.to_string(), 1).await.gql()?;
        let preset = preset.unwrap_or(TranscodePreset::Medium);
        let formats = requested_formats(state, formats).gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let video = crate::repo::videos::find_writable(&txn, principal, video_id).await.gql()?;
        if video.source_key.is_none() || matches!(video.status, DbVideoStatus::Draft | DbVideoStatus::Uploading) {
            return Err(AppError::new(ErrorCode::Conflict, "the video has no uploaded source yet").extend());
        }
        if transcode_in_progress(&txn, video.id).await.gql()? {
            return Err(AppError::new(ErrorCode::Conflict, "the video is already being transcoded").extend());
        }
        let payload = crate::jobs::transcode_payload(preset.as_str(), &formats);
        let (job, event) =
            jobs::batches::enqueue_transcode(&txn, video, payload, DEFAULT_PRIORITY, state.settings.jobs.max_attempts)
                .await
                .gql()?;
        txn.commit().await.gql()?;
        publisher(state).publish(event);
        Ok(Job(job))
    }

    /// Cancel a job of one of the caller's videos (any job for admins): a queued job
    /// is CANCELLED at once; a running one stops within a second and is CANCELLED.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Job> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id).gql()?;
        let job = find_visible(&state.db, principal, id).await.gql()?;
        if !sees_all(principal) && !has_permission(principal.role, Permission::WriteOwnVideos) {
            return Err(AppError::forbidden("your role does not allow this").extend());
        }
        // Removing a deleted video's objects is the system's business: an owner who
        // could cancel it would keep the bytes while the quota forgets them.
        if job.kind != DbJobKind::Transcode && !sees_all(principal) {
            return Err(AppError::forbidden("only an admin can cancel this kind of job").extend());
        }
        let admin_action = job.owner_id != Some(principal.user_id);
        let job = queue::cancel(&state.db, &publisher(state), &state.settings.jobs, job.id).await.gql()?;
        if admin_action {
            audit_admin_action(ctx, state, principal, AuditAction::JobCancelled, &job).await;
        }
        Ok(Job(job))
    }

    /// Give a QUEUED or RUNNING job another priority (admins; -1000..=1000, uploads
    /// get 0, higher runs first). The queue orders by it at once; a RUNNING job keeps
    /// it for its retries.
    #[graphql(guard = "PermissionGuard(Permission::SeeAllJobs)")]
    async fn set_job_priority(&self, ctx: &Context<'_>, id: ID, priority: i32) -> async_graphql::Result<Job> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id).gql()?;
        let job = queue::set_priority(&state.db, &state.settings.jobs, id, priority).await.gql()?;
        audit_admin_action(ctx, state, principal, AuditAction::JobPriorityChanged, &job).await;
        Ok(Job(job))
    }

    /// Queue a finished job again. DEAD jobs: admins only; FAILED or CANCELLED jobs:
    /// also the owner of the video.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn retry_job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Job> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id).gql()?;
        let job = find_visible(&state.db, principal, id).await.gql()?;
        if !sees_all(principal) {
            if !has_permission(principal.role, Permission::WriteOwnVideos) {
                return Err(AppError::forbidden("your role does not allow this").extend());
            }
            if job.status == DbJobStatus::Dead {
                return Err(AppError::forbidden("only an admin can revive a DEAD job").extend());
            }
        }
        if job.kind != DbJobKind::Transcode && !sees_all(principal) {
            return Err(AppError::forbidden("only an admin can retry this kind of job").extend());
        }
        if let (DbJobKind::Transcode, Some(video_id)) = (job.kind, job.video_id) {
            // The same conditions as `transcode`: a source that finished uploading, a
            // live video, nothing else running.
            let video = crate::repo::videos::find(&state.db, video_id)
                .await
                .map_err(|e| AppError::internal(e).extend())?
                .filter(|v| v.deleted_at.is_none())
                .ok_or_else(|| AppError::new(ErrorCode::Conflict, "the video no longer exists").extend())?;
            if video.source_key.is_none() || matches!(video.status, DbVideoStatus::Draft | DbVideoStatus::Uploading) {
                return Err(AppError::new(ErrorCode::Conflict, "the video has no uploaded source yet").extend());
            }
            if transcode_in_progress(&state.db, video_id).await.gql()? {
                return Err(AppError::new(ErrorCode::Conflict, "the video is already being transcoded").extend());
            }
        }
        let admin_action = job.status == DbJobStatus::Dead || job.owner_id != Some(principal.user_id);
        let job = queue::retry(&state.db, &state.settings.jobs, job.id).await.gql()?;
        if admin_action {
            audit_admin_action(ctx, state, principal, AuditAction::JobRetried, &job).await;
        }
        Ok(Job(job))
    }
}

#[cfg(test)]
mod tests {
    use super::hide_worker;

    #[test]
    fn worker_identities_are_hidden_from_owners() {
        assert_eq!(hide_worker("attempt 1 of 5 leased by box-7f3a"), "attempt 1 of 5 leased by a worker");
        assert_eq!(
            hide_worker("attempt 2 lost: lease of box-7f3a expired; no attempts left"),
            "attempt 2 lost: lease of a worker expired; no attempts left"
        );
        assert_eq!(hide_worker("encoding"), "encoding");
    }
}
