//! Batches: one request re-transcoding many videos (`transcodeBatch`). A batch is a
//! row naming who asked and what for, and the TRANSCODE jobs it enqueued
//! (`batch_jobs`); its progress is counted from those jobs, so it can never
//! disagree with the queue. Its jobs run at `jobs.batch_priority` (below uploads),
//! and the queue's owner fairness applies among batches as it does everywhere.
//! The rows are `repo::batches`'.

use chrono::{DateTime, Utc};
use entities::{batch, job, video, JobKind, JobStatus, VideoStatus};
use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

use super::{enqueue, NewJob};
use crate::events::{DomainEvent, EventDetail, EventKind, ProgressInfo};

/// Enqueue a TRANSCODE of `video` (which has a source and no transcode under way)
/// with `payload` at `priority`: a FAILED video is PROCESSING again, a READY one keeps
/// playing until the new outputs replace its current ones. The PROCESSING event is
/// returned for the caller to publish after commit.
pub async fn enqueue_transcode<C: ConnectionTrait>(
    conn: &C,
    video: video::Model,
    payload: serde_json::Value,
    priority: i32,
    max_attempts: i32,
) -> Result<(job::Model, DomainEvent), DbErr> {
    let new = NewJob {
        kind: JobKind::Transcode,
        video_id: Some(video.id),
        owner_id: Some(video.owner_id),
        priority,
        payload,
        max_attempts,
    };
    let job = enqueue(conn, new).await?;
    let video = if video.status == VideoStatus::Failed {
        crate::repo::videos::processing_again(conn, video, Utc::now()).await?
    } else {
        video
    };
    let detail = EventDetail { job_id: Some(job.id), ..Default::default() };
    let event = crate::repo::outbox::record(conn, &video, EventKind::Processing, detail).await?;
    Ok((job, event))
}

/// Whether `video` can be transcoded now: it has an uploaded source and no
/// transcode is queued or running.
pub async fn transcodable<C: ConnectionTrait>(conn: &C, video: &video::Model) -> Result<bool, DbErr> {
    if video.deleted_at.is_some()
        || video.source_key.is_none()
        || matches!(video.status, VideoStatus::Draft | VideoStatus::Uploading)
    {
        return Ok(false);
    }
    Ok(!crate::repo::jobs::transcode_in_progress(conn, video.id).await?)
}

/// What a new batch asks for.
pub struct NewBatch {
    pub created_by: Uuid,
    pub preset: String,
    pub payload: serde_json::Value,
    pub formats: serde_json::Value,
    pub priority: i32,
    pub max_attempts: i32,
}

/// Create a batch over `videos` (all transcodable, checked by the caller in the
/// same transaction) and enqueue one job per video; the events to publish.
pub async fn create<C: ConnectionTrait>(
    conn: &C,
    new: NewBatch,
    videos: Vec<video::Model>,
) -> Result<(batch::Model, Vec<DomainEvent>), DbErr> {
    let total = i32::try_from(videos.len()).unwrap_or(i32::MAX);
    let batch = crate::repo::batches::insert(conn, new.created_by, new.preset, new.formats, total).await?;
    let mut published = Vec::with_capacity(videos.len());
    for video in videos {
        let (job, event) = enqueue_transcode(conn, video, new.payload.clone(), new.priority, new.max_attempts).await?;
        crate::repo::batches::add_job(conn, batch.id, job.id).await?;
        published.push(event);
    }
    Ok((batch, published))
}

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Some of its jobs are queued or running.
    Running,
    /// Every job finished (succeeded or failed) and nobody cancelled it.
    Completed,
    /// Cancelled: its queued jobs were cancelled, its running ones asked to stop.
    Cancelled,
}

/// A batch's aggregate, counted from its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchProgress {
    pub state: BatchState,
    pub total: i32,
    /// SUCCEEDED jobs.
    pub done: i32,
    /// FAILED or DEAD jobs.
    pub failed: i32,
    /// CANCELLED jobs.
    pub cancelled: i32,
    /// Every job finished one way or another.
    pub finished: bool,
    /// 0..=100: finished jobs count whole, running ones by their own percent.
    pub percent: f64,
    /// Seconds left at the rate so far; 0 once finished, `None` before any progress.
    pub eta_seconds: Option<f64>,
}

