//! Circuit breakers against real dependencies behind a TCP proxy the test controls:
//! S3 (both backends), PostgreSQL (postgres backend) and webhook hosts (both).
//!
//! The proxy counts the connections it accepts, so "the call failed fast" is shown
//! by no new connection reaching the dependency, never by timing. Cool-downs are
//! waited for by polling the breaker's state, never asserted as durations.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use entities::{webhook_delivery, Role, VideoStatus, Visibility, WebhookDeliveryStatus};
use reelhouse::config::SecretUrl;
use reelhouse::events::EventKind;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::helpers::{
    backend, create_postgres_database, error_code, eventually, socket_of, spawn_app_with, Backend, TestApp, TestUser,
};

/// A TCP proxy that counts every connection it accepts and either forwards it to
/// `upstream` or, while failing, closes it at once (the dependency "resets").
/// Switching to failing also cuts the connections already forwarded.
struct CountingProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    forwarded: Arc<Mutex<JoinSet<()>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(Mutex::new(JoinSet::new()));
        let accept = {
            let (accepted, failing, forwarded) = (accepted.clone(), failing.clone(), forwarded.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if failing.load(Ordering::SeqCst) {
                        let _ = inbound.shutdown().await;
                        drop(inbound);
                        continue;
                    }
                    forwarded.lock().unwrap().spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            })
        };
        Self { port, accepted, failing, forwarded, _accept: accept }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Close every new connection at once and cut the open ones.
    fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
        self.forwarded.lock().unwrap().abort_all();
    }

    fn restore(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }
}

const SYSTEM_STATUS: &str = "{ systemStatus { dependencies { name state failures lastError changedAt } \
                             queue { queued running dead } workers { id host } } }";

async fn system_status(app: &TestApp, admin: &TestUser) -> (u16, Value) {
    app.graphql_as(&admin.bearer(), SYSTEM_STATUS, json!({})).await
}

/// The dependency named `name` in a `systemStatus` answer.
fn dependency(body: &Value, name: &str) -> Value {
    body["data"]["systemStatus"]["dependencies"]
        .as_array()
        .unwrap_or_else(|| panic!("no dependencies: {body}"))
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no dependency {name}: {body}"))
}

async fn dependency_state(app: &TestApp, admin: &TestUser, name: &str) -> String {
    let (_, body) = system_status(app, admin).await;
    dependency(&body, name)["state"].as_str().unwrap_or_default().to_string()
}

/// `/ready`: status and body.
async fn ready(app: &TestApp) -> (u16, Value) {
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn ready_breaker(body: &Value, name: &str) -> Value {
    body["breakers"].as_array().and_then(|all| all.iter().find(|b| b["name"] == name)).cloned().unwrap_or(Value::Null)
}

async fn me(app: &TestApp, user: &TestUser) -> (u16, Option<String>, Value) {
    let res = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry_after, res.json().await.unwrap_or(Value::Null))
}

const CREATE_UPLOAD: &str = "mutation($input: CreateUploadInput!) { createUpload(input: $input) { id method } }";

