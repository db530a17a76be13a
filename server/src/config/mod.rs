//! Typed settings, layered: defaults → `reelhouse.toml` → environment → CLI flags.
//!
//! Environment: `REELHOUSE__SECTION__KEY` for every key (e.g. `REELHOUSE__SERVER__BIND`,
//! `REELHOUSE__STORAGE__S3__BUCKET`), plus the conventional names `DATABASE_URL`,
//! `REDIS_URL`, `S3_ENDPOINT`, `S3_BUCKET`, `S3_REGION`, `S3_ACCESS_KEY_ID`,
//! `S3_SECRET_ACCESS_KEY`, `S3_FORCE_PATH_STYLE`, and `REELHOUSE_BIND`,
//! `REELHOUSE_DATA_DIR`. The `REELHOUSE__` form wins when both are set.
//!
//! Settings are passed by value into `Application::build`; there is no global.

pub mod audit;
pub mod breakers;
pub mod events;
pub mod jail;
pub mod jobs;
pub mod mail;
pub mod media;
pub mod net;
pub mod object_limits;
pub mod rate_limit;
mod secret;
pub mod uploads;
pub mod views;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use breakers::BreakerSettings;
pub use secret::{Secret, SecretUrl, REDACTED};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub graphql: GraphqlSettings,
    pub telemetry: TelemetrySettings,
    pub workers: WorkerSettings,
    pub rate_limit: rate_limit::RateLimitSettings,
    pub uploads: uploads::UploadSettings,
    pub media: media::MediaSettings,
    pub jail: jail::JailSettings,
    pub jobs: jobs::JobSettings,
    pub views: views::ViewSettings,
    pub webhooks: webhooks::WebhookSettings,
    pub events: events::EventSettings,
    pub audit: audit::AuditSettings,
    pub mail: mail::MailSettings,
    pub breakers: breakers::BreakerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (the real one is logged).
    pub bind: String,
    /// Where embedded mode keeps its SQLite file, objects and generated keys.
    pub data_dir: PathBuf,
    /// The externally visible base URL (for signed URLs); defaults to `http://{bind}`.
    pub public_url: Option<String>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    /// Interval of the `heartbeat` subscription ticks.
    pub heartbeat_interval_ms: u64,
    /// Largest request body accepted by the GraphQL endpoint.
    pub max_graphql_body_bytes: usize,
    /// Origins allowed to call the API from a browser (CORS), e.g.
    /// `["https://app.example.com"]`; empty allows none; `["*"]` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// Behind a TLS-terminating proxy: `off`, `redirect` plain-HTTP requests to
    /// https, or `refuse` them; decided from `X-Forwarded-Proto`/`Forwarded`.
    pub tls_enforcement: TlsEnforcement,
    /// Addresses or ranges (`10.0.0.0/8`) of the reverse proxies in front of the
    /// server. Only requests from these may set the client address
    /// (`X-Forwarded-For`) and scheme (`X-Forwarded-Proto`); empty trusts nobody.
    pub trusted_proxies: Vec<String>,
    /// Addresses or ranges of peers whose W3C `traceparent` is continued (your
    /// ingress or mesh, if it starts traces; your own services). A `traceparent` from
    /// anyone else (unless it presents a valid access token) starts a new trace,
    /// linked to the caller's. Empty: only callers with an access token.
    pub trusted_trace_sources: Vec<String>,
    /// The built web app served at `/` (`make web-demo` writes it); a relative
    /// path is looked up from the working directory, then from the source checkout.
    pub web_demo_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsEnforcement {
    Off,
    Redirect,
    Refuse,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            shutdown_timeout_secs: 30,
            heartbeat_interval_ms: 1000,
            max_graphql_body_bytes: 256 * 1024,
            cors_allowed_origins: Vec::new(),
            tls_enforcement: TlsEnforcement::Off,
            trusted_proxies: Vec::new(),
            trusted_trace_sources: Vec::new(),
            web_demo_dir: PathBuf::from("web-demo/dist"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; unset means SQLite at `{data_dir}/reelhouse.db`.
    pub url: Option<SecretUrl>,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout_secs: u64,
    /// Run pending migrations when `serve`/`worker` start.
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: None, max_connections: 10, min_connections: 1, connect_timeout_secs: 5, migrate_on_start: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://…`; unset means the in-process event bus and in-memory rate limits.
    pub url: Option<SecretUrl>,
    /// Prepended to every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Timeout for one Redis command.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { url: None, key_prefix: "reelhouse:".into(), timeout_ms: 2000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// `local` or `s3`; unset picks `s3` when `storage.s3.bucket` is set, else `local`.
    pub backend: Option<StorageBackend>,
    /// Root of the local object store; defaults to `{data_dir}/objects`.
    pub local_root: Option<PathBuf>,
    /// Lifetime of presigned/signed upload and download URLs.
    pub presign_ttl_secs: u64,
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self { backend: None, local_root: None, presign_ttl_secs: 3600, s3: S3Settings::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// Custom endpoint for S3-compatible servers (MinIO, Ceph, s3s, …).
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: String,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub force_path_style: bool,
    /// Prepended to every object key.
    pub key_prefix: String,
    /// e.g. `AES256` or `aws:kms`; sent with every upload when set.
    pub server_side_encryption: Option<String>,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            bucket: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            force_path_style: true,
            key_prefix: String::new(),
            server_side_encryption: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Master secret for JWT signing and URL signing (≥ 32 bytes). Generated into the
    /// data dir on first start when unset and the database is SQLite; required otherwise.
    pub jwt_secret: Option<Secret>,
    /// Retired master secrets whose tokens still verify (never sign) while they
    /// expire; remove one to refuse everything it signed.
    pub previous_jwt_secrets: Vec<Secret>,
    /// Access-token algorithm: `HS256` (keys derived from `jwt_secret`), or `EdDSA` /
    /// `RS256` with the PEM keys below. Tokens naming any other algorithm are refused.
    pub algorithm: JwtAlgorithm,
    /// PEM private key that signs access tokens (`EdDSA`/`RS256` only).
    pub signing_key_pem: Option<Secret>,
    /// PEM public keys that verify: the signing key's own first, then retired ones.
    pub verification_keys_pem: Vec<String>,
    pub issuer: String,
    pub audience: String,
    /// Password hashes (argon2, ~19 MiB each) computed at once; one more sign-in or
    /// sign-up is answered `UNAVAILABLE` (503, `Retry-After`). Unset: 2 × CPU cores.
    pub max_concurrent_password_hashes: Option<usize>,
    /// Failed sign-ins to one account, from any address, before it backs off.
    pub login_backoff_after_failures: u32,
    /// The first back-off; it doubles with every further failure...
    pub login_backoff_base_secs: u64,
    /// ...up to this.
    pub login_backoff_max_secs: u64,
    /// An account's failures are forgotten this long after the last one (and on success).
    pub login_failure_window_secs: u64,
    pub access_token_ttl_secs: u64,
    /// Lifetime of one refresh token (each refresh hands out a new one).
    pub refresh_token_ttl_secs: u64,
    /// Absolute lifetime of a session (refresh-token family), counted from sign-in:
    /// refreshing never extends it past this; then the user signs in again.
    pub session_max_lifetime_secs: u64,
    /// Accounts whose address is not verified yet may upload (`createUpload`, tus).
    /// Off: they get `EMAIL_NOT_VERIFIED` until they follow the mailed link.
    pub unverified_can_upload: bool,
    /// Sessions (id → user, role) whose access-token checks are answered from memory
    /// instead of the database; invalidated at once by access changes (revocation,
    /// role, disable, delete; across instances through Redis). 0 turns the cache off.
    pub session_cache_capacity: usize,
    /// Seconds a cached session is trusted before it is read again (a safety net:
    /// changes invalidate it at once).
    pub session_cache_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            previous_jwt_secrets: Vec::new(),
            algorithm: JwtAlgorithm::HS256,
            signing_key_pem: None,
            verification_keys_pem: Vec::new(),
            issuer: "reelhouse".into(),
            audience: "reelhouse".into(),
            max_concurrent_password_hashes: None,
            // Above the per-(account, address) `auth` burst: one address alone is
            // stopped by `auth`; it takes several to reach the account's back-off.
            login_backoff_after_failures: 10,
            login_backoff_base_secs: 1,
            login_backoff_max_secs: 900,
            login_failure_window_secs: 3600,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            session_max_lifetime_secs: 30 * 24 * 3600,
            unverified_can_upload: false,
            session_cache_capacity: 100_000,
            session_cache_ttl_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlSettings {
    /// Serve the GraphiQL page at `GET /graphql`. Unset: on in embedded mode, off in
    /// distributed mode (production), where it only helps strangers explore.
    pub playground: Option<bool>,
    /// Introspection and field suggestions; unset: as `playground`.
    pub introspection: Option<bool>,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    pub max_batch_size: usize,
    /// Seconds a WebSocket may stay open without `connection_init`.
    pub ws_init_timeout_secs: u64,
    /// How often an authenticated WebSocket re-checks its session is still valid.
    pub ws_recheck_ms: u64,
    /// Subscriptions one WebSocket may have open at once; more are refused with
    /// an error message (code `RATE_LIMITED`) and the connection stays open.
    pub ws_max_subscriptions: usize,
    /// WebSockets open at once from one client address (IPv6: one /64); one more
    /// upgrade is refused with 429 `RATE_LIMITED`. Per process.
    pub ws_max_sockets_per_ip: usize,
    /// WebSockets one user has open at once; one more is closed at
    /// `connection_init` with 4429 (`RATE_LIMITED`). Per process.
    pub ws_max_sockets_per_user: usize,
    /// Operations one user may have running over all their sockets; one more is
    /// answered with an `error` message (code `RATE_LIMITED`). Per process.
    pub ws_max_subscriptions_per_user: usize,
    /// Videos (row, READY renditions, running progress) whose `video(id)` reads are
    /// answered from memory; invalidated at once by the video's events and changes
    /// (across instances through Redis). 0 turns the cache off.
    pub video_cache_capacity: usize,
    /// Seconds a cached video is trusted before it is read again (a safety net:
    /// changes invalidate it at once).
    pub video_cache_ttl_secs: u64,
    /// Documents kept parsed for Apollo automatic persisted queries (by SHA-256);
    /// 0 turns persisted queries off.
    pub persisted_queries_capacity: usize,
    /// Serve `videoEvents`/`videoProgress` subscriptions with frames rendered once
    /// per (document + variables, visibility class) and shared by every subscriber
    /// with that key; off: every subscriber's events are executed for it alone.
    pub ws_shared_frames: bool,
    /// Milliseconds a subscription's queue (64 events) may stay full before the
    /// subscription ends with `SLOW_CONSUMER` and `extensions.resumeAfter` (what was
    /// queued is delivered first; resume with `videoEvents(after:)`).
    pub ws_slow_consumer_ms: u64,
}

impl GraphqlSettings {
    /// Whether GraphiQL is served (after [`Settings::resolve_mode_defaults`]).
    pub fn playground_enabled(&self) -> bool {
        self.playground.unwrap_or(true)
    }

    /// Whether introspection is on (after [`Settings::resolve_mode_defaults`]).
    pub fn introspection_enabled(&self) -> bool {
        self.introspection.unwrap_or(true)
    }
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            playground: None,
            introspection: None,
            max_depth: 12,
            max_complexity: 500,
            max_aliases: 30,
            max_directives: 50,
            max_batch_size: 10,
            ws_init_timeout_secs: 10,
            ws_recheck_ms: 5000,
            ws_max_subscriptions: 50,
            ws_max_sockets_per_ip: 100,
            ws_max_sockets_per_user: 20,
            ws_max_subscriptions_per_user: 200,
            video_cache_capacity: 10_000,
            video_cache_ttl_secs: 30,
            persisted_queries_capacity: 1_000,
            ws_shared_frames: true,
            ws_slow_consumer_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `reelhouse=debug,info`.
    pub level: String,
    /// When set, logs also go to daily-rotated files here.
    pub log_dir: Option<PathBuf>,
    pub log_retention_days: usize,
    /// Lowest GStreamer log level bridged into tracing (`error`, `warning`, `info`, `debug`).
    pub gstreamer_level: String,
    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9100`, reachable by the
    /// scraper but not the public); unset: on the main listener.
    pub metrics_bind: Option<String>,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<Secret>,
    /// Seconds between readings of the queue gauges (`reelhouse_jobs`,
    /// `reelhouse_jobs_oldest_queued_age_seconds`, `reelhouse_workers`) from the
    /// database by each `serve` process.
    pub queue_metrics_secs: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
            log_dir: None,
            log_retention_days: 7,
            gstreamer_level: "warning".into(),
            metrics_bind: None,
            metrics_token: None,
            queue_metrics_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Run transcode workers inside `serve` (embedded); `reelhouse worker` always runs them.
    pub embedded: bool,
    /// Concurrent jobs per process; default: cores − 1, at least 1.
    pub concurrency: Option<usize>,
    /// Seconds between worker heartbeats in the workers table.
    pub heartbeat_secs: u64,
    /// `reelhouse worker` serves `/live`, `/ready` and `/metrics` on this address
    /// (e.g. `0.0.0.0:9091`, for Kubernetes probes and Prometheus); unset: no port.
    pub health_bind: Option<String>,
    /// A remote worker uploads an output larger than this many bytes by multipart
    /// (announced in `welcome`); at most one PUT's limit (5 GiB).
    pub remote_multipart_threshold_bytes: u64,
    /// The size of every part of a remote worker's multipart upload but the last
    /// (5 MiB to 5 GiB, S3's limits).
    pub remote_part_bytes: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            embedded: true,
            concurrency: None,
            heartbeat_secs: 5,
            health_bind: None,
            remote_multipart_threshold_bytes: 4 * 1024 * 1024 * 1024,
            remote_part_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A bad setting: names the key and says what is wrong, in one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl SettingsError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self { key: key.to_string(), message: message.into() }
    }
}

/// Command-line overrides; they win over every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Which services a configuration uses; reported by `serverInfo` and `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQLite, local disk, in-process bus: one machine, nothing to configure.
    Embedded,
    /// At least one shared service (PostgreSQL, Redis or S3) is configured.
    Distributed,
}

impl Settings {
    /// Where jobs of this process keep their temporary files.
    pub fn scratch_dir(&self) -> PathBuf {
        self.server.data_dir.join("scratch")
    }

    /// Load the layers. `config_file` is an explicit `--config`; otherwise
    /// `reelhouse.toml` in the working directory is used when present.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(SettingsError::new("--config", format!("file {} does not exist", path.display())));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("reelhouse.toml")),
        }
        figment = figment.merge(conventional_env()).merge(Env::prefixed("REELHOUSE__").split("__"));
        if let Some(bind) = &overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("server.data_dir", dir));
        }
        let settings: Settings = figment.extract().map_err(|err| {
            let key = if err.path.is_empty() { "(root)".to_string() } else { err.path.join(".") };
            SettingsError { key, message: err.kind.to_string() }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that serde cannot express; each error names its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.validate_server()?;
        self.validate_telemetry()?;
        self.validate_uploads()?;
        self.validate_media()?;
        self.validate_jobs()?;
        self.validate_storage()?;
        self.validate_auth()?;
        self.validate_workers()?;
        Ok(())
    }

    /// The listeners, public URL, origins, proxies and mail.
    fn validate_server(&self) -> Result<(), SettingsError> {
        self.bind_addr()?;
        self.metrics_bind_addr()?;
        self.worker_health_addr()?;
        if let Some((key, message)) = self.mail.problem() {
            return Err(SettingsError::new(key, message));
        }
        if let Some(url) = &self.server.public_url {
            let parsed = url::Url::parse(url).map_err(|e| SettingsError::new("server.public_url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(SettingsError::new("server.public_url", "must be an http:// or https:// URL"));
            }
        }
        for origin in &self.server.cors_allowed_origins {
            let valid = origin == "*"
                || url::Url::parse(origin).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/");
            if !valid {
                return Err(SettingsError::new(
                    "server.cors_allowed_origins",
                    format!("`{origin}` is not an origin like https://app.example.com"),
                ));
            }
        }
        for (key, entries) in [
            ("server.trusted_proxies", &self.server.trusted_proxies),
            ("server.trusted_trace_sources", &self.server.trusted_trace_sources),
        ] {
            for entry in entries {
                if net::IpRange::parse(entry).is_none() {
                    return Err(SettingsError::new(
                        key,
                        format!("`{entry}` is not an address or range like 10.0.0.0/8"),
                    ));
                }
            }
        }
        if self.server.tls_enforcement != TlsEnforcement::Off && self.server.trusted_proxies.is_empty() {
            return Err(SettingsError::new(
                "server.trusted_proxies",
                "list the TLS-terminating proxy when server.tls_enforcement is on (its X-Forwarded-Proto decides)",
            ));
        }
        if self.server.heartbeat_interval_ms < 10 {
            return Err(SettingsError::new("server.heartbeat_interval_ms", "must be at least 10"));
        }
        Ok(())
    }

    /// Logs and metrics.
    fn validate_telemetry(&self) -> Result<(), SettingsError> {
        if self.telemetry.queue_metrics_secs == 0 {
            return Err(SettingsError::new("telemetry.queue_metrics_secs", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.level).is_err() {
            return Err(SettingsError::new(
                "telemetry.level",
                format!("`{}` is not a valid filter", self.telemetry.level),
            ));
        }
        if crate::media::gst_level(&self.telemetry.gstreamer_level).is_none() {
            return Err(SettingsError::new(
                "telemetry.gstreamer_level",
                "must be one of none, error, warning, fixme, info, debug, log, trace",
            ));
        }
        Ok(())
    }

    /// Upload sizes, parts, buffers and URL lifetimes.
    fn validate_uploads(&self) -> Result<(), SettingsError> {
        if self.uploads.tus_buffer_budget_bytes < self.uploads.part_size_bytes {
            return Err(SettingsError::new(
                "uploads.tus_buffer_budget_bytes",
                "must hold at least one part (part_size_bytes)",
            ));
        }
        if self.uploads.tus_buffer_per_user_bytes < self.uploads.part_size_bytes {
            return Err(SettingsError::new(
                "uploads.tus_buffer_per_user_bytes",
                "must hold at least one part (part_size_bytes)",
            ));
        }
        if self.uploads.tus_body_idle_timeout_secs == 0 {
            return Err(SettingsError::new("uploads.tus_body_idle_timeout_secs", "must be at least 1"));
        }
        if self.uploads.upload_url_ttl_secs == 0 || self.uploads.upload_url_ttl_secs > 7 * 24 * 3600 {
            return Err(SettingsError::new(
                "uploads.upload_url_ttl_secs",
                "must be between 1 and 604800 (seven days, the longest a presigned URL lives)",
            ));
        }
        if self.uploads.part_size_bytes < 5 * 1024 * 1024 {
            return Err(SettingsError::new("uploads.part_size_bytes", "must be at least 5 MiB (S3's smallest part)"));
        }
        if self.uploads.max_size_bytes == 0 {
            return Err(SettingsError::new("uploads.max_size_bytes", "must be greater than 0"));
        }
        Ok(())
    }

    /// The ladder, frame rates, encoders, the jail's limits and the CDN.
    fn validate_media(&self) -> Result<(), SettingsError> {
        if self.media.ladder.is_empty() || self.media.ladder.iter().any(|r| r.lines < 2 || r.video_bitrate_kbps == 0) {
            return Err(SettingsError::new("media.ladder", "needs at least one rung with lines >= 2 and a bitrate"));
        }
        if !(self.media.min_fps >= 0.0 && self.media.min_fps < self.media.max_fps) {
            return Err(SettingsError::new("media.min_fps", "must be at least 0 and below media.max_fps"));
        }
        if !(0..=19).contains(&self.media.encoder_nice) {
            return Err(SettingsError::new("media.encoder_nice", "must be between 0 and 19"));
        }
        if crate::media::mp4::normalize_formats(&self.media.default_formats).is_err() {
            return Err(SettingsError::new("media.default_formats", "must include HLS (and may add MP4, WEBM)"));
        }
        if self.jail.probe_memory_mb < 256 || self.jail.transcode_memory_mb < 256 {
            return Err(SettingsError::new("jail.probe_memory_mb", "both jail memory limits must be at least 256 MiB"));
        }
        if self.jail.probe_cpu_secs == 0 || self.jail.transcode_cpu_secs == 0 || self.jail.max_file_mb == 0 {
            return Err(SettingsError::new(
                "jail.transcode_cpu_secs",
                "jail CPU and file limits must be greater than 0",
            ));
        }
        if let Some(cdn) = &self.media.cdn_base_url {
            let ok = url::Url::parse(cdn).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none());
            if !ok {
                return Err(SettingsError::new("media.cdn_base_url", "must be an http(s) URL without a query"));
            }
        }
        Ok(())
    }

    /// Breakers, webhooks, the queue, job logs, batches, events, audit and views.
    fn validate_jobs(&self) -> Result<(), SettingsError> {
        if let Err((key, message)) = self.breakers.validate() {
            return Err(SettingsError::new(key, message));
        }
        if self.webhooks.disable_after_failures < 1 {
            return Err(SettingsError::new("webhooks.disable_after_failures", "must be at least 1"));
        }
        if self.webhooks.replay_max_events == 0 {
            return Err(SettingsError::new("webhooks.replay_max_events", "must be at least 1"));
        }
        if self.webhooks.concurrency == 0 || self.webhooks.timeout_ms == 0 {
            return Err(SettingsError::new("webhooks", "concurrency and timeout_ms must be greater than 0"));
        }
        if self.jobs.max_attempts < 1 {
            return Err(SettingsError::new("jobs.max_attempts", "must be at least 1"));
        }
        if self.jobs.heartbeat_secs == 0 || self.jobs.heartbeat_secs * 2 > self.jobs.lease_secs {
            return Err(SettingsError::new(
                "jobs.heartbeat_secs",
                "must be at least 1 and at most half of jobs.lease_secs",
            ));
        }
        if !(1..=100_000).contains(&self.jobs.log_max_lines) {
            return Err(SettingsError::new("jobs.log_max_lines", "must be between 1 and 100000"));
        }
        if !(80..=65_536).contains(&self.jobs.log_max_line_chars) {
            return Err(SettingsError::new("jobs.log_max_line_chars", "must be between 80 and 65536"));
        }
        if self.jobs.log_lines_per_sec == 0 || self.jobs.log_burst < self.jobs.log_lines_per_sec {
            return Err(SettingsError::new(
                "jobs.log_lines_per_sec",
                "must be at least 1, and jobs.log_burst at least as large",
            ));
        }
        if !(1..=10_000).contains(&self.jobs.max_batch_videos) {
            return Err(SettingsError::new("jobs.max_batch_videos", "must be between 1 and 10000"));
        }
        if !(-1000..=1000).contains(&self.jobs.batch_priority) {
            return Err(SettingsError::new("jobs.batch_priority", "must be between -1000 and 1000"));
        }
        if !(50..=60_000).contains(&self.jobs.log_poll_ms) {
            return Err(SettingsError::new("jobs.log_poll_ms", "must be between 50 and 60000"));
        }
        if self.events.prune_interval_secs == 0 {
            return Err(SettingsError::new("events.prune_interval_secs", "must be at least 1"));
        }
        if self.events.tail_poll_ms < 50 {
            return Err(SettingsError::new("events.tail_poll_ms", "must be at least 50"));
        }
        if self.audit.prune_interval_secs == 0 {
            return Err(SettingsError::new("audit.prune_interval_secs", "must be at least 1"));
        }
        if self.views.dedupe_window_secs == 0 {
            return Err(SettingsError::new("views.dedupe_window_secs", "must be at least 1"));
        }
        if let Some(tag) = &self.jobs.high_preset_tag {
            let valid = (1..=32).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid {
                return Err(SettingsError::new("jobs.high_preset_tag", "must be 1 to 32 of a-z, 0-9, '-' and '_'"));
            }
        }

        Ok(())
    }

    /// The database, Redis and object storage.
    fn validate_storage(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.database.url {
            match url.scheme() {
                "postgres" | "postgresql" | "sqlite" => {}
                other => {
                    return Err(SettingsError::new(
                        "database.url",
                        format!("unsupported scheme `{other}` (use postgres:// or sqlite://)"),
                    ))
                }
            }
        }
        if self.database.max_connections == 0 {
            return Err(SettingsError::new("database.max_connections", "must be at least 1"));
        }
        if let Some(url) = &self.redis.url {
            if !matches!(url.scheme(), "redis" | "rediss") {
                return Err(SettingsError::new("redis.url", "must be a redis:// or rediss:// URL"));
            }
        }
        if self.storage_backend() == StorageBackend::S3 {
            let s3 = &self.storage.s3;
            if s3.bucket.as_deref().is_none_or(str::is_empty) {
                return Err(SettingsError::new("storage.s3.bucket", "required when storage.backend is s3"));
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return Err(SettingsError::new(
                    "storage.s3.secret_access_key",
                    "set both storage.s3.access_key_id and storage.s3.secret_access_key, or neither",
                ));
            }
            if let Some(endpoint) = &s3.endpoint {
                url::Url::parse(endpoint).map_err(|e| SettingsError::new("storage.s3.endpoint", e.to_string()))?;
            }
        }
        if self.storage.presign_ttl_secs == 0 || self.storage.presign_ttl_secs > 7 * 24 * 3600 {
            return Err(SettingsError::new("storage.presign_ttl_secs", "must be between 1 and 604800 (7 days)"));
        }
        Ok(())
    }

    /// Tokens, keys, the session and video caches, persisted queries and rate limits.
    fn validate_auth(&self) -> Result<(), SettingsError> {
        if let Some(secret) = &self.auth.jwt_secret {
            if secret.expose().len() < 32 {
                return Err(SettingsError::new("auth.jwt_secret", "must be at least 32 bytes long"));
            }
        }
        if self.auth.algorithm != JwtAlgorithm::HS256 {
            if self.auth.signing_key_pem.is_none() {
                return Err(SettingsError::new(
                    "auth.signing_key_pem",
                    "required when auth.algorithm is EdDSA or RS256",
                ));
            }
            if self.auth.verification_keys_pem.is_empty() {
                return Err(SettingsError::new(
                    "auth.verification_keys_pem",
                    "list the signing key's public key (PEM) when auth.algorithm is EdDSA or RS256",
                ));
            }
        }
        if self.auth.session_cache_capacity > 0 && !(1..=3600).contains(&self.auth.session_cache_ttl_secs) {
            return Err(SettingsError::new("auth.session_cache_ttl_secs", "must be between 1 and 3600"));
        }
        if self.auth.session_cache_capacity > 10_000_000 {
            return Err(SettingsError::new("auth.session_cache_capacity", "must be at most 10000000"));
        }
        if self.graphql.video_cache_capacity > 0 && !(1..=3600).contains(&self.graphql.video_cache_ttl_secs) {
            return Err(SettingsError::new("graphql.video_cache_ttl_secs", "must be between 1 and 3600"));
        }
        if self.graphql.video_cache_capacity > 1_000_000 {
            return Err(SettingsError::new("graphql.video_cache_capacity", "must be at most 1000000"));
        }
        if !(50..=600_000).contains(&self.graphql.ws_slow_consumer_ms) {
            return Err(SettingsError::new("graphql.ws_slow_consumer_ms", "must be between 50 and 600000"));
        }
        if self.graphql.persisted_queries_capacity > 100_000 {
            return Err(SettingsError::new("graphql.persisted_queries_capacity", "must be at most 100000"));
        }
        if self.auth.access_token_ttl_secs == 0 {
            return Err(SettingsError::new("auth.access_token_ttl_secs", "must be positive"));
        }
        for (name, policy) in &self.rate_limit.policies {
            if policy.limit == 0 || policy.period_secs == 0 || policy.burst == 0 {
                return Err(SettingsError::new(
                    &format!("rate_limit.policies.{name}"),
                    "limit, period_secs and burst must all be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// Worker concurrency and remote workers' multipart outputs.
    fn validate_workers(&self) -> Result<(), SettingsError> {
        if self.workers.concurrency == Some(0) {
            return Err(SettingsError::new("workers.concurrency", "must be at least 1"));
        }
        use object_limits::{MAX_PART_SIZE, MAX_SINGLE_PUT_SIZE, MIN_PART_SIZE};
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.workers.remote_part_bytes) {
            return Err(SettingsError::new(
                "workers.remote_part_bytes",
                format!("must be between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} (5 GiB)"),
            ));
        }
        if !(1..=MAX_SINGLE_PUT_SIZE).contains(&self.workers.remote_multipart_threshold_bytes) {
            return Err(SettingsError::new(
                "workers.remote_multipart_threshold_bytes",
                format!("must be between 1 and {MAX_SINGLE_PUT_SIZE} (5 GiB, one PUT's limit)"),
            ));
        }
        Ok(())
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.server.bind.parse().map_err(|_| {
            SettingsError::new("server.bind", format!("`{}` is not an address like 127.0.0.1:8080", self.server.bind))
        })
    }

    /// `telemetry.metrics_bind`, parsed; `None` when `/metrics` is on the main listener.
    pub fn metrics_bind_addr(&self) -> Result<Option<SocketAddr>, SettingsError> {
        self.telemetry
            .metrics_bind
            .as_deref()
            .map(|bind| {
                bind.parse().map_err(|_| {
                    SettingsError::new(
                        "telemetry.metrics_bind",
                        format!("`{bind}` is not an address like 127.0.0.1:9100"),
                    )
                })
            })
            .transpose()
    }

    /// `workers.health_bind`, parsed; `None` when the worker serves no health port.
    pub fn worker_health_addr(&self) -> Result<Option<SocketAddr>, SettingsError> {
        self.workers
            .health_bind
            .as_deref()
            .map(|bind| {
                bind.parse().map_err(|_| {
                    SettingsError::new("workers.health_bind", format!("`{bind}` is not an address like 0.0.0.0:9091"))
                })
            })
            .transpose()
    }

    pub fn storage_backend(&self) -> StorageBackend {
        self.storage.backend.unwrap_or(if self.storage.s3.bucket.is_some() {
            StorageBackend::S3
        } else {
            StorageBackend::Local
        })
    }

    /// The database URL in effect: the configured one, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}?mode=rwc", self.sqlite_path().display()),
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.server.data_dir.join("reelhouse.db")
    }

    pub fn uses_sqlite(&self) -> bool {
        self.database.url.as_ref().is_none_or(|url| url.scheme() == "sqlite")
    }

    pub fn local_storage_root(&self) -> PathBuf {
        self.storage.local_root.clone().unwrap_or_else(|| self.server.data_dir.join("objects"))
    }

    pub fn worker_concurrency(&self) -> usize {
        self.workers.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map(|n| n.get().saturating_sub(1)).unwrap_or(1).max(1)
        })
    }

    /// Fill the defaults that depend on the mode: GraphiQL and introspection stay on
    /// in embedded mode and are off in distributed mode unless set.
    pub fn resolve_mode_defaults(&mut self) {
        let embedded = self.mode() == Mode::Embedded;
        self.graphql.playground.get_or_insert(embedded);
        self.graphql.introspection.get_or_insert(embedded);
    }

    pub fn mode(&self) -> Mode {
        if self.uses_sqlite() && self.redis.url.is_none() && self.storage_backend() == StorageBackend::Local {
            Mode::Embedded
        } else {
            Mode::Distributed
        }
    }

    /// The merged settings as TOML with every secret redacted (`reelhouse config`).
    pub fn to_redacted_toml(&self) -> Result<String, SettingsError> {
        let value = serde_json::to_value(self).map_err(|e| SettingsError::new("(root)", e.to_string()))?;
        toml_from_json(&value).map_err(|e| SettingsError::new("(root)", e))
    }
}

/// Conventional variable names other tools already use, mapped to our keys.
fn conventional_env() -> Env {
    const MAP: &[(&str, &str)] = &[
        ("DATABASE_URL", "database.url"),
        ("REDIS_URL", "redis.url"),
        ("S3_ENDPOINT", "storage.s3.endpoint"),
        ("S3_BUCKET", "storage.s3.bucket"),
        ("S3_REGION", "storage.s3.region"),
        ("S3_ACCESS_KEY_ID", "storage.s3.access_key_id"),
        ("S3_SECRET_ACCESS_KEY", "storage.s3.secret_access_key"),
        ("S3_FORCE_PATH_STYLE", "storage.s3.force_path_style"),
        ("REELHOUSE_BIND", "server.bind"),
        ("REELHOUSE_DATA_DIR", "server.data_dir"),
    ];
    Env::raw().filter_map(|key| {
        MAP.iter().find(|(name, _)| key.as_str().eq_ignore_ascii_case(name)).map(|(_, target)| (*target).into())
    })
}

/// Render a JSON object as TOML (the redacted settings dump). Nulls are left out,
/// since TOML has no null; they are the unset optional keys.
fn toml_from_json(value: &serde_json::Value) -> Result<String, String> {
    fn scalar(value: &serde_json::Value) -> Option<String> {
        match value {
            serde_json::Value::String(s) => Some(serde_json::to_string(s).unwrap_or_default()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            serde_json::Value::Array(items) => {
                Some(format!("[{}]", items.iter().filter_map(scalar).collect::<Vec<_>>().join(", ")))
            }
            _ => None,
        }
    }
    fn table(out: &mut String, path: &str, map: &serde_json::Map<String, serde_json::Value>) {
        let mut nested = Vec::new();
        if !path.is_empty() {
            out.push_str(&format!("\n[{path}]\n"));
        }
        for (key, value) in map {
            match value {
                serde_json::Value::Null => out.push_str(&format!("# {key} = (unset)\n")),
                serde_json::Value::Object(inner) => nested.push((key, inner)),
                other => {
                    if let Some(text) = scalar(other) {
                        out.push_str(&format!("{key} = {text}\n"));
                    }
                }
            }
        }
        for (key, inner) in nested {
            let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            table(out, &child, inner);
        }
    }
    let map = value.as_object().ok_or_else(|| "settings are not a table".to_string())?;
    let mut out = String::new();
    table(&mut out, "", map);
    Ok(out.trim_start().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded_and_valid() {
        let settings = Settings::default();
        settings.validate().unwrap();
        assert_eq!(settings.mode(), Mode::Embedded);
        assert!(settings.database_url().starts_with("sqlite://"));
        assert_eq!(settings.storage_backend(), StorageBackend::Local);
    }

    #[test]
    fn a_slow_consumer_deadline_is_bounded_and_never_zero() {
        for (ms, ok) in [(0, false), (49, false), (50, true), (10_000, true), (600_000, true), (600_001, false)] {
            let mut settings = Settings::default();
            settings.graphql.ws_slow_consumer_ms = ms;
            let result = settings.validate();
            assert_eq!(result.is_ok(), ok, "{ms}: {result:?}");
            if let Err(err) = result {
                assert!(err.to_string().contains("graphql.ws_slow_consumer_ms"), "{err}");
            }
        }
    }

    #[test]
    fn graphiql_and_introspection_are_on_only_in_embedded_mode_unless_set() {
        let mut embedded = Settings::default();
        embedded.resolve_mode_defaults();
        assert!(embedded.graphql.playground_enabled() && embedded.graphql.introspection_enabled());
        let mut production = Settings::default();
        production.database.url = Some(SecretUrl::new("postgres://db/app"));
        production.resolve_mode_defaults();
        assert!(!production.graphql.playground_enabled() && !production.graphql.introspection_enabled());
        let mut chosen = Settings::default();
        chosen.database.url = Some(SecretUrl::new("postgres://db/app"));
        chosen.graphql.introspection = Some(true);
        chosen.resolve_mode_defaults();
        assert!(!chosen.graphql.playground_enabled() && chosen.graphql.introspection_enabled());
        let mut off = Settings::default();
        off.graphql.playground = Some(false);
        off.resolve_mode_defaults();
        assert!(!off.graphql.playground_enabled() && off.graphql.introspection_enabled());
    }

    #[test]
    fn an_s3_bucket_selects_s3_and_needs_both_keys() {
        let mut settings = Settings::default();
        settings.storage.s3.bucket = Some("media".into());
        assert_eq!(settings.storage_backend(), StorageBackend::S3);
        assert_eq!(settings.mode(), Mode::Distributed);
        settings.storage.s3.access_key_id = Some(Secret::new("AKIA"));
        let err = settings.validate().unwrap_err();
        assert_eq!(err.key, "storage.s3.secret_access_key");
    }

    #[test]
    fn redacted_dump_hides_secrets_and_keeps_the_rest() {
        let mut settings = Settings::default();
        settings.auth.jwt_secret = Some(Secret::new("x".repeat(40)));
        settings.database.url = Some(SecretUrl::new("postgres://app:hunter2@db:5432/app"));
        let dump = settings.to_redacted_toml().unwrap();
        assert!(!dump.contains("hunter2"), "{dump}");
        assert!(!dump.contains(&"x".repeat(40)), "{dump}");
        assert!(dump.contains("[server]"), "{dump}");
        assert!(dump.contains("bind = \"127.0.0.1:8080\""), "{dump}");
        assert!(dump.contains("jwt_secret = \"[redacted]\""), "{dump}");
    }

    #[test]
    fn short_jwt_secret_is_rejected_by_name() {
        let mut settings = Settings::default();
        settings.auth.jwt_secret = Some(Secret::new("short"));
        assert_eq!(settings.validate().unwrap_err().key, "auth.jwt_secret");
    }

    #[test]
    fn remote_multipart_sizes_stay_within_the_stores_limits() {
        let mut settings = Settings::default();
        for bad in [0, 5 * 1024 * 1024 - 1, 5 * 1024 * 1024 * 1024 + 1] {
            settings.workers.remote_part_bytes = bad;
            assert_eq!(settings.validate().unwrap_err().key, "workers.remote_part_bytes", "{bad}");
        }
        settings.workers.remote_part_bytes = 5 * 1024 * 1024;
        for bad in [0, 5 * 1024 * 1024 * 1024 + 1] {
            settings.workers.remote_multipart_threshold_bytes = bad;
            assert_eq!(settings.validate().unwrap_err().key, "workers.remote_multipart_threshold_bytes", "{bad}");
        }
        settings.workers.remote_multipart_threshold_bytes = 1;
        settings.validate().unwrap();
    }

    #[test]
    fn min_fps_is_at_least_zero_and_below_max_fps() {
        let mut settings = Settings::default();
        for bad in [-0.5, f64::NAN, settings.media.max_fps, settings.media.max_fps + 1.0] {
            settings.media.min_fps = bad;
            assert_eq!(settings.validate().unwrap_err().key, "media.min_fps", "{bad}");
        }
        for good in [0.0, 0.1, 1.0] {
            settings.media.min_fps = good;
            settings.validate().unwrap();
        }
    }

    #[test]
    fn a_cdn_base_url_must_be_an_http_url() {
        let mut settings = Settings::default();
        for bad in ["cdn.example.com", "ftp://cdn.example.com", "https://cdn.example.com/?token=1"] {
            settings.media.cdn_base_url = Some(bad.into());
            assert_eq!(settings.validate().unwrap_err().key, "media.cdn_base_url", "{bad}");
        }
        settings.media.cdn_base_url = Some("https://cdn.example.com/vod".into());
        settings.validate().unwrap();
    }
}
