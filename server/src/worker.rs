//! `reelhouse worker`: a process that runs workers only (no HTTP API) against the
//! shared database and storage, so encoding scales by adding processes.
//!
//! It announces itself in the `workers` table and heartbeats there so admins can
//! see it, and runs the job scheduler (`jobs::scheduler`) that leases and runs jobs.
//! With `workers.health_bind` set it serves `/live`, `/ready` and `/metrics` on that
//! address (Kubernetes probes, Prometheus).

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::actors::{Hub, Supervisor};
use crate::config::Settings;
use crate::events::bus::EventBus;
use crate::jobs::queue::Lane;
pub use crate::jobs::scheduler::WorkerDeps;
use crate::jobs::scheduler::{Drain, ReleaseAll, RunningCount, Scheduler, StopScheduler};
use crate::repo::workers::NewWorker;

/// This process's row in the `workers` table.
pub struct WorkerRegistration {
    pub id: Uuid,
    db: DatabaseConnection,
    host: String,
    capacity: i32,
    started_at: DateTime<Utc>,
}

impl WorkerRegistration {
    pub async fn register(db: DatabaseConnection, capacity: usize) -> anyhow::Result<Self> {
        let now = crate::db::now(&db).await?;
        let id = Uuid::now_v7();
        let host = crate::state::instance_id();
        let capacity = i32::try_from(capacity).unwrap_or(i32::MAX);
        let row = Self::row(id, host.clone(), capacity, 0, now, now);
        crate::repo::workers::insert(&db, row).await?;
        Ok(Self { id, db, host, capacity, started_at: now })
    }

    /// Record that this worker is alive and how many jobs it runs (one step; the
    /// loop calls it periodically). A row the sweeper removed (this process was
    /// presumed gone) is written again.
    pub async fn heartbeat(&self, current_jobs: usize) -> anyhow::Result<()> {
        let now = crate::db::now(&self.db).await?;
        let current_jobs = i32::try_from(current_jobs).unwrap_or(i32::MAX);
        let state = crate::jobs::remote::worker_state(current_jobs, false);
        if !crate::repo::workers::touch(&self.db, self.id, now, current_jobs, state).await? {
            let row = Self::row(self.id, self.host.clone(), self.capacity, current_jobs, self.started_at, now);
            crate::repo::workers::insert(&self.db, row).await?;
        }
        Ok(())
    }

    pub async fn deregister(self) -> anyhow::Result<()> {
        crate::repo::workers::delete(&self.db, self.id).await?;
        Ok(())
    }

    /// This process's row: a local worker running `current_jobs`, seen at `last_seen_at`.
    fn row(
        id: Uuid,
        host: String,
        capacity: i32,
        current_jobs: i32,
        started_at: DateTime<Utc>,
        last_seen_at: DateTime<Utc>,
    ) -> NewWorker {
        NewWorker {
            id,
            host,
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            capacity,
            current_jobs,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at,
            last_seen_at,
            kind: crate::jobs::remote::KIND_LOCAL.into(),
            name: None,
            tags: String::new(),
            state: crate::jobs::remote::worker_state(current_jobs, false).into(),
            gstreamer_version: None,
            token_id: None,
        }
    }
}

