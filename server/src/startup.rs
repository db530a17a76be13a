//! Building and running the application: the binary and the tests start it the
//! same way, and `Application::port` reports the real port when binding port 0.
//! What the running process is made of (`AppState`, the hubs, the store) is `state`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use chrono::Utc;
use tracing_actix_web::TracingLogger;

use crate::auth::tokens::TokenKeys;
use crate::config::Settings;
use crate::graphql::build_schema;
use crate::keys::ServerKeys;
use crate::redis_client::RedisHandle;
pub use crate::state::{build_store, instance_id, AppState, Hubs, ShutdownSignals};
use crate::storage::ObjectStore;

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: AppState,
    signals: ShutdownSignals,
    /// `/metrics` on its own listener (`telemetry.metrics_bind`).
    metrics: Option<(SocketAddr, Server)>,
    shared_frames: web::Data<crate::graphql::shared_frames::SharedFrames>,
}

impl Application {
    /// Connect, migrate, start the hub actors and bind the listener. Must run inside
    /// an actix `System` (the binary's `#[actix_web::main]`, or `#[actix_web::test]`).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        settings.resolve_mode_defaults();
        let metrics = crate::telemetry::prometheus()?;
        let keys = Arc::new(ServerKeys::load_or_generate(&settings)?);

        let breakers = crate::breaker::Breakers::new(&settings.breakers, settings.redis.url.is_some());
        let mut db = crate::db::connect(&settings).await?;
        // Any statement that ran is the database answering: it closes a half-open
        // `database` breaker (failures are counted per request, see `breaker`).
        let database_breaker = breakers.database.clone();
        db.set_metric_callback(move |info| {
            if !info.failed {
                database_breaker.record_success();
            }
        });
        if settings.database.migrate_on_start {
            crate::db::migrate(&db).await?;
        }

        // Installed before the address is announced, so a SIGTERM sent the moment
        // the server says it listens is a graceful shutdown, not the default kill.
        // Webhook secrets stored before they were sealed (or under a retired key) are
        // sealed under the current key before anything delivers.
        let webhook_secrets = Arc::new(crate::webhooks::secrets::SecretBox::from_keys(&keys)?);
        crate::webhooks::secrets::seal_stored_secrets(&db, &webhook_secrets).await?;

        let signals = ShutdownSignals::install()?;
        let listener = TcpListener::bind(settings.bind_addr()?)
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", settings.server.bind))?;
        let addr = listener.local_addr()?;
        let public_url = settings
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_string();

        let (store, local_store) = build_store(&settings, &keys, &public_url).await?;
        // Remote storage sits behind the `storage` breaker; local disk is this machine.
        let store: Arc<dyn ObjectStore> = if local_store.is_none() {
            Arc::new(crate::storage::GuardedStore::new(store, breakers.storage.clone()))
        } else {
            store
        };
        let redis = RedisHandle::new(&settings.redis)?
            .map(|redis| match &breakers.redis {
                Some(breaker) => redis.with_breaker(breaker.clone()),
                None => redis,
            })
            .map(Arc::new);
        let instance_id = instance_id();
        let hubs = Hubs::start(
            &instance_id,
            Duration::from_millis(settings.server.heartbeat_interval_ms),
            &settings.rate_limit,
            redis.clone(),
        );

