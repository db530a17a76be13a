//! Uploads through GraphQL and presigned URLs, on both storage backends (the
//! postgres run uses S3, the sqlite run local disk), with real media.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::Utc;
use entities::{event_outbox, job, upload, video, JobKind, JobStatus, UploadStatus, VideoStatus, Visibility};
use reelhouse::storage::layout;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{error_code, spawn_app_with, TestApp, TestUser};

pub const CREATE: &str = "mutation($input: CreateUploadInput!) { createUpload(input: $input) { id method url headers { name value } tusUrl expiresAt partSize parts { number url } } }";
pub const COMPLETE: &str = "mutation($id: ID!) { completeUpload(id: $id) { id status width height duration } }";
pub const ABORT: &str = "mutation($id: ID!, $reason: String) { abortUpload(id: $id, reason: $reason) }";

/// The shared fixtures of `scripts/make-fixtures.sh` (same directory as the media tests).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        reelhouse::media::init_gstreamer("warning").unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-fixtures.sh");
        let text = std::fs::read(&script).unwrap();
        let hash = text.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
        let dir = std::env::temp_dir().join(format!("reelhouse-media-fixtures-{hash:016x}"));
        let lock =
            std::fs::File::create(std::env::temp_dir().join(format!("reelhouse-media-fixtures-{hash:016x}.lock")))
                .unwrap();
        lock.lock().unwrap();
        if !dir.join(".complete").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let status = std::process::Command::new("bash").arg(&script).arg(&dir).status().unwrap();
            assert!(status.success(), "make-fixtures.sh failed");
            std::fs::write(dir.join(".complete"), b"").unwrap();
        }
        lock.unlock().unwrap();
        dir
    })
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

/// A small valid MP4 (320x180, 2 s, with audio).
pub fn small_clip() -> Vec<u8> {
    fixture("small_320x180.mp4")
}

/// A valid MP4 larger than two 5 MiB parts (noise at a high bitrate), made once.
pub fn big_clip() -> Vec<u8> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let dir = fixtures();
        let path = dir.join("uploads_big_noise.mp4");
        let lock = std::fs::File::create(dir.join("uploads_big_noise.lock")).unwrap();
        lock.lock().unwrap();
        if !path.exists() {
            let temp = dir.join(format!("uploads_big_noise.{}.tmp", Uuid::new_v4().simple()));
            let status = std::process::Command::new("gst-launch-1.0")
                .arg("-q")
                .args(
                    "videotestsrc num-buffers=75 pattern=snow ! video/x-raw,width=320,height=240,framerate=25/1 \
                     ! x264enc speed-preset=ultrafast bitrate=30000 key-int-max=25 ! h264parse \
                     ! mp4mux faststart=true ! filesink"
                        .split_whitespace(),
                )
                .arg(format!("location={}", temp.display()))
                .status()
                .unwrap();
            assert!(status.success(), "gst-launch-1.0 failed");
            std::fs::rename(&temp, &path).unwrap();
        }
        lock.unlock().unwrap();
        path
    });
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 10 * 1024 * 1024, "the big clip is {} bytes", bytes.len());
    bytes
}

/// s3s-fs (the test S3 server) stores a multipart upload's attributes in a file
/// named after the base64 of bucket, key and upload id, which passes the 255-byte
/// file-name limit with the per-test 38-character prefix and a full source key.
/// Real S3 has no such limit; tests use a short prefix.
pub fn short_s3_prefix(settings: &mut reelhouse::config::Settings) {
    if settings.storage.backend == Some(reelhouse::config::StorageBackend::S3) {
        settings.storage.s3.key_prefix = format!("u{}/", &Uuid::new_v4().simple().to_string()[..8]);
    }
}

pub async fn spawn_uploads_app(customize: impl FnOnce(&mut reelhouse::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        short_s3_prefix(s);
        customize(s);
    })
    .await
}

pub fn user_id(user: &TestUser) -> Uuid {
    Uuid::parse_str(&user.id).unwrap()
}

