//! `subscription jobLog(jobId, after)`: a job's log lines, live.
//!
//! The lines live in `job_logs`, numbered per job (`seq`, in commit order; see
//! `jobs::queue::append_log_in`), written by whichever process runs the job. A feed
//! subscribes to the bus *before* it reads the table, then sends every line after
//! its cursor in order, and reads again whenever the bus says the job's log grew
//! (`events::job_log`, relayed through Redis from other processes) or, as the
//! backstop for a lost notice, every `jobs.log_poll_ms`. It reads the table, never
//! the notice, so a resumed stream (`after:` a line's cursor) has no gap and no
//! duplicate; lines dropped by the log's bound before it read them are announced by
//! one marker line (`dropped`).
//!
//! The stream ends when the job does: after its last line, one more line carrying
//! `jobStatus` (SUCCEEDED, FAILED, CANCELLED or DEAD). A job that has already ended
//! sends what is after the cursor, then that line.
//!
//! Authorization as `job(id:)`: the owner of the job and admins; to anybody else the
//! job does not exist (NOT_FOUND, no line). The WebSocket session closes the socket
//! on token expiry, revocation or a role change.

use std::time::Duration;

use async_graphql::{Context, ErrorExtensions, Subscription, ID};
use chrono::Utc;
use entities::{job, JobStatus as DbJobStatus};
use futures::Stream;
use sea_orm::DatabaseConnection;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::auth::roles::require_principal;
use crate::error::{AppError, ErrorCode, GqlResultExt};
use crate::events::bus::{BusMessage, Subscribe};
use crate::graphql::jobs::{find_visible, hide_worker, parse_log_cursor, sees_all, JobLogLevel, JobLogLine};
use crate::state::AppState;

/// Lines buffered per subscriber; a slow client slows only its own feed.
const SUBSCRIBER_BUFFER: usize = 64;
/// Lines read per query.
const PAGE: u64 = 200;

fn is_terminal(status: DbJobStatus) -> bool {
    matches!(status, DbJobStatus::Succeeded | DbJobStatus::Failed | DbJobStatus::Cancelled | DbJobStatus::Dead)
}

/// The line that ends a stream: the job's final state (and why, if it failed).
fn final_line(job: &job::Model, after_seq: i64, admin: bool) -> JobLogLine {
    let status = crate::graphql::jobs::JobStatus::from(job.status);
    let name = match job.status {
        DbJobStatus::Succeeded => "SUCCEEDED",
        DbJobStatus::Failed => "FAILED",
        DbJobStatus::Cancelled => "CANCELLED",
        DbJobStatus::Dead => "DEAD",
        DbJobStatus::Queued => "QUEUED",
        DbJobStatus::Running => "RUNNING",
    };
    let (level, message) = match (job.status, job.last_error.as_deref()) {
        (DbJobStatus::Failed | DbJobStatus::Dead, Some(error)) => {
            let error = if admin { error.to_string() } else { hide_worker(error) };
            (JobLogLevel::Error, format!("job ended: {name}: {error}"))
        }
        (DbJobStatus::Failed | DbJobStatus::Dead, None) => (JobLogLevel::Error, format!("job ended: {name}")),
        _ => (JobLogLevel::Info, format!("job ended: {name}")),
    };
    JobLogLine {
        cursor: after_seq.to_string(),
        at: job.finished_at.unwrap_or_else(Utc::now),
        level,
        message,
        dropped: None,
        job_status: Some(status),
    }
}

/// Why a feed stops.
struct Stop;

/// One subscriber's position in one job's log.
struct LogFeed {
    db: DatabaseConnection,
    job_id: Uuid,
    admin: bool,
    /// The last line number sent (0: none).
    sent: i64,
    out: mpsc::Sender<async_graphql::Result<JobLogLine>>,
}

impl LogFeed {
    async fn send(&mut self, line: JobLogLine) -> Result<(), Stop> {
        self.out.send(Ok(line)).await.map_err(|_| Stop)
    }

    async fn fail(&mut self, error: AppError) -> Stop {
        let _ = self.out.send(Err(error.extend())).await;
        Stop
    }

