//! Leasing, renewing, finishing and retrying jobs, on SQLite and PostgreSQL.
//!
//! A lease is (owner, token, expiry). Every transition of a RUNNING job is an
//! `UPDATE ... WHERE id = ? AND lease_token = ? AND status = 'RUNNING'`: a worker
//! whose lease was swept and handed to another presents a stale token and changes
//! nothing (`QueueError::LeaseLost`), so a job cannot be finished twice.
//!
//! Leasing is one statement: `UPDATE jobs ... WHERE id = (SELECT ... LIMIT 1)`,
//! with `FOR UPDATE SKIP LOCKED` on PostgreSQL so concurrent leasers pass over each
//! other's rows; SQLite has one writer, which serialises the statement.
//!
//! The statements themselves are `repo::jobs`' (and the log's `repo::job_logs`');
//! this module decides which transition a run's outcome makes, and what follows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entities::{job, job_log, JobStatus, LogLevel};
use rand::Rng;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};
use uuid::Uuid;

use crate::config::jobs::JobSettings;
use crate::error::{AppError, ErrorCode};
use crate::events::job_log::JobLogWritten;
use crate::events::{DomainEvent, Publisher};
use crate::jobs::runner::{self, JobError, JobOutput};
pub use crate::repo::jobs::Lane;
use crate::repo::jobs::{JobTransition, LeaseRequest};

/// A job this worker holds: the row as leased, with its token.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub job: job::Model,
    pub token: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The caller's lease is gone (swept, re-leased or the job finished): nothing applied.
    #[error("the job's lease is no longer held by this worker")]
    LeaseLost,
    #[error("job not found")]
    NotFound,
    /// The job is not in a state that allows the operation.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is out of bounds.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<QueueError> for AppError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::LeaseLost => AppError::new(ErrorCode::Conflict, "the job's lease was lost"),
            QueueError::NotFound => AppError::not_found("job"),
            QueueError::Conflict(message) => AppError::new(ErrorCode::Conflict, message),
            QueueError::Invalid(message) => AppError::bad_input(message),
            QueueError::Db(err) => AppError::internal(err),
        }
    }
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease is still ours (token matches, RUNNING).
    pub owned: bool,
    /// Someone asked to cancel the job.
    pub cancel_requested: bool,
}

/// Today's processing budget per owner in seconds (effectively none when unset).
fn processing_budget(settings: &JobSettings) -> f64 {
    match settings.processing_budget_secs_per_day {
        0 => f64::MAX,
        secs => secs as f64,
    }
}

fn lease_duration(lease_for: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease_for).unwrap_or_else(|_| chrono::Duration::seconds(30))
}

/// Lease the next runnable job of the media lane (everything but mail) for
/// `worker_id`, if any.
pub async fn lease(
    db: &DatabaseConnection,
    worker_id: &str,
    lease_for: Duration,
    settings: &JobSettings,
) -> Result<Option<LeasedJob>, QueueError> {
    lease_in(db, worker_id, Lane::Media, lease_for, settings).await
}

/// Lease the next runnable job of `lane` for `worker_id`, if any.
pub async fn lease_in(
    db: &DatabaseConnection,
    worker_id: &str,
    lane: Lane,
    lease_for: Duration,
    settings: &JobSettings,
) -> Result<Option<LeasedJob>, QueueError> {
    lease_tagged(db, worker_id, lane, lease_for, settings, &[]).await
}

/// [`lease_in`] for a worker carrying `tags`: with `jobs.high_preset_tag` set, a
/// worker without that tag passes HIGH-preset transcodes over (they wait for one
/// with it). Same SQL otherwise, so fairness holds across all workers.
pub async fn lease_tagged(
    db: &DatabaseConnection,
    worker_id: &str,
    lane: Lane,
    lease_for: Duration,
    settings: &JobSettings,
    tags: &[String],
) -> Result<Option<LeasedJob>, QueueError> {
    lease_routed(db, worker_id, lane, lease_for, settings, tags, true).await
}