/// A DRAFT video owned by `owner`, straight in the database (the catalogue API is
/// another module's).
pub async fn new_video(app: &TestApp, owner: Uuid) -> Uuid {
    let now = Utc::now();
    let id = Uuid::now_v7();
    video::ActiveModel {
        id: Set(id),
        owner_id: Set(owner),
        title: Set("upload test".into()),
        description: Set(String::new()),
        tags: Set(video::Tags(vec![])),
        visibility: Set(Visibility::Private),
        status: Set(VideoStatus::Draft),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    id
}

pub async fn video_row(app: &TestApp, id: Uuid) -> video::Model {
    video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap()
}

pub async fn upload_row(app: &TestApp, id: &str) -> upload::Model {
    upload::Entity::find_by_id(Uuid::parse_str(id).unwrap()).one(&app.state.db).await.unwrap().unwrap()
}

pub async fn jobs_of(app: &TestApp, video: Uuid) -> Vec<job::Model> {
    job::Entity::find().filter(job::Column::VideoId.eq(video)).all(&app.state.db).await.unwrap()
}

pub async fn event_kinds(app: &TestApp, video: Uuid) -> Vec<String> {
    let mut rows =
        event_outbox::Entity::find().filter(event_outbox::Column::VideoId.eq(video)).all(&app.state.db).await.unwrap();
    rows.sort_by_key(|r| r.seq);
    rows.into_iter().map(|r| r.kind).collect()
}

/// Is anything left under the video's source key (object or tus tail)?
pub async fn source_exists(app: &TestApp, owner: Uuid, video: Uuid) -> bool {
    let key = layout::source(owner, video);
    app.state.store.head(&key).await.is_ok() || app.state.store.head(&reelhouse::uploads::tail_key(&key)).await.is_ok()
}

pub async fn create_upload(app: &TestApp, user: &TestUser, input: Value) -> (u16, Value) {
    app.graphql_as(&user.bearer(), CREATE, json!({ "input": input })).await
}

pub async fn ticket_for(app: &TestApp, user: &TestUser, video: Uuid, bytes: &[u8], content_type: &str) -> Value {
    let (status, body) = create_upload(
        app,
        user,
        json!({ "videoId": video, "filename": "clip.mp4", "contentType": content_type, "size": bytes.len() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["createUpload"].clone()
}

/// PUT the whole file to a PUT ticket.
pub async fn put_file(app: &TestApp, ticket: &Value, bytes: &[u8]) -> reqwest::Response {
    assert_eq!(ticket["method"], "PUT", "{ticket}");
    let mut request = app.client.put(ticket["url"].as_str().unwrap()).body(bytes.to_vec());
    for header in ticket["headers"].as_array().unwrap() {
        request = request.header(header["name"].as_str().unwrap(), header["value"].as_str().unwrap());
    }
    request.send().await.unwrap()
}

pub async fn complete(app: &TestApp, user: &TestUser, id: &Value) -> Value {
    let (status, body) = app.graphql_as(&user.bearer(), COMPLETE, json!({ "id": id })).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Upload `bytes` with a presigned PUT and complete; returns the completion body.
async fn put_and_complete(app: &TestApp, user: &TestUser, video: Uuid, bytes: &[u8]) -> Value {
    let ticket = ticket_for(app, user, video, bytes, "video/mp4").await;
    let res = put_file(app, &ticket, bytes).await;
    assert!(res.status().is_success(), "PUT answered {}", res.status());
    complete(app, user, &ticket["id"]).await
}

#[actix_web::test]
async fn uploads_presigned_put_round_trip_enqueues_one_job() {
    // No workers: the job must stay QUEUED for the assertions below.
    let app = spawn_uploads_app(|s| s.workers.embedded = false).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();

    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert_eq!(ticket["method"], "PUT");
    assert!(ticket["parts"].as_array().unwrap().is_empty());
    assert!(ticket["tusUrl"].as_str().unwrap().ends_with(&format!("/uploads/{}", ticket["id"].as_str().unwrap())));
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Uploading);
    // The video is taken: a second session is refused.
    let (_, body) = create_upload(
        &app,
        &user,
        json!({ "videoId": video, "filename": "b.mp4", "contentType": "video/mp4", "size": clip.len() }),
    )
    .await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");

    // Completing before any byte arrived is refused, and the session stays usable.
    let early = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&early).as_deref(), Some("BAD_USER_INPUT"), "{early}");
    assert_eq!(upload_row(&app, ticket["id"].as_str().unwrap()).await.status, UploadStatus::Open);

    let res = put_file(&app, &ticket, &clip).await;
    assert!(res.status().is_success(), "PUT answered {}", res.status());
    let body = complete(&app, &user, &ticket["id"]).await;
    assert!(body["errors"].is_null(), "{body}");
    let done = &body["data"]["completeUpload"];
    assert_eq!(done["status"], "PROCESSING");
    assert_eq!(done["width"], 320);
    assert_eq!(done["height"], 180);

    let row = video_row(&app, video).await;
    assert_eq!(row.status, VideoStatus::Processing);
    assert_eq!(row.source_key.as_deref(), Some(layout::source(user_id(&user), video).as_str()));
    assert_eq!(row.source_size_bytes, Some(clip.len() as i64));
    assert_eq!(row.has_audio, Some(true));
    assert!(row.duration_ms.unwrap() > 1500, "{:?}", row.duration_ms);
    assert!(row.video_codec.is_some() && row.container.is_some());

    // Again, and twice at once: same video, still exactly one job.
    let again = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(again["data"]["completeUpload"]["id"], done["id"], "{again}");
    let (a, b) = tokio::join!(complete(&app, &user, &ticket["id"]), complete(&app, &user, &ticket["id"]));
    assert!(a["errors"].is_null() && b["errors"].is_null(), "{a} {b}");

    let jobs = jobs_of(&app, video).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].kind, JobKind::Transcode);
    assert_eq!(jobs[0].status, JobStatus::Queued);
    assert_eq!(jobs[0].owner_id, Some(user_id(&user)));
    assert_eq!(event_kinds(&app, video).await, ["UPLOADED", "PROCESSING"]);
    assert_eq!(upload_row(&app, ticket["id"].as_str().unwrap()).await.status, UploadStatus::Completed);
}

