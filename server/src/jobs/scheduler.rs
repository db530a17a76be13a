//! The job actors of one worker process.
//!
//! A [`Scheduler`] leases jobs up to the process's concurrency and sweeps expired
//! leases. Each leased job gets a [`JobWorker`] actor that runs `runner::run` (the
//! media work itself runs on its own thread inside the runner), renews the lease,
//! polls for a cancel request a few times a second, reports progress, and finishes
//! the job through the queue with its lease token. A `JobWorker` that dies without
//! finishing (a panic unwinds it) leaves a [`WorkerGuard`] behind that tells the
//! scheduler, which fails the attempt retryably and frees the slot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use entities::job;
use futures::future::LocalBoxFuture;
use sea_orm::DatabaseConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::Settings;
use crate::events::Publisher;
use crate::jobs::queue::{self, LeasedJob, QueueError};
use crate::jobs::reporter::QueueReporter;
use crate::jobs::runner::{self, JobContext, JobError, JobOutput, JobReporter};
use crate::media::CancelFlag;
use crate::storage::ObjectStore;

/// How often a running job checks whether it was cancelled (or lost its lease).
pub const CANCEL_POLL: Duration = Duration::from_millis(250);

/// A job runner: `runner::run` unless replaced (tests drive the actors with runners
/// that panic, wait for cancel, or never end).
pub type RunFn = Arc<
    dyn Fn(
            JobContext,
            job::Model,
            CancelFlag,
            Arc<dyn JobReporter>,
        ) -> LocalBoxFuture<'static, Result<JobOutput, JobError>>
        + Send
        + Sync,
>;

/// What the job actors need.
#[derive(Clone)]
pub struct WorkerDeps {
    pub db: DatabaseConnection,
    pub store: Arc<dyn ObjectStore>,
    pub settings: Arc<Settings>,
    pub publisher: Publisher,
    pub scratch_dir: PathBuf,
    /// `None`: `runner::run`.
    pub runner: Option<RunFn>,
    /// Delivers SEND_MAIL jobs.
    pub mailer: Arc<crate::mail::Mailer>,
}

impl WorkerDeps {
    fn run(
        &self,
        context: JobContext,
        job: job::Model,
        cancel: CancelFlag,
        reporter: Arc<dyn JobReporter>,
    ) -> LocalBoxFuture<'static, Result<JobOutput, JobError>> {
        match &self.runner {
            Some(run) => run(context, job, cancel, reporter),
            None => Box::pin(async move { runner::run(&context, &job, cancel, reporter).await }),
        }
    }

    fn lease_for(&self) -> Duration {
        Duration::from_secs(self.settings.jobs.lease_secs.max(1))
    }
}

struct Running {
    addr: Addr<JobWorker>,
}

/// Leases jobs for this process and supervises their `JobWorker`s.
pub struct Scheduler {
    deps: WorkerDeps,
    worker_id: String,
    lane: queue::Lane,
    capacity: usize,
    running: HashMap<Uuid, Running>,
    leasing: bool,
    sweeping: bool,
    draining: bool,
    /// Tells the worker's supervisor when this scheduler dies (it starts a new one).
    _death: crate::actors::DeathNotice,
}

impl Scheduler {
    pub fn new(
        deps: WorkerDeps,
        worker_id: String,
        lane: queue::Lane,
        capacity: usize,
        death: crate::actors::DeathNotice,
    ) -> Self {
        Self {
            deps,
            worker_id,
            lane,
            capacity: capacity.max(1),
            running: HashMap::new(),
            leasing: false,
            sweeping: false,
            draining: false,
            _death: death,
        }
    }