/// [`lease_tagged`] for a worker that may lack the WebM encoders (`webm` false:
/// WebM transcodes are passed over, for a worker that has them).
pub async fn lease_routed(
    db: &DatabaseConnection,
    worker_id: &str,
    lane: Lane,
    lease_for: Duration,
    settings: &JobSettings,
    tags: &[String],
    webm: bool,
) -> Result<Option<LeasedJob>, QueueError> {
    // The database's clock, never this worker's (see `db::now`).
    let now = crate::db::now(db).await?;
    let token = Uuid::new_v4();
    let request = LeaseRequest {
        worker_id,
        lane,
        token,
        now,
        expires_at: now + lease_duration(lease_for),
        day: crate::repo::usage::today(),
        default_budget_secs: processing_budget(settings),
        skip_high_preset: settings.high_preset_tag.as_ref().is_some_and(|tag| !tags.contains(tag)),
        skip_webm: !webm,
    };
    let txn = crate::db::begin_write(db).await?;
    let leased = crate::repo::jobs::lease_next(&txn, request).await?;
    let Some(job) = leased else {
        txn.commit().await?;
        return Ok(None);
    };
    append_log_in(
        &txn,
        job.id,
        LogLevel::Info,
        format!("attempt {} of {} leased by {worker_id}", job.attempts, job.max_attempts),
        LogBounds::of(settings),
    )
    .await?;
    txn.commit().await?;
    Ok(Some(LeasedJob { job, token }))
}

/// Extend the lease if it is still ours; report whether cancel was requested.
pub async fn heartbeat(
    db: &DatabaseConnection,
    job_id: Uuid,
    token: Uuid,
    lease_for: Duration,
) -> Result<LeaseState, QueueError> {
    let now = crate::db::now(db).await?;
    if !crate::repo::jobs::renew_lease(db, job_id, token, now + lease_duration(lease_for)).await? {
        return Ok(LeaseState { owned: false, cancel_requested: false });
    }
    lease_state(db, job_id, token).await
}

/// Whether the lease is still ours and whether cancel was requested, without renewing.
pub async fn lease_state(db: &DatabaseConnection, job_id: Uuid, token: Uuid) -> Result<LeaseState, QueueError> {
    Ok(match crate::repo::jobs::lease_of(db, job_id).await? {
        Some((JobStatus::Running, Some(current), cancel)) if current == token => {
            LeaseState { owned: true, cancel_requested: cancel }
        }
        _ => LeaseState { owned: false, cancel_requested: false },
    })
}

/// The changes a transition of a leased job makes.
struct Transition {
    status: JobStatus,
    last_error: Option<String>,
    run_after: Option<DateTime<Utc>>,
    /// Give the attempt back (a shutdown released the job, it did not fail).
    refund_attempt: bool,
    /// Only if the lease has expired by now (the sweeper: a heartbeat that renews
    /// the lease between the sweeper's read and its update wins).
    only_if_expired: bool,
    log: (LogLevel, String),
}

impl Transition {
    /// To `status`, logging `message` at `level`; nothing else changes unless a
    /// builder below says so.
    fn to(status: JobStatus, level: LogLevel, message: impl Into<String>) -> Self {
        Self {
            status,
            last_error: None,
            run_after: None,
            refund_attempt: false,
            only_if_expired: false,
            log: (level, message.into()),
        }
    }

    fn error(mut self, error: impl Into<String>) -> Self {
        self.last_error = Some(error.into());
        self
    }

    fn run_after(mut self, at: DateTime<Utc>) -> Self {
        self.run_after = Some(at);
        self
    }

    fn refund_attempt(mut self) -> Self {
        self.refund_attempt = true;
        self
    }

    fn only_if_expired(mut self) -> Self {
        self.only_if_expired = true;
        self
    }
}

enum Apply<'a> {
    Nothing,
    Success(&'a JobOutput),
    Failure(String),
    Cancelled,
}

/// Apply `transition` to the job if `token` still holds its lease, then the
/// runner's consequences, in one transaction; publish the events after commit.
async fn transition(
    db: &DatabaseConnection,
    publisher: &Publisher,
    settings: &JobSettings,
    job_id: Uuid,
    token: Option<Uuid>,
    change: Transition,
    apply: Apply<'_>,
) -> Result<job::Model, QueueError> {
    let now = crate::db::now(db).await?;
    let txn = crate::db::begin_write(db).await?;
    let update = JobTransition {
        status: change.status,
        last_error: change.last_error,
        run_after: change.run_after,
        refund_attempt: change.refund_attempt,
        token,
        only_if_expired: change.only_if_expired,
        now,
    };
    if !crate::repo::jobs::transition(&txn, job_id, update).await? {
        txn.rollback().await?;
        return Err(if token.is_some() {
            QueueError::LeaseLost
        } else {
            QueueError::Conflict("job is not queued".into())
        });
    }
    let job = crate::repo::jobs::find(&txn, job_id).await?.ok_or(QueueError::NotFound)?;
    let line = append_log_in(&txn, job_id, change.log.0, change.log.1, LogBounds::of(settings)).await?;
    let events: Vec<DomainEvent> = match apply {
        Apply::Nothing => Vec::new(),
        Apply::Success(output) => runner::apply_success(&txn, &job, output, settings).await?,
        Apply::Failure(reason) => runner::apply_failure(&txn, &job, &reason, settings).await?,
        Apply::Cancelled => runner::apply_cancelled(&txn, &job, settings).await?,
    };
    txn.commit().await?;
    publisher.publish_all(events);
    publisher.job_log_written(JobLogWritten { job_id, seq: line.seq });
    Ok(job)
}