/// Run until SIGTERM/SIGINT, heartbeating; deregister on the way out.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // First, so a SIGTERM that arrives while the worker is still connecting or
    // migrating is not fatal: it is kept and ends the worker cleanly once started.
    let mut signals = crate::state::ShutdownSignals::install()?;
    let metrics = crate::telemetry::prometheus()?;
    let db = crate::db::connect(&settings).await?;
    if settings.database.migrate_on_start {
        crate::db::migrate(&db).await?;
    }
    let keys = crate::keys::ServerKeys::load_or_generate(&settings)?;
    let public_url = settings
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.server.bind))
        .trim_end_matches('/')
        .to_string();
    let (store, _) = crate::state::build_store(&settings, &keys, &public_url).await?;
    let stop = async move {
        let received = signals.recv().await;
        tracing::info!(signal = received.unwrap_or("unknown"), "worker shutting down");
    };
    // Subscribers live in the API processes: with Redis, events reach them through
    // the fan-out channel; stored events stay in the outbox either way.
    let redis = crate::redis_client::RedisHandle::new(&settings.redis)?.map(Arc::new);
    let instance = crate::state::instance_id();
    let hubs = WorkerHubs::start(&instance, Duration::from_millis(settings.server.heartbeat_interval_ms));
    let health = match settings.worker_health_addr()? {
        Some(bind) => Some(HealthServer::start(
            bind,
            HealthState {
                db: db.clone(),
                store: store.clone(),
                redis: redis.clone(),
                metrics,
                token: settings.telemetry.metrics_token.clone(),
            },
            settings.server.shutdown_timeout_secs,
        )?),
        None => None,
    };
    let mailer = Arc::new(crate::mail::Mailer::new(&settings, &keys)?);
    tracing::info!(transport = %mailer.describe(), "mail");
    let settings = Arc::new(settings);
    let deps = WorkerDeps {
        db,
        store,
        scratch_dir: settings.scratch_dir(),
        settings,
        publisher: crate::events::Publisher::new(Some(hubs.event_bus.clone()))
            .with_redis(redis.map(|r| crate::events::fanout::RedisPublisher::start(r, &instance))),
        runner: None,
        mailer,
    };
    let result = run_until(deps, stop).await;
    if let Some(health) = health {
        health.stop().await;
    }
    hubs.stop();
    result
}

/// What the worker's health port needs.
#[derive(Clone)]
struct HealthState {
    db: DatabaseConnection,
    store: Arc<dyn crate::storage::ObjectStore>,
    redis: Option<Arc<crate::redis_client::RedisHandle>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    token: Option<crate::config::Secret>,
}

/// `/live`, `/ready` and `/metrics` of a `reelhouse worker` on `workers.health_bind`.
struct HealthServer {
    handle: actix_web::dev::ServerHandle,
}