    fn try_lease(&mut self, ctx: &mut Context<Self>) {
        if self.leasing || self.draining || self.running.len() >= self.capacity {
            return;
        }
        self.leasing = true;
        let db = self.deps.db.clone();
        let worker_id = self.worker_id.clone();
        let lease_for = self.deps.lease_for();
        let settings = self.deps.settings.clone();
        let lane = self.lane;
        let fut = async move { queue::lease_in(&db, &worker_id, lane, lease_for, &settings.jobs).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.leasing = false;
            match result {
                Ok(Some(leased)) => {
                    if act.draining {
                        // Leased just as the drain began: give it straight back.
                        let db = act.deps.db.clone();
                        let settings = act.deps.settings.clone();
                        actix_rt::spawn(async move {
                            let _ = queue::release(
                                &db,
                                &settings.jobs,
                                leased.job.id,
                                leased.token,
                                "worker shutting down",
                            )
                            .await;
                        });
                        return;
                    }
                    tracing::info!(job = %leased.job.id, attempt = leased.job.attempts, "job leased");
                    let job_id = leased.job.id;
                    let addr = JobWorker::new(act.deps.clone(), leased, ctx.address()).start();
                    act.running.insert(job_id, Running { addr });
                    // There may be more work: look again at once.
                    ctx.notify(Tick);
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "leasing a job failed"),
            }
        }));
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let db = self.deps.db.clone();
        let publisher = self.deps.publisher.clone();
        let settings = self.deps.settings.clone();
        let fut = async move { queue::sweep_expired(&db, &publisher, &settings.jobs).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.sweeping = false;
            match result {
                Ok(0) => {}
                Ok(swept) => {
                    tracing::warn!(swept, "re-queued jobs whose worker was lost");
                    ctx.notify(Tick);
                }
                Err(err) => tracing::warn!(error = %err, "sweeping expired leases failed"),
            }
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let poll = Duration::from_millis(self.deps.settings.jobs.poll_interval_ms.max(10));
        ctx.run_interval(poll, |act, ctx| act.try_lease(ctx));
        // One sweeper per process is enough: the media lane's.
        if self.lane == queue::Lane::Media {
            let sweep_every = Duration::from_secs(self.deps.settings.jobs.sweep_interval_secs.max(1));
            ctx.run_interval(sweep_every, |act, ctx| act.sweep(ctx));
        }
        ctx.notify(Tick);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

impl Handler<Tick> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.try_lease(ctx);
    }
}

/// A `JobWorker` finished its job (one way or another).
#[derive(Message)]
#[rtype(result = "()")]
struct JobEnded {
    job_id: Uuid,
}

impl Handler<JobEnded> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: JobEnded, ctx: &mut Context<Self>) {
        self.running.remove(&msg.job_id);
        ctx.notify(Tick);
    }
}

/// A `JobWorker` died without finishing its job: fail the attempt (retryably).
#[derive(Message)]
#[rtype(result = "()")]
struct WorkerLost {
    job_id: Uuid,
    token: Uuid,
}

impl Handler<WorkerLost> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: WorkerLost, ctx: &mut Context<Self>) {
        tracing::error!(job = %msg.job_id, "job worker died; the attempt is retried");
        let db = self.deps.db.clone();
        let publisher = self.deps.publisher.clone();
        let settings = self.deps.settings.clone();
        let draining = self.draining;
        let fut = async move {
            let result = if draining {
                queue::release(&db, &settings.jobs, msg.job_id, msg.token, "worker shutting down").await
            } else {
                let error = JobError::Retryable("the job worker crashed".into());
                queue::fail(&db, &publisher, &settings.jobs, msg.job_id, msg.token, &error).await
            };
            if let Err(err) = result {
                tracing::warn!(job = %msg.job_id, error = %err, "failing a crashed job's attempt");
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |(), act, ctx| {
            act.running.remove(&msg.job_id);
            ctx.notify(Tick);
        }));
    }
}

/// How many jobs run now.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RunningCount;

impl Handler<RunningCount> for Scheduler {
    type Result = usize;
    fn handle(&mut self, _: RunningCount, _: &mut Context<Self>) -> usize {
        self.running.len()
    }
}

/// Stop leasing; running jobs go on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
    }
}

/// Stop every running job and give it back to the queue (shutdown after the drain).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseAll;

impl Handler<ReleaseAll> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: ReleaseAll, _: &mut Context<Self>) {
        self.draining = true;
        for (job_id, running) in &self.running {
            tracing::warn!(job = %job_id, "stopping a running job for shutdown");
            // One already gone has its WorkerLost on the way.
            if running.addr.connected() {
                running.addr.do_send(Shutdown);
            }
        }
    }
}

/// Stop the scheduler (after the drain): no more leases or sweeps.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopScheduler;

impl Handler<StopScheduler> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: StopScheduler, ctx: &mut Context<Self>) {
        self.draining = true;
        ctx.stop();
    }
}

