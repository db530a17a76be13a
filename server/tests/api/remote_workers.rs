//! Remote workers (`reelhouse worker --server URL` with a worker token, nothing
//! else) as real processes against a real API server, on both backends: SQLite +
//! local disk (presigned URLs are the server's signed `/storage` routes) and
//! PostgreSQL + Redis + S3. The channel's refusals are checked with a raw
//! WebSocket client speaking the protocol, as a stranger or a misbehaving worker would.

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use entities::{event_outbox, job, video, JobKind, JobStatus, Role, VideoStatus, Visibility};
use futures::{SinkExt, StreamExt};
use reelhouse::jobs::{enqueue, NewJob, DEFAULT_PRIORITY};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{eventually, reelhouse_command, spawn_app_with, TestApp, TestUser};

/// An API server that runs no local worker: every transcode is a remote worker's.
pub(crate) async fn remote_app(customize: impl FnOnce(&mut reelhouse::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.workers.embedded = false;
        crate::uploads::short_s3_prefix(s);
        s.jobs.poll_interval_ms = 50;
        customize(s);
    })
    .await
}

const CREATE_TOKEN: &str = "mutation($name: String!, $capacity: Int, $tags: [String!]) {
    createWorkerToken(name: $name, capacity: $capacity, tags: $tags) {
        token worker { id name prefix capacity tags revokedAt }
    }
}";

/// Mint a worker token as `admin`; (secret, id).
pub(crate) async fn mint_token(app: &TestApp, admin: &TestUser, capacity: i32) -> (String, String) {
    let (_, body) = app.graphql_as(&admin.bearer(), CREATE_TOKEN, json!({ "name": "box", "capacity": capacity })).await;
    let payload = &body["data"]["createWorkerToken"];
    let secret = payload["token"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    (secret, payload["worker"]["id"].as_str().unwrap().to_string())
}

async fn revoke_token(app: &TestApp, admin: &TestUser, id: &str) -> Value {
    let (_, body) =
        app.graphql_as(&admin.bearer(), "mutation($id: ID!) { revokeWorkerToken(id: $id) }", json!({ "id": id })).await;
    body
}

/// `reelhouse worker --server URL` with the token in its environment and nothing
/// else of the server's (no database, no storage settings). Fast encodes.
fn remote_worker(server: &str, token: &str) -> (tokio::process::Child, tempfile::TempDir) {
    remote_worker_with(server, token, |_| {})
}

/// [`remote_worker`] with more of its environment set by `customize`.
pub(crate) fn remote_worker_with(
    server: &str,
    token: &str,
    customize: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = reelhouse_command();
    cmd.arg("worker")
        .arg("--server")
        .arg(server)
        .arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE_WORKER_TOKEN", token)
        .env("REELHOUSE__WORKERS__CONCURRENCY", "1")
        .env("REELHOUSE__SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
        .env("REELHOUSE__MEDIA__SPEED_PRESET", "ultrafast")
        .env("REELHOUSE__MEDIA__SEGMENT_SECONDS", "1");
    let log = std::fs::File::create(dir.path().join("worker.log")).unwrap();
    cmd.stdout(Stdio::null()).stderr(log);
    customize(&mut cmd);
    (cmd.spawn().unwrap(), dir)
}

pub(crate) fn worker_log(dir: &tempfile::TempDir) -> String {
    crate::helpers::strip_ansi(&std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default())
}

/// The environment a process was started with (Linux).
fn environment_of(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).to_string()).collect()
}

/// A video owned by a new user with `clip` as its source and a TRANSCODE job queued.
pub(crate) async fn video_with_job(app: &TestApp, clip: Vec<u8>) -> (Uuid, Uuid) {
    let owner = app.create_user_with_role(Role::User).await;
    let owner_id = Uuid::parse_str(&owner.id).unwrap();
    let video_id = Uuid::now_v7();
    let key = reelhouse::storage::layout::source(owner_id, video_id);
    let size = clip.len() as i64;
    app.state.store.put_bytes(&key, clip.into(), Some("video/mp4")).await.unwrap();
    let now = Utc::now();
    video::ActiveModel {
        id: Set(video_id),
        owner_id: Set(owner_id),
        title: Set("remote".into()),
        description: Set(String::new()),
        tags: Set(video::Tags(vec![])),
        visibility: Set(Visibility::Private),
        status: Set(VideoStatus::Processing),
        source_key: Set(Some(key)),
        source_size_bytes: Set(Some(size)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let job = enqueue(
        &app.state.db,
        NewJob {
            kind: JobKind::Transcode,
            video_id: Some(video_id),
            owner_id: Some(owner_id),
            priority: DEFAULT_PRIORITY,
            payload: json!({ "preset": "LOW" }),
            max_attempts: 3,
        },
    )
    .await
    .unwrap();
    (video_id, job.id)
}

pub(crate) async fn job_row(app: &TestApp, id: Uuid) -> job::Model {
    job::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap()
}

pub(crate) async fn ready_events(app: &TestApp, video_id: Uuid) -> u64 {
    event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .filter(event_outbox::Column::Kind.eq("READY"))
        .count(&app.state.db)
        .await
        .unwrap()
}

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw client on `/workers/ws` with the worker subprotocol.
pub(crate) async fn channel(app: &TestApp) -> Socket {
    let mut request = app.ws_url("/workers/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "reelhouse-worker.v1".parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("worker channel upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "reelhouse-worker.v1");
    socket
}

pub(crate) async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::Text(message.to_string().into())).await.unwrap();
}