#[actix_web::test]
async fn uploads_concurrent_completions_process_once() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    let results = futures::future::join_all((0..4).map(|_| complete(&app, &user, &ticket["id"]))).await;
    let ok = results.iter().filter(|b| b["errors"].is_null()).count();
    assert!(ok >= 1, "{results:?}");
    for body in results.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(error_code(body).as_deref(), Some("CONFLICT"), "{body}");
    }
    assert_eq!(jobs_of(&app, video).await.len(), 1);
    assert_eq!(event_kinds(&app, video).await, ["UPLOADED", "PROCESSING"]);
}

#[actix_web::test]
async fn uploads_multipart_round_trip() {
    let app = spawn_uploads_app(|s| {
        s.uploads.multipart_threshold_bytes = 1024 * 1024;
        s.uploads.part_size_bytes = 5 * 1024 * 1024;
    })
    .await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = big_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert_eq!(ticket["method"], "MULTIPART", "{ticket}");
    let part_size = ticket["partSize"].as_u64().unwrap() as usize;
    assert_eq!(part_size, 5 * 1024 * 1024);
    let parts = ticket["parts"].as_array().unwrap();
    assert_eq!(parts.len(), clip.len().div_ceil(part_size));

    // Parts in reverse order: order does not matter. Stop before the last one.
    for part in parts.iter().rev().skip(1) {
        let n = part["number"].as_u64().unwrap() as usize;
        let chunk = clip[(n - 1) * part_size..(n * part_size).min(clip.len())].to_vec();
        let res = app.client.put(part["url"].as_str().unwrap()).body(chunk).send().await.unwrap();
        assert!(res.status().is_success(), "part {n}: {}", res.status());
    }
    let early = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&early).as_deref(), Some("BAD_USER_INPUT"), "{early}");
    let last = parts.last().unwrap();
    let n = last["number"].as_u64().unwrap() as usize;
    let res =
        app.client.put(last["url"].as_str().unwrap()).body(clip[(n - 1) * part_size..].to_vec()).send().await.unwrap();
    assert!(res.status().is_success());

    let body = complete(&app, &user, &ticket["id"]).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["completeUpload"]["status"], "PROCESSING");
    let meta = app.state.store.head(&layout::source(user_id(&user), video)).await.unwrap();
    assert_eq!(meta.size, clip.len() as u64);
    assert_eq!(jobs_of(&app, video).await.len(), 1);
}