/// Tells the scheduler when a `JobWorker` goes away without finishing its job.
struct WorkerGuard {
    scheduler: Addr<Scheduler>,
    job_id: Uuid,
    token: Uuid,
    finished: bool,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if !self.finished {
            if std::thread::panicking() {
                tracing::error!(job = %self.job_id, "job worker panicked");
            }
            self.scheduler.do_send(WorkerLost { job_id: self.job_id, token: self.token });
        }
    }
}

enum Outcome {
    Success(JobOutput),
    Error(JobError),
}

/// Runs one leased job.
pub struct JobWorker {
    deps: WorkerDeps,
    leased: LeasedJob,
    scheduler: Addr<Scheduler>,
    cancel: CancelFlag,
    /// Stopped for shutdown: a cancelled run is released, not CANCELLED.
    shutdown: Arc<AtomicBool>,
    /// The lease was taken away: nothing this run does may be applied.
    lost: bool,
    checking: bool,
    guard: WorkerGuard,
    /// When this attempt started, for the owner's processing usage.
    started: std::time::Instant,
    /// The attempt's span: a child of the span that enqueued the job (the request that
    /// completed the upload, in whichever process), so one upload is one trace.
    span: tracing::Span,
}

impl JobWorker {
    fn new(deps: WorkerDeps, leased: LeasedJob, scheduler: Addr<Scheduler>) -> Self {
        let guard =
            WorkerGuard { scheduler: scheduler.clone(), job_id: leased.job.id, token: leased.token, finished: false };
        let span = attempt_span(&leased.job);
        Self {
            deps,
            leased,
            scheduler,
            cancel: crate::media::cancel_flag(),
            shutdown: Arc::new(AtomicBool::new(false)),
            lost: false,
            checking: false,
            guard,
            started: std::time::Instant::now(),
            span,
        }
    }

    fn check_lease(&mut self, ctx: &mut Context<Self>, renew: bool) {
        if self.checking && !renew {
            return;
        }
        self.checking = true;
        let db = self.deps.db.clone();
        let job_id = self.leased.job.id;
        let token = self.leased.token;
        let lease_for = self.deps.lease_for();
        let fut = async move {
            if renew {
                queue::heartbeat(&db, job_id, token, lease_for).await
            } else {
                queue::lease_state(&db, job_id, token).await
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.checking = false;
            match result {
                Ok(state) if !state.owned => {
                    if !act.lost {
                        tracing::warn!(job = %act.leased.job.id, "lease lost; stopping the run");
                    }
                    act.lost = true;
                    act.cancel.store(true, Ordering::SeqCst);
                }
                Ok(state) if state.cancel_requested => {
                    act.cancel.store(true, Ordering::SeqCst);
                }
                Ok(_) => {}
                // The database may be restarting; the lease outlives a few misses.
                Err(err) => tracing::warn!(job = %act.leased.job.id, error = %err, "lease check failed"),
            }
        }));
    }

    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        let db = self.deps.db.clone();
        let publisher = self.deps.publisher.clone();
        let settings = self.deps.settings.clone();
        let job_id = self.leased.job.id;
        let token = self.leased.token;
        let shutdown = self.shutdown.load(Ordering::SeqCst);
        let lost = self.lost;
        let owner = self.leased.job.owner_id;
        let kind = crate::jobs::metrics::kind_label(self.leased.job.kind);
        let spent = self.started.elapsed().as_secs_f64();
        metrics::histogram!(crate::telemetry::JOB_ATTEMPT_SECONDS, "kind" => kind).record(spent);
        if let Outcome::Error(error) = &outcome {
            let code = match error {
                JobError::Permanent { code, .. } => code.as_str(),
                JobError::Retryable(_) => "RETRYABLE",
                JobError::Cancelled => "CANCELLED",
            };
            metrics::counter!("reelhouse_job_failures_total", "kind" => kind, "code" => code).increment(1);
        }
        let fut = async move {
            // Every attempt counts against its owner's daily budget, whatever its outcome.
            if let Some(owner) = owner {
                if let Err(err) = crate::repo::usage::add_processing_seconds(&db, owner, spent).await {
                    tracing::warn!(job = %job_id, error = %err, "could not record processing usage");
                }
            }
            let result = match outcome {
                _ if lost => Err(QueueError::LeaseLost),
                Outcome::Success(output) => {
                    queue::complete(&db, &publisher, &settings.jobs, job_id, token, &output).await
                }
                Outcome::Error(JobError::Cancelled) if shutdown => {
                    queue::release(&db, &settings.jobs, job_id, token, "worker shutting down").await
                }
                Outcome::Error(error) => queue::fail(&db, &publisher, &settings.jobs, job_id, token, &error).await,
            };
            match result {
                Ok(job) => {
                    let result = crate::jobs::metrics::status_label(job.status);
                    metrics::counter!("reelhouse_job_attempts_total", "kind" => kind, "result" => result).increment(1);
                }
                Err(QueueError::LeaseLost) => {
                    tracing::warn!(job = %job_id, "the lease was lost; this run's result is discarded")
                }
                Err(err) => tracing::error!(job = %job_id, error = %err, "recording a job's result failed"),
            }
        };
        ctx.spawn(fut.instrument(self.span.clone()).into_actor(self).map(|(), act, ctx| {
            act.guard.finished = true;
            act.scheduler.do_send(JobEnded { job_id: act.leased.job.id });
            ctx.stop();
        }));
    }
}