/// The next JSON message, or the close code if the server closed.
pub(crate) async fn next(socket: &mut Socket) -> Result<Value, Option<u16>> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("a frame in time");
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Read until a message of `kind` arrives (answering pings on the way).
pub(crate) async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = next(socket).await.unwrap_or_else(|code| panic!("closed ({code:?}) waiting for {kind}"));
        if message["type"] == kind {
            return message;
        }
    }
}

/// The SHA-256 of ten bytes of 1 (the body the tests PUT).
pub(crate) const TEN_ONES_SHA256: &str = "ffadf8d89d37b3b55fe1847b513cf92e3be87e4c168708c7851845df96fb36be";

pub(crate) fn hello(token: &str, version: u32) -> Value {
    json!({ "type": "hello", "version": version, "token": token, "capacity": 1, "reelhouse": "test", "gstreamer": null })
}

#[actix_web::test]
async fn worker_tokens_are_minted_by_admins_only_shown_once_listed_audited_and_revoked() {
    let app = remote_app(|_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.create_user_with_role(Role::User).await;
    let (_, body) = app.graphql_as(&user.bearer(), CREATE_TOKEN, json!({ "name": "mine" })).await;
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let (_, body) = app.graphql_as(&admin.bearer(), CREATE_TOKEN, json!({ "name": "x", "capacity": 0 })).await;
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    let (_, body) = app
        .graphql_as(&admin.bearer(), CREATE_TOKEN, json!({ "name": "gpu box", "capacity": 2, "tags": ["GPU"] }))
        .await;
    let payload = &body["data"]["createWorkerToken"];
    let secret = payload["token"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(secret.starts_with("rhw_"), "{secret}");
    assert_eq!(payload["worker"]["name"], "gpu box");
    assert_eq!(payload["worker"]["capacity"], 2);
    assert_eq!(payload["worker"]["tags"], json!(["gpu"]));
    assert!(secret.starts_with(payload["worker"]["prefix"].as_str().unwrap()));
    let id = payload["worker"]["id"].as_str().unwrap().to_string();
    // Stored hashed: the secret is nowhere in the table.
    let row = entities::worker_token::Entity::find().one(&app.state.db).await.unwrap().unwrap();
    assert_ne!(row.secret_hash, secret);
    assert!(!row.secret_hash.contains(&secret[4..]));

    let (_, body) = app.graphql_as(&admin.bearer(), "{ workerTokens { id name prefix revokedAt } }", json!({})).await;
    assert_eq!(body["data"]["workerTokens"][0]["id"], id.as_str(), "{body}");
    assert!(!body.to_string().contains(secret), "the list never shows the secret");
    let (_, body) = app.graphql_as(&user.bearer(), "{ workerTokens { id } }", json!({})).await;
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");

    let (_, body) =
        app.graphql_as(&user.bearer(), "mutation($id: ID!) { revokeWorkerToken(id: $id) }", json!({ "id": id })).await;
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    assert_eq!(revoke_token(&app, &admin, &id).await["data"]["revokeWorkerToken"], true);
    assert_eq!(revoke_token(&app, &admin, &id).await["data"]["revokeWorkerToken"], false);
    let body = revoke_token(&app, &admin, &Uuid::now_v7().to_string()).await;
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");

    let actions: Vec<String> = entities::audit_event::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("WORKER_TOKEN"))
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "WORKER_TOKEN_CREATED").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "WORKER_TOKEN_REVOKED").count(), 1, "{actions:?}");
}

#[actix_web::test]
async fn the_worker_channel_refuses_strangers_bad_versions_and_revoked_tokens_with_typed_closes() {
    let app = remote_app(|_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;

    // Without the subprotocol there is no upgrade.
    let request = app.ws_url("/workers/ws").into_client_request().unwrap();
    assert!(tokio_tungstenite::connect_async(request).await.is_err());

    // A stranger: no token, a made-up token, anything but hello first.
    let mut socket = channel(&app).await;
    send(&mut socket, hello("", 1)).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4401));
    let mut socket = channel(&app).await;
    send(&mut socket, hello("rhw_abcdefghijklmnopqrstuvwxyz012345_abcdef", 1)).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4401));
    let mut socket = channel(&app).await;
    send(&mut socket, json!({ "type": "heartbeat", "leases": [] })).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4401));
    let mut socket = channel(&app).await;
    send(&mut socket, json!({ "hello": "there" })).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4400));

    // A real token with another protocol version: typed close before the token is looked at.
    let (secret, id) = mint_token(&app, &admin, 1).await;
    for version in [0, 2] {
        let mut socket = channel(&app).await;
        send(&mut socket, hello(&secret, version)).await;
        assert_eq!(next(&mut socket).await.unwrap_err(), Some(4426), "version {version}");
    }
    // The right version: welcome.
    let mut socket = channel(&app).await;
    send(&mut socket, hello(&secret, 1)).await;
    let welcome = next_of(&mut socket, "welcome").await;
    assert!(welcome["worker_id"].is_string(), "{welcome}");
    // Revoked while connected: closed at once with 4403; revoked at hello: 4403.
    revoke_token(&app, &admin, &id).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4403));
    let mut socket = channel(&app).await;
    send(&mut socket, hello(&secret, 1)).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4403));
}