#[actix_web::test]
async fn uploads_presigned_urls_refuse_tampering_and_expiry() {
    let app = spawn_uploads_app(|s| s.uploads.session_ttl_secs = 2).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;

    let url = ticket["url"].as_str().unwrap();
    let mut tampered = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = tampered
        .query_pairs()
        .map(|(k, v)| {
            // Flip the last hex digit of the signature (S3 or local).
            let v = if k.to_ascii_lowercase().ends_with("signature") {
                let mut s = v.to_string();
                let last = s.pop().unwrap();
                s.push(if last == '0' { '1' } else { '0' });
                s
            } else {
                v.to_string()
            };
            (k.to_string(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    let mut forged = ticket.clone();
    forged["url"] = json!(tampered.to_string());
    let res = put_file(&app, &forged, &clip).await;
    assert_eq!(res.status(), 403, "tampered URL answered {}", res.status());

    // Signed expiries have whole-second resolution: wait until well past it.
    let expires_at: chrono::DateTime<chrono::Utc> = ticket["expiresAt"].as_str().unwrap().parse().unwrap();
    let wait = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    let res = put_file(&app, &ticket, &clip).await;
    assert_eq!(res.status(), 403, "expired URL answered {}", res.status());
    assert!(!source_exists(&app, user_id(&user), video).await);

    // The sweeper expires the session and frees the video.
    let swept = reelhouse::uploads::sweeper::sweep_once(&app.state).await.unwrap();
    assert_eq!(swept, 1);
    assert_eq!(upload_row(&app, ticket["id"].as_str().unwrap()).await.status, UploadStatus::Expired);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Draft);
}

#[actix_web::test]
async fn uploads_refuse_bad_declarations() {
    let app = spawn_uploads_app(|s| {
        s.uploads.max_size_bytes = 1_000_000;
        s.uploads.quota_bytes_per_user = 1_500_000;
    })
    .await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let base = json!({ "videoId": video, "filename": "a.mp4", "contentType": "video/mp4", "size": 1000 });
    let with = |key: &str, value: Value| {
        let mut input = base.clone();
        input[key] = value;
        input
    };
    for (input, code) in [
        (with("size", json!(0)), "BAD_USER_INPUT"),
        (with("size", json!(-5)), "BAD_USER_INPUT"),
        (with("size", json!(1_000_001)), "PAYLOAD_TOO_LARGE"),
        (with("contentType", json!("application/zip")), "UNSUPPORTED_MEDIA"),
        (with("contentType", json!("image/png")), "UNSUPPORTED_MEDIA"),
        (with("checksumSha256", json!("nothex")), "BAD_USER_INPUT"),
        (with("videoId", json!(Uuid::now_v7())), "NOT_FOUND"),
    ] {
        let (_, body) = create_upload(&app, &user, input.clone()).await;
        assert_eq!(error_code(&body).as_deref(), Some(code), "{input} -> {body}");
    }
    // Another user's video does not exist for this one.
    let stranger = app.register_user().await;
    let (_, body) = create_upload(&app, &stranger, base.clone()).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    // Anonymous callers are refused.
    let (_, body) = app.graphql(CREATE, json!({ "input": base })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Draft);

    // Quota: an open session counts; the next one would pass 1.5 MB.
    let (_, body) = create_upload(&app, &user, with("size", json!(900_000))).await;
    assert!(body["errors"].is_null(), "{body}");
    let other = new_video(&app, user_id(&user)).await;
    let mut input = with("size", json!(900_000));
    input["videoId"] = json!(other);
    let (_, body) = create_upload(&app, &user, input).await;
    assert_eq!(error_code(&body).as_deref(), Some("PAYLOAD_TOO_LARGE"), "{body}");
    assert_eq!(video_row(&app, other).await.status, VideoStatus::Draft);
}

#[actix_web::test]
async fn uploads_abort_cleans_up_and_frees_the_video() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    // The bytes wait on the upload's staging key; the source is written only at completion.
    let staging = layout::staging(user_id(&user), video, Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap());
    assert!(app.state.store.head(&staging).await.is_ok());
    assert!(!source_exists(&app, user_id(&user), video).await);

    let stranger = app.register_user().await;
    let (_, body) = app.graphql_as(&stranger.bearer(), ABORT, json!({ "id": ticket["id"] })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");

    let (_, body) =
        app.graphql_as(&user.bearer(), ABORT, json!({ "id": ticket["id"], "reason": "changed my mind" })).await;
    assert_eq!(body["data"]["abortUpload"], true, "{body}");
    let row = upload_row(&app, ticket["id"].as_str().unwrap()).await;
    assert_eq!(row.status, UploadStatus::Aborted);
    assert_eq!(row.failure_reason.as_deref(), Some("changed my mind"));
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Draft);
    assert!(!source_exists(&app, user_id(&user), video).await);
    assert!(app.state.store.head(&staging).await.is_err(), "the staging object was left behind");
    // Completing an aborted session is refused; a new session works.
    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    let body = put_and_complete(&app, &user, video, &clip).await;
    assert!(body["errors"].is_null(), "{body}");
}

/// Each hostile file is refused with a typed error and leaves nothing behind.
#[actix_web::test]
async fn uploads_hostile_files_are_refused() {
    let app = spawn_uploads_app(|s| s.media.max_width = 300).await;
    let user = app.register_user().await;
    let owner = user_id(&user);
    let mut zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
    zip.extend(std::iter::repeat_n(0x5a, 4096));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random bytes named .mp4", fixture("hostile_random.mp4"), "UNSUPPORTED_MEDIA"),
        ("zip renamed", zip, "UNSUPPORTED_MEDIA"),
        ("truncated mp4", fixture("hostile_truncated.mp4"), "UNSUPPORTED_MEDIA"),
        ("audio only", fixture("audio_only.m4a"), "UNSUPPORTED_MEDIA"),
        ("wider than allowed", small_clip(), "UNSUPPORTED_MEDIA"),
    ];
    for (name, bytes, code) in cases {
        let video = new_video(&app, owner).await;
        let body = put_and_complete(&app, &user, video, &bytes).await;
        assert_eq!(error_code(&body).as_deref(), Some(code), "{name}: {body}");
        let row = video_row(&app, video).await;
        assert_eq!(row.status, VideoStatus::Failed, "{name}");
        assert!(row.error.as_deref().is_some_and(|e| !e.is_empty()), "{name}");
        assert!(!source_exists(&app, owner, video).await, "{name}: object left behind");
        assert!(jobs_of(&app, video).await.is_empty(), "{name}");
        assert_eq!(event_kinds(&app, video).await, ["FAILED"], "{name}");
        if name == "wider than allowed" {
            assert!(row.error.unwrap().contains("larger than the allowed"));
        }
    }
    // A body that does not match the declared size is refused by the URL itself
    // (it is signed for exactly that length), and nothing is stored.
    let video = new_video(&app, owner).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert!(refused(try_put_file(&app, &ticket, &clip[..clip.len() - 10]).await));
    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    assert!(!source_exists(&app, owner, video).await);
    // A checksum that does not match.
    let video = new_video(&app, owner).await;
    let (_, body) = create_upload(
        &app,
        &user,
        json!({ "videoId": video, "filename": "a.mp4", "contentType": "video/mp4", "size": clip.len(),
                "checksumSha256": "00".repeat(32) }),
    )
    .await;
    let ticket = body["data"]["createUpload"].clone();
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    // A failed video may be uploaded again.
    let body = put_and_complete(&app, &user, video, &fixture("no_audio.mp4")).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNSUPPORTED_MEDIA"), "{body}");
}

#[actix_web::test]
async fn uploads_to_a_deleted_video_get_no_job() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    let mut row: video::ActiveModel = video_row(&app, video).await.into();
    row.deleted_at = Set(Some(Utc::now()));
    row.update(&app.state.db).await.unwrap();

    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    assert!(jobs_of(&app, video).await.is_empty());
    assert_eq!(upload_row(&app, ticket["id"].as_str().unwrap()).await.status, UploadStatus::Aborted);
    assert!(!source_exists(&app, user_id(&user), video).await);
}