/// The span of one attempt at `job`, continuing the trace it was enqueued in.
fn attempt_span(job: &job::Model) -> tracing::Span {
    let kind = match job.kind {
        entities::JobKind::Transcode => "transcode",
        entities::JobKind::DeleteObjects => "delete-objects",
        entities::JobKind::SendMail => "send-mail",
        entities::JobKind::DeleteUser => "delete-user",
    };
    let span = tracing::info_span!(
        "job attempt",
        otel.name = %format!("job {kind}"),
        otel.kind = "consumer",
        job.id = %job.id,
        job.kind = kind,
        job.attempt = job.attempts,
        video.id = %job.video_id.map(|id| id.to_string()).unwrap_or_default(),
    );
    crate::telemetry::traces::set_parent(&span, job.trace_parent.as_deref());
    span
}

impl Actor for JobWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(CANCEL_POLL, |act, ctx| act.check_lease(ctx, false));
        let renew_every = Duration::from_secs(self.deps.settings.jobs.heartbeat_secs.max(1));
        ctx.run_interval(renew_every, |act, ctx| act.check_lease(ctx, true));

        let job = self.leased.job.clone();
        let context = JobContext {
            db: self.deps.db.clone(),
            store: self.deps.store.clone(),
            settings: self.deps.settings.clone(),
            publisher: self.deps.publisher.clone(),
            scratch_dir: self.deps.scratch_dir.clone(),
            mailer: self.deps.mailer.clone(),
        };
        let (reporter, log_writer) = QueueReporter::start_tracked(
            self.deps.db.clone(),
            self.deps.publisher.clone(),
            job.id,
            job.video_id,
            self.leased.token,
            &self.deps.settings.jobs,
        );
        let reporter: Arc<dyn JobReporter> = Arc::new(reporter);
        let cancel = self.cancel.clone();
        let run = self.deps.run(context, job, cancel, reporter);
        // A panicking runner ends its task, not this actor: the attempt fails retryably.
        let handle = actix_rt::spawn(
            async move {
                let outcome = run.await;
                // The run's reporter is gone: its last lines are stored before the
                // outcome's, so a `jobLog` stream that ends with the job has them all.
                let _ = tokio::time::timeout(LOG_FLUSH, log_writer).await;
                outcome
            }
            .instrument(self.span.clone()),
        );
        ctx.spawn(handle.into_actor(self).map(|joined, act, ctx| {
            let outcome = match joined {
                Ok(Ok(output)) => Outcome::Success(output),
                Ok(Err(error)) => Outcome::Error(error),
                Err(err) if err.is_panic() => Outcome::Error(JobError::Retryable("the job runner crashed".into())),
                Err(_) => Outcome::Error(JobError::Retryable("the job runner was aborted".into())),
            };
            act.finish(outcome, ctx);
        }));
    }
}

/// How long the end of a run waits for its log lines to be stored.
const LOG_FLUSH: Duration = Duration::from_secs(10);

/// Stop the run for shutdown; the job goes back to the queue.
#[derive(Message)]
#[rtype(result = "()")]
struct Shutdown;

impl Handler<Shutdown> for JobWorker {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }
}
