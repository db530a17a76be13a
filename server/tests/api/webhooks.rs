//! Webhooks against a real HTTP receiver on 127.0.0.1: signed deliveries, one per
//! event, retries with growing gaps, auto-disable, SSRF refusal, visibility,
//! redelivery and replay. Signatures are checked here and, in the Standard Webhooks
//! tests, by the official verifier libraries (PyPI and npm `standardwebhooks`, run
//! by `scripts/verify-standard-webhooks.sh`).
//!
//! Events are produced the way the server produces them (`repo::outbox::record` in a
//! transaction, then the app's publisher), via `video_events::transition_on`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use entities::{VideoStatus, Visibility};
use hmac::{Hmac, Mac};
use reelhouse::events::EventKind;
use reelhouse::webhooks::secrets::SecretBox;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{error_code, eventually, spawn_app_with, TestApp, TestUser};
use crate::video_events::{insert_video, transition_on};

#[derive(Debug, Clone)]
struct Hit {
    /// `webhook-id`
    id: String,
    /// `webhook-timestamp`
    timestamp: String,
    /// `webhook-signature`
    signature: String,
    /// Every header, names in lower case.
    headers: std::collections::BTreeMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct Script {
    hits: Vec<Hit>,
    /// Answers to give, in order; 200 once they run out.
    statuses: VecDeque<u16>,
}

struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.script.lock().unwrap().hits.clone()
    }

    async fn wait_for(&self, app: &TestApp, count: usize) -> Vec<Hit> {
        let ok = pump_until(app, || async { self.hits().len() >= count }).await;
        assert!(ok, "expected {count} hits, got {:?}", self.hits().len());
        self.hits()
    }
}

