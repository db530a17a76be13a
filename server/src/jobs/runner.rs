//! What running one job means. The scheduler (`jobs::scheduler`) leases, renews,
//! completes and retries; this module does the work and describes its result, and
//! applies that result inside the scheduler's completion transaction (so a worker
//! whose lease was taken away cannot apply anything).
//!
//! TRANSCODE is in `jobs::transcode`, DELETE_OBJECTS in `jobs::delete_objects`,
//! SEND_MAIL in `mail`.
//!
//! A failed or cancelled re-transcode of a video that was READY before (an earlier
//! job recorded READY for it) leaves the video READY with its previous ladder and only
//! records the FAILED / CANCELLED event; a first transcode that fails makes the video
//! FAILED and removes the rendition rows it may have published early.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use entities::{job, JobKind, LogLevel};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};
use serde::{Deserialize, Serialize};

use crate::config::jobs::JobSettings;
use crate::config::Settings;
use crate::events::{DomainEvent, EventDetail, EventKind, ProgressInfo, Publisher};
use crate::media::CancelFlag;
use crate::repo::videos::TranscodedFacts;
use crate::storage::{layout, ObjectStore};

use super::failure::FailureCode;
use super::transcode::{retire_outputs, NewRendition};
pub use super::transcode::{
    DownloadOutput, MediaSpec, ProbeSummary, RenditionOutput, StoryboardOutput, TranscodeOutput,
};

/// What a job may reach.
#[derive(Clone)]
pub struct JobContext {
    pub db: DatabaseConnection,
    pub store: Arc<dyn ObjectStore>,
    pub settings: Arc<Settings>,
    pub publisher: Publisher,
    /// Per-process scratch directory; each job works in its own subdirectory and
    /// removes it on every path.
    pub scratch_dir: PathBuf,
    /// Delivers SEND_MAIL jobs.
    pub mailer: Arc<crate::mail::Mailer>,
}

/// Where a running job reports; the scheduler throttles, stores and publishes.
pub trait JobReporter: Send + Sync {
    fn progress(&self, progress: ProgressInfo);
    fn log(&self, level: LogLevel, message: String);
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retrying may help (storage or database hiccup, a worker-side resource problem).
    #[error("{0}")]
    Retryable(String),
    /// Retrying will not help (the media is bad); `reason` is shown to the user.
    #[error("{reason}")]
    Permanent { code: FailureCode, reason: String },
    #[error("cancelled")]
    Cancelled,
}

/// What a successful run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JobOutput {
    Transcoded(Box<TranscodeOutput>),
    ObjectsDeleted { count: u64 },
    MailSent,
}

/// The error shown on a video whose processing was cancelled.
pub const CANCELLED_REASON: &str = "processing was cancelled";

