//! `spawn_app()`: a real server on port 0 with its own database, bucket prefix and
//! Redis prefix, so tests run in parallel against the real services.
//!
//! The backend comes from `REELHOUSE_TEST_BACKEND`:
//! - `sqlite` (default): embedded mode — SQLite in a temp dir, local disk, no Redis.
//! - `postgres`: distributed mode — a fresh PostgreSQL database, S3 (s3s-fs) under a
//!   unique key prefix, Redis under a unique key prefix.
//!
//! Service addresses come from `.test-services/env` (written by
//! `scripts/test-services.sh`, which `make test` runs).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use reelhouse::config::{Secret, SecretUrl, Settings, StorageBackend};
use reelhouse::startup::{AppState, Application};
use sea_orm::{ConnectionTrait, Database};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("REELHOUSE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("REELHOUSE_TEST_BACKEND must be sqlite or postgres, not {other}"),
    }
}

/// A test service setting; missing ones fail loudly instead of skipping.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with `make test` (scripts/test-services.sh starts the services)")
    })
}

fn init_test_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_env_filter("info,reelhouse=debug").with_test_writer().try_init();
        }
    });
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub state: AppState,
    /// The server's shared live-event frames (`graphql::shared_frames`).
    pub shared_frames: actix_web::web::Data<reelhouse::graphql::shared_frames::SharedFrames>,
    pub client: reqwest::Client,
    /// Held so the directory lives as long as the server.
    #[allow(dead_code)]
    pub data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    /// POST a GraphQL document; returns the status and the JSON body.
    pub async fn graphql(&self, query: &str, variables: serde_json::Value) -> (u16, serde_json::Value) {
        let res = self
            .client
            .post(self.url("/graphql"))
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("graphql request");
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }
}

/// Settings for a test server on the current backend, with its own database and prefixes.
pub async fn test_settings(data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.data_dir = data_dir.to_path_buf();
    settings.server.heartbeat_interval_ms = 50;
    settings.server.shutdown_timeout_secs = 2;
    settings.workers.concurrency = Some(1);
    // Media children run the real binary (this process is the test harness).
    settings.jail.binary = Some(std::path::PathBuf::from(env!("CARGO_BIN_EXE_reelhouse")));
    // Every test client signs in from 127.0.0.1, so the per-IP sign-in budget is
    // raised; the per-account `auth` policy keeps its default and is tested as is.
    settings.rate_limit.policies.insert(
        reelhouse::limits::Policy::AuthIp,
        reelhouse::config::rate_limit::PolicySettings::new(10_000, 60, 10_000, false),
    );
    // GraphiQL and introspection are off by default in distributed mode; the tests
    // use them on both backends.
    settings.graphql.playground = Some(true);
    settings.graphql.introspection = Some(true);
    if backend() == Backend::Postgres {
        settings.database.url = Some(SecretUrl::new(create_postgres_database().await));
        settings.database.max_connections = 5;
        settings.redis.url = Some(SecretUrl::new(service_env("REELHOUSE_TEST_REDIS_URL")));
        settings.redis.key_prefix = format!("rh-test-{}:", Uuid::new_v4().simple());
        apply_s3_settings(&mut settings);
        settings.auth.jwt_secret = Some(Secret::new(random_secret()));
    }
    settings
}

/// Point storage at the test S3 server under a fresh key prefix.
pub fn apply_s3_settings(settings: &mut Settings) {
    settings.storage.backend = Some(StorageBackend::S3);
    let s3 = &mut settings.storage.s3;
    s3.endpoint = Some(service_env("REELHOUSE_TEST_S3_ENDPOINT"));
    s3.bucket = Some(service_env("REELHOUSE_TEST_S3_BUCKET"));
    s3.region = service_env("REELHOUSE_TEST_S3_REGION");
    s3.access_key_id = Some(Secret::new(service_env("REELHOUSE_TEST_S3_ACCESS_KEY_ID")));
    s3.secret_access_key = Some(Secret::new(service_env("REELHOUSE_TEST_S3_SECRET_ACCESS_KEY")));
    s3.force_path_style = true;
    // Short: s3s-fs names a metadata file after the base64 of the whole key, so keys
    // over ~160 bytes fail there (real S3 allows 1024).
    s3.key_prefix = format!("t{}/", &Uuid::new_v4().simple().to_string()[..12]);
}