async fn hook(req: HttpRequest, body: web::Bytes, script: web::Data<Arc<Mutex<Script>>>) -> HttpResponse {
    let headers: std::collections::BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_ascii_lowercase(), value.to_str().unwrap_or("").to_string()))
        .collect();
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    let mut script = script.lock().unwrap();
    script.hits.push(Hit {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        headers: headers.clone(),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let status = script.statuses.pop_front().unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body("receiver says hi")
}

/// A real HTTP server on 127.0.0.1 answering `statuses` in order, then 200.
async fn start_receiver(statuses: Vec<u16>) -> Receiver {
    let script = Arc::new(Mutex::new(Script { hits: Vec::new(), statuses: statuses.into() }));
    let data = web::Data::new(script.clone());
    let server = HttpServer::new(move || App::new().app_data(data.clone()).route("/hook", web::post().to(hook)))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    Receiver { url: format!("http://127.0.0.1:{port}/hook"), script }
}

/// Step the delivery queue until `done` (at most ~6 s). The apps of these tests run
/// no delivery loop of their own: the test is then the only writer, so SQLite (one
/// writer, deferred transactions) never fails the test's own read-then-write
/// transactions with a busy snapshot.
async fn pump_until<F, Fut>(app: &TestApp, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        reelhouse::webhooks::delivery::deliver_due(&app.state.db, &app.state.settings.webhooks, &secrets(app))
            .await
            .unwrap();
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn secrets(app: &TestApp) -> SecretBox {
    SecretBox::from_keys(&app.state.keys).unwrap()
}

/// Keep stepping the queue for `period` (to see that nothing more is sent).
async fn pump_for(app: &TestApp, period: Duration) {
    let until = Instant::now() + period;
    pump_until(app, || async { Instant::now() >= until }).await;
}

async fn app_allowing_private(customize: impl FnOnce(&mut reelhouse::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.workers.embedded = false;
        s.webhooks.deliver = false;
        s.webhooks.allow_private_targets = true;
        s.webhooks.poll_interval_ms = 25;
        s.webhooks.backoff_base_ms = 400;
        s.webhooks.backoff_max_ms = 10_000;
        customize(s);
    })
    .await
}

const WEBHOOK_FIELDS: &str = "id url events enabled disabledReason global consecutiveFailures createdAt";

async fn create_webhook(app: &TestApp, user: &TestUser, url: &str, events: &[&str], global: bool) -> (Value, String) {
    let (status, body) = app
        .graphql_as(
            &user.bearer(),
            &format!(
                "mutation($input: CreateWebhookInput!) {{ createWebhook(input: $input) {{ webhook {{ {WEBHOOK_FIELDS} }} secret }} }}"
            ),
            json!({ "input": { "url": url, "events": events, "global": global } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let payload = &body["data"]["createWebhook"];
    (payload["webhook"].clone(), payload["secret"].as_str().unwrap().to_string())
}

async fn deliveries(app: &TestApp, user: &TestUser, webhook_id: &str) -> Vec<Value> {
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "query($id: ID!) { webhookDeliveries(webhookId: $id, first: 50) { edges { node {
                id eventCursor eventKind status attemptCount lastStatusCode lastError deliveredAt
                attempts { at statusCode latencyMs error } } } } }",
            json!({ "id": webhook_id }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["webhookDeliveries"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect()
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256(base64-decoded secret, "{id}.{ts}.{body}")>`.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The previous release's `Reelhouse-Webhook-Signature`: `v1=<hex HMAC-SHA256(secret, "{ts}.{body}")>`.
fn expected_legacy_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Both signatures check out (the legacy headers are on by default in this release).
fn assert_signed(hit: &Hit, secret: &str) {
    assert_eq!(hit.signature, expected_signature(secret, &hit.id, &hit.timestamp, &hit.body), "bad signature");
    let ts: i64 = hit.timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 300, "timestamp outside the replay window");
    assert_eq!(hit.header("Reelhouse-Webhook-Id"), Some(hit.id.as_str()), "legacy id header");
    assert_eq!(hit.header("Reelhouse-Webhook-Timestamp"), Some(hit.timestamp.as_str()), "legacy timestamp header");
    assert_eq!(
        hit.header("Reelhouse-Webhook-Signature"),
        Some(expected_legacy_signature(secret, &hit.timestamp, &hit.body).as_str()),
        "bad legacy signature"
    );
}

/// Run the official Standard Webhooks libraries (Python and JavaScript) over what
/// the receiver got, as receivers holding `secret` would; panics with their output
/// unless both verify every hit (and refuse tampered copies). Installs them on first
/// use (scripts/verify-standard-webhooks.sh); a missing tool is a failure, not a skip.
fn verify_with_official_libraries(hits: &[Hit], secret: &str) -> String {
    let deliveries: Vec<Value> = hits
        .iter()
        .map(|hit| {
            let headers: serde_json::Map<String, Value> =
                hit.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            json!({ "headers": headers, "body": String::from_utf8(hit.body.clone()).unwrap() })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&json!({ "secret": secret, "deliveries": deliveries })).unwrap())
        .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-standard-webhooks.sh");
    let output = std::process::Command::new("bash").arg(&script).arg(file.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "the official Standard Webhooks verifiers refused the deliveries ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let count = format!(": {} verified", hits.len());
    assert!(
        stdout.contains(&format!("python standardwebhooks 1.1.0{count}"))
            && stdout.contains(&format!("node standardwebhooks 1.1.1{count}")),
        "{stdout}"
    );
    stdout
}

fn user_uuid(user: &TestUser) -> uuid::Uuid {
    uuid::Uuid::parse_str(&user.id).unwrap()
}

#[actix_web::test]
async fn deliveries_are_signed_and_one_per_event() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (webhook, secret) =
        create_webhook(&app, &owner, &receiver.url, &["PROCESSING", "RENDITION_READY", "READY"], false).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(webhook["enabled"], true);
    assert_eq!(webhook["global"], false);
    assert_eq!(webhook["events"], json!(["PROCESSING", "READY", "RENDITION_READY"]));
    assert!(webhook["disabledReason"].is_null());

    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    // UPLOADED is not subscribed to: never delivered.
    transition_on(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None).await;
    let processing = transition_on(&app, video.id, VideoStatus::Processing, EventKind::Processing, None).await;
    let rendition =
        transition_on(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p")).await;
    let ready = transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;

    receiver.wait_for(&app, 3).await;
    // Time for a duplicate to show up, if the server were to send one.
    pump_for(&app, Duration::from_millis(600)).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "one delivery per subscribed event");

    let mut seen_ids = std::collections::HashSet::new();
    let mut kinds = Vec::new();
    for hit in &hits {
        assert_signed(hit, &secret);
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body["id"], hit.id.as_str(), "body id is the idempotency id");
        assert!(seen_ids.insert(hit.id.clone()), "ids are distinct per event");
        assert_eq!(body["data"]["videoId"], video.id.to_string());
        assert!(body["createdAt"].is_string());
        let kind = body["type"].as_str().unwrap().to_string();
        let event = match kind.as_str() {
            "PROCESSING" => &processing,
            "RENDITION_READY" => &rendition,
            "READY" => &ready,
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(body["data"]["cursor"], event.cursor.unwrap().to_string());
        assert_eq!(body["data"]["seq"], event.seq);
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(kinds, ["PROCESSING", "READY", "RENDITION_READY"]);
    let ready_body: Value = serde_json::from_slice(
        &hits.iter().find(|h| String::from_utf8_lossy(&h.body).contains("\"READY\"")).unwrap().body,
    )
    .unwrap();
    assert_eq!(ready_body["data"]["status"], "READY");

    // The log agrees: three deliveries, each one successful attempt with a latency.
    let webhook_id = webhook["id"].as_str().unwrap();
    let ok = pump_until(&app, || async {
        deliveries(&app, &owner, webhook_id).await.iter().all(|d| d["status"] == "SUCCEEDED")
    })
    .await;
    assert!(ok);
    let log = deliveries(&app, &owner, webhook_id).await;
    assert_eq!(log.len(), 3);
    for delivery in &log {
        assert!(seen_ids.contains(delivery["id"].as_str().unwrap()));
        assert_eq!(delivery["attemptCount"], 1);
        assert_eq!(delivery["attempts"][0]["statusCode"], 200);
        assert!(delivery["attempts"][0]["latencyMs"].as_i64().unwrap() >= 0);
        assert!(delivery["deliveredAt"].is_string());
    }
}

#[actix_web::test]
async fn failing_receiver_is_retried_with_growing_gaps_then_succeeds() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![500, 500]).await;
    let owner = app.register_user().await;
    let (webhook, secret) = create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;

    let hits = receiver.wait_for(&app, 3).await;
    pump_for(&app, Duration::from_millis(800)).await;
    let hits_after = receiver.hits();
    assert_eq!(hits_after.len(), 3, "no attempt after the success");
    assert!(hits.iter().all(|h| h.id == hits[0].id), "every retry carries the same idempotency id");
    for hit in &hits {
        assert_signed(hit, &secret);
    }
    let first_gap = hits[1].at - hits[0].at;
    let second_gap = hits[2].at - hits[1].at;
    assert!(first_gap >= Duration::from_millis(250), "first retry waited {first_gap:?}");
    assert!(second_gap > first_gap, "gaps grow: {first_gap:?} then {second_gap:?}");

    let webhook_id = webhook["id"].as_str().unwrap();
    let ok =
        pump_until(&app, || async { deliveries(&app, &owner, webhook_id).await[0]["status"] == "SUCCEEDED" }).await;
    assert!(ok);
    let log = deliveries(&app, &owner, webhook_id).await;
    assert_eq!(log.len(), 1, "one logical delivery");
    assert_eq!(log[0]["attemptCount"], 3);
    let codes: Vec<i64> =
        log[0]["attempts"].as_array().unwrap().iter().map(|a| a["statusCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, [500, 500, 200]);
    assert!(log[0]["attempts"][0]["error"].as_str().unwrap().contains("500"));

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelhouse_webhook_attempts_total{outcome=\"http_error\"}"), "{metrics}");
    assert!(metrics.contains("reelhouse_webhook_attempt_duration_seconds"), "no latency histogram");
}

#[actix_web::test]
async fn dead_endpoint_is_disabled_with_a_reason() {
    let app = app_allowing_private(|s| {
        s.webhooks.retry_for_secs = 0;
        s.webhooks.disable_after_failures = 3;
    })
    .await;
    // A port nobody listens on.
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let owner = app.register_user().await;
    let (webhook, _) =
        create_webhook(&app, &owner, &format!("http://127.0.0.1:{dead_port}/hook"), &["READY", "FAILED"], false).await;
    let webhook_id = webhook["id"].as_str().unwrap().to_string();
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    for _ in 0..3 {
        transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    }

    let list = || async {
        let (_, body) =
            app.graphql_as(&owner.bearer(), &format!("{{ webhooks {{ {WEBHOOK_FIELDS} }} }}"), json!({})).await;
        body["data"]["webhooks"][0].clone()
    };
    let ok = pump_until(&app, || async { list().await["enabled"] == false }).await;
    assert!(ok, "endpoint not disabled: {}", list().await);
    let endpoint = list().await;
    let reason = endpoint["disabledReason"].as_str().unwrap();
    assert!(reason.contains("3 consecutive failed deliveries"), "{reason}");
    assert_eq!(endpoint["consecutiveFailures"], 3);
    let log = deliveries(&app, &owner, &webhook_id).await;
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d["status"] == "FAILED" && d["lastError"].is_string()), "{log:?}");

    // Disabled: later events make no deliveries, and redelivery is refused.
    transition_on(&app, video.id, VideoStatus::Failed, EventKind::Failed, None).await;
    assert_eq!(deliveries(&app, &owner, &webhook_id).await.len(), 3);
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
            json!({ "id": log[0]["id"] }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");

    // Re-enabling clears the reason.
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: true }) { enabled disabledReason consecutiveFailures } }",
            json!({ "id": webhook_id }),
        )
        .await;
    assert_eq!(
        body["data"]["updateWebhook"],
        json!({ "enabled": true, "disabledReason": null, "consecutiveFailures": 0 })
    );
}

#[actix_web::test]
async fn private_and_invalid_targets_are_refused() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.webhooks.poll_interval_ms = 25;
    })
    .await;
    let user = app.register_user().await;
    let create = |url: &'static str, global: bool| {
        let app = &app;
        let user = &user;
        async move {
            let (_, body) = app
                .graphql_as(
                    &user.bearer(),
                    "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { secret } }",
                    json!({ "input": { "url": url, "events": ["READY"], "global": global } }),
                )
                .await;
            error_code(&body)
        }
    };
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "https://user:pw@example.com/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        assert_eq!(create(url, false).await.as_deref(), Some("BAD_USER_INPUT"), "{url}");
    }
    // Global endpoints are for admins.
    assert_eq!(create("https://93.184.216.34/hook", true).await.as_deref(), Some("FORBIDDEN"));

    // Checked again at delivery time: an endpoint that points inside (here planted
    // directly, as a rebinding DNS name would end up) is never contacted.
    let receiver = start_receiver(vec![]).await;
    let endpoint_id = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    sea_orm::ActiveModelTrait::insert(
        entities::webhook_endpoint::ActiveModel {
            id: sea_orm::Set(endpoint_id),
            owner_id: sea_orm::Set(Some(user_uuid(&user))),
            url: sea_orm::Set(receiver.url.clone()),
            secret: sea_orm::Set("whsec_planted".into()),
            event_kinds: sea_orm::Set(json!(["READY"])),
            enabled: sea_orm::Set(true),
            disabled_reason: sea_orm::Set(None),
            consecutive_failures: sea_orm::Set(0),
            created_at: sea_orm::Set(now),
            updated_at: sea_orm::Set(now),
        },
        &app.state.db,
    )
    .await
    .unwrap();
    let video = insert_video(&app, &user, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let refused = eventually(100, || async {
        deliveries(&app, &user, &endpoint_id.to_string()).await.first().is_some_and(|d| d["attemptCount"] == 1)
    })
    .await;
    assert!(refused);
    let log = deliveries(&app, &user, &endpoint_id.to_string()).await;
    let error = log[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("loopback"), "{error}");
    assert!(log[0]["attempts"][0]["statusCode"].is_null());
    assert!(receiver.hits().is_empty(), "the internal target was contacted");
}

#[actix_web::test]
async fn strangers_endpoint_never_receives_events_of_a_video_it_cannot_see() {
    let app = app_allowing_private(|_| {}).await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let admin = app.create_user_with_role(entities::Role::Admin).await;
    let owners_receiver = start_receiver(vec![]).await;
    let strangers_receiver = start_receiver(vec![]).await;
    let global_receiver = start_receiver(vec![]).await;
    let all = ["UPLOADED", "PROCESSING", "RENDITION_READY", "READY", "FAILED", "CANCELLED", "DELETED"];
    create_webhook(&app, &owner, &owners_receiver.url, &all, false).await;
    let (strangers_webhook, _) = create_webhook(&app, &stranger, &strangers_receiver.url, &all, false).await;
    let (global_webhook, global_secret) = create_webhook(&app, &admin, &global_receiver.url, &all, true).await;
    assert_eq!(global_webhook["global"], true);

    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    transition_on(&app, video.id, VideoStatus::Processing, EventKind::Processing, None).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;

    owners_receiver.wait_for(&app, 2).await;
    let global_hits = global_receiver.wait_for(&app, 2).await;
    assert_signed(&global_hits[0], &global_secret);
    pump_for(&app, Duration::from_millis(500)).await;
    assert!(strangers_receiver.hits().is_empty(), "the stranger heard of a private video");
    assert!(deliveries(&app, &stranger, strangers_webhook["id"].as_str().unwrap()).await.is_empty());

    // The stranger does not see the others' endpoints either; the admin sees all.
    let (_, body) = app.graphql_as(&stranger.bearer(), "{ webhooks { id } }", json!({})).await;
    assert_eq!(body["data"]["webhooks"].as_array().unwrap().len(), 1);
    let (_, body) = app
        .graphql_as(
            &stranger.bearer(),
            "query($id: ID!) { webhookDeliveries(webhookId: $id) { edges { node { id } } } }",
            json!({ "id": global_webhook["id"] }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
}

#[actix_web::test]
async fn redelivery_sends_again_with_the_same_id() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let (webhook, secret) = create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let first = receiver.wait_for(&app, 1).await;

    let webhook_id = webhook["id"].as_str().unwrap();
    let ok =
        pump_until(&app, || async { deliveries(&app, &owner, webhook_id).await[0]["status"] == "SUCCEEDED" }).await;
    assert!(ok);
    let delivery_id = deliveries(&app, &owner, webhook_id).await[0]["id"].as_str().unwrap().to_string();
    assert_eq!(delivery_id, first[0].id);

    let redeliver = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id status } }";
    let (_, body) = app.graphql_as(&stranger.bearer(), redeliver, json!({ "id": delivery_id })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let (_, body) = app.graphql_as(&owner.bearer(), redeliver, json!({ "id": delivery_id })).await;
    assert_eq!(body["data"]["redeliverWebhook"]["id"], delivery_id.as_str(), "{body}");

    let hits = receiver.wait_for(&app, 2).await;
    assert_eq!(hits[1].id, delivery_id, "same idempotency id");
    assert_eq!(hits[1].body, hits[0].body, "same payload");
    assert_signed(&hits[1], &secret);
    let ok = pump_until(&app, || async {
        let log = deliveries(&app, &owner, webhook_id).await;
        log[0]["status"] == "SUCCEEDED" && log[0]["attemptCount"] == 2
    })
    .await;
    assert!(ok);
    assert_eq!(deliveries(&app, &owner, webhook_id).await.len(), 1);

    // Deleting the endpoint removes it and its log.
    let (_, body) = app
        .graphql_as(&owner.bearer(), "mutation($id: ID!) { deleteWebhook(id: $id) }", json!({ "id": webhook_id }))
        .await;
    assert_eq!(body["data"]["deleteWebhook"], true);
    let (_, body) = app.graphql_as(&owner.bearer(), "{ webhooks { id } }", json!({})).await;
    assert_eq!(body["data"]["webhooks"], json!([]));
}

#[actix_web::test]
async fn pending_deliveries_are_rows_sent_once_by_racing_senders() {
    // No delivery loop in this process: the rows wait, as they would across a restart.
    let app = app_allowing_private(|s| s.webhooks.deliver = false).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (webhook, secret) = create_webhook(&app, &owner, &receiver.url, &["RENDITION_READY"], false).await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    for name in ["1080p", "720p", "480p", "360p", "240p"] {
        transition_on(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some(name)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.hits().is_empty());
    let webhook_id = webhook["id"].as_str().unwrap();
    let log = deliveries(&app, &owner, webhook_id).await;
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|d| d["status"] == "PENDING" && d["attemptCount"] == 0));

    // Three senders step the same queue at once: each delivery is claimed by one.
    let settings = app.state.settings.webhooks.clone();
    let db = &app.state.db;
    let secrets = &secrets(&app);
    let (a, b, c) = tokio::join!(
        reelhouse::webhooks::delivery::deliver_due(db, &settings, secrets),
        reelhouse::webhooks::delivery::deliver_due(db, &settings, secrets),
        reelhouse::webhooks::delivery::deliver_due(db, &settings, secrets),
    );
    assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 5, "every delivery attempted exactly once");
    let hits = receiver.hits();
    assert_eq!(hits.len(), 5);
    let ids: std::collections::HashSet<_> = hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids.len(), 5);
    for hit in &hits {
        assert_signed(hit, &secret);
    }
    assert_eq!(
        reelhouse::webhooks::delivery::deliver_due(db, &settings, secrets).await.unwrap(),
        0,
        "nothing left due"
    );
    let log = deliveries(&app, &owner, webhook_id).await;
    assert!(log.iter().all(|d| d["status"] == "SUCCEEDED" && d["attemptCount"] == 1), "{log:?}");
}

#[actix_web::test]
async fn webhook_mutations_and_redelivery_are_rate_limited() {
    let app = app_allowing_private(|s| {
        s.rate_limit.policies.insert(
            reelhouse::limits::Policy::Webhook,
            reelhouse::config::rate_limit::PolicySettings::new(1, 3600, 3, true),
        );
    })
    .await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let (webhook, _) = create_webhook(&app, &user, "http://127.0.0.1:9/hook", &["READY"], false).await;
    let redeliver = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }";
    let unknown = json!({ "id": uuid::Uuid::now_v7().to_string() });
    for _ in 0..2 {
        let (_, body) = app.graphql_as(&user.bearer(), redeliver, unknown.clone()).await;
        assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    }
    let (_, body) = app.graphql_as(&user.bearer(), redeliver, unknown.clone()).await;
    assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "redelivery is charged: {body}");
    let update = "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: false }) { id } }";
    let (_, body) = app.graphql_as(&user.bearer(), update, json!({ "id": webhook["id"] })).await;
    assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    // Per user: somebody else still has room, and deleting is never refused.
    create_webhook(&app, &other, "http://127.0.0.1:9/hook", &["READY"], false).await;
    let (_, body) = app
        .graphql_as(&user.bearer(), "mutation($id: ID!) { deleteWebhook(id: $id) }", json!({ "id": webhook["id"] }))
        .await;
    assert_eq!(body["data"]["deleteWebhook"], true, "{body}");
}

#[actix_web::test]
async fn endpoints_per_user_are_capped() {
    let app = app_allowing_private(|s| s.webhooks.max_endpoints_per_user = 2).await;
    let user = app.register_user().await;
    for _ in 0..2 {
        create_webhook(&app, &user, "http://127.0.0.1:9/hook", &["READY"], false).await;
    }
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { secret } }",
            json!({ "input": { "url": "http://127.0.0.1:9/hook", "events": ["READY"] } }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    let (_, body) = app.graphql_as(&user.bearer(), "{ webhooks { id } }", json!({})).await;
    assert_eq!(body["data"]["webhooks"].as_array().unwrap().len(), 2);
    // Another user has their own allowance.
    let other = app.register_user().await;
    create_webhook(&app, &other, "http://127.0.0.1:9/hook", &["READY"], false).await;
}

/// A proxy from the environment would connect to an address nobody checked; the
/// delivery goes straight to the pinned address instead.
#[actix_web::test]
async fn deliveries_ignore_proxy_settings_from_the_environment() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    // Set after the test's own client is built (reqwest reads the environment when a
    // client is built). nextest runs every test in its own process, so this changes
    // nobody else's environment.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(name, &proxy_url);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    let proxied = Arc::new(Mutex::new(0usize));
    let seen = proxied.clone();
    actix_rt::spawn(async move {
        while let Ok((mut socket, _)) = proxy.accept().await {
            *seen.lock().unwrap() += 1;
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let reached = pump_until(&app, || async { !receiver.hits().is_empty() || *proxied.lock().unwrap() > 0 }).await;
    assert!(reached, "the delivery went nowhere");
    assert_eq!(*proxied.lock().unwrap(), 0, "the delivery went through the proxy");
    assert_eq!(receiver.hits().len(), 1);
}

/// Secrets are sealed at rest (issue 18): the row holds no trace of the secret, yet
/// deliveries are signed with it.
#[actix_web::test]
async fn webhook_secrets_are_stored_sealed() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (webhook, secret) = create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    let id = uuid::Uuid::parse_str(webhook["id"].as_str().unwrap()).unwrap();
    let row = entities::webhook_endpoint::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap();
    let hex = secret.trim_start_matches("whsec_");
    assert!(!row.secret.contains(hex), "stored in plain text: {}", row.secret);
    assert!(row.secret.starts_with("enc1:"), "{}", row.secret);
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let hits = receiver.wait_for(&app, 1).await;
    assert_signed(&hits[0], &secret);
}

/// Rows stored before sealing keep working, and the startup pass seals them.
#[actix_web::test]
async fn secrets_stored_in_plain_text_are_sealed_at_startup() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (webhook, _) = create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    let id = uuid::Uuid::parse_str(webhook["id"].as_str().unwrap()).unwrap();
    let legacy = "whsec_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    entities::webhook_endpoint::Entity::update_many()
        .col_expr(entities::webhook_endpoint::Column::Secret, sea_orm::sea_query::Expr::value(legacy))
        .filter(entities::webhook_endpoint::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    assert_signed(&receiver.wait_for(&app, 1).await[0], legacy);

    let sealed = reelhouse::webhooks::secrets::seal_stored_secrets(&app.state.db, &secrets(&app)).await.unwrap();
    assert_eq!(sealed, 1);
    let row = entities::webhook_endpoint::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap();
    assert!(row.secret.starts_with("enc1:") && !row.secret.contains(&legacy[6..]), "{}", row.secret);
    assert_eq!(secrets(&app).open(id, &row.secret).unwrap(), legacy);
    assert_eq!(reelhouse::webhooks::secrets::seal_stored_secrets(&app.state.db, &secrets(&app)).await.unwrap(), 0);
}

/// Standard Webhooks (issue 24): deliveries carry `webhook-id`, `webhook-timestamp`
/// and `webhook-signature`, and the official verifier libraries accept them as they
/// are, given the secret `createWebhook` answered.
#[actix_web::test]
async fn official_standard_webhooks_libraries_verify_deliveries() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![500]).await;
    let owner = app.register_user().await;
    let (_, secret) = create_webhook(&app, &owner, &receiver.url, &["PROCESSING", "READY", "FAILED"], false).await;
    // What the spec's libraries generate and read: whsec_ + base64 of 24..64 bytes.
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    assert_eq!(key.len(), 32, "{secret}");

    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Uploading).await;
    transition_on(&app, video.id, VideoStatus::Processing, EventKind::Processing, None).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    // The first attempt gets a 500: its retry carries the same webhook-id, newly signed.
    let hits = receiver.wait_for(&app, 3).await;
    for hit in &hits {
        assert_signed(hit, &secret);
        assert_eq!(hit.header("content-type"), Some("application/json"));
    }
    let ids: std::collections::HashSet<_> = hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids.len(), 2, "the retry has the same id as the first attempt");
    let out = verify_with_official_libraries(&hits, &secret);
    assert!(out.contains("3 verified"), "{out}");
}

/// Secrets issued before Standard Webhooks (`whsec_` + 64 hex digits) keep working
/// unchanged: the official libraries read the hex text as base64 (48 bytes), and so
/// does the server; the legacy headers still carry the old signature.
#[actix_web::test]
async fn secrets_issued_before_standard_webhooks_verify_with_the_official_libraries() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (webhook, _) = create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    let id = uuid::Uuid::parse_str(webhook["id"].as_str().unwrap()).unwrap();
    // Exactly what the previous release issued (hex), stored sealed as it is now.
    let old_secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
    let sealed = secrets(&app).seal(id, &old_secret).unwrap();
    entities::webhook_endpoint::Entity::update_many()
        .col_expr(entities::webhook_endpoint::Column::Secret, sea_orm::sea_query::Expr::value(sealed))
        .filter(entities::webhook_endpoint::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let hits = receiver.wait_for(&app, 1).await;
    assert_signed(&hits[0], &old_secret);
    verify_with_official_libraries(&hits, &old_secret);
}

/// `webhooks.legacy_headers = false` (the next release's behaviour): only the
/// standard headers.
#[actix_web::test]
async fn legacy_headers_can_be_turned_off() {
    let app = app_allowing_private(|s| s.webhooks.legacy_headers = false).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (_, secret) = create_webhook(&app, &owner, &receiver.url, &["READY"], false).await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let hits = receiver.wait_for(&app, 1).await;
    assert!(hits[0].headers.keys().all(|name| !name.starts_with("reelhouse-webhook")), "{:?}", hits[0].headers);
    assert_eq!(hits[0].signature, expected_signature(&secret, &hits[0].id, &hits[0].timestamp, &hits[0].body));
    verify_with_official_libraries(&hits, &secret);
}

const REPLAY: &str = "mutation($id: ID!, $after: String!) { replayWebhooks(endpointId: $id, after: $after) {
    created requeued pending endCursor hasMore } }";

async fn replay(app: &TestApp, user: &TestUser, webhook_id: &str, after: &str) -> Value {
    let (_, body) = app.graphql_as(&user.bearer(), REPLAY, json!({ "id": webhook_id, "after": after })).await;
    body
}

async fn replay_ok(app: &TestApp, user: &TestUser, webhook_id: &str, after: &str) -> Value {
    let body = replay(app, user, webhook_id, after).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["replayWebhooks"].clone()
}

/// A replay from a cursor sends the endpoint's deliveries of the later events
/// again, each with the id it already had (receivers dedupe), in cursor order, and
/// the official libraries verify them.
#[actix_web::test]
async fn replay_resends_deliveries_after_a_cursor_with_their_ids() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let (webhook, secret) = create_webhook(&app, &owner, &receiver.url, &["READY", "FAILED"], false).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let first = transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    transition_on(&app, video.id, VideoStatus::Failed, EventKind::Failed, None).await;
    transition_on(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None).await; // not subscribed
    let last = transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let original = receiver.wait_for(&app, 3).await;
    let ok = pump_until(&app, || async {
        deliveries(&app, &owner, webhook_id).await.iter().all(|d| d["status"] == "SUCCEEDED")
    })
    .await;
    assert!(ok);

    let answer = replay_ok(&app, &owner, webhook_id, &first.cursor.unwrap().to_string()).await;
    assert_eq!(
        answer,
        json!({ "created": 0, "requeued": 2, "pending": 0, "endCursor": last.cursor.unwrap().to_string(), "hasMore": false })
    );
    let hits = receiver.wait_for(&app, 5).await;
    pump_for(&app, Duration::from_millis(300)).await;
    assert_eq!(receiver.hits().len(), 5, "each replayed delivery sent once");
    let replayed = &hits[3..];
    let cursor_of = |hit: &Hit| -> i64 {
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        body["data"]["cursor"].as_str().unwrap().parse().unwrap()
    };
    let mut replayed_cursors: Vec<i64> = replayed.iter().map(cursor_of).collect();
    replayed_cursors.sort_unstable();
    assert!(replayed_cursors.iter().all(|c| *c > first.cursor.unwrap()), "only events after the cursor");
    for hit in replayed {
        let earlier = original.iter().find(|h| cursor_of(h) == cursor_of(hit)).unwrap();
        assert_eq!(hit.id, earlier.id, "a replay keeps the delivery's webhook-id");
        assert_eq!(hit.body, earlier.body, "and its payload");
        assert_signed(hit, &secret);
    }
    let ids: std::collections::HashSet<_> = hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids.len(), 3, "no id beyond one per (endpoint, event)");
    assert_eq!(deliveries(&app, &owner, webhook_id).await.len(), 3, "no new delivery rows");
    verify_with_official_libraries(&hits, &secret);

    // Nothing after the newest event: nothing to do.
    let answer = replay_ok(&app, &owner, webhook_id, &last.cursor.unwrap().to_string()).await;
    assert_eq!(answer, json!({ "created": 0, "requeued": 0, "pending": 0, "endCursor": null, "hasMore": false }));
}

/// Events the endpoint never got a delivery of (it was created later, or was
/// disabled) get new deliveries, once: a second replay re-sends the same ids.
/// Fan-in's visibility holds: a personal endpoint never hears of other users' videos.
#[actix_web::test]
async fn replay_creates_missing_deliveries_once_and_respects_visibility() {
    let app = app_allowing_private(|_| {}).await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let admin = app.create_user_with_role(entities::Role::Admin).await;
    let owners_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let strangers_video = insert_video(&app, &stranger, Visibility::Public, VideoStatus::Processing).await;
    // Before any endpoint exists.
    let before = transition_on(&app, owners_video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    transition_on(&app, strangers_video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let receiver = start_receiver(vec![]).await;
    let global_receiver = start_receiver(vec![]).await;
    let (webhook, secret) = create_webhook(&app, &owner, &receiver.url, &["READY", "FAILED"], false).await;
    let (global, global_secret) = create_webhook(&app, &admin, &global_receiver.url, &["READY"], true).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let global_id = global["id"].as_str().unwrap();
    assert!(deliveries(&app, &owner, webhook_id).await.is_empty());

    // One more while the endpoint is disabled.
    let set_enabled = |enabled: bool| {
        let (app, owner) = (&app, &owner);
        async move {
            let (_, body) = app
                .graphql_as(
                    &owner.bearer(),
                    "mutation($id: ID!, $on: Boolean!) { updateWebhook(id: $id, input: { enabled: $on }) { enabled } }",
                    json!({ "id": webhook_id, "on": enabled }),
                )
                .await;
            assert_eq!(body["data"]["updateWebhook"]["enabled"], enabled, "{body}");
        }
    };
    set_enabled(false).await;
    let while_disabled = transition_on(&app, owners_video.id, VideoStatus::Failed, EventKind::Failed, None).await;
    assert_eq!(error_code(&replay(&app, &owner, webhook_id, "0").await).as_deref(), Some("CONFLICT"));
    set_enabled(true).await;
    assert!(deliveries(&app, &owner, webhook_id).await.is_empty());

    let answer = replay_ok(&app, &owner, webhook_id, "0").await;
    assert_eq!(answer["created"], 2, "{answer}");
    assert_eq!(answer["requeued"], 0);
    assert_eq!(answer["endCursor"], while_disabled.cursor.unwrap().to_string());
    let hits = receiver.wait_for(&app, 2).await;
    let cursors: Vec<String> = hits
        .iter()
        .map(|h| serde_json::from_slice::<Value>(&h.body).unwrap()["data"]["cursor"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut expected = vec![before.cursor.unwrap().to_string(), while_disabled.cursor.unwrap().to_string()];
    expected.sort();
    assert_eq!(cursors, expected, "the owner's events only");
    for hit in &hits {
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body["id"], hit.id.as_str(), "body id is the webhook-id");
        assert_eq!(body["data"]["videoId"], owners_video.id.to_string());
    }
    verify_with_official_libraries(&hits, &secret);
    let ok = pump_until(&app, || async {
        deliveries(&app, &owner, webhook_id).await.iter().all(|d| d["status"] == "SUCCEEDED")
    })
    .await;
    assert!(ok);

    // Again: the same two deliveries, the same ids; nothing new.
    let answer = replay_ok(&app, &owner, webhook_id, "0").await;
    assert_eq!((answer["created"].as_i64(), answer["requeued"].as_i64()), (Some(0), Some(2)), "{answer}");
    let again = receiver.wait_for(&app, 4).await;
    let first_ids: std::collections::BTreeSet<_> = again[..2].iter().map(|h| h.id.clone()).collect();
    let second_ids: std::collections::BTreeSet<_> = again[2..].iter().map(|h| h.id.clone()).collect();
    assert_eq!(first_ids, second_ids);
    assert_eq!(deliveries(&app, &owner, webhook_id).await.len(), 2);

    // The global endpoint (admin) hears of every video's READY.
    let answer = replay_ok(&app, &admin, global_id, "0").await;
    assert_eq!(answer["created"], 2, "{answer}");
    let global_hits = global_receiver.wait_for(&app, 2).await;
    let videos: std::collections::BTreeSet<String> = global_hits
        .iter()
        .map(|h| serde_json::from_slice::<Value>(&h.body).unwrap()["data"]["videoId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(videos, [owners_video.id.to_string(), strangers_video.id.to_string()].into_iter().collect());
    verify_with_official_libraries(&global_hits, &global_secret);
}

/// Who may replay, and which cursors: typed errors, nothing enqueued.
#[actix_web::test]
async fn replay_is_authorized_and_checks_its_cursor() {
    let app = app_allowing_private(|_| {}).await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let admin = app.create_user_with_role(entities::Role::Admin).await;
    let viewer = app.create_user_with_role(entities::Role::Viewer).await;
    let (webhook, _) = create_webhook(&app, &owner, "http://127.0.0.1:9/hook", &["READY"], false).await;
    let (global, _) = create_webhook(&app, &admin, "http://127.0.0.1:9/hook", &["READY"], true).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    for _ in 0..3 {
        transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    }
    let code = |body: Value| error_code(&body);

    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(code(replay(&app, &owner, &unknown, "0").await).as_deref(), Some("NOT_FOUND"));
    assert_eq!(code(replay(&app, &owner, "not-an-id", "0").await).as_deref(), Some("NOT_FOUND"));
    // Not yours: indistinguishable from unknown.
    assert_eq!(code(replay(&app, &stranger, webhook_id, "0").await).as_deref(), Some("NOT_FOUND"));
    assert_eq!(code(replay(&app, &owner, global["id"].as_str().unwrap(), "0").await).as_deref(), Some("NOT_FOUND"));
    assert_eq!(code(replay(&app, &viewer, webhook_id, "0").await).as_deref(), Some("FORBIDDEN"));
    let (_, body) = app.graphql(REPLAY, json!({ "id": webhook_id, "after": "0" })).await;
    assert_eq!(code(body).as_deref(), Some("UNAUTHENTICATED"));
    for bad in ["abc", "-1", "1.5", "", "99999999999999999999"] {
        assert_eq!(code(replay(&app, &owner, webhook_id, bad).await).as_deref(), Some("BAD_USER_INPUT"), "{bad:?}");
    }
    let newest = reelhouse::repo::outbox::newest_cursor(&app.state.db).await.unwrap().unwrap();
    assert_eq!(
        code(replay(&app, &owner, webhook_id, &(newest + 1).to_string()).await).as_deref(),
        Some("BAD_USER_INPUT"),
        "a cursor from the future"
    );
    // Nothing of that was enqueued: the three fan-in deliveries are all there is.
    let log = deliveries(&app, &owner, webhook_id).await;
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d["attemptCount"] == 0), "{log:?}");

    // Admins may replay any endpoint.
    let answer = replay_ok(&app, &admin, webhook_id, "0").await;
    assert_eq!(answer["pending"], 3, "pending deliveries are left alone: {answer}");
    assert_eq!((answer["created"].as_i64(), answer["requeued"].as_i64()), (Some(0), Some(0)));

    // Past the retention: the events after the cursor are gone.
    reelhouse::repo::outbox::prune(&app.state.db, chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(code(replay(&app, &owner, webhook_id, "0").await).as_deref(), Some("CURSOR_EXPIRED"));
    let answer = replay_ok(&app, &owner, webhook_id, &(newest - 1).to_string()).await;
    assert_eq!(answer["endCursor"], newest.to_string(), "{answer}");
    // Without `after`: whatever is kept, knowingly.
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation($id: ID!) { replayWebhooks(endpointId: $id) { pending endCursor hasMore } }",
            json!({ "id": webhook_id }),
        )
        .await;
    assert_eq!(
        body["data"]["replayWebhooks"],
        json!({ "pending": 1, "endCursor": newest.to_string(), "hasMore": false }),
        "{body}"
    );
}

/// One call enqueues at most `webhooks.replay_max_events`; `endCursor` and `hasMore`
/// page through the rest, each event once.
#[actix_web::test]
async fn replay_is_bounded_and_pages_with_end_cursor() {
    let app = app_allowing_private(|s| s.webhooks.replay_max_events = 2).await;
    let receiver = start_receiver(vec![]).await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    for name in ["1080p", "720p", "480p", "360p", "240p"] {
        transition_on(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some(name)).await;
    }
    let (webhook, _) = create_webhook(&app, &owner, &receiver.url, &["RENDITION_READY"], false).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let mut after = "0".to_string();
    let mut pages = Vec::new();
    loop {
        let answer = replay_ok(&app, &owner, webhook_id, &after).await;
        pages.push(answer["created"].as_i64().unwrap());
        if answer["hasMore"] == false {
            break;
        }
        after = answer["endCursor"].as_str().unwrap().to_string();
        assert!(pages.len() < 10, "no end");
    }
    assert_eq!(pages, [2, 2, 1]);
    let hits = receiver.wait_for(&app, 5).await;
    pump_for(&app, Duration::from_millis(300)).await;
    assert_eq!(receiver.hits().len(), 5);
    let ids: std::collections::HashSet<_> = hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids.len(), 5);
}

/// Replays are charged per delivery (`webhook_replay`), on top of one `webhook`
/// token per call; a call never enqueues more than the bucket holds.
#[actix_web::test]
async fn replay_is_rate_limited_per_delivery() {
    let app = app_allowing_private(|s| {
        s.rate_limit.policies.insert(
            reelhouse::limits::Policy::WebhookReplay,
            reelhouse::config::rate_limit::PolicySettings::new(1, 3600, 3, true),
        );
    })
    .await;
    let owner = app.register_user().await;
    let other = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    for _ in 0..5 {
        transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    }
    let (webhook, _) = create_webhook(&app, &owner, "http://127.0.0.1:9/hook", &["READY"], false).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let answer = replay_ok(&app, &owner, webhook_id, "0").await;
    assert_eq!(answer["created"], 3, "capped at the bucket's burst: {answer}");
    assert_eq!(answer["hasMore"], true);
    let body = replay(&app, &owner, webhook_id, answer["endCursor"].as_str().unwrap()).await;
    assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    assert_eq!(deliveries(&app, &owner, webhook_id).await.len(), 3, "nothing enqueued when refused");
    // Per user: another user's replay still goes through.
    let video = insert_video(&app, &other, Visibility::Public, VideoStatus::Processing).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let (webhook, _) = create_webhook(&app, &other, "http://127.0.0.1:9/hook", &["READY"], false).await;
    let answer = replay_ok(&app, &other, webhook["id"].as_str().unwrap(), "0").await;
    assert_eq!(answer["created"], 1, "{answer}");
}