/// `createUpload` of a multipart upload for a new video: starts a multipart upload on S3.
async fn create_multipart_upload(app: &TestApp, user: &TestUser) -> reqwest::Response {
    let video = crate::uploads::new_video(app, uuid::Uuid::parse_str(&user.id).unwrap()).await;
    let input = json!({ "videoId": video, "filename": "clip.mp4", "contentType": "video/mp4", "size": 50_000 });
    app.client
        .post(app.url("/graphql"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "query": CREATE_UPLOAD, "variables": { "input": input } }))
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn an_s3_outage_opens_the_storage_breaker_which_fails_fast_and_closes_after_recovery() {
    let endpoint = crate::helpers::service_env("REELHOUSE_TEST_S3_ENDPOINT");
    let proxy = CountingProxy::start(socket_of(&endpoint)).await;
    let mut proxied = url::Url::parse(&endpoint).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let app = spawn_app_with(|s| {
        crate::helpers::apply_s3_settings(s);
        s.storage.s3.endpoint = Some(proxied.to_string().trim_end_matches('/').to_string());
        s.uploads.multipart_threshold_bytes = 1000;
        s.breakers.failure_threshold = 2;
        s.breakers.open_ms = 3000;
        s.workers.embedded = false;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let (status, body) = system_status(&app, &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dependency(&body, "storage")["state"], "CLOSED", "{body}");
    assert!(body["data"]["systemStatus"]["queue"]["queued"].is_number(), "{body}");
    let answered = create_multipart_upload(&app, &user).await;
    assert_eq!(answered.status(), 200);
    let answered: Value = answered.json().await.unwrap();
    assert_eq!(answered["data"]["createUpload"]["method"], "MULTIPART", "{answered}");

    proxy.fail();
    // Two failures (each after the SDK's own retries) open the breaker.
    for _ in 0..2 {
        let res = create_multipart_upload(&app, &user).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
    }
    let (_, body) = system_status(&app, &admin).await;
    let storage = dependency(&body, "storage");
    assert_eq!(storage["state"], "OPEN", "{body}");
    assert!(storage["failures"].as_i64().unwrap() >= 2, "{body}");
    let last_error = storage["lastError"].as_str().expect("a last error").to_string();
    assert!(!last_error.contains("127.0.0.1") && !last_error.contains(&proxy.port.to_string()), "{last_error}");

    // Open: answered at once, without a single connection to S3.
    let before = proxy.accepted();
    let res = create_multipart_upload(&app, &user).await;
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "the rest of a 3 s open period: {retry_after}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(error_code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["retryAfter"], json!(retry_after), "{body}");
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["storage"]["reason"], "circuit open", "{body}");
    assert_eq!(ready_breaker(&body, "storage")["state"], "OPEN", "{body}");
    assert_eq!(proxy.accepted(), before, "an open breaker does not reach S3");

    // Unrelated requests are served throughout.
    let (status, _, body) = me(&app, &user).await;
    assert_eq!((status, &body["data"]["me"]["id"]), (200, &json!(user.id)), "{body}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelhouse_breaker_state{dependency=\"storage\"} 2"), "{metrics}");
    assert!(metrics.contains("reelhouse_breaker_rejected_total{dependency=\"storage\"}"), "{metrics}");
    assert!(metrics.contains("reelhouse_breaker_transitions_total{dependency=\"storage\",to=\"OPEN\"} 1"), "{metrics}");

    // After the cool-down it lets a probe through; S3 is back, so it closes.
    proxy.restore();
    assert!(
        eventually(300, || async { dependency_state(&app, &admin, "storage").await == "HALF_OPEN" }).await,
        "half-open after the open period"
    );
    let res = create_multipart_upload(&app, &user).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["createUpload"]["method"], "MULTIPART", "the probe went through: {body}");
    let (_, body) = system_status(&app, &admin).await;
    let storage = dependency(&body, "storage");
    assert_eq!((storage["state"].as_str(), storage["failures"].as_i64()), (Some("CLOSED"), Some(0)), "{body}");
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn system_status_is_for_admins_only() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register_user().await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    for caller in [&user, &moderator] {
        let (_, body) = system_status(&app, caller).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    let (_, body) = app.graphql(SYSTEM_STATUS, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let admin = app.create_user_with_role(Role::Admin).await;
    let (status, body) = system_status(&app, &admin).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["data"]["systemStatus"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let expected: &[&str] = match backend() {
        Backend::Postgres => &["database", "redis", "storage"],
        Backend::Sqlite => &["database", "storage"],
    };
    assert_eq!(names, expected, "{body}");
    for dep in body["data"]["systemStatus"]["dependencies"].as_array().unwrap() {
        assert_eq!(dep["state"], "CLOSED", "{body}");
        assert!(dep["lastError"].is_null(), "{body}");
    }
    assert!(body["data"]["systemStatus"]["workers"].is_array(), "{body}");
    // The sign-ups above queued their verification mails (SEND_MAIL jobs); once the
    // mail lane has sent them the queue reads empty, and nothing is dead.
    let drained = eventually(200, || async {
        let (_, body) = system_status(&app, &admin).await;
        let queue = &body["data"]["systemStatus"]["queue"];
        (queue["queued"].as_i64(), queue["running"].as_i64(), queue["dead"].as_i64()) == (Some(0), Some(0), Some(0))
    })
    .await;
    assert!(drained, "{}", system_status(&app, &admin).await.1);
}

#[actix_web::test]
async fn a_database_outage_opens_the_database_breaker_shown_in_ready_and_recovery_closes_it() {
    if backend() != Backend::Postgres {
        return; // SQLite is a file: there is no connection to lose.
    }
    let db_url = create_postgres_database().await;
    let proxy = CountingProxy::start(socket_of(&db_url)).await;
    let mut proxied = url::Url::parse(&db_url).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let proxied = proxied.to_string();
    let app = spawn_app_with(|s| {
        s.database.url = Some(SecretUrl::new(proxied));
        s.database.connect_timeout_secs = 1;
        s.breakers.failure_threshold = 3;
        s.breakers.open_ms = 1000;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    assert_eq!(dependency_state(&app, &admin, "database").await, "CLOSED");

    proxy.fail();
    // Readiness checks and requests meet the outage until the breaker opens.
    let opened = eventually(200, || async {
        let _ = me(&app, &user).await;
        let (_, body) = ready(&app).await;
        ready_breaker(&body, "database")["state"] == "OPEN"
    })
    .await;
    assert!(opened, "the database breaker opens");
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "an open database breaker makes the process unready: {body}");
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    let database = ready_breaker(&body, "database");
    let last_error = database["lastError"].as_str().expect("a last error");
    assert!(
        ["timed out", "connection refused", "connection reset", "connection failed"].contains(&last_error),
        "a short category: {body}"
    );
    let text = body.to_string();
    assert!(!text.contains(&proxy.port.to_string()) && !text.contains("postgres://"), "no internals: {text}");

    // Open: every GraphQL request answers UNAVAILABLE with Retry-After from the
    // breaker itself (not after the pool's timeout); only an admin's query of
    // systemStatus alone is answered (from memory, the admin checked on the
    // token's signed claims), and it names the failing dependency.
    let (status, retry_after, body) = me(&app, &user).await;
    assert_eq!((status, error_code(&body).as_deref()), (503, Some("UNAVAILABLE")), "{body}");
    assert_eq!(body["errors"][0]["message"], "the database is unavailable, try again later", "{body}");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    let (status, body) = system_status(&app, &admin).await;
    assert_eq!((status, error_code(&body).as_deref()), (200, None), "{body}");
    assert_eq!(dependency(&body, "database")["state"], "OPEN", "{body}");
    let (_, body) = system_status(&app, &user).await;
    assert!(body["data"]["systemStatus"].is_null() && error_code(&body).is_some(), "a non-admin reads nothing: {body}");
    // Probes that require nothing of the database still answer.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    proxy.restore();
    assert!(
        eventually(200, || async { ready(&app).await.0 == 200 }).await,
        "the probe after the cool-down finds the database and closes the breaker"
    );
    let (status, _, body) = me(&app, &user).await;
    assert_eq!((status, &body["data"]["me"]["id"]), (200, &json!(user.id)), "{body}");
    let (_, body) = system_status(&app, &admin).await;
    let database = dependency(&body, "database");
    assert_eq!(database["state"], "CLOSED", "{body}");
    assert_eq!(database["failures"], 0, "{body}");
    assert!(database["lastError"].is_string(), "the last error is kept for operators: {body}");
}

/// A webhook receiver on 127.0.0.1 recording each delivery's `webhook-id`.
struct Receiver {
    addr: std::net::SocketAddr,
    ids: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

async fn receive(req: HttpRequest, ids: web::Data<Arc<Mutex<Vec<String>>>>) -> HttpResponse {
    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    ids.lock().unwrap().push(id);
    HttpResponse::Ok().finish()
}

async fn start_receiver() -> Receiver {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::new(ids.clone());
    let server = HttpServer::new(move || App::new().app_data(data.clone()).route("/hook", web::post().to(receive)))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    Receiver { addr, ids }
}

async fn create_webhook(app: &TestApp, user: &TestUser, url: &str) -> uuid::Uuid {
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id } } }",
            json!({ "input": { "url": url, "events": ["READY"], "global": false } }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    uuid::Uuid::parse_str(body["data"]["createWebhook"]["webhook"]["id"].as_str().unwrap()).unwrap()
}

async fn deliveries_of(app: &TestApp, endpoint: uuid::Uuid) -> Vec<webhook_delivery::Model> {
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint))
        .all(&app.state.db)
        .await
        .unwrap()
}