pub fn random_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Create an empty PostgreSQL database for one test; returns its URL.
pub async fn create_postgres_database() -> String {
    let admin_url = service_env("REELHOUSE_TEST_PG_URL");
    let name = format!("reelhouse_test_{}", Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.expect("connect to PostgreSQL (REELHOUSE_TEST_PG_URL)");
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    admin.close().await.ok();
    let mut url = url::Url::parse(&admin_url).expect("REELHOUSE_TEST_PG_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawn with the backend's settings, adjusted by `customize`.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    init_test_tracing();
    let data_dir = tempfile::tempdir().expect("temp data dir");
    let mut settings = test_settings(data_dir.path()).await;
    customize(&mut settings);
    let app = Application::build(settings).await.expect("application builds");
    let port = app.port();
    let state = app.state().clone();
    let shared_frames = app.shared_frames_data();
    actix_rt::spawn(async move {
        if let Err(err) = app.run_until_stopped().await {
            eprintln!("test server stopped with error: {err:?}");
        }
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        state,
        shared_frames,
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client"),
        data_dir,
    }
}

/// Poll `check` until it returns true, at most `tries` × 100 ms. Used to wait for
/// asynchronous effects (a restart, a reconnect), never to assert speed.
pub async fn eventually<F, Fut>(tries: u32, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A TCP proxy in front of a real service that a test can cut and restore, to make
/// the service unreachable without touching the shared instance.
pub struct TcpProxy {
    pub port: u16,
    upstream: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Self { port, upstream, tasks: None };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Refuse new connections and cut the open ones.
    pub async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    /// Accept connections again on the same port.
    pub async fn restore(&mut self) {
        // While cut, the port was free: another test's socket may hold it for a
        // moment (an ephemeral port handed out again). Try for a few seconds.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(err) => panic!("proxy rebind: {err:?}"),
            }
        };
        self.serve(listener);
    }
}

/// Resolve `host:port` of a service URL such as `redis://127.0.0.1:6379`.
pub fn socket_of(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("service URL");
    let host = parsed.host_str().expect("host");
    let port = parsed.port_or_known_default().unwrap_or(match parsed.scheme() {
        "redis" => 6379,
        _ => 5432,
    });
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).expect("resolve").next().expect("an address")
}

/// The `reelhouse` binary as a child process, with its stderr watched for the
/// "listening on" line so the test learns the real port.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub address: String,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn reelhouse_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelhouse"));
    // The child must see only what a test gives it, not the developer's settings.
    for (key, _) in std::env::vars() {
        if key.starts_with("REELHOUSE_") || key.starts_with("S3_") || key == "DATABASE_URL" || key == "REDIS_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").kill_on_drop(true);
    cmd
}

impl ServerProcess {
    /// Start `reelhouse serve --bind 127.0.0.1:0` and wait for its address.
    pub async fn serve(mut cmd: tokio::process::Command) -> Self {
        cmd.arg("serve").arg("--bind").arg("127.0.0.1:0").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn reelhouse");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(idx) = line.find("listening on http://") {
                    let rest = &line[idx + "listening on ".len()..];
                    // Pretty lines end the address with a space, JSON lines with a quote.
                    let address: String =
                        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ":/.[]".contains(*c)).collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(address);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let address = tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .unwrap_or_else(|_| panic!("server did not report its address; stderr: {:?}", lines.lock().unwrap()))
            .unwrap_or_else(|_| panic!("server exited before listening; stderr: {:?}", lines.lock().unwrap()));
        // The line may carry ANSI colour codes in pretty mode; keep host:port only.
        let address = strip_ansi(&address);
        Self { child, address, stderr_lines: lines }
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Send SIGTERM and wait for the exit status.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("child pid");
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("server exits after SIGTERM")
            .expect("wait");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stderr = self.stderr();
        (exit, stderr)
    }
}

