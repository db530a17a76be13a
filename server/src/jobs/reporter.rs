//! Where a running job reports: progress is throttled (at most ~4 per second, plus
//! every stage change and the end), kept on the job row and published as PROGRESS;
//! log lines go to the bounded job log.
//!
//! The runner may call from any thread (media work runs on its own); reports go
//! through a channel to one task on the worker's runtime, which writes them in order.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use entities::{event_outbox, video, LogLevel};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::events::{self, ProgressInfo, Publisher};
use crate::jobs::queue;
use crate::jobs::runner::JobReporter;

/// Minimum spacing of progress reports of one job.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

enum Report {
    Progress(ProgressInfo),
    Log(LogLevel, String),
}

struct Throttle {
    last_at: Option<Instant>,
    last_stage: String,
}

/// The scheduler's [`JobReporter`] for one leased job.
pub struct QueueReporter {
    tx: mpsc::UnboundedSender<Report>,
    throttle: Mutex<Throttle>,
}

impl QueueReporter {
    /// Start the writer task on the current runtime; it ends when the reporter is dropped.
    pub fn start(
        db: DatabaseConnection,
        publisher: Publisher,
        job_id: Uuid,
        video_id: Option<Uuid>,
        token: Uuid,
        log_max_lines: u64,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                match report {
                    Report::Progress(progress) => {
                        if let Err(err) = store_and_publish(&db, &publisher, job_id, video_id, token, progress).await {
                            tracing::warn!(job = %job_id, error = %err, "storing job progress failed");
                        }
                    }
                    Report::Log(level, message) => {
                        if let Err(err) = queue::append_log(&db, job_id, level, message, log_max_lines).await {
                            tracing::warn!(job = %job_id, error = %err, "writing job log failed");
                        }
                    }
                }
            }
        });
        Self { tx, throttle: Mutex::new(Throttle { last_at: None, last_stage: String::new() }) }
    }

    fn admit(&self, progress: &ProgressInfo) -> bool {
        let mut throttle = match self.throttle.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let stage_changed = throttle.last_stage != progress.stage;
        let due = throttle.last_at.is_none_or(|at| now.duration_since(at) >= PROGRESS_EVERY);
        if stage_changed || due || progress.percent >= 100.0 {
            throttle.last_at = Some(now);
            throttle.last_stage.clone_from(&progress.stage);
            true
        } else {
            false
        }
    }
}

impl JobReporter for QueueReporter {
    fn progress(&self, progress: ProgressInfo) {
        if self.admit(&progress) {
            let _ = self.tx.send(Report::Progress(progress));
        }
    }

    fn log(&self, level: LogLevel, message: String) {
        let _ = self.tx.send(Report::Log(level, message));
    }
}

async fn store_and_publish(
    db: &DatabaseConnection,
    publisher: &Publisher,
    job_id: Uuid,
    video_id: Option<Uuid>,
    token: Uuid,
    progress: ProgressInfo,
) -> anyhow::Result<()> {
    let json = serde_json::to_value(&progress)?;
    if !queue::store_progress(db, job_id, token, json).await? {
        // The lease is gone: this run's progress no longer describes the job.
        return Ok(());
    }
    let Some(video_id) = video_id else { return Ok(()) };
    let Some(video) = video::Entity::find_by_id(video_id).one(db).await? else { return Ok(()) };
    let last_seq: Option<i64> = event_outbox::Entity::find()
        .select_only()
        .column_as(Expr::col(event_outbox::Column::Seq).max(), "max_seq")
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    publisher.publish(events::progress_event(&video, last_seq.unwrap_or(0), job_id, progress));
    Ok(())
}