/// Step deliveries (through the breakers, as the delivery loop does) until `done`.
async fn pump_until<F, Fut>(app: &TestApp, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let secrets = reelhouse::webhooks::secrets::SecretBox::from_keys(&app.state.keys).unwrap();
    for _ in 0..500 {
        reelhouse::webhooks::delivery::deliver_due_with(
            &app.state.db,
            &app.state.settings.webhooks,
            &secrets,
            Some(&app.state.breakers),
        )
        .await
        .unwrap();
        if done().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[actix_web::test]
async fn a_dead_webhook_host_opens_only_its_breaker_and_deferred_deliveries_arrive_once_it_is_back() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.webhooks.deliver = false; // the test steps deliveries itself
        s.webhooks.allow_private_targets = true;
        s.webhooks.backoff_base_ms = 50;
        s.webhooks.backoff_max_ms = 200;
        s.breakers.failure_threshold = 2;
        s.breakers.open_ms = 3000;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let owner = app.register_user().await;
    let alive = start_receiver().await;
    let revived = start_receiver().await;
    // The dead host: a proxy that resets every connection, in front of a receiver
    // that will answer once the proxy forwards again.
    let dead = CountingProxy::start(revived.addr).await;
    dead.fail();
    let dead_endpoint = create_webhook(&app, &owner, &format!("http://127.0.0.1:{}/hook", dead.port)).await;
    let alive_endpoint = create_webhook(&app, &owner, &format!("http://{}/hook", alive.addr)).await;

    for _ in 0..3 {
        let video = crate::video_events::insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
        crate::video_events::transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    }
    let dead_breaker = format!("webhook:127.0.0.1:{}", dead.port);
    let opened = pump_until(&app, || async {
        alive.ids().len() >= 3 && dependency_state(&app, &admin, &dead_breaker).await == "OPEN"
    })
    .await;
    assert!(opened, "the dead host's breaker opens; alive got {:?}", alive.ids());
    let (_, body) = system_status(&app, &admin).await;
    assert_eq!(dependency(&body, &format!("webhook:{}", alive.addr))["state"], "CLOSED", "{body}");
    assert!(dependency(&body, &dead_breaker)["lastError"].is_string(), "{body}");

    // While open, due deliveries to the dead host are put off: no connection to
    // it, no attempt counted.
    let attempts_when_opened: i32 = deliveries_of(&app, dead_endpoint).await.iter().map(|d| d.attempts).sum();
    let connections_when_opened = dead.accepted();
    let deferred = pump_until(&app, || async {
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        metrics.lines().any(|l| l.starts_with("reelhouse_webhook_deferred_total") && !l.ends_with(" 0"))
    })
    .await;
    assert!(deferred, "due deliveries meet the open breaker");
    assert_eq!(dependency_state(&app, &admin, &dead_breaker).await, "OPEN", "still within the open period");
    assert_eq!(dead.accepted(), connections_when_opened, "no connection while open");
    let attempts_now: i32 = deliveries_of(&app, dead_endpoint).await.iter().map(|d| d.attempts).sum();
    assert_eq!(attempts_now, attempts_when_opened, "deferrals burn no attempts");
    for delivery in deliveries_of(&app, dead_endpoint).await {
        assert_eq!(delivery.status, WebhookDeliveryStatus::Pending, "nothing given up");
    }

    // The host comes back: after the cool-down a probe succeeds, the breaker
    // closes, and every deferred delivery arrives with its own id.
    dead.restore();
    let delivered = pump_until(&app, || async { revived.ids().len() >= 3 }).await;
    assert!(delivered, "deferred deliveries arrive: {:?}", revived.ids());
    let mut expected: Vec<String> = deliveries_of(&app, dead_endpoint).await.iter().map(|d| d.id.to_string()).collect();
    let mut got = revived.ids();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "each delivery exactly once, with the same webhook-id");
    for delivery in deliveries_of(&app, dead_endpoint).await {
        assert_eq!(delivery.status, WebhookDeliveryStatus::Succeeded);
    }
    assert_eq!(deliveries_of(&app, alive_endpoint).await.len(), 3);
    assert_eq!(dependency_state(&app, &admin, &dead_breaker).await, "CLOSED");
}