    /// Send every stored line after `sent`; after the last line of a job that has
    /// ended, its final line, and stop.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            // The job's state first, then the lines: every line committed before the
            // state is then read too, so the final line never overtakes one.
            let job = match crate::repo::jobs::find(&self.db, self.job_id).await {
                Ok(Some(job)) => job,
                Ok(None) => return Err(self.fail(AppError::not_found("job")).await),
                Err(err) => {
                    // A database hiccup is not a reason to drop the subscriber: the
                    // next notice or poll tries again.
                    tracing::warn!(error = %err, job = %self.job_id, "reading a job for its log failed");
                    return Ok(());
                }
            };
            let lines = match crate::repo::job_logs::page(&self.db, self.job_id, self.sent, Some(PAGE)).await {
                Ok(lines) => lines,
                Err(err) => {
                    tracing::warn!(error = %err, job = %self.job_id, "reading a job's log failed");
                    return Ok(());
                }
            };
            if lines.is_empty() {
                if is_terminal(job.status) {
                    let line = final_line(&job, self.sent, self.admin);
                    self.send(line).await?;
                    return Err(Stop);
                }
                return Ok(());
            }
            let full = lines.len() as u64 == PAGE;
            for line in JobLogLine::page(self.sent, lines, self.admin) {
                if line.dropped.is_none() {
                    self.sent = line.cursor.parse().unwrap_or(self.sent);
                }
                metrics::counter!("reelhouse_job_log_lines_delivered_total").increment(1);
                self.send(line).await?;
            }
            if !full && !is_terminal(job.status) {
                return Ok(());
            }
        }
    }

    async fn run(mut self, mut bus: broadcast::Receiver<BusMessage>, poll_every: Duration) {
        if self.catch_up().await.is_err() {
            return;
        }
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            let step = tokio::select! {
                biased;
                _ = self.out.closed() => Err(Stop),
                message = bus.recv() => match message {
                    Ok(BusMessage::JobLog(notice)) if notice.job_id == self.job_id && notice.seq > self.sent => {
                        self.catch_up().await
                    }
                    Ok(_) => Ok(()),
                    // Missed notices: the table has every line.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => {
                        Err(self.fail(AppError::new(ErrorCode::Unavailable, "event stream restarted; resubscribe with your last cursor")).await)
                    }
                },
                _ = poll.tick() => self.catch_up().await,
            };
            if step.is_err() {
                return;
            }
        }
    }
}

/// Counts live `jobLog` subscriptions in `reelhouse_job_log_subscribers`.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!("reelhouse_job_log_subscribers").increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!("reelhouse_job_log_subscribers").decrement(1.0);
    }
}

async fn start_feed(
    ctx: &Context<'_>,
    job_id: &ID,
    after: Option<&str>,
) -> Result<ReceiverStream<async_graphql::Result<JobLogLine>>, AppError> {
    let state = ctx.data::<AppState>().map_err(|_| AppError::internal(anyhow::anyhow!("no app state")))?.clone();
    let principal = require_principal(ctx)?;
    let after = after.map(parse_log_cursor).transpose()?.unwrap_or(0);
    // An id that is not one is a job that does not exist.
    let id = Uuid::parse_str(job_id.as_str()).map_err(|_| AppError::not_found("job"))?;
    let job = find_visible(&state.db, principal, id).await?;
    let admin = sees_all(principal);
    // The bus first, then the table: a line written in between is read, not missed.
    let bus = state.hubs.event_bus.addr().send(Subscribe).await.map_err(|e| AppError::unavailable("event bus", e))?;
    let (out, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
    let feed = LogFeed { db: state.db.clone(), job_id: job.id, admin, sent: after, out };
    let poll_every = Duration::from_millis(state.settings.jobs.log_poll_ms.max(50));
    tokio::spawn(async move {
        let _connected = SubscriberGauge::new();
        feed.run(bus, poll_every).await;
    });
    Ok(ReceiverStream::new(receiver))
}

#[derive(Default)]
pub struct JobLogSubscription;

#[Subscription]
impl JobLogSubscription {
    /// A job's log lines, oldest first, then live as they are written, by whichever
    /// process runs the job. With `after` (a line's `cursor`), only the lines after
    /// it: a client that reconnects with its last cursor misses none and sees none
    /// twice. Ends after the job does, with a line carrying `jobStatus`. The owner
    /// of the job and admins only (NOT_FOUND for anybody else).
    async fn job_log(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<JobLogLine>>> {
        start_feed(ctx, &job_id, after.as_deref()).await.gql()
    }
}