/// Many users uploading at once, with embedded workers writing job progress beside
/// them: on SQLite every write transaction must wait its turn for the write lock
/// rather than fail with "database is locked".
#[actix_web::test]
async fn concurrent_uploads_all_complete_on_one_database() {
    let app = spawn_uploads_app(|_| {}).await;
    let clip = small_clip();
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(app.register_user().await);
    }
    let rounds = users.iter().map(|user| {
        let (app, clip) = (&app, &clip);
        async move {
            let mut errors = Vec::new();
            for _ in 0..4 {
                let video = new_video(app, user_id(user)).await;
                let ticket = ticket_for(app, user, video, clip, "video/mp4").await;
                let res = put_file(app, &ticket, clip).await;
                assert!(res.status().is_success(), "PUT answered {}", res.status());
                let body = complete(app, user, &ticket["id"]).await;
                if !body["errors"].is_null() {
                    errors.push(body);
                }
            }
            errors
        }
    });
    let errors: Vec<Value> = futures::future::join_all(rounds).await.into_iter().flatten().collect();
    assert!(errors.is_empty(), "{} completions failed: {errors:?}", errors.len());
}

// ---- presigned URLs are bound to their upload (issue 18, item 1) ----------------

const DELETE_VIDEO: &str = "mutation($id: ID!) { deleteVideo(id: $id) }";