/// Disarmed when `run` returns; if the `run` future is dropped mid-way instead, the
/// media threads it started are told to stop (they clean up after themselves).
struct CancelOnDrop {
    flag: CancelFlag,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Run `job` to the end (blocking media work happens on its own thread).
#[tracing::instrument(skip_all, fields(job_id = %job.id, kind = ?job.kind))]
pub async fn run(
    ctx: &JobContext,
    job: &job::Model,
    cancel: CancelFlag,
    reporter: Arc<dyn JobReporter>,
) -> Result<JobOutput, JobError> {
    let mut guard = CancelOnDrop { flag: cancel.clone(), armed: true };
    let result = match job.kind {
        JobKind::Transcode => super::transcode::run_transcode(ctx, job, cancel, reporter.clone())
            .await
            .map(|out| JobOutput::Transcoded(Box::new(out))),
        JobKind::DeleteObjects => super::delete_objects::run_delete_objects(ctx, job, reporter.clone())
            .await
            .map(|count| JobOutput::ObjectsDeleted { count }),
        JobKind::SendMail => super::send_mail::run(ctx, job, &cancel).await,
        JobKind::DeleteUser => super::delete_user::run_delete_user(ctx, job, reporter.clone())
            .await
            .map(|count| JobOutput::ObjectsDeleted { count }),
    };
    guard.armed = false;
    if job.kind == JobKind::Transcode {
        // The pipeline's frames are free now; hand the pages back (see `memory`).
        drop(tokio::task::spawn_blocking(crate::memory::release_free_memory));
    }
    if let Err(err) = &result {
        let level = match err {
            JobError::Cancelled => LogLevel::Info,
            _ => LogLevel::Error,
        };
        reporter.log(level, format!("job ended: {err}"));
    }
    result
}

/// Apply a success (renditions, video READY on the new output version, READY
/// event) inside `txn`, and schedule the removal of the outputs it replaced; the
/// caller publishes the returned events after commit.
#[tracing::instrument(skip_all, fields(job_id = %job.id, kind = ?job.kind), err(Display))]
pub async fn apply_success(
    txn: &DatabaseTransaction,
    job: &job::Model,
    output: &JobOutput,
    settings: &JobSettings,
) -> Result<Vec<DomainEvent>, DbErr> {
    let JobOutput::Transcoded(out) = output else {
        return Ok(Vec::new());
    };
    let Some(video) = crate::repo::videos::lock(txn, out.video_id).await? else {
        return Ok(Vec::new());
    };
    if video.deleted_at.is_some() {
        return Ok(Vec::new());
    }
    if let Some(version) = &out.output_version {
        let new_prefix = layout::Outputs::new(video.owner_id, video.id, Some(version)).prefix().to_string();
        let replaced = replaced_outputs(txn, &video, &new_prefix).await?;
        retire_outputs(txn, &video, replaced, settings, false).await?;
    }
    for r in &out.renditions {
        let new = NewRendition {
            name: r.name.clone(),
            width: r.width,
            height: r.height,
            bitrate: r.bandwidth,
            codecs: r.codecs.clone(),
            playlist_key: r.playlist_key.clone(),
        };
        crate::repo::videos::upsert_rendition(txn, video.id, new.as_row()).await?;
    }
    let names: Vec<String> = out.renditions.iter().map(|r| r.name.clone()).collect();
    crate::repo::videos::delete_renditions_except(txn, video.id, names).await?;

    let p = &out.probe;
    let facts = TranscodedFacts {
        duration_ms: p.duration_ms,
        width: i32::try_from(p.width).unwrap_or(i32::MAX),
        height: i32::try_from(p.height).unwrap_or(i32::MAX),
        frame_rate: p.frame_rate,
        rotation: i32::try_from(p.rotation).unwrap_or(0),
        has_audio: p.has_audio,
        container: p.container.clone(),
        video_codec: p.video_codec.clone(),
        audio_codec: p.audio_codec.clone(),
        source_size_bytes: i64::try_from(p.source_size_bytes).unwrap_or(i64::MAX),
        output_bytes: i64::try_from(out.output_bytes).unwrap_or(i64::MAX),
        output_version: out.output_version.clone(),
        downloads: entities::video::Downloads(
            out.all_downloads()
                .into_iter()
                .map(|d| entities::video::Download {
                    format: d.format.clone(),
                    key: d.key.clone(),
                    width: i32::try_from(d.width).unwrap_or(i32::MAX),
                    height: i32::try_from(d.height).unwrap_or(i32::MAX),
                    bytes: i64::try_from(d.bytes).unwrap_or(i64::MAX),
                })
                .collect(),
        ),
    };
    let video = crate::repo::videos::mark_ready(txn, video, facts, Utc::now()).await?;
    let event = crate::repo::outbox::record(
        txn,
        &video,
        EventKind::Ready,
        EventDetail { job_id: Some(job.id), ..Default::default() },
    )
    .await?;
    Ok(vec![event])
}

/// The output prefixes a success that wrote under `new_prefix` stops naming: the
/// video's current outputs (versioned, or the unversioned layout when renditions
/// still live there) and the versions of early rungs that failed attempts published.
async fn replaced_outputs(
    txn: &DatabaseTransaction,
    video: &entities::video::Model,
    new_prefix: &str,
) -> Result<Vec<String>, DbErr> {
    let rows = crate::repo::videos::renditions_of(txn, video.id).await?;
    let mut prefixes = std::collections::BTreeSet::new();
    if let Some(current) = &video.output_version {
        prefixes.insert(layout::Outputs::new(video.owner_id, video.id, Some(current)).prefix().to_string());
    }
    for row in &rows {
        match layout::version_prefix(video.owner_id, video.id, &row.playlist_key) {
            Some(prefix) => {
                prefixes.insert(prefix);
            }
            // Outputs of an earlier release, rewritten in place: the whole unversioned
            // layout goes (never the source beside it).
            None => prefixes.extend(layout::Outputs::new(video.owner_id, video.id, None).prefixes()),
        }
    }
    prefixes.remove(new_prefix);
    Ok(prefixes.into_iter().collect())
}

/// The job failed for good (FAILED or DEAD): the video is FAILED with `reason`
/// (unless an earlier transcode made it READY: then it keeps that ladder).
#[tracing::instrument(skip_all, fields(job_id = %job.id, kind = ?job.kind), err(Display))]
pub async fn apply_failure(
    txn: &DatabaseTransaction,
    job: &job::Model,
    reason: &str,
    settings: &JobSettings,
) -> Result<Vec<DomainEvent>, DbErr> {
    end_unsuccessfully(txn, job, EventKind::Failed, reason, settings).await
}

/// The job was cancelled: CANCELLED event; the video is FAILED with
/// [`CANCELLED_REASON`] unless an earlier transcode made it READY.
#[tracing::instrument(skip_all, fields(job_id = %job.id, kind = ?job.kind), err(Display))]
pub async fn apply_cancelled(
    txn: &DatabaseTransaction,
    job: &job::Model,
    settings: &JobSettings,
) -> Result<Vec<DomainEvent>, DbErr> {
    end_unsuccessfully(txn, job, EventKind::Cancelled, CANCELLED_REASON, settings).await
}

async fn end_unsuccessfully(
    txn: &DatabaseTransaction,
    job: &job::Model,
    kind: EventKind,
    reason: &str,
    settings: &JobSettings,
) -> Result<Vec<DomainEvent>, DbErr> {
    if job.kind != JobKind::Transcode {
        return Ok(Vec::new());
    }
    let Some(video_id) = job.video_id else {
        return Ok(Vec::new());
    };
    let Some(video) = crate::repo::videos::lock(txn, video_id).await? else {
        return Ok(Vec::new());
    };
    if video.deleted_at.is_some() {
        return Ok(Vec::new());
    }
    let reason = if reason.trim().is_empty() { "processing failed" } else { reason.trim() };
    let detail = EventDetail { error: Some(reason.to_string()), job_id: Some(job.id), ..Default::default() };
    if crate::repo::videos::was_ready_before(txn, video.id).await? {
        let event = crate::repo::outbox::record(txn, &video, kind, detail).await?;
        return Ok(vec![event]);
    }
    // Nothing playable survives a failed first transcode (no master playlist): drop
    // the rendition rows it may have published early, and their objects.
    let rows = crate::repo::videos::renditions_of(txn, video.id).await?;
    let mut orphaned: Vec<String> =
        rows.iter().filter_map(|row| layout::version_prefix(video.owner_id, video.id, &row.playlist_key)).collect();
    orphaned.sort();
    orphaned.dedup();
    retire_outputs(txn, &video, orphaned, settings, true).await?;
    crate::repo::videos::delete_renditions(txn, video.id).await?;
    let video = crate::repo::videos::mark_failed(txn, video, reason, Utc::now()).await?;
    let event = crate::repo::outbox::record(txn, &video, kind, detail).await?;
    Ok(vec![event])
}