#[test]
fn breaker_settings_are_validated() {
    let mut settings = reelhouse::config::Settings::default();
    assert!(settings.validate().is_ok());
    for (field, value) in [("failure_threshold", 0u64), ("open_ms", 10), ("half_open_probes", 0)] {
        let mut s = settings.clone();
        match field {
            "failure_threshold" => s.breakers.failure_threshold = value as u32,
            "open_ms" => s.breakers.open_ms = value,
            _ => s.breakers.half_open_probes = value as u32,
        }
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains(&format!("breakers.{field}")), "{err}");
    }
    settings.breakers.open_ms = 3_600_001;
    assert!(settings.validate().is_err());
}

#[actix_web::test]
async fn a_redis_outage_opens_the_redis_breaker_rate_limits_decide_locally_and_recovery_closes_it() {
    if backend() != Backend::Postgres {
        return; // Redis is configured only with the postgres backend's services.
    }
    let redis_url = crate::helpers::service_env("REELHOUSE_TEST_REDIS_URL");
    let proxy = CountingProxy::start(socket_of(&redis_url)).await;
    let mut proxied = url::Url::parse(&redis_url).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let app = spawn_app_with(|s| {
        s.redis.url = Some(SecretUrl::new(proxied.to_string()));
        s.redis.timeout_ms = 500;
        s.breakers.failure_threshold = 3;
        s.breakers.open_ms = 3000;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    assert_eq!(dependency_state(&app, &admin, "redis").await, "CLOSED");

    proxy.fail();
    // Every API request checks its rate limit in Redis: they meet the outage
    // (and, the `api` policy failing open, are still served) until it opens.
    let opened = eventually(200, || async {
        let (status, _, _) = me(&app, &user).await;
        assert_eq!(status, 200, "the api policy decides locally while Redis is down");
        let (_, body) = ready(&app).await;
        ready_breaker(&body, "redis")["state"] == "OPEN"
    })
    .await;
    assert!(opened, "the redis breaker opens");
    let (status, body) = ready(&app).await;
    assert_eq!((status, &body["checks"]["redis"]["reason"]), (503, &json!("circuit open")), "{body}");

    // Open: requests are served without a connection attempt to Redis. (First let
    // a reconnection the connection manager started on the last failure land.)
    let settled = eventually(50, || async {
        let seen = proxy.accepted();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        proxy.accepted() == seen
    })
    .await;
    assert!(settled);
    let before = proxy.accepted();
    for _ in 0..5 {
        let (status, _, body) = me(&app, &user).await;
        assert_eq!((status, &body["data"]["me"]["id"]), (200, &json!(user.id)), "{body}");
    }
    let (_, body) = system_status(&app, &admin).await;
    let redis = dependency(&body, "redis");
    assert_eq!(redis["state"], "OPEN", "{body}");
    assert!(redis["lastError"].is_string(), "{body}");
    assert_eq!(proxy.accepted(), before, "an open breaker does not reach Redis");

    proxy.restore();
    assert!(
        eventually(300, || async {
            let _ = me(&app, &user).await;
            dependency_state(&app, &admin, "redis").await == "CLOSED"
        })
        .await,
        "a probe after the cool-down finds Redis and closes the breaker"
    );
    assert!(eventually(100, || async { ready(&app).await.0 == 200 }).await);
}
