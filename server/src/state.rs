//! What a running process is made of: [`AppState`] (everything a request handler or
//! resolver may reach), the hub actors, the object store the settings ask for, the
//! instance id and the shutdown signals. `startup` wires them into the `serve`
//! process, `worker` into `reelhouse worker`. Each service sees only its narrow part
//! of the state, through the traits it declares (`uploads::UploadDeps`,
//! `auth::AuthDeps`, `jobs::remote::RemoteDeps`, `playback::PlaybackDeps`), which
//! `AppState` implements here, or the context value it builds for it
//! (`events::feed::FeedContext`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;

use crate::actors::{Hub, Supervisor};
use crate::auth::tokens::TokenKeys;
use crate::config::rate_limit::RateLimitSettings;
use crate::config::{Settings, StorageBackend};
use crate::events::bus::EventBus;
use crate::keys::ServerKeys;
use crate::limits::buckets::RateLimiter;
use crate::redis_client::RedisHandle;
use crate::storage::{LocalStore, LocalStoreConfig, ObjectStore, S3Store, S3StoreConfig};
use crate::uploads::session::UploadSessions;

/// Everything a request handler or resolver may reach, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub store: Arc<dyn ObjectStore>,
    pub redis: Option<Arc<RedisHandle>>,
    /// Sends this process's events to the Redis channel in batches (`events::fanout`).
    pub redis_publisher: Option<crate::events::fanout::RedisPublisher>,
    pub hubs: Hubs,
    /// Charges the rate-limit buckets (`limits`).
    pub limiter: crate::limits::Limiter,
    pub keys: Arc<ServerKeys>,
    /// Access-token signing and verification keys, built once from `auth`.
    pub tokens: Arc<TokenKeys>,
    pub metrics: PrometheusHandle,
    pub instance_id: String,
    pub started_at: DateTime<Utc>,
    pub public_url: String,
    /// Parsed `server.trusted_proxies`.
    pub trusted_proxies: Arc<Vec<crate::config::net::IpRange>>,
    /// Parsed `server.trusted_trace_sources`: peers whose `traceparent` is continued.
    pub trusted_trace_sources: Arc<Vec<crate::config::net::IpRange>>,
    /// Memory all tus PATCHes may hold in part buffers at once (`uploads.tus_buffer_budget_bytes`).
    pub tus_buffers: crate::uploads::buffer_budget::BufferBudget,
    /// Slots for argon2 work (`auth.max_concurrent_password_hashes`).
    pub password_hashing: crate::auth::password::HashingPool,
    /// Failed sign-ins per account, across addresses (`auth.login_backoff_*`).
    pub login_failures: crate::limits::login::LoginFailures,
    /// Sockets per address and user, operations per user, on `/graphql/ws`.
    pub ws_admission: crate::limits::ws::WsAdmission,
    /// Seals account mail into SEND_MAIL jobs (and delivers them in embedded workers).
    pub mailer: Arc<crate::mail::Mailer>,
    /// Sessions revoked and accounts changed, pushed to open sockets (`access`).
    pub access_signals: crate::access::AccessSignals,
    /// The circuit breakers of the database, Redis, storage and webhook hosts.
    pub breakers: crate::breaker::Breakers,
    /// Remote workers connected to this process (`jobs::remote`).
    pub remote_workers: crate::jobs::remote::RemoteWorkers,
    /// The multipart uploads remote workers opened on this process.
    pub remote_multiparts: crate::jobs::remote::multipart::OpenMultiparts,
    /// Puts stored events on the bus in cursor order (`events::sequencer`).
    pub event_sequencer: crate::events::sequencer::Sequencer,
}

impl AppState {
    /// What an event subscription's feed needs (`events::feed`).
    pub fn feed_context(&self) -> crate::events::feed::FeedContext {
        crate::events::feed::FeedContext {
            db: self.db.clone(),
            bus: self.hubs.event_bus.clone(),
            recheck_rows: self.access_signals.rechecks().clone(),
            recheck_every: Duration::from_millis(self.settings.graphql.ws_recheck_ms.max(50)),
            slow_consumer_after: Duration::from_millis(self.settings.graphql.ws_slow_consumer_ms),
        }
    }

    /// Publishes to this process's bus and, with Redis, to every other instance.
    pub fn publisher(&self) -> crate::events::Publisher {
        crate::events::Publisher::new(Some(self.hubs.event_bus.clone()))
            .with_redis(self.redis_publisher.clone())
            .with_video_cache(self.access_signals.videos().clone())
            .with_sequencer(self.event_sequencer.clone())
            .with_rechecks(self.access_signals.rechecks().clone())
    }
}

/// The composition root hands each service the part of the process it uses.
macro_rules! provide {
    ($($name:ident: $ty:ty => $field:ident),* $(,)?) => {$(
        fn $name(&self) -> $ty {
            &self.$field
        }
    )*};
}

