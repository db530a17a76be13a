//! Where a running job reports: progress is throttled (at most ~4 per second, plus
//! every stage change and the end), kept on the job row and published as PROGRESS;
//! log lines go to the bounded job log, at most `jobs.log_lines_per_sec` a second
//! (bursts of `jobs.log_burst`): past that they are counted, and the next line that
//! goes through (or the end of the run) says how many were suppressed. Every stored
//! line is announced to `jobLog` subscribers (`events::job_log`).
//!
//! The runner may call from any thread (media work runs on its own); reports go
//! through a channel to one task on the worker's runtime, which writes them in order.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use entities::LogLevel;
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::jobs::JobSettings;
use crate::events::job_log::JobLogWritten;
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

/// Admits log lines at a sustained rate with bursts (a token bucket), counting the
/// ones it refuses until it can report them.
#[derive(Debug)]
pub struct LineBudget {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Option<Instant>,
    suppressed: u64,
}

impl LineBudget {
    pub fn new(per_sec: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self { per_sec: per_sec.max(1) as f64, burst, tokens: burst, refilled_at: None, suppressed: 0 }
    }

    /// May a line go through at `now`? `Some(n)` when it may, with `n` the lines refused
    /// since the last one that went through (the caller stores a line saying so first).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if let Some(at) = self.refilled_at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.refilled_at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines refused and not yet reported (reported now).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    pub fn per_sec(&self) -> u64 {
        self.per_sec as u64
    }
}

fn suppressed_line(count: u64, per_sec: u64) -> String {
    format!("{count} log line(s) suppressed: more than {per_sec} a second (jobs.log_lines_per_sec)")
}

/// The scheduler's [`JobReporter`] for one leased job.
pub struct QueueReporter {
    tx: mpsc::UnboundedSender<Report>,
    throttle: Mutex<Throttle>,
    budget: Mutex<LineBudget>,
}

impl QueueReporter {
    /// Start the writer task on the current runtime; it ends when the reporter is dropped.
    pub fn start(
        db: DatabaseConnection,
        publisher: Publisher,
        job_id: Uuid,
        video_id: Option<Uuid>,
        token: Uuid,
        settings: &JobSettings,
    ) -> Self {
        Self::start_tracked(db, publisher, job_id, video_id, token, settings).0
    }

    /// [`Self::start`], also returning the writer task, which ends once the reporter
    /// is dropped and everything it was given is stored.
    pub fn start_tracked(
        db: DatabaseConnection,
        publisher: Publisher,
        job_id: Uuid,
        video_id: Option<Uuid>,
        token: Uuid,
        settings: &JobSettings,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let bounds = queue::LogBounds::of(settings);
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let writer = tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                match report {
                    Report::Progress(progress) => {
                        if let Err(err) = store_and_publish(&db, &publisher, job_id, video_id, token, progress).await {
                            tracing::warn!(job = %job_id, error = %err, "storing job progress failed");
                        }
                    }
                    Report::Log(level, message) => match queue::append_log(&db, job_id, level, message, bounds).await {
                        Ok(line) => publisher.job_log_written(JobLogWritten { job_id, seq: line.seq }),
                        Err(err) => tracing::warn!(job = %job_id, error = %err, "writing job log failed"),
                    },
                }
            }
        });
        let budget = LineBudget::new(settings.log_lines_per_sec, settings.log_burst);
        (Self { tx, throttle: Mutex::new(Throttle::default()), budget: Mutex::new(budget) }, writer)
    }

    fn admit(&self, progress: &ProgressInfo) -> bool {
        let mut throttle = match self.throttle.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        throttle.admit(progress, Instant::now())
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, LineBudget> {
        match self.budget.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
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
        let mut budget = self.budget();
        match budget.admit(Instant::now()) {
            Some(0) => {}
            Some(suppressed) => {
                let _ = self.tx.send(Report::Log(LogLevel::Warn, suppressed_line(suppressed, budget.per_sec())));
            }
            None => {
                metrics::counter!("reelhouse_job_log_lines_suppressed_total").increment(1);
                return;
            }
        }
        let _ = self.tx.send(Report::Log(level, message));
    }
}

impl Drop for QueueReporter {
    /// The run is over: say what was suppressed since the last line that went through.
    fn drop(&mut self) {
        let mut budget = self.budget();
        let suppressed = budget.take_suppressed();
        if suppressed > 0 {
            let _ = self.tx.send(Report::Log(LogLevel::Warn, suppressed_line(suppressed, budget.per_sec())));
        }
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
    let Some(video) = crate::repo::videos::find(db, video_id).await? else { return Ok(()) };
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

    #[test]
    fn log_lines_pass_at_the_rate_with_bursts_and_the_refused_are_counted_once() {
        let mut budget = LineBudget::new(10, 20);
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        // A burst of 20 at once, then refusals.
        for _ in 0..20 {
            assert_eq!(budget.admit(ms(0)), Some(0));
        }
        for _ in 0..30 {
            assert_eq!(budget.admit(ms(0)), None);
        }
        // 100 ms later one token is back: the line goes and reports the 30 refused.
        assert_eq!(budget.admit(ms(100)), Some(30));
        assert_eq!(budget.admit(ms(100)), None);
        assert_eq!(budget.take_suppressed(), 1);
        assert_eq!(budget.take_suppressed(), 0);
        // Over ten seconds of a line every millisecond: the burst plus ten a second.
        let mut budget = LineBudget::new(10, 20);
        let admitted = (0..10_000).filter(|n| budget.admit(ms(*n)).is_some()).count();
        assert!((119..=121).contains(&admitted), "{admitted}");
    }
}