        let mailer = Arc::new(crate::mail::Mailer::new(&settings, &keys)?);
        tracing::info!(transport = %mailer.describe(), "mail");
        let settings = Arc::new(settings);
        let login_failures = crate::limits::login::LoginFailures::new(&settings.auth, redis.clone());
        let session_cache = Arc::new(crate::access::sessions::SessionCache::new(
            settings.auth.session_cache_capacity,
            Duration::from_secs(settings.auth.session_cache_ttl_secs.max(1)),
            redis.is_none(),
        ));
        let video_cache = Arc::new(crate::access::videos::VideoCache::new(
            settings.graphql.video_cache_capacity,
            Duration::from_secs(settings.graphql.video_cache_ttl_secs.max(1)),
            redis.is_none(),
        ));
        let access_signals = crate::access::AccessSignals::new(redis.clone(), &instance_id, session_cache, video_cache);
        let redis_publisher = redis.clone().map(|r| crate::events::fanout::RedisPublisher::start(r, &instance_id));
        let state = AppState {
            settings: settings.clone(),
            db,
            store,
            redis,
            redis_publisher,
            limiter: crate::limits::Limiter::new(settings.rate_limit.enabled, hubs.rate_limiter.clone()),
            hubs,
            tokens: Arc::new(
                TokenKeys::new(&settings.auth, &keys.jwt).map_err(|e| anyhow::anyhow!("{}", e.message()))?,
            ),
            keys,
            metrics,
            instance_id,
            started_at: Utc::now(),
            trusted_proxies: Arc::new(crate::config::net::parse_ranges(&settings.server.trusted_proxies)),
            trusted_trace_sources: Arc::new(crate::config::net::parse_ranges(&settings.server.trusted_trace_sources)),
            public_url,
            tus_buffers: crate::uploads::buffer_budget::BufferBudget::new(
                settings.uploads.tus_buffer_budget_bytes,
                settings.uploads.tus_buffer_per_user_bytes,
                crate::uploads::buffer_budget::DEFAULT_WAIT,
            ),
            password_hashing: crate::auth::password::HashingPool::new(settings.auth.max_concurrent_password_hashes),
            login_failures,
            ws_admission: crate::limits::ws::WsAdmission::default(),
            mailer,
            access_signals,
            breakers,
            remote_workers: crate::jobs::remote::RemoteWorkers::default(),
            remote_multiparts: crate::jobs::remote::multipart::OpenMultiparts::default(),
            event_sequencer: crate::events::sequencer::Sequencer::new(),
        };
        start_background_loops(&state, &webhook_secrets);
        let schema = web::Data::new(build_schema(&settings.graphql, Some(state.clone())));
        let state_data = web::Data::new(state.clone());
        // Live events rendered once per subscription document and shared by sockets.
        let shared_frames = web::Data::new(crate::graphql::shared_frames::SharedFrames::default());
        let frames_for_app = shared_frames.clone();
        let metrics_state = state_data.clone();
        let local_data = local_store.map(web::Data::new);
        let upload_gate: web::Data<Arc<dyn crate::storage::UploadGate>> =
            web::Data::new(Arc::new(crate::uploads::gate::DbUploadGate::new(state.db.clone())));
        let settings_for_app = settings.clone();

        let server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(from_fn(crate::http::db_breaker::guard))
                .wrap(from_fn(crate::http::rate_limit::limit_api))
                .wrap(from_fn(crate::http::metrics_mw::record))
                .wrap(from_fn(crate::http::hygiene::enforce_tls))
                .wrap(crate::http::hygiene::cors(&settings_for_app.server))
                .wrap(TracingLogger::<crate::http::request_span::PathOnlyRootSpan>::new())
                .wrap(
                    DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("Referrer-Policy", "no-referrer"))
                        .add(("X-Frame-Options", "DENY")),
                )
                .app_data(state_data.clone())
                .app_data(schema.clone())
                .app_data(frames_for_app.clone())
                .configure(crate::http::configure);
            if let Some(local) = &local_data {
                app = app
                    .app_data(local.clone())
                    .app_data(upload_gate.clone())
                    .configure(crate::storage::configure_signed_routes);
            }
            app
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .run();

        let metrics = match settings.metrics_bind_addr()? {
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .map_err(|e| anyhow::anyhow!("binding telemetry.metrics_bind {bind}: {e}"))?;
                let metrics_addr = listener.local_addr()?;
                let data = metrics_state;
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/metrics", web::get().to(crate::http::health::metrics_here))
                })
                .workers(1)
                .listen(listener)?
                .disable_signals()
                .shutdown_timeout(settings.server.shutdown_timeout_secs)
                .run();
                tracing::info!("metrics on http://{metrics_addr}/metrics");
                Some((metrics_addr, server))
            }
            None => None,
        };

        tracing::info!(
            mode = ?settings.mode(),
            database = crate::db::backend_name(&state.db),
            storage = state.store.backend(),
            redis = state.redis.is_some(),
            "listening on http://{addr}"
        );
        Ok(Self { addr, server, state, signals, metrics, shared_frames })
    }

    /// The live-event frames shared by this server's sockets (`graphql::shared_frames`).
    pub fn shared_frames_data(&self) -> web::Data<crate::graphql::shared_frames::SharedFrames> {
        self.shared_frames.clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` listens when `telemetry.metrics_bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until SIGTERM/SIGINT (or `handle().stop()`): stop accepting, let
    /// in-flight requests finish within `server.shutdown_timeout_secs`, then stop the
    /// hub actors.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut signals = self.signals;
        actix_rt::spawn(async move {
            if let Some(signal) = signals.recv().await {
                tracing::info!(signal, "shutting down: draining in-flight requests");
                handle.stop(true).await;
            }
        });
        // Embedded mode runs the workers in this process.
        let (stop_workers, workers_stopped) = tokio::sync::oneshot::channel::<()>();
        let workers = self.state.settings.workers.embedded.then(|| {
            let deps = crate::worker::WorkerDeps {
                db: self.state.db.clone(),
                store: self.state.store.clone(),
                settings: self.state.settings.clone(),
                publisher: self.state.publisher(),
                scratch_dir: self.state.settings.scratch_dir(),
                runner: None,
                mailer: self.state.mailer.clone(),
            };
            actix_rt::spawn(async move {
                let stop = async move {
                    let _ = workers_stopped.await;
                };
                if let Err(err) = crate::worker::run_until(deps, stop).await {
                    tracing::error!(error = ?err, "in-process workers stopped with an error");
                }
            })
        });
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            actix_rt::spawn(server);
            handle
        });
        self.server.await?;
        if let Some(metrics) = metrics {
            metrics.stop(true).await;
        }
        let _ = stop_workers.send(());
        if let Some(workers) = workers {
            let _ = workers.await;
        }
        self.state.hubs.stop();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every background loop of a `serve` process, each under the supervisor's
