//! What running one job means. The scheduler (`jobs::scheduler`) leases, renews,
//! completes and retries; this module does the work and describes its result, and
//! applies that result inside the scheduler's completion transaction (so a worker
//! whose lease was taken away cannot apply anything).
//!
//! SCAFFOLD: the bodies below are placeholders replaced by the transcode runner.

use std::path::PathBuf;
use std::sync::Arc;

use entities::{job, LogLevel};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::events::{DomainEvent, ProgressInfo, Publisher};
use crate::media::CancelFlag;
use crate::storage::ObjectStore;

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
    Permanent { code: &'static str, reason: String },
    #[error("cancelled")]
    Cancelled,
}

/// What a successful run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JobOutput {
    Transcoded(serde_json::Value),
    ObjectsDeleted { count: u64 },
}

/// Run `job` to the end (blocking media work happens on its own thread).
pub async fn run(
    _ctx: &JobContext,
    _job: &job::Model,
    _cancel: CancelFlag,
    _reporter: Arc<dyn JobReporter>,
) -> Result<JobOutput, JobError> {
    Err(JobError::Retryable("job runner not written yet".into()))
}

/// Apply a success (renditions, video READY, READY event) inside `txn`; the
/// caller publishes the returned events after commit.
pub async fn apply_success(
    _txn: &DatabaseTransaction,
    _job: &job::Model,
    _output: &JobOutput,
) -> Result<Vec<DomainEvent>, DbErr> {
    Ok(Vec::new())
}

/// The job failed for good (FAILED or DEAD): the video is FAILED with `reason`.
pub async fn apply_failure(
    _txn: &DatabaseTransaction,
    _job: &job::Model,
    _reason: &str,
) -> Result<Vec<DomainEvent>, DbErr> {
    Ok(Vec::new())
}

/// The job was cancelled.
pub async fn apply_cancelled(_txn: &DatabaseTransaction, _job: &job::Model) -> Result<Vec<DomainEvent>, DbErr> {
    Ok(Vec::new())
}