/// SHA-256 of the object at `key`, or `None` when there is none.
async fn object_sha256(app: &TestApp, key: &str) -> Option<Vec<u8>> {
    use sha2::Digest;
    let mut body = app.state.store.get(key, None).await.ok()?.body;
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        hash.update(chunk.unwrap());
    }
    Some(hash.finalize().to_vec())
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// PUT `bytes` to a part URL of a MULTIPART ticket. A server may answer a refused
/// body before reading it and close the connection: then the request errs.
async fn put_part(
    app: &TestApp,
    ticket: &Value,
    number: usize,
    bytes: &[u8],
) -> Result<reqwest::Response, reqwest::Error> {
    let part = &ticket["parts"].as_array().unwrap()[number - 1];
    unpooled_client(app).put(part["url"].as_str().unwrap()).body(bytes.to_vec()).send().await
}

/// A client of its own, so a connection a server closed on a refused body is never
/// reused by the next request (which would then fail with a broken pipe).
fn unpooled_client(_app: &TestApp) -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(std::time::Duration::from_secs(30)).build().unwrap()
}

/// PUT `bytes` to a PUT ticket, like [`put_file`], but a connection the server
/// closed on a refused body counts as a refusal (`None`).
async fn try_put_file(app: &TestApp, ticket: &Value, bytes: &[u8]) -> Option<reqwest::StatusCode> {
    let mut request = unpooled_client(app).put(ticket["url"].as_str().unwrap()).body(bytes.to_vec());
    for header in ticket["headers"].as_array().unwrap() {
        request = request.header(header["name"].as_str().unwrap(), header["value"].as_str().unwrap());
    }
    request.send().await.ok().map(|res| res.status())
}