/// The job succeeded: SUCCEEDED and the runner's results applied, only if `token`
/// still holds the lease (else `LeaseLost` and nothing applied).
#[tracing::instrument(name = "db job complete", skip_all, fields(otel.kind = "client", job.id = %job_id))]
pub async fn complete(
    db: &DatabaseConnection,
    publisher: &Publisher,
    settings: &JobSettings,
    job_id: Uuid,
    token: Uuid,
    output: &JobOutput,
) -> Result<job::Model, QueueError> {
    let change = Transition::to(JobStatus::Succeeded, LogLevel::Info, "succeeded");
    transition(db, publisher, settings, job_id, Some(token), change, Apply::Success(output)).await
}

/// Retry delay after `attempts` failed attempts: exponential, capped, equal jitter
/// (half fixed, half random) so retries of many jobs spread out.
pub fn backoff(settings: &JobSettings, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(0);
    let base_ms = settings.backoff_base_secs.saturating_mul(1000);
    let max_ms = settings.backoff_max_secs.saturating_mul(1000).max(1);
    let ceiling = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let half = ceiling / 2;
    let jitter = if ceiling - half > 0 { rand::thread_rng().gen_range(0..=ceiling - half) } else { 0 };
    Duration::from_millis(half + jitter)
}

/// The run failed: retry later, give up (DEAD / FAILED), or acknowledge a cancel.
#[tracing::instrument(name = "db job fail", skip_all, fields(otel.kind = "client", job.id = %job_id))]
pub async fn fail(
    db: &DatabaseConnection,
    publisher: &Publisher,
    settings: &JobSettings,
    job_id: Uuid,
    token: Uuid,
    error: &JobError,
) -> Result<job::Model, QueueError> {
    let current = crate::repo::jobs::find(db, job_id).await?.ok_or(QueueError::NotFound)?;
    let (change, apply) = match error {
        JobError::Retryable(message) if current.attempts < current.max_attempts => {
            let delay = backoff(settings, current.attempts);
            let run_after = crate::db::now(db).await? + lease_duration(delay);
            let change = Transition::to(
                JobStatus::Queued,
                LogLevel::Warn,
                format!("attempt {} failed: {message}; retrying in {:.1}s", current.attempts, delay.as_secs_f64()),
            )
            .error(message.clone())
            .run_after(run_after);
            (change, Apply::Nothing)
        }
        JobError::Retryable(message) => {
            let change = Transition::to(
                JobStatus::Dead,
                LogLevel::Error,
                format!("attempt {} failed: {message}; no attempts left", current.attempts),
            )
            .error(message.clone());
            (change, Apply::Failure(message.clone()))
        }
        JobError::Permanent { code, reason } => {
            let change = Transition::to(JobStatus::Failed, LogLevel::Error, format!("failed ({code}): {reason}"))
                .error(reason.clone());
            (change, Apply::Failure(reason.clone()))
        }
        JobError::Cancelled => {
            let change = Transition::to(JobStatus::Cancelled, LogLevel::Info, "cancelled").error("cancelled");
            (change, Apply::Cancelled)
        }
    };
    transition(db, publisher, settings, job_id, Some(token), change, apply).await
}

/// Give a leased job back without counting the attempt (this worker is shutting down).
pub async fn release(
    db: &DatabaseConnection,
    settings: &JobSettings,
    job_id: Uuid,
    token: Uuid,
    reason: &str,
) -> Result<job::Model, QueueError> {
    let change = Transition::to(JobStatus::Queued, LogLevel::Warn, format!("released: {reason}"))
        .error(reason)
        .run_after(crate::db::now(db).await?)
        .refund_attempt();
    transition(db, &Publisher::default(), settings, job_id, Some(token), change, Apply::Nothing).await
}