/// [`supervise`](crate::actors::Supervisor::supervise): a panic restarts the loop
/// with backoff, counted, and `/ready` shows each loop's liveness.
fn start_background_loops(state: &AppState, webhook_secrets: &Arc<crate::webhooks::secrets::SecretBox>) {
    use crate::actors::Backoff;
    let supervisor = &state.hubs.supervisor;
    let (sequencer, bus, db) = (state.event_sequencer.clone(), state.hubs.event_bus.clone(), state.db.clone());
    let events = state.settings.events.clone();
    supervisor.supervise("event_sequencer", Backoff::default(), move || {
        let (sequencer, bus, db, events) = (sequencer.clone(), bus.clone(), db.clone(), events.clone());
        async move { sequencer.run(db, bus, events).await }
    });
    if let Some(redis) = state.redis.clone() {
        let (sequencer, instance) = (state.event_sequencer.clone(), state.instance_id.clone());
        let (bus, access) = (state.hubs.event_bus.clone(), state.access_signals.clone());
        supervisor.supervise("event_relay", Backoff::default(), move || {
            crate::events::fanout::run_relay(
                redis.clone(),
                bus.clone(),
                sequencer.clone(),
                instance.clone(),
                access.clone(),
            )
        });
    }
    let sweeper_state = state.clone();
    supervisor
        .supervise("upload_sweeper", Backoff::default(), move || crate::uploads::sweeper::run(sweeper_state.clone()));
    let (db, every, heartbeat) = (
        state.db.clone(),
        Duration::from_secs(state.settings.telemetry.queue_metrics_secs.max(1)),
        Duration::from_secs(state.settings.workers.heartbeat_secs.max(1)),
    );
    supervisor.supervise("queue_metrics", Backoff::default(), move || {
        crate::jobs::metrics::run(db.clone(), every, heartbeat)
    });
    // Expired leases go back to the queue even when this process runs no local
    // worker (remote workers only): the transitions are guarded, so sweepers in
    // several processes never apply one twice.
    let sweeper_state = state.clone();
    supervisor.supervise("lease_sweeper", Backoff::default(), move || {
        crate::jobs::remote::run_lease_sweeper(sweeper_state.clone())
    });
    if state.redis.is_some() {
        let listener_state = state.clone();
        supervisor.supervise("worker_token_revocations", Backoff::default(), move || {
            crate::jobs::remote::run_revocation_listener(listener_state.clone())
        });
    }
    let (db, events) = (state.db.clone(), state.settings.events.clone());
    supervisor
        .supervise("event_pruner", Backoff::default(), move || crate::events::run_pruner(db.clone(), events.clone()));
    let (db, audit) = (state.db.clone(), state.settings.audit.clone());
    supervisor.supervise("audit_pruner", Backoff::default(), move || {
        crate::repo::audit::run_pruner(db.clone(), audit.clone())
    });
    if state.settings.webhooks.deliver {
        let (db, webhooks, secrets, breakers) = (
            state.db.clone(),
            Arc::new(state.settings.webhooks.clone()),
            webhook_secrets.clone(),
            state.breakers.clone(),
        );
        supervisor.supervise("webhook_delivery", Backoff::default(), move || {
            crate::webhooks::delivery::run(db.clone(), webhooks.clone(), secrets.clone(), Some(breakers.clone()))
        });
    }
}