fn refused(status: Option<reqwest::StatusCode>) -> bool {
    status.is_none_or(|s| s.is_client_error())
}

/// Local disk answers a closed upload's URL with 410 UPLOAD_CLOSED; S3 cannot revoke
/// a presigned URL, so there the assertion is only that nothing reached the source.
async fn assert_closed(app: &TestApp, res: reqwest::Response) {
    let status = res.status();
    if app.state.store.backend() == "local" {
        assert_eq!(status, 410, "a closed upload's URL answered {status}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "UPLOAD_CLOSED", "{body}");
    }
}

/// The reproduction: after `completeUpload`, the same URL must not replace
/// the accepted source (same length or 2 MiB of zeros).
#[actix_web::test]
async fn uploads_presigned_url_cannot_overwrite_a_completed_source() {
    let app = spawn_uploads_app(|s| s.workers.embedded = false).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(body["data"]["completeUpload"]["status"], "PROCESSING", "{body}");
    let source = layout::source(user_id(&user), video);
    assert_eq!(object_sha256(&app, &source).await, Some(sha256(&clip)));

    let same_length = vec![0u8; clip.len()];
    let res = put_file(&app, &ticket, &same_length).await;
    assert_closed(&app, res).await;
    let status = try_put_file(&app, &ticket, &vec![0u8; 2 * 1024 * 1024]).await;
    assert!(refused(status), "a 2 MiB body was accepted by a {}-byte URL: {status:?}", clip.len());
    assert_eq!(object_sha256(&app, &source).await, Some(sha256(&clip)), "the accepted source was overwritten");
    assert_eq!(video_row(&app, video).await.source_key.as_deref(), Some(source.as_str()));
}

/// A URL carries exactly the declared size: longer and shorter bodies store
/// nothing, single PUT and part URLs alike; the right body still works.
#[actix_web::test]
async fn uploads_presigned_urls_accept_exactly_the_declared_length() {
    let app = spawn_uploads_app(|s| s.workers.embedded = false).await;
    let user = app.register_user().await;
    let clip = small_clip();
    let mut longer = clip.clone();
    longer.extend(std::iter::repeat_n(0u8, 1024 * 1024));

    let video = new_video(&app, user_id(&user)).await;
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    let status = try_put_file(&app, &ticket, &longer).await;
    assert!(refused(status), "a longer body answered {status:?}");
    let status = try_put_file(&app, &ticket, &clip[..clip.len() - 10]).await;
    assert!(refused(status), "a shorter body answered {status:?}");
    let early = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(error_code(&early).as_deref(), Some("BAD_USER_INPUT"), "{early}");
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(body["data"]["completeUpload"]["status"], "PROCESSING", "{body}");
    assert_eq!(object_sha256(&app, &layout::source(user_id(&user), video)).await, Some(sha256(&clip)));
}

#[actix_web::test]
async fn uploads_part_urls_accept_exactly_their_part_length_and_die_with_the_upload() {
    let app = spawn_uploads_app(|s| {
        s.workers.embedded = false;
        s.uploads.multipart_threshold_bytes = 1000;
    })
    .await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    assert_eq!(ticket["method"], "MULTIPART", "{ticket}");
    assert_eq!(ticket["parts"].as_array().unwrap().len(), 1);
    let mut longer = clip.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    let status = put_part(&app, &ticket, 1, &longer).await.ok().map(|r| r.status());
    assert!(refused(status), "a longer part answered {status:?}");
    assert!(put_part(&app, &ticket, 1, &clip).await.unwrap().status().is_success());
    let body = complete(&app, &user, &ticket["id"]).await;
    assert_eq!(body["data"]["completeUpload"]["status"], "PROCESSING", "{body}");

    let status = put_part(&app, &ticket, 1, &vec![0u8; clip.len()]).await.ok().map(|r| r.status());
    assert!(!status.is_some_and(|s| s.is_success()), "a part URL wrote after completion: {status:?}");
    assert_eq!(object_sha256(&app, &layout::source(user_id(&user), video)).await, Some(sha256(&clip)));
}

/// After `deleteVideo` the upload's URL writes nothing the server keeps (local disk
/// refuses it; on S3 it can only reach the staging key, see the sweeper test).
#[actix_web::test]
async fn uploads_url_of_a_deleted_video_is_closed() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let owner = user_id(&user);
    let video = new_video(&app, owner).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    let (_, body) = app.graphql_as(&user.bearer(), DELETE_VIDEO, json!({ "id": video })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    let res = put_file(&app, &ticket, &clip).await;
    assert_closed(&app, res).await;
    assert!(!source_exists(&app, owner, video).await);
    if app.state.store.backend() == "local" {
        let staging = layout::staging(owner, video, Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap());
        assert!(app.state.store.head(&staging).await.is_err(), "the refused PUT stored an object");
    }
}

/// What a URL may still write after its upload ended (an S3 presigned PUT cannot be
/// revoked; on local disk a PUT already in flight) is removed by the sweeper once
/// every URL of the upload has expired, and the source is never touched.
#[actix_web::test]
async fn uploads_sweeper_removes_what_ended_uploads_left_in_staging() {
    let app = spawn_uploads_app(|s| {
        s.workers.embedded = false;
        s.uploads.upload_url_ttl_secs = 600;
    })
    .await;
    let user = app.register_user().await;
    let owner = user_id(&user);
    let clip = small_clip();

    // A completed upload and a late write to its staging key.
    let done = new_video(&app, owner).await;
    let ticket = ticket_for(&app, &user, done, &clip, "video/mp4").await;
    let done_id = Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap();
    assert!(put_file(&app, &ticket, &clip).await.status().is_success());
    assert!(complete(&app, &user, &ticket["id"]).await["errors"].is_null());
    let late = layout::staging(owner, done, done_id);
    app.state.store.put_bytes(&late, vec![0u8; 100].into(), None).await.unwrap();

    // An aborted multipart upload whose video was deleted: the storage multipart
    // upload is still open until the sweeper aborts it.
    let gone = new_video(&app, owner).await;
    let (_, body) = create_upload(
        &app,
        &user,
        json!({ "videoId": gone, "filename": "a.mp4", "contentType": "video/mp4", "size": 200 * 1024 * 1024 }),
    )
    .await;
    let multipart = body["data"]["createUpload"].clone();
    assert_eq!(multipart["method"], "MULTIPART", "{body}");
    let (_, body) = app.graphql_as(&user.bearer(), DELETE_VIDEO, json!({ "id": gone })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    let gone_row = upload_row(&app, multipart["id"].as_str().unwrap()).await;
    assert_eq!(gone_row.status, UploadStatus::Aborted);

    // Nothing is due while the URLs may still be used.
    let sweep = reelhouse::uploads::sweeper::sweep_staging;
    assert_eq!(sweep(&app.state, Utc::now()).await.unwrap(), 0);
    assert!(app.state.store.head(&late).await.is_ok());
    // Once they have all expired, each ended upload is swept, once.
    let later = Utc::now() + chrono::Duration::seconds(600) + chrono::Duration::minutes(5);
    assert_eq!(sweep(&app.state, later).await.unwrap(), 2);
    assert!(app.state.store.head(&late).await.is_err(), "the late staging object is still there");
    assert_eq!(object_sha256(&app, &layout::source(owner, done)).await, Some(sha256(&clip)), "the source changed");
    match app.state.store.list_parts(&gone_row.object_key, gone_row.s3_upload_id.as_deref().unwrap()).await {
        Err(reelhouse::storage::StoreError::UploadNotFound) => {}
        Ok(parts) => assert!(parts.is_empty(), "{parts:?}"),
        Err(err) => panic!("{err:?}"),
    }
    assert_eq!(sweep(&app.state, later).await.unwrap(), 0);
    assert!(upload_row(&app, &done_id.to_string()).await.staging_swept_at.is_some());
}