/// Re-queue RUNNING jobs whose lease expired (their worker is gone), or make them
/// DEAD when out of attempts; forget workers not seen for three lease periods.
/// Returns how many jobs were swept.
pub async fn sweep_expired(
    db: &DatabaseConnection,
    publisher: &Publisher,
    settings: &JobSettings,
) -> Result<usize, QueueError> {
    let now = crate::db::now(db).await?;
    let expired = crate::repo::jobs::expired_leases(db, now, 100).await?;
    let mut swept = 0;
    for job in expired {
        let Some(token) = job.lease_token else { continue };
        let message = "worker lost (lease expired)".to_string();
        let owner = job.lease_owner.clone().unwrap_or_default();
        let result = if job.attempts < job.max_attempts {
            let change = Transition::to(
                JobStatus::Queued,
                LogLevel::Warn,
                format!("attempt {} lost: lease of {owner} expired", job.attempts),
            )
            .error(message.clone())
            .run_after(now)
            .only_if_expired();
            transition(db, publisher, settings, job.id, Some(token), change, Apply::Nothing).await
        } else {
            let change = Transition::to(
                JobStatus::Dead,
                LogLevel::Error,
                format!("attempt {} lost: lease of {owner} expired; no attempts left", job.attempts),
            )
            .error(message.clone())
            .only_if_expired();
            transition(db, publisher, settings, job.id, Some(token), change, Apply::Failure(message)).await
        };
        match result {
            Ok(_) => swept += 1,
            // Renewed or finished meanwhile: not ours to sweep.
            Err(QueueError::LeaseLost) => {}
            Err(err) => return Err(err),
        }
    }
    let stale = now - lease_duration(Duration::from_secs(settings.lease_secs.max(1) * 3));
    crate::repo::workers::delete_unseen_since(db, stale).await?;
    Ok(swept)
}

/// Cancel: a QUEUED job is CANCELLED now; a RUNNING one is flagged and its worker
/// stops it on its next check. Finished jobs are a CONFLICT.
pub async fn cancel(
    db: &DatabaseConnection,
    publisher: &Publisher,
    settings: &JobSettings,
    job_id: Uuid,
) -> Result<job::Model, QueueError> {
    let current = crate::repo::jobs::find(db, job_id).await?.ok_or(QueueError::NotFound)?;
    match current.status {
        JobStatus::Queued => {
            let change =
                Transition::to(JobStatus::Cancelled, LogLevel::Info, "cancelled while queued").error("cancelled");
            match transition(db, publisher, settings, job_id, None, change, Apply::Cancelled).await {
                // Leased meanwhile: flag it instead.
                Err(QueueError::Conflict(_)) => Box::pin(cancel(db, publisher, settings, job_id)).await,
                other => other,
            }
        }
        JobStatus::Running => {
            if !crate::repo::jobs::request_cancel(db, job_id, crate::db::now(db).await?).await? {
                return Box::pin(cancel(db, publisher, settings, job_id)).await;
            }
            let line =
                append_log(db, job_id, LogLevel::Info, "cancel requested".into(), LogBounds::of(settings)).await?;
            publisher.job_log_written(JobLogWritten { job_id, seq: line.seq });
            crate::repo::jobs::find(db, job_id).await?.ok_or(QueueError::NotFound)
        }
        JobStatus::Cancelled => Ok(current),
        _ => Err(QueueError::Conflict("the job has already finished".into())),
    }
}

/// Revive a DEAD, FAILED or CANCELLED job: QUEUED, attempts reset, runnable now.
pub async fn retry(db: &DatabaseConnection, settings: &JobSettings, job_id: Uuid) -> Result<job::Model, QueueError> {
    let now = crate::db::now(db).await?;
    if !crate::repo::jobs::requeue_finished(db, job_id, now).await? {
        return match crate::repo::jobs::find(db, job_id).await? {
            None => Err(QueueError::NotFound),
            Some(_) => Err(QueueError::Conflict("only DEAD, FAILED or CANCELLED jobs can be retried".into())),
        };
    }
    append_log(db, job_id, LogLevel::Info, "retried: queued again".into(), LogBounds::of(settings)).await?;
    crate::repo::jobs::find(db, job_id).await?.ok_or(QueueError::NotFound)
}