impl HealthServer {
    fn start(bind: std::net::SocketAddr, state: HealthState, shutdown_timeout_secs: u64) -> anyhow::Result<Self> {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

        async fn live() -> HttpResponse {
            HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
        }
        async fn ready(state: web::Data<HealthState>) -> HttpResponse {
            crate::http::health::DependencyChecks::run(&state.db, state.store.as_ref(), state.redis.as_deref())
                .await
                .response()
        }
        async fn metrics(
            req: HttpRequest,
            state: web::Data<HealthState>,
        ) -> Result<HttpResponse, crate::error::AppError> {
            crate::http::health::render_metrics(&req, state.token.as_ref(), &state.metrics)
        }

        let listener = std::net::TcpListener::bind(bind)
            .map_err(|e| anyhow::anyhow!("binding workers.health_bind {bind}: {e}"))?;
        let addr = listener.local_addr()?;
        let data = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/live", web::get().to(live))
                .route("/ready", web::get().to(ready))
                .route("/metrics", web::get().to(metrics))
        })
        .workers(1)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(shutdown_timeout_secs)
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!("worker health on http://{addr}");
        Ok(Self { handle })
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// The worker runtime, shared by `reelhouse worker` and embedded `serve`: register,
/// run the scheduler (leasing, sweeping) and heartbeat until `stop` resolves; then
/// stop leasing, let running jobs finish within `server.shutdown_timeout_secs`,
/// stop and re-queue the rest, and deregister. Must run inside an actix `System`.
pub async fn run_until(deps: WorkerDeps, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let settings = deps.settings.clone();
    let capacity = settings.worker_concurrency();
    let registration = WorkerRegistration::register(deps.db.clone(), capacity).await?;
    let worker_id = registration.id.to_string();
    tracing::info!(worker = %worker_id, capacity, "worker registered");
    metrics::gauge!("reelhouse_worker_capacity").set(capacity as f64);
    if let Err(err) = std::fs::create_dir_all(&deps.scratch_dir) {
        tracing::warn!(error = %err, dir = %deps.scratch_dir.display(), "cannot create the scratch directory");
    }
    // Supervision: a scheduler that dies (a panic) is replaced by the same
    // supervisor the hub actors use; the jobs it held come back through lease expiry.
    let supervisor = crate::actors::Supervisor::start();
    let scheduler_hub = {
        let deps = deps.clone();
        let worker_id = worker_id.clone();
        supervisor.spawn("job_scheduler", move |death| {
            Scheduler::new(deps.clone(), worker_id.clone(), Lane::Media, capacity, death)
        })
    };
    // Mail's own lane: a few slots that only SEND_MAIL jobs use.
    let mail_hub = {
        let deps = deps.clone();
        let worker_id = worker_id.clone();
        let slots = settings.mail.concurrency.max(1);
        supervisor.spawn("mail_scheduler", move |death| {
            Scheduler::new(deps.clone(), worker_id.clone(), Lane::Mail, slots, death)
        })
    };
    let every = Duration::from_secs(settings.workers.heartbeat_secs.max(1));
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = heartbeat.tick() => {
                let media = scheduler_hub.addr().send(RunningCount).await.unwrap_or(0);
                let current = media + mail_hub.addr().send(RunningCount).await.unwrap_or(0);
                metrics::gauge!("reelhouse_worker_running_jobs").set(current as f64);
                // Media slots in use, sampled at each heartbeat (mail's few slots are
                // not what scaling workers is about).
                metrics::gauge!("reelhouse_worker_busy_ratio").set(media as f64 / capacity.max(1) as f64);
                // A missed heartbeat is not fatal: the database may be restarting.
                match registration.heartbeat(current).await {
                    Ok(()) => metrics::gauge!("reelhouse_worker_last_heartbeat_timestamp_seconds")
                        .set(Utc::now().timestamp_millis() as f64 / 1000.0),
                    Err(err) => {
                        metrics::counter!("reelhouse_worker_heartbeat_failures_total").increment(1);
                        tracing::warn!(error = ?err, "worker heartbeat failed");
                    }
                }
            }
        }
    }

    // Drain: no new leases; running jobs get the shutdown timeout to finish. The
    // scheduler stopping from here on is the end, not a death to restart.
    supervisor.begin_shutdown();
    let drain_for = Duration::from_secs(settings.server.shutdown_timeout_secs);
    let (media, mail) = (scheduler_hub.addr(), mail_hub.addr());
    let _ = media.send(Drain).await;
    let _ = mail.send(Drain).await;
    let (media_idle, mail_idle) = tokio::join!(wait_idle(&media, drain_for), wait_idle(&mail, drain_for));
    for (scheduler, idle) in [(&media, media_idle), (&mail, mail_idle)] {
        if !idle {
            tracing::warn!("jobs still running after the drain timeout; stopping and re-queueing them");
            let _ = scheduler.send(ReleaseAll).await;
            if !wait_idle(scheduler, Duration::from_secs(10)).await {
                tracing::warn!("some jobs did not stop; their leases will expire and the sweeper re-queues them");
            }
        }
    }
    let _ = media.send(StopScheduler).await;
    let _ = mail.send(StopScheduler).await;
    registration.deregister().await?;
    tracing::info!(worker = %worker_id, "worker deregistered");
    Ok(())
}

/// Wait until the scheduler runs nothing (true) or `limit` passes (false).
async fn wait_idle(scheduler: &Addr<Scheduler>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match scheduler.send(RunningCount).await {
            Ok(0) | Err(_) => return true,
            Ok(_) if tokio::time::Instant::now() >= deadline => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The hubs of a `reelhouse worker` process: the event bus its publisher writes to,
/// under a supervisor. It serves no requests, so no rate limiter and no upload
/// sessions.
struct WorkerHubs {
    pub supervisor: Supervisor,
    pub event_bus: Hub<EventBus>,
}

impl WorkerHubs {
    pub fn start(instance: &str, heartbeat_every: Duration) -> Self {
        let supervisor = Supervisor::start();
        let event_bus = crate::events::bus::start(&supervisor, instance, heartbeat_every);
        Self { supervisor, event_bus }
    }

    pub fn stop(&self) {
        self.supervisor.begin_shutdown();
        self.event_bus.addr().do_send(crate::actors::Stop);
    }
}