impl crate::uploads::UploadDeps for AppState {
    provide! {
        db: &DatabaseConnection => db,
        settings: &Settings => settings,
        store: &Arc<dyn ObjectStore> => store,
        access_signals: &crate::access::AccessSignals => access_signals,
        tus_buffers: &crate::uploads::buffer_budget::BufferBudget => tus_buffers,
        limiter: &crate::limits::Limiter => limiter,
        public_url: &str => public_url,
    }
    fn publisher(&self) -> crate::events::Publisher {
        AppState::publisher(self)
    }
}

impl crate::auth::AuthDeps for AppState {
    provide! {
        db: &DatabaseConnection => db,
        settings: &Settings => settings,
        tokens: &TokenKeys => tokens,
        access_signals: &crate::access::AccessSignals => access_signals,
        mailer: &crate::mail::Mailer => mailer,
        password_hashing: &crate::auth::password::HashingPool => password_hashing,
        login_failures: &crate::limits::login::LoginFailures => login_failures,
        limiter: &crate::limits::Limiter => limiter,
        public_url: &str => public_url,
    }
}

impl crate::jobs::remote::RemoteDeps for AppState {
    provide! {
        db: &DatabaseConnection => db,
        settings: &Settings => settings,
        store: &Arc<dyn ObjectStore> => store,
        access_signals: &crate::access::AccessSignals => access_signals,
        remote_workers: &crate::jobs::remote::RemoteWorkers => remote_workers,
        remote_multiparts: &crate::jobs::remote::multipart::OpenMultiparts => remote_multiparts,
    }
    fn publisher(&self) -> crate::events::Publisher {
        AppState::publisher(self)
    }
}

impl crate::playback::PlaybackDeps for AppState {
    fn public_url(&self) -> &str {
        &self.public_url
    }
    fn url_signing_key(&self) -> &[u8] {
        &self.keys.url_signing
    }
    fn signed_url_ttl_secs(&self) -> u64 {
        self.settings.media.signed_url_ttl_secs
    }
}

/// The addresses of the hub actors, shared with every HTTP worker through `AppState`.
#[derive(Clone)]
pub struct Hubs {
    pub supervisor: Supervisor,
    pub event_bus: Hub<EventBus>,
    pub rate_limiter: Hub<RateLimiter>,
    pub upload_sessions: Hub<UploadSessions>,
}

impl Hubs {
    /// Start every hub once. Call inside the actix system, outside `HttpServer::new`.
    pub fn start(
        instance: &str,
        heartbeat_every: Duration,
        rate_limits: &RateLimitSettings,
        redis: Option<Arc<RedisHandle>>,
    ) -> Self {
        let supervisor = Supervisor::start();
        let event_bus = crate::events::bus::start(&supervisor, instance, heartbeat_every);
        let rate_limits = rate_limits.clone();
        let rate_limiter =
            supervisor.spawn("rate_limiter", move |death| RateLimiter::new(&rate_limits, redis.clone(), death));
        let upload_sessions = supervisor.spawn("upload_sessions", UploadSessions::new);
        Self { supervisor, event_bus, rate_limiter, upload_sessions }
    }

    /// Stop the hubs for good (after the HTTP server has drained).
    pub fn stop(&self) {
        self.supervisor.begin_shutdown();
        self.event_bus.addr().do_send(crate::actors::Stop);
        self.rate_limiter.addr().do_send(crate::actors::Stop);
        self.upload_sessions.addr().do_send(crate::actors::Stop);
    }
}

/// SIGTERM and SIGINT handlers, installed when created.
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves with the signal's name on SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Some("SIGTERM"),
                _ = self.int.recv() => Some("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.ok().map(|_| "ctrl-c")
        }
    }
}

/// `host-xxxxxxxx`: stable enough to read in logs, unique per process.
pub fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "reelhouse".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// The object store the settings ask for; for local disk, also the concrete store
/// whose signed-URL routes the server mounts.
pub async fn build_store(
    settings: &Settings,
    keys: &ServerKeys,
    public_url: &str,
) -> anyhow::Result<(Arc<dyn ObjectStore>, Option<Arc<LocalStore>>)> {
    match settings.storage_backend() {
        StorageBackend::Local => {
            let store = Arc::new(LocalStore::new(LocalStoreConfig {
                root: settings.local_storage_root(),
                signing_key: keys.url_signing.clone(),
                public_base_url: public_url.to_string(),
            })?);
            Ok((store.clone(), Some(store)))
        }
        StorageBackend::S3 => {
            let s3 = &settings.storage.s3;
            let store = S3Store::new(S3StoreConfig {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone().unwrap_or_default(),
                region: s3.region.clone(),
                access_key_id: s3.access_key_id.as_ref().map(|s| s.expose().to_string()).unwrap_or_default(),
                secret_access_key: s3.secret_access_key.as_ref().map(|s| s.expose().to_string()).unwrap_or_default(),
                force_path_style: s3.force_path_style,
                key_prefix: s3.key_prefix.clone(),
                server_side_encryption: s3.server_side_encryption.clone(),
            })
            .await?;
            Ok((Arc::new(store), None))
        }
    }
}