/// Highest and lowest priority an operator may give a job (uploads get
/// [`super::DEFAULT_PRIORITY`]).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// Give a QUEUED or RUNNING job another priority: leases order by it at once (a
/// RUNNING job keeps it for its retries). Finished jobs are `Conflict`.
pub async fn set_priority(
    db: &DatabaseConnection,
    settings: &JobSettings,
    job_id: Uuid,
    priority: i32,
) -> Result<job::Model, QueueError> {
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(QueueError::Invalid(format!(
            "the priority must be between {} and {}",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end()
        )));
    }
    if !crate::repo::jobs::set_priority(db, job_id, priority, crate::db::now(db).await?).await? {
        return match crate::repo::jobs::find(db, job_id).await? {
            None => Err(QueueError::NotFound),
            Some(_) => Err(QueueError::Conflict("only QUEUED or RUNNING jobs can be given another priority".into())),
        };
    }
    append_log(db, job_id, LogLevel::Info, format!("priority set to {priority}"), LogBounds::of(settings)).await?;
    crate::repo::jobs::find(db, job_id).await?.ok_or(QueueError::NotFound)
}

/// Store the latest progress on the job row (only while `token` holds the lease).
pub async fn store_progress(
    db: &DatabaseConnection,
    job_id: Uuid,
    token: Uuid,
    progress: serde_json::Value,
) -> Result<bool, QueueError> {
    Ok(crate::repo::jobs::store_progress(db, job_id, token, progress).await?)
}

/// How much of a job's log is kept: the newest `max_lines` lines, each at most
/// `max_line_chars` characters (longer ones are cut with a marker saying so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub max_lines: u64,
    pub max_line_chars: usize,
}

impl LogBounds {
    pub fn of(settings: &JobSettings) -> Self {
        Self {
            max_lines: settings.log_max_lines.max(1),
            max_line_chars: usize::try_from(settings.log_max_line_chars).unwrap_or(usize::MAX).max(1),
        }
    }
}

/// One line as stored: control characters (a GStreamer debug text's newlines) become
/// spaces, so a line stays one line, and past `max_chars` it is cut, saying how much.
pub fn bounded_line(message: &str, max_chars: usize) -> String {
    let total = message.chars().count();
    let clean = |c: char| if c.is_control() && c != '\t' { ' ' } else { c };
    if total <= max_chars {
        return message.chars().map(clean).collect();
    }
    let mut line: String = message.chars().take(max_chars).map(clean).collect();
    line.push_str(&format!(" … [{} more characters dropped]", total - max_chars));
    line
}

/// Append a line to a job's log (bounded by `bounds`); returns the stored line.
pub async fn append_log(
    db: &DatabaseConnection,
    job_id: Uuid,
    level: LogLevel,
    message: String,
    bounds: LogBounds,
) -> Result<job_log::Model, QueueError> {
    let txn = crate::db::begin_write(db).await?;
    let line = append_log_in(&txn, job_id, level, message, bounds).await?;
    txn.commit().await?;
    Ok(line)
}

/// Append a line inside `txn`, bounded by `bounds` (see `repo::job_logs::append`:
/// the job row's lock keeps a job's lines in `seq` order).
pub(crate) async fn append_log_in(
    txn: &DatabaseTransaction,
    job_id: Uuid,
    level: LogLevel,
    message: String,
    bounds: LogBounds,
) -> Result<job_log::Model, DbErr> {
    let line = bounded_line(&message, bounds.max_line_chars);
    crate::repo::job_logs::append(txn, job_id, level, line, bounds.max_lines).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let settings = JobSettings { backoff_base_secs: 2, backoff_max_secs: 60, ..Default::default() };
        for attempts in 1..=10 {
            let ceiling = (2_000u64 << (attempts - 1)).min(60_000);
            let samples: Vec<u64> = (0..50).map(|_| backoff(&settings, attempts).as_millis() as u64).collect();
            for ms in &samples {
                assert!((ceiling / 2..=ceiling).contains(ms), "attempt {attempts}: {ms} ms, ceiling {ceiling}");
            }
            let distinct: std::collections::HashSet<_> = samples.iter().collect();
            assert!(distinct.len() > 1, "jitter at attempt {attempts}");
        }
        // Absurd attempt counts neither overflow nor exceed the cap.
        assert!(backoff(&settings, i32::MAX) <= Duration::from_secs(60));
        let zero = JobSettings { backoff_base_secs: 0, ..Default::default() };
        assert_eq!(backoff(&zero, 3), Duration::ZERO);
    }
}