pub fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an escape sequence: ESC [ ... letter
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Credentials a test request carries.
#[derive(Debug, Clone)]
pub enum Credentials {
    Anonymous,
    Bearer(String),
    ApiKey(String),
}

/// A signed-in test user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestUser {
    pub fn bearer(&self) -> Credentials {
        Credentials::Bearer(self.access_token.clone())
    }
}

pub const TEST_PASSWORD: &str = "correct horse battery 9";

pub const AUTH_PAYLOAD_FIELDS: &str = "accessToken refreshToken expiresIn user { id email displayName role }";

impl TestApp {
    /// POST a GraphQL document with credentials.
    pub async fn graphql_as(
        &self,
        credentials: &Credentials,
        query: &str,
        variables: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request =
            self.client.post(self.url("/graphql")).json(&serde_json::json!({ "query": query, "variables": variables }));
        request = match credentials {
            Credentials::Anonymous => request,
            Credentials::Bearer(token) => request.bearer_auth(token),
            Credentials::ApiKey(key) => request.header("X-Api-Key", key),
        };
        let res = request.send().await.expect("graphql request");
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Create an account with `role` directly in the database, then log in through the API.
    pub async fn create_user_with_role(&self, role: entities::Role) -> TestUser {
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        reelhouse::auth::accounts::create_user(&self.state.db, &email, TEST_PASSWORD, "Test User", role)
            .await
            .unwrap_or_else(|e| panic!("create user: {e:?}"));
        self.login(&email, TEST_PASSWORD).await
    }

    /// Register a new USER through the API, then mark the address verified in the
    /// database (as following the mailed link would; `accounts_mail` tests the link
    /// itself), so the user may upload.
    pub async fn register_user(&self) -> TestUser {
        let user = self.register_unverified_user().await;
        self.mark_email_verified(&user.id).await;
        user
    }

    /// Set `users.email_verified_at` of `user_id` to now.
    pub async fn mark_email_verified(&self, user_id: &str) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let id = Uuid::parse_str(user_id).expect("user id");
        entities::user::Entity::update_many()
            .col_expr(entities::user::Column::EmailVerifiedAt, sea_orm::sea_query::Expr::value(chrono::Utc::now()))
            .filter(entities::user::Column::Id.eq(id))
            .exec(&self.state.db)
            .await
            .expect("mark the address verified");
    }

    /// Register a new USER through the API; the address stays unverified.
    pub async fn register_unverified_user(&self) -> TestUser {
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        let (status, body) = self
            .graphql(
                &format!("mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
                serde_json::json!({ "input": { "email": email, "password": TEST_PASSWORD, "displayName": "Test User" } }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        test_user_from(&body["data"]["register"], &email)
    }

    pub async fn login(&self, email: &str, password: &str) -> TestUser {
        let (status, body) = self
            .graphql(
                &format!("mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
                serde_json::json!({ "input": { "email": email, "password": password } }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        test_user_from(&body["data"]["login"], email)
    }
}

fn test_user_from(payload: &serde_json::Value, email: &str) -> TestUser {
    assert!(payload["accessToken"].is_string(), "no tokens in {payload}");
    TestUser {
        id: payload["user"]["id"].as_str().unwrap().to_string(),
        email: email.to_string(),
        access_token: payload["accessToken"].as_str().unwrap().to_string(),
        refresh_token: payload["refreshToken"].as_str().unwrap().to_string(),
    }
}

/// `extensions.code` of the first error, if any.
pub fn error_code(body: &serde_json::Value) -> Option<String> {
    body["errors"][0]["extensions"]["code"].as_str().map(str::to_string)
}