#[actix_web::test]
async fn a_worker_may_only_sign_puts_under_its_jobs_output_prefix_and_a_late_result_is_refused() {
    let app = remote_app(|s| {
        s.jobs.lease_secs = 5;
        s.jobs.sweep_interval_secs = 1;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let clip = std::fs::read(crate::runner::landscape_clip()).unwrap();
    let (video_id, job_id) = video_with_job(&app, clip).await;

    let mut socket = channel(&app).await;
    send(&mut socket, hello(&secret, 1)).await;
    next_of(&mut socket, "welcome").await;
    let assign = next_of(&mut socket, "assign").await;
    assert_eq!(assign["job"], job_id.to_string());
    let lease = assign["lease"].as_str().unwrap().to_string();
    assert_eq!(assign["source"]["method"], "GET");
    // The presigned GET serves the source to anyone holding it (and nothing else).
    let source = app.client.get(assign["source"]["url"].as_str().unwrap()).send().await.unwrap();
    assert!(source.status().is_success());
    send(&mut socket, json!({ "type": "accept", "job": job_id, "lease": lease })).await;
    // A heartbeat renews the lease and says it is ours.
    send(&mut socket, json!({ "type": "heartbeat", "leases": [{ "job": job_id, "lease": lease }] })).await;
    let renewed = next_of(&mut socket, "lease").await;
    assert_eq!(renewed["owned"], true, "{renewed}");
    assert_eq!(renewed["cancel"], false, "{renewed}");

    let row = job_row(&app, job_id).await;
    assert!(row.lease_owner.as_deref().unwrap().starts_with("remote:"), "{:?}", row.lease_owner);
    let prefix = reelhouse::storage::layout::Outputs::new(
        Uuid::parse_str(assign["spec"]["owner_id"].as_str().unwrap()).unwrap(),
        video_id,
        Some(assign["spec"]["version"].as_str().unwrap()),
    )
    .prefix()
    .to_string();
    let source_key = reelhouse::storage::layout::source(
        Uuid::parse_str(assign["spec"]["owner_id"].as_str().unwrap()).unwrap(),
        video_id,
    );
    // Keys outside this job's outputs (the source itself, a path escape) are refused.
    for (request, key) in [(1, source_key.clone()), (2, format!("{prefix}../../source")), (3, "other".to_string())] {
        send(
            &mut socket,
            json!({ "type": "upload_url", "request": request, "job": job_id, "lease": lease,
                    "key": key, "content_type": "video/mp4", "size": 10, "sha256": TEN_ONES_SHA256 }),
        )
        .await;
        let answer = next_of(&mut socket, "refused").await;
        assert_eq!(answer["request"], request);
        assert_eq!(answer["code"], "FORBIDDEN_KEY", "{answer}");
    }
    // A key under the prefix gets a working PUT.
    let key = format!("{prefix}poster.jpg");
    send(
        &mut socket,
        json!({ "type": "upload_url", "request": 4, "job": job_id, "lease": lease,
                "key": key, "content_type": "image/jpeg", "size": 10, "sha256": TEN_ONES_SHA256 }),
    )
    .await;
    let answer = next_of(&mut socket, "upload_url").await;
    let mut put = app.client.put(answer["url"]["url"].as_str().unwrap()).body(vec![1u8; 10]);
    for pair in answer["url"]["headers"].as_array().unwrap() {
        put = put.header(pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    assert_eq!(app.state.store.head(&key).await.unwrap().size, 10);

    // No heartbeats: the lease expires and the sweeper gives the job back.
    assert!(
        eventually(200, || async { job_row(&app, job_id).await.status == JobStatus::Queued }).await,
        "the lease of a silent worker expires"
    );
    // The late result of that lease is refused, and changes nothing.
    let output = json!({
        "video_id": video_id, "renditions": [], "master_playlist_key": format!("{prefix}hls/master.m3u8"),
        "probe": { "duration_ms": 3000, "width": 640, "height": 360, "frame_rate": 25.0, "rotation": 0,
                   "has_audio": true, "container": null, "video_codec": null, "audio_codec": null,
                   "source_size_bytes": 1 },
        "download": { "key": format!("{prefix}mp4/video.mp4"), "format": "MP4", "preset": "LOW",
                      "width": 640, "height": 360, "bytes": 1 },
        "poster_key": key, "thumbnail_keys": [],
        "storyboard": { "image_key": format!("{prefix}storyboard.jpg"), "vtt_key": format!("{prefix}storyboard.vtt"),
                        "tiles": 1, "columns": 1, "rows": 1, "tile_width": 1, "tile_height": 1 },
        "output_bytes": 10, "output_version": assign["spec"]["version"],
    });
    send(&mut socket, json!({ "type": "result", "job": job_id, "lease": lease, "output": output, "files": [] })).await;
    let finished = next_of(&mut socket, "finished").await;
    assert_eq!(finished["accepted"], false, "{finished}");
    assert_eq!(finished["code"], "LEASE_LOST", "{finished}");
    let row = job_row(&app, job_id).await;
    assert_ne!(row.status, JobStatus::Succeeded);
    assert_eq!(ready_events(&app, video_id).await, 0);
    // An upload URL for the lost lease is refused too.
    send(
        &mut socket,
        json!({ "type": "upload_url", "request": 5, "job": job_id, "lease": lease,
                "key": key, "content_type": "image/jpeg", "size": 10, "sha256": TEN_ONES_SHA256 }),
    )
    .await;
    assert_eq!(next_of(&mut socket, "refused").await["code"], "LEASE_LOST");
}

#[actix_web::test]
async fn an_upload_becomes_ready_on_a_remote_worker_started_with_only_a_url_and_a_token() {
    let app = remote_app(|_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let user = app.register_user().await;
    let video = crate::e2e::create_video(&app, &user, "PRIVATE").await;
    crate::worker_process::upload_landscape_clip(&app, &user, &video).await;

    let (mut worker, dir) = remote_worker(&app.address, &secret);
    let env = environment_of(worker.id().unwrap());
    for name in ["DATABASE_URL", "REELHOUSE__DATABASE", "S3_", "REELHOUSE__STORAGE", "REDIS_URL", "REELHOUSE__REDIS"] {
        assert!(!env.iter().any(|kv| kv.starts_with(name)), "{name} in the remote worker's environment: {env:?}");
    }
    assert!(!env.iter().any(|kv| kv.contains(&secret) && !kv.starts_with("REELHOUSE_WORKER_TOKEN=")));

    let video_id = Uuid::parse_str(&video).unwrap();
    let db = app.state.db.clone();
    // While connected, the admin list shows it as REMOTE.
    assert!(
        eventually(300, || async {
            let (_, body) = app
                .graphql_as(&admin.bearer(), "{ workers { kind name state version gstreamerVersion } }", json!({}))
                .await;
            body["data"]["workers"].as_array().is_some_and(|w| w.iter().any(|w| w["kind"] == "REMOTE"))
        })
        .await,
        "the remote worker is listed: {}",
        worker_log(&dir)
    );
    let ready = eventually(1200, || async {
        video::Entity::find_by_id(video_id).one(&db).await.unwrap().is_some_and(|v| v.status == VideoStatus::Ready)
    })
    .await;
    assert!(ready, "the remote worker made the video READY: {}", worker_log(&dir));
    let (_, body) = app.graphql_as(&admin.bearer(), "{ systemStatus { workers { kind name } } }", json!({})).await;
    assert!(body.to_string().contains("REMOTE"), "{body}");
    crate::worker_process::sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await.unwrap().unwrap();
    assert!(status.success(), "a drained remote worker exits cleanly: {}", worker_log(&dir));

    assert_eq!(ready_events(&app, video_id).await, 1);
    // A first transcode: the lowest rung was published early, before the one READY,
    // as a local worker's run does it.
    let kinds: Vec<String> = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .order_by_asc(event_outbox::Column::Seq)
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let rendition_at = kinds.iter().position(|k| k == "RENDITION_READY").unwrap_or_else(|| panic!("{kinds:?}"));
    let ready_at = kinds.iter().position(|k| k == "READY").unwrap();
    assert!(rendition_at < ready_at, "{kinds:?}");
    let job = job::Entity::find().filter(job::Column::VideoId.eq(video_id)).one(&db).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    // The remote worker's log lines reached the job log as a local worker's do.
    let lines: Vec<String> =
        reelhouse::repo::job_logs::lines(&db, job.id).await.unwrap().into_iter().map(|l| l.message).collect();
    assert!(lines.iter().any(|l| l.contains("leased by remote:")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("encoding:")), "{lines:?}");
    // Playback works from what the worker stored.
    let v = video::Entity::find_by_id(video_id).one(&db).await.unwrap().unwrap();
    let master = reelhouse::storage::layout::Outputs::new(v.owner_id, v.id, v.output_version.as_deref()).hls_master();
    assert!(app.state.store.head(&master).await.is_ok(), "the master playlist is stored");
}

#[actix_web::test]
async fn revoking_a_token_mid_job_closes_its_worker_and_returns_the_job_to_the_queue() {
    let app = remote_app(|_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, id) = mint_token(&app, &admin, 1).await;
    let (_, job_id) = video_with_job(&app, crate::worker_process::fixture_clip()).await;
    let (mut worker, dir) = remote_worker(&app.address, &secret);
    assert!(
        eventually(600, || async {
            let row = job_row(&app, job_id).await;
            row.status == JobStatus::Running && row.progress.is_some()
        })
        .await,
        "the remote worker starts encoding: {}",
        worker_log(&dir)
    );
    assert_eq!(revoke_token(&app, &admin, &id).await["data"]["revokeWorkerToken"], true);
    // Given back at once (the attempt refunded), not after the lease.
    let row = job_row(&app, job_id).await;
    assert_eq!(row.status, JobStatus::Queued, "{row:?}");
    assert_eq!(row.attempts, 0);
    assert!(row.lease_token.is_none());
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "a revoked worker stops with an error");
    assert!(worker_log(&dir).contains("4403"), "{}", worker_log(&dir));
}

#[actix_web::test]
async fn a_remote_worker_killed_mid_encode_loses_its_job_to_another_that_finishes_it_once() {
    let app = remote_app(|s| {
        s.jobs.lease_secs = 3;
        s.jobs.sweep_interval_secs = 1;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let (video_id, job_id) = video_with_job(&app, crate::worker_process::fixture_clip()).await;
    let (mut a, dir_a) = remote_worker(&app.address, &secret);
    assert!(
        eventually(600, || async {
            let row = job_row(&app, job_id).await;
            row.status == JobStatus::Running && row.progress.is_some()
        })
        .await,
        "worker A starts encoding: {}",
        worker_log(&dir_a)
    );
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let (mut b, dir_b) = remote_worker(&app.address, &secret);
    let finished = eventually(1800, || async { job_row(&app, job_id).await.status == JobStatus::Succeeded }).await;
    crate::worker_process::sigterm(&b);
    let _ = tokio::time::timeout(Duration::from_secs(60), b.wait()).await;
    assert!(finished, "the job is re-leased after the lease and completes: {}", worker_log(&dir_b));
    assert_eq!(job_row(&app, job_id).await.attempts, 2);
    let v = video::Entity::find_by_id(video_id).one(&app.state.db).await.unwrap().unwrap();
    assert_eq!(v.status, VideoStatus::Ready);
    assert_eq!(ready_events(&app, video_id).await, 1, "exactly one READY");
}

#[actix_web::test]
async fn a_network_cut_longer_than_the_lease_loses_the_lease_and_the_late_outcome_is_refused() {
    let app = remote_app(|s| {
        s.jobs.lease_secs = 3;
        s.jobs.sweep_interval_secs = 1;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let (video_id, job_id) = video_with_job(&app, crate::worker_process::fixture_clip()).await;
    // Worker A reaches the server only through a proxy.
    let mut proxy = crate::helpers::TcpProxy::start(crate::helpers::socket_of(&app.address)).await;
    let (mut a, dir_a) = remote_worker(&format!("http://127.0.0.1:{}", proxy.port), &secret);
    assert!(
        eventually(600, || async {
            let row = job_row(&app, job_id).await;
            row.status == JobStatus::Running && row.progress.is_some()
        })
        .await,
        "worker A starts encoding: {}",
        worker_log(&dir_a)
    );
    let first_lease = job_row(&app, job_id).await.lease_token;
    proxy.cut().await;
    // Longer than the lease: the job is swept and worker B (direct) takes it.
    let (mut b, dir_b) = remote_worker(&app.address, &secret);
    let finished = eventually(1800, || async { job_row(&app, job_id).await.status == JobStatus::Succeeded }).await;
    assert!(finished, "worker B finishes the job: {}", worker_log(&dir_b));
    assert_ne!(job_row(&app, job_id).await.lease_token, first_lease);
    // A's run ends on its own (it cannot reach the server for upload URLs); when the
    // network comes back its late outcome is refused and changes nothing.
    assert!(
        eventually(1800, || async { worker_log(&dir_a).contains("job ended") }).await,
        "worker A's run ends: {}",
        worker_log(&dir_a)
    );
    proxy.restore().await;
    assert!(
        eventually(600, || async { worker_log(&dir_a).contains("refused the outcome") }).await,
        "worker A's late outcome is refused: {}",
        worker_log(&dir_a)
    );
    let row = job_row(&app, job_id).await;
    assert_eq!(row.status, JobStatus::Succeeded);
    assert_eq!(row.attempts, 2);
    assert_eq!(ready_events(&app, video_id).await, 1, "exactly one READY");
    for worker in [&mut a, &mut b] {
        crate::worker_process::sigterm(worker);
        let _ = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await;
    }
}

#[actix_web::test]
async fn the_cli_mints_a_worker_token_that_opens_the_channel() {
    let app = remote_app(|_| {}).await;
    let mut cmd = reelhouse_command();
    cmd.arg("worker-token").arg("create").arg("--name").arg("bootstrap").arg("--capacity").arg("2");
    cmd.arg("--data-dir").arg(&app.state.settings.server.data_dir);
    if let Some(url) = &app.state.settings.database.url {
        cmd.env("REELHOUSE__DATABASE__URL", url.expose());
    }
    let out = cmd.stdin(Stdio::null()).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("rhw_"), "{token}");
    let row = entities::worker_token::Entity::find().one(&app.state.db).await.unwrap().unwrap();
    assert_eq!((row.name.as_str(), row.capacity), ("bootstrap", 2));
    let mut socket = channel(&app).await;
    send(&mut socket, hello(&token, 1)).await;
    next_of(&mut socket, "welcome").await;
}

#[actix_web::test]
async fn a_network_cut_shorter_than_the_lease_is_survived_and_the_lease_resumed() {
    let app = remote_app(|s| s.jobs.lease_secs = 60).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let (video_id, job_id) = video_with_job(&app, crate::worker_process::fixture_clip()).await;
    let mut proxy = crate::helpers::TcpProxy::start(crate::helpers::socket_of(&app.address)).await;
    let (mut worker, dir) = remote_worker(&format!("http://127.0.0.1:{}", proxy.port), &secret);
    assert!(
        eventually(600, || async {
            let row = job_row(&app, job_id).await;
            row.status == JobStatus::Running && row.progress.is_some()
        })
        .await,
        "the worker starts encoding: {}",
        worker_log(&dir)
    );
    let lease = job_row(&app, job_id).await.lease_token;
    proxy.cut().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore().await;
    let finished = eventually(1800, || async { job_row(&app, job_id).await.status == JobStatus::Succeeded }).await;
    assert!(finished, "the job finishes on the resumed lease: {}", worker_log(&dir));
    let row = job_row(&app, job_id).await;
    assert_eq!(row.attempts, 1, "the same attempt: the lease was resumed, not lost");
    assert_eq!(ready_events(&app, video_id).await, 1);
    assert!(worker_log(&dir).contains("resumed=1"), "{}", worker_log(&dir));
    assert_ne!(lease, None);
    crate::worker_process::sigterm(&worker);
    let _ = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await;
}

#[actix_web::test]
async fn a_socket_that_never_says_hello_is_closed() {
    let app = remote_app(|_| {}).await;
    let mut socket = channel(&app).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4408));
}

#[actix_web::test]
async fn with_a_high_preset_tag_only_workers_carrying_it_lease_high_transcodes() {
    use reelhouse::jobs::queue::{self, Lane};
    let app = remote_app(|s| s.jobs.high_preset_tag = Some("gpu".into())).await;
    let (db, settings) = (&app.state.db, &app.state.settings.jobs);
    let job = |preset: &str| NewJob {
        kind: JobKind::Transcode,
        video_id: None,
        owner_id: None,
        priority: DEFAULT_PRIORITY,
        payload: json!({ "preset": preset }),
        max_attempts: 3,
    };
    let high = enqueue(db, job("high")).await.unwrap().id;
    let medium = enqueue(db, job("MEDIUM")).await.unwrap().id;
    let lease = Duration::from_secs(60);
    let cpu = queue::lease_tagged(db, "cpu", Lane::Remote, lease, settings, &[]).await.unwrap().unwrap();
    assert_eq!(cpu.job.id, medium, "an untagged worker passes the older HIGH job over");
    assert!(queue::lease_tagged(db, "cpu", Lane::Remote, lease, settings, &[]).await.unwrap().is_none());
    assert!(queue::lease_in(db, "local", Lane::Media, lease, settings).await.unwrap().is_none(), "local workers too");
    let gpu = queue::lease_tagged(db, "gpu", Lane::Remote, lease, settings, &["gpu".to_string()]).await.unwrap();
    assert_eq!(gpu.unwrap().job.id, high);
}

/// A private CA and a certificate for 127.0.0.1 it signed, made by the openssl CLI.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=reelhouse-test-ca"]);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
        run(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        run(&csr);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Self { dir }
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(self.dir.path().join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("server.key")).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }
}

/// A TLS-terminating proxy: `https://127.0.0.1:<port>` in front of the app's plain
/// HTTP. Counts the TLS handshakes that completed.
struct TlsProxy {
    port: u16,
    handshakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn bind() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    fn start(listener: tokio::net::TcpListener, pki: &TestPki, upstream: std::net::SocketAddr) -> Self {
        let port = listener.local_addr().unwrap().port();
        let acceptor = pki.acceptor();
        let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(inbound).await else { return };
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, handshakes, task }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[actix_web::test]
async fn a_remote_worker_reaches_ready_over_https_trusting_a_private_ca_given_in_a_file() {
    let pki = TestPki::new();
    let listener = TlsProxy::bind().await;
    let public = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    // On local disk the presigned GET/PUT URLs are the server's own (public URL =
    // the TLS proxy), so the worker's HTTP client goes through TLS too.
    let app = remote_app(|s| s.server.public_url = Some(public)).await;
    let proxy = TlsProxy::start(listener, &pki, crate::helpers::socket_of(&app.address));
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let (video_id, job_id) = video_with_job(&app, crate::worker_process::fixture_clip()).await;

    let (mut worker, dir) = remote_worker_with(&proxy.url(), &secret, |cmd| {
        cmd.env("REELHOUSE_WORKER_CA_FILE", pki.ca());
    });
    let finished = eventually(1800, || async { job_row(&app, job_id).await.status == JobStatus::Succeeded }).await;
    crate::worker_process::sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await.unwrap().unwrap();
    assert!(finished, "the job finishes over https: {}", worker_log(&dir));
    assert!(status.success(), "{}", worker_log(&dir));
    let v = video::Entity::find_by_id(video_id).one(&app.state.db).await.unwrap().unwrap();
    assert_eq!(v.status, VideoStatus::Ready);
    // The channel and (on local disk) every transfer went through the TLS proxy.
    let handshakes = proxy.handshakes.load(std::sync::atomic::Ordering::SeqCst);
    let minimum = if crate::helpers::backend() == crate::helpers::Backend::Sqlite { 2 } else { 1 };
    assert!(handshakes >= minimum, "{handshakes} TLS handshakes");
}

#[actix_web::test]
async fn a_remote_worker_refuses_a_certificate_it_does_not_trust_with_a_typed_error() {
    let pki = TestPki::new();
    let listener = TlsProxy::bind().await;
    let app = remote_app(|_| {}).await;
    let proxy = TlsProxy::start(listener, &pki, crate::helpers::socket_of(&app.address));
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    // No CA file: the private CA is not among the web PKI roots.
    let (mut worker, dir) = remote_worker_with(&proxy.url(), &secret, |_| {});
    let status = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "{}", worker_log(&dir));
    let log = worker_log(&dir);
    assert!(log.contains("TLS_UNTRUSTED"), "{log}");
    assert!(log.contains("REELHOUSE_WORKER_CA_FILE"), "{log}");
    assert_eq!(proxy.handshakes.load(std::sync::atomic::Ordering::SeqCst), 0);
    // With the CA it is let in.
    let (mut worker, dir) = remote_worker_with(&proxy.url(), &secret, |cmd| {
        cmd.env("REELHOUSE_WORKER_CA_FILE", pki.ca());
    });
    assert!(
        eventually(300, || async { worker_log(&dir).contains("connected to the server") }).await,
        "{}",
        worker_log(&dir)
    );
    crate::worker_process::sigterm(&worker);
    let _ = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await;
}

#[actix_web::test]
async fn a_result_whose_outputs_differ_from_their_reported_digest_is_refused_and_the_job_retried() {
    let app = remote_app(|_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let clip = std::fs::read(crate::runner::landscape_clip()).unwrap();
    let (video_id, job_id) = video_with_job(&app, clip).await;

    let mut socket = channel(&app).await;
    send(&mut socket, hello(&secret, 1)).await;
    next_of(&mut socket, "welcome").await;
    let assign = next_of(&mut socket, "assign").await;
    let lease = assign["lease"].as_str().unwrap().to_string();
    send(&mut socket, json!({ "type": "accept", "job": job_id, "lease": lease })).await;
    let owner = Uuid::parse_str(assign["spec"]["owner_id"].as_str().unwrap()).unwrap();
    let version = assign["spec"]["version"].as_str().unwrap().to_string();
    let prefix = reelhouse::storage::layout::Outputs::new(owner, video_id, Some(&version)).prefix().to_string();
    let keys = ["hls/master.m3u8", "mp4/video.mp4", "poster.jpg", "storyboard.jpg", "storyboard.vtt"]
        .map(|name| format!("{prefix}{name}"));
    // Every output announced as ten bytes of 1; the download is sent as ten bytes of 2.
    let tampered = &keys[1];
    let mut refused_on_the_way_in = false;
    for (request, key) in keys.iter().enumerate() {
        send(
            &mut socket,
            json!({ "type": "upload_url", "request": request, "job": job_id, "lease": lease,
                    "key": key, "content_type": "application/octet-stream", "size": 10, "sha256": TEN_ONES_SHA256 }),
        )
        .await;
        let answer = next_of(&mut socket, "upload_url").await;
        let body = if key == tampered { vec![2u8; 10] } else { vec![1u8; 10] };
        let mut put = app.client.put(answer["url"]["url"].as_str().unwrap()).body(body);
        for pair in answer["url"]["headers"].as_array().unwrap() {
            put = put.header(pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        }
        let status = put.send().await.unwrap().status();
        if key == tampered {
            // S3 checks the signed SHA-256 itself; local disk stores the bytes (and their digest).
            refused_on_the_way_in = !status.is_success();
        } else {
            assert!(status.is_success(), "{key}: {status}");
        }
    }
    let files: Vec<Value> =
        keys.iter().map(|key| json!({ "key": key, "size": 10, "sha256": TEN_ONES_SHA256 })).collect();
    let output = json!({
        "video_id": video_id, "renditions": [], "master_playlist_key": keys[0],
        "probe": { "duration_ms": 3000, "width": 640, "height": 360, "frame_rate": 25.0, "rotation": 0,
                   "has_audio": true, "container": null, "video_codec": null, "audio_codec": null,
                   "source_size_bytes": 1 },
        "download": { "key": keys[1], "format": "MP4", "preset": "LOW",
                      "width": 640, "height": 360, "bytes": 10 },
        "poster_key": keys[2], "thumbnail_keys": [],
        "storyboard": { "image_key": keys[3], "vtt_key": keys[4],
                        "tiles": 1, "columns": 1, "rows": 1, "tile_width": 1, "tile_height": 1 },
        "output_bytes": 50, "output_version": version,
    });
    send(&mut socket, json!({ "type": "result", "job": job_id, "lease": lease, "output": output, "files": files }))
        .await;
    let finished = next_of(&mut socket, "finished").await;
    assert_eq!(finished["accepted"], false, "{finished}");
    // Refused on the way in (S3), the object is missing, or (s3s-fs keeps a body it
    // refused, without a checksum) read back and found different; else different.
    if crate::helpers::backend() == crate::helpers::Backend::Postgres {
        assert!(refused_on_the_way_in, "S3 refuses a body that does not match the signed SHA-256");
    }
    let code = finished["code"].as_str().unwrap_or_default().to_string();
    if refused_on_the_way_in {
        assert!(["OUTPUT_MISSING", "OUTPUT_MISMATCH"].contains(&code.as_str()), "{finished}");
    } else {
        assert_eq!(code, "OUTPUT_MISMATCH", "{finished}");
    }
    let expected = code.as_str();
    // The run is spent and retried; nothing was published; its outputs are gone.
    let row = job_row(&app, job_id).await;
    assert_eq!(row.attempts, 1, "{row:?}");
    assert_ne!(row.status, JobStatus::Succeeded);
    assert!(row.last_error.as_deref().unwrap_or_default().contains(expected), "{row:?}");
    assert_eq!(ready_events(&app, video_id).await, 0);
    assert!(app.state.store.head(&keys[0]).await.is_err(), "the refused run's outputs are removed");
    let v = video::Entity::find_by_id(video_id).one(&app.state.db).await.unwrap().unwrap();
    assert_ne!(v.status, VideoStatus::Ready);
}

#[actix_web::test]
async fn strangers_are_rate_limited_on_the_worker_channel_before_the_upgrade() {
    use reelhouse::config::rate_limit::PolicySettings;
    use reelhouse::limits::Policy;
    let app = remote_app(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.policies.insert(Policy::WorkerChannel, PolicySettings::new(6, 3600, 6, true));
    })
    .await;
    // Each try: one socket and one failed hello. Six tokens last three tries at most.
    let mut refused = None;
    for attempt in 0..12 {
        let mut request = app.ws_url("/workers/ws").into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "reelhouse-worker.v1".parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut socket, _)) => {
                send(&mut socket, hello("rhw_abcdefghijklmnopqrstuvwxyz012345_abcdef", 1)).await;
                assert_eq!(next(&mut socket).await.unwrap_err(), Some(4401));
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                refused = Some((attempt, response));
                break;
            }
            Err(err) => panic!("attempt {attempt}: {err}"),
        }
    }
    let (attempt, response) = refused.expect("a stranger hammering /workers/ws is refused");
    assert!(attempt <= 6, "refused only after {attempt} tries");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
}

/// Two API replicas on one PostgreSQL and Redis: a token revoked through one closes
/// its worker's socket on the other at once (not at a heartbeat: this worker sends
/// none), and the job that socket held goes back to the queue.
#[actix_web::test]
async fn a_token_revoked_on_one_replica_closes_its_socket_on_another_at_once() {
    if crate::helpers::backend() != crate::helpers::Backend::Postgres {
        eprintln!("skipped: needs Redis and a shared database (REELHOUSE_TEST_BACKEND=postgres)");
        return;
    }
    let first = remote_app(|_| {}).await;
    let second = crate::fanout::second_instance(&first, None).await;
    crate::fanout::wait_for_relays(&first, 2).await;
    let admin = first.create_user_with_role(Role::Admin).await;
    let (secret, id) = mint_token(&first, &admin, 1).await;
    let clip = std::fs::read(crate::runner::landscape_clip()).unwrap();
    let (_, job_id) = video_with_job(&first, clip).await;

    let mut socket = channel(&second).await;
    send(&mut socket, hello(&secret, 1)).await;
    next_of(&mut socket, "welcome").await;
    let assign = next_of(&mut socket, "assign").await;
    assert_eq!(assign["job"], job_id.to_string());
    send(&mut socket, json!({ "type": "accept", "job": job_id, "lease": assign["lease"] })).await;

    assert_eq!(revoke_token(&first, &admin, &id).await["data"]["revokeWorkerToken"], true);
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4403), "closed on the other replica");
    // Its lease was given back (no attempt spent), not left to expire.
    assert!(
        eventually(100, || async {
            let row = job_row(&first, job_id).await;
            row.status == JobStatus::Queued && row.attempts == 0 && row.lease_token.is_none()
        })
        .await,
        "{:?}",
        job_row(&first, job_id).await
    );
}

