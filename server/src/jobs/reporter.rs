//! Where a running job reports: progress is throttled (at most ~4 per second, plus
//! every stage change and the end), kept on the job row and published as PROGRESS;
//! log lines go to the bounded job log.
//!
//! The runner may call from any thread (media work runs on its own); reports go
//! through a channel to one task on the worker's runtime, which writes them in order.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use entities::{video, LogLevel};
use sea_orm::{DatabaseConnection, EntityTrait};
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

/// Decides which progress reports go through: one per [`PROGRESS_EVERY`], plus
/// every stage change and the final 100 %.
#[derive(Debug, Default)]
pub struct Throttle {
    last_at: Option<Instant>,
    last_stage: String,
}

impl Throttle {
    pub fn admit(&mut self, progress: &ProgressInfo, now: Instant) -> bool {
        let stage_changed = self.last_stage != progress.stage;
        let due = self.last_at.is_none_or(|at| now.saturating_duration_since(at) >= PROGRESS_EVERY);
        if stage_changed || due || progress.percent >= 100.0 {
            self.last_at = Some(now);
            self.last_stage.clone_from(&progress.stage);
            true
        } else {
            false
        }
    }
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
        Self { tx, throttle: Mutex::new(Throttle::default()) }
    }

    fn admit(&self, progress: &ProgressInfo) -> bool {
        let mut throttle = match self.throttle.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        throttle.admit(progress, Instant::now())
    }
}

impl JobReporter for QueueReporter {
    fn progress(&self, progress: ProgressInfo) {
        if self.admit(&progress) {
            if let Some(fps) = progress.fps.filter(|fps| fps.is_finite() && *fps > 0.0) {
                metrics::histogram!(crate::telemetry::ENCODE_FPS).record(fps);
            }
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
    publisher.publish(events::progress_event(&video, video.event_seq, job_id, progress));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stage: &str, percent: f64) -> ProgressInfo {
        ProgressInfo { percent, stage: stage.into(), ..Default::default() }
    }

    #[test]
    fn at_most_four_a_second_but_every_stage_change_and_the_end() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        assert!(throttle.admit(&at("encoding", 1.0), ms(0)));
        // 100 reports within one period: none pass.
        for n in 1..100 {
            assert!(!throttle.admit(&at("encoding", 1.0 + n as f64 / 10.0), ms(n * 2)));
        }
        assert!(throttle.admit(&at("encoding", 20.0), ms(250)));
        assert!(!throttle.admit(&at("encoding", 21.0), ms(300)));
        // A new stage is never held back, nor is the end.
        assert!(throttle.admit(&at("packaging", 90.0), ms(301)));
        assert!(throttle.admit(&at("packaging", 100.0), ms(302)));
        // Over ten seconds of reports every 10 ms: about four a second get through.
        let mut throttle = Throttle::default();
        let admitted = (0..1000).filter(|n| throttle.admit(&at("encoding", 50.0), ms(n * 10))).count();
        assert_eq!(admitted, 40);
    }
}
