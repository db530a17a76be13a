//! Queue gauges for autoscaling and alerts, read from the database by a supervised
//! loop of each `serve` process every `telemetry.queue_metrics_secs`:
//!
//! - `reelhouse_jobs{status}`: jobs QUEUED, RUNNING and DEAD (the finished ones are
//!   history, not load, and are not counted);
//! - `reelhouse_jobs_oldest_queued_age_seconds`: how long the oldest runnable
//!   QUEUED job has waited since its `run_after` (0 when none waits);
//! - `reelhouse_workers{state}`: registered workers whose heartbeat is within three
//!   heartbeat periods (`live`) or older (`stale`).
//!
//! Each reading is three small indexed queries (the `(status, run_after, priority)`
//! index serves the first two; the workers table has a row per worker process).

use std::time::Duration;

use chrono::{DateTime, Utc};
use entities::JobStatus;
use sea_orm::{DatabaseConnection, DbErr};

/// The statuses counted by `reelhouse_jobs`.
pub const COUNTED_STATUSES: [JobStatus; 3] = [JobStatus::Queued, JobStatus::Running, JobStatus::Dead];

/// One reading of the queue gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueReading {
    /// Jobs per status of [`COUNTED_STATUSES`], zero included.
    pub jobs: Vec<(JobStatus, i64)>,
    pub oldest_queued_age: Duration,
    pub workers_live: usize,
    pub workers_stale: usize,
}

/// Read the queue gauges' values; a worker is stale when it has not heartbeated
/// for `stale_after`.
pub async fn read(db: &DatabaseConnection, stale_after: Duration) -> Result<QueueReading, DbErr> {
    // The database's clock, as every job and worker row is stamped with it: an API
    // process whose clock is off would otherwise report ages and staleness that are off.
    let now = crate::db::now(db).await?;
    let counts = crate::repo::jobs::count_by_status(db, &COUNTED_STATUSES).await?;
    let jobs = COUNTED_STATUSES
        .iter()
        .map(|status| (*status, counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n)))
        .collect();
    let oldest: Option<DateTime<Utc>> = crate::repo::jobs::oldest_runnable_queued(db, now).await?;
    let oldest_queued_age = oldest.and_then(|at| (now - at).to_std().ok()).unwrap_or_default();
    let seen: Vec<DateTime<Utc>> = crate::repo::workers::last_seen(db).await?;
    let stale_for = chrono::TimeDelta::from_std(stale_after).unwrap_or(chrono::TimeDelta::hours(1));
    let stale_before = now.checked_sub_signed(stale_for).unwrap_or(now);
    let workers_stale = seen.iter().filter(|at| **at < stale_before).count();
    Ok(QueueReading { jobs, oldest_queued_age, workers_live: seen.len() - workers_stale, workers_stale })
}

/// Set the gauges from a reading.
pub fn record(reading: &QueueReading) {
    for (status, count) in &reading.jobs {
        metrics::gauge!("reelhouse_jobs", "status" => status_label(*status)).set(*count as f64);
    }
    metrics::gauge!("reelhouse_jobs_oldest_queued_age_seconds").set(reading.oldest_queued_age.as_secs_f64());
    metrics::gauge!("reelhouse_workers", "state" => "live").set(reading.workers_live as f64);
    metrics::gauge!("reelhouse_workers", "state" => "stale").set(reading.workers_stale as f64);
}

/// The status as stored and shown in the API (`QUEUED`, `DEAD`, ...).
pub fn status_label(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "QUEUED",
        JobStatus::Running => "RUNNING",
        JobStatus::Succeeded => "SUCCEEDED",
        JobStatus::Failed => "FAILED",
        JobStatus::Cancelled => "CANCELLED",
        JobStatus::Dead => "DEAD",
    }
}

/// The loop: read and record every `every`, the first reading at once. A failed
/// reading keeps the previous values (and says so in the log).
pub async fn run(db: DatabaseConnection, every: Duration, worker_heartbeat: Duration) {
    let stale_after = worker_heartbeat.saturating_mul(3);
    loop {
        match read(&db, stale_after).await {
            Ok(reading) => record(&reading),
            Err(err) => tracing::warn!(error = %err, "reading the queue metrics failed"),
        }
        actix_rt::time::sleep(every).await;
    }
}

/// The kind as stored (`TRANSCODE`, `DELETE_OBJECTS`).
pub fn kind_label(kind: entities::JobKind) -> &'static str {
    match kind {
        entities::JobKind::Transcode => "TRANSCODE",
        entities::JobKind::DeleteObjects => "DELETE_OBJECTS",
        entities::JobKind::SendMail => "SEND_MAIL",
        entities::JobKind::DeleteUser => "DELETE_USER",
    }
}