/// Count `jobs` (the batch's) into its progress, as of `now`.
pub fn progress_of(batch: &batch::Model, jobs: &[job::Model], now: DateTime<Utc>) -> BatchProgress {
    let count = |statuses: &[JobStatus]| {
        i32::try_from(jobs.iter().filter(|j| statuses.contains(&j.status)).count()).unwrap_or(i32::MAX)
    };
    let done = count(&[JobStatus::Succeeded]);
    let failed = count(&[JobStatus::Failed, JobStatus::Dead]);
    let cancelled = count(&[JobStatus::Cancelled]);
    let ended = done + failed + cancelled;
    let total = batch.total.max(i32::try_from(jobs.len()).unwrap_or(i32::MAX));
    let finished = ended >= total;
    let running: f64 = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Running)
        .filter_map(|j| j.progress.as_ref())
        .filter_map(|p| serde_json::from_value::<ProgressInfo>(p.clone()).ok())
        .map(|p| p.percent.clamp(0.0, 100.0) / 100.0)
        .sum();
    let fraction = if total == 0 { 1.0 } else { ((f64::from(ended) + running) / f64::from(total)).clamp(0.0, 1.0) };
    let fraction = if finished { 1.0 } else { fraction.min(0.999) };
    let eta_seconds = if finished {
        Some(0.0)
    } else if fraction > 0.0 {
        let elapsed = (now - batch.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        Some(elapsed * (1.0 - fraction) / fraction)
    } else {
        None
    };
    let state = if batch.cancelled_at.is_some() {
        BatchState::Cancelled
    } else if finished {
        BatchState::Completed
    } else {
        BatchState::Running
    };
    BatchProgress { state, total, done, failed, cancelled, finished, percent: fraction * 100.0, eta_seconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(total: i32) -> batch::Model {
        batch::Model {
            id: Uuid::now_v7(),
            created_by: Uuid::now_v7(),
            preset: "LOW".into(),
            formats: serde_json::json!(["HLS"]),
            total,
            created_at: Utc::now() - chrono::Duration::seconds(10),
            cancelled_at: None,
        }
    }

    fn job(status: JobStatus, percent: Option<f64>) -> job::Model {
        let now = Utc::now();
        job::Model {
            id: Uuid::now_v7(),
            video_id: None,
            owner_id: None,
            kind: JobKind::Transcode,
            status,
            priority: 0,
            payload: serde_json::Value::Null,
            attempts: 0,
            max_attempts: 1,
            run_after: now,
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
            last_error: None,
            progress: percent.map(|p| serde_json::json!({ "percent": p, "stage": "encoding" })),
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            finished_at: None,
            trace_parent: None,
        }
    }

    #[test]
    fn progress_counts_finished_jobs_whole_and_running_ones_by_their_percent() {
        let b = batch(4);
        let jobs = [
            job(JobStatus::Succeeded, None),
            job(JobStatus::Dead, None),
            job(JobStatus::Running, Some(50.0)),
            job(JobStatus::Queued, None),
        ];
        let p = progress_of(&b, &jobs, Utc::now());
        assert_eq!((p.total, p.done, p.failed, p.cancelled, p.state), (4, 1, 1, 0, BatchState::Running));
        assert!((p.percent - 62.5).abs() < 1e-9, "{p:?}");
        let eta = p.eta_seconds.unwrap();
        assert!(eta > 0.0 && eta < 10.0, "10 s for 62.5 %: about 6 s left, got {eta}");

        let none = progress_of(&b, &[job(JobStatus::Queued, None)], Utc::now());
        assert_eq!((none.percent, none.eta_seconds), (0.0, None), "no rate before any progress");

        let all = [job(JobStatus::Succeeded, None), job(JobStatus::Failed, None)];
        let p = progress_of(&batch(2), &all, Utc::now());
        assert_eq!((p.state, p.percent, p.eta_seconds, p.finished), (BatchState::Completed, 100.0, Some(0.0), true));

        let mut cancelled = batch(2);
        cancelled.cancelled_at = Some(Utc::now());
        let p = progress_of(&cancelled, &[job(JobStatus::Cancelled, None), job(JobStatus::Running, None)], Utc::now());
        assert_eq!((p.state, p.cancelled, p.finished), (BatchState::Cancelled, 1, false));
    }
}