#[actix_web::test]
async fn hello_may_only_narrow_its_tokens_tags_and_a_worker_without_an_encoder_is_not_given_jobs_that_need_it() {
    let app = remote_app(|_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (_, body) =
        app.graphql_as(&admin.bearer(), CREATE_TOKEN, json!({ "name": "cpu", "capacity": 1, "tags": ["cpu"] })).await;
    let secret = body["data"]["createWorkerToken"]["token"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let with = |tags: Value, encoders: Value| {
        let mut message = hello(&secret, 1);
        message["tags"] = tags;
        message["encoders"] = encoders;
        message
    };
    // A tag the token does not carry: a typed close.
    let mut socket = channel(&app).await;
    send(&mut socket, with(json!(["cpu", "gpu"]), json!([]))).await;
    assert_eq!(next(&mut socket).await.unwrap_err(), Some(4422));
    // Its own tags (any case) are fine.
    let mut socket = channel(&app).await;
    send(&mut socket, with(json!(["CPU"]), json!([]))).await;
    next_of(&mut socket, "welcome").await;
    drop(socket);

    // A WebM transcode queued before an MP4 one: a worker without vp8enc/opusenc
    // is given the MP4 one, and the WebM one waits for a worker that has them.
    let clip = std::fs::read(crate::runner::landscape_clip()).unwrap();
    let (_, webm_job) = video_with_job(&app, clip.clone()).await;
    job::Entity::update_many()
        .col_expr(job::Column::Payload, sea_orm::sea_query::Expr::value(json!({ "preset": "LOW", "format": "WEBM" })))
        .filter(job::Column::Id.eq(webm_job))
        .exec(&app.state.db)
        .await
        .unwrap();
    // Without the encoders every transcode needs, nothing at all.
    let mut bare = channel(&app).await;
    send(&mut bare, with(json!([]), json!(["jpegenc"]))).await;
    let bare_owner = format!("remote:{}", next_of(&mut bare, "welcome").await["worker_id"].as_str().unwrap());
    let (_, mp4_job) = video_with_job(&app, clip).await;
    let mut socket = channel(&app).await;
    send(&mut socket, with(json!([]), json!(["x264enc", "avenc_aac", "jpegenc"]))).await;
    next_of(&mut socket, "welcome").await;
    let assign = next_of(&mut socket, "assign").await;
    assert_eq!(assign["job"], mp4_job.to_string(), "{assign}");
    assert_eq!(job_row(&app, webm_job).await.status, JobStatus::Queued);
    // A worker with every encoder takes the WebM one; the bare one never got any.
    let mut full = channel(&app).await;
    send(&mut full, with(json!([]), json!(["x264enc", "avenc_aac", "jpegenc", "vp8enc", "opusenc"]))).await;
    next_of(&mut full, "welcome").await;
    assert_eq!(next_of(&mut full, "assign").await["job"], webm_job.to_string());
    for job_id in [mp4_job, webm_job] {
        let owner = job_row(&app, job_id).await.lease_owner;
        assert!(owner.is_some() && owner.as_deref() != Some(bare_owner.as_str()), "{owner:?}");
    }
}
