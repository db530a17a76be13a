//! Remote workers' large outputs go by multipart (`upload_url` with `parts`,
//! `multipart_urls`, `complete_upload`), on both backends: SQLite + local disk
//! (part URLs are the server's signed `/storage` routes) and PostgreSQL + S3. A
//! real worker process with a low threshold, and a raw client speaking the
//! protocol as a misbehaving worker would.

use entities::{video, JobStatus, Role, VideoStatus};
use reelhouse::storage::layout::Outputs;
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{backend, eventually, Backend, TestApp};
use crate::remote_workers::{
    channel, hello, job_row, mint_token, next, next_of, ready_events, remote_app, remote_worker_with, send,
    video_with_job, worker_log, Socket, TEN_ONES_SHA256,
};

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (but the last).
const PART: u64 = 5 * MIB;

/// A server whose remote workers upload outputs above `threshold` bytes by
/// multipart, in parts of 5 MiB.
///
/// s3s-fs (the test S3 server) names a multipart upload's metadata file after the
/// base64 of its key: a key longer than about 121 bytes makes that name longer
/// than 255 bytes and CreateMultipartUpload fails (500, ENAMETOOLONG). An output
/// key is 116 bytes up to `mp4/video.mp4`, so the per-test key prefix is kept to
/// four bytes here, and only the download goes by multipart (an HLS segment's key
/// is longer). Real S3 has no such limit.
async fn multipart_app(threshold: u64, customize: impl FnOnce(&mut reelhouse::config::Settings)) -> TestApp {
    remote_app(|s| {
        if s.storage.backend == Some(reelhouse::config::StorageBackend::S3) {
            s.storage.s3.key_prefix = format!("{}/", &Uuid::new_v4().simple().to_string()[..3]);
        }
        s.workers.remote_multipart_threshold_bytes = threshold;
        s.workers.remote_part_bytes = PART;
        customize(s);
    })
    .await
}

/// The answer to request `request` (whatever its type), skipping other messages.
async fn reply(socket: &mut Socket, request: u64) -> Value {
    loop {
        let message = next(socket).await.unwrap_or_else(|code| panic!("closed ({code:?}) waiting for {request}"));
        if message["request"] == request {
            return message;
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `len` bytes that differ from part to part.
fn body(len: u64, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// PUT `bytes` to a presigned URL (its headers sent as given); status and ETag.
async fn put(app: &TestApp, url: &Value, bytes: Vec<u8>) -> (reqwest::StatusCode, Option<String>) {
    let mut put = app.client.put(url["url"].as_str().unwrap()).body(bytes);
    for pair in url["headers"].as_array().unwrap() {
        put = put.header(pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
    }
    let response = put.send().await.unwrap();
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
    (response.status(), etag)
}

/// A raw worker holding the lease of a fresh video's transcode.
struct Run {
    socket: Socket,
    video_id: Uuid,
    job_id: Uuid,
    lease: String,
    version: String,
    prefix: String,
    welcome: Value,
}

async fn leased_run(app: &TestApp) -> Run {
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(app, &admin, 1).await;
    let clip = std::fs::read(crate::runner::landscape_clip()).unwrap();
    let (video_id, job_id) = video_with_job(app, clip).await;
    let mut socket = channel(app).await;
    send(&mut socket, hello(&secret, 1)).await;
    let welcome = next_of(&mut socket, "welcome").await;
    let assign = next_of(&mut socket, "assign").await;
    let lease = assign["lease"].as_str().unwrap().to_string();
    send(&mut socket, json!({ "type": "accept", "job": job_id, "lease": lease })).await;
    let owner = Uuid::parse_str(assign["spec"]["owner_id"].as_str().unwrap()).unwrap();
    let version = assign["spec"]["version"].as_str().unwrap().to_string();
    let prefix = Outputs::new(owner, video_id, Some(&version)).prefix().to_string();
    Run { socket, video_id, job_id, lease, version, prefix, welcome }
}

impl Run {
    /// Ask for a multipart upload of `parts` (size, sha256) at `key`; the answer.
    async fn announce(&mut self, request: u64, key: &str, size: u64, sha256: &str, parts: Value) -> Value {
        let message = json!({ "type": "upload_url", "request": request, "job": self.job_id, "lease": self.lease,
                              "key": key, "content_type": "video/mp4", "size": size, "sha256": sha256,
                              "parts": parts });
        send(&mut self.socket, message).await;
        reply(&mut self.socket, request).await
    }

    async fn complete(&mut self, request: u64, key: &str, upload_id: &str, etags: &[(i32, String)]) -> Value {
        let parts: Vec<Value> = etags.iter().map(|(n, e)| json!({ "number": n, "etag": e })).collect();
        let message = json!({ "type": "complete_upload", "request": request, "job": self.job_id, "lease": self.lease,
                              "key": key, "upload_id": upload_id, "parts": parts });
        send(&mut self.socket, message).await;
        reply(&mut self.socket, request).await
    }

    /// Ten bytes of 1 at `key` through one presigned PUT.
    async fn put_small(&mut self, app: &TestApp, request: u64, key: &str) {
        send(
            &mut self.socket,
            json!({ "type": "upload_url", "request": request, "job": self.job_id, "lease": self.lease,
                    "key": key, "content_type": "application/octet-stream", "size": 10, "sha256": TEN_ONES_SHA256 }),
        )
        .await;
        let answer = reply(&mut self.socket, request).await;
        assert_eq!(answer["type"], "upload_url", "{answer}");
        let (status, _) = put(app, &answer["url"], vec![1u8; 10]).await;
        assert!(status.is_success(), "{key}: {status}");
    }

    /// The five keys a result names: master playlist, download, poster, storyboard (image, VTT).
    fn keys(&self) -> [String; 5] {
        ["hls/master.m3u8", "mp4/video.mp4", "poster.jpg", "storyboard.jpg", "storyboard.vtt"]
            .map(|name| format!("{}{name}", self.prefix))
    }

    /// Send a result naming the five keys (the download of `download` bytes with
    /// `download_sha256`, the others ten bytes of 1); the `finished` answer.
    async fn result(&mut self, download: u64, download_sha256: &str) -> Value {
        let keys = self.keys();
        let files: Vec<Value> = keys
            .iter()
            .map(|key| {
                if key == &keys[1] {
                    json!({ "key": key, "size": download, "sha256": download_sha256 })
                } else {
                    json!({ "key": key, "size": 10, "sha256": TEN_ONES_SHA256 })
                }
            })
            .collect();
        let output = json!({
            "video_id": self.video_id, "renditions": [], "master_playlist_key": keys[0],
            "probe": { "duration_ms": 3000, "width": 640, "height": 360, "frame_rate": 25.0, "rotation": 0,
                       "has_audio": true, "container": null, "video_codec": null, "audio_codec": null,
                       "source_size_bytes": 1 },
            "download": { "key": keys[1], "format": "MP4", "preset": "LOW",
                          "width": 640, "height": 360, "bytes": download },
            "poster_key": keys[2], "thumbnail_keys": [],
            "storyboard": { "image_key": keys[3], "vtt_key": keys[4],
                            "tiles": 1, "columns": 1, "rows": 1, "tile_width": 1, "tile_height": 1 },
            "output_bytes": download + 40, "output_version": self.version,
        });
        let message = json!({ "type": "result", "job": self.job_id, "lease": self.lease, "output": output,
                              "files": files });
        send(&mut self.socket, message).await;
        next_of(&mut self.socket, "finished").await
    }
}

#[actix_web::test]
async fn remote_workers_multipart_a_real_worker_uploads_its_large_outputs_by_multipart_and_the_video_becomes_ready() {
    // Outputs above 80 KiB go by multipart: the MP4 download (about 100 KiB); the
    // one-second segments (about 50 KiB), images and playlists by one PUT.
    let app = multipart_app(80 * 1024, |_| {}).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let (secret, _) = mint_token(&app, &admin, 1).await;
    let user = app.register_user().await;
    let video = crate::e2e::create_video(&app, &user, "PRIVATE").await;
    crate::worker_process::upload_landscape_clip(&app, &user, &video).await;
    let (mut worker, dir) = remote_worker_with(&app.address, &secret, |_| {});
    let video_id = Uuid::parse_str(&video).unwrap();
    let db = app.state.db.clone();
    let ready = eventually(1200, || async {
        video::Entity::find_by_id(video_id).one(&db).await.unwrap().is_some_and(|v| v.status == VideoStatus::Ready)
    })
    .await;
    assert!(ready, "the remote worker made the video READY: {}", worker_log(&dir));
    let _ = worker.kill().await;
    // Multipart was used (the server completed uploads, none left open), and the
    // download is stored whole and was verified (size and SHA-256) like any output.
    let completed = app.state.remote_multiparts.completed();
    assert!(completed >= 1, "no multipart upload was completed: {}", worker_log(&dir));
    assert_eq!(app.state.remote_multiparts.open(), 0);
    assert_eq!(ready_events(&app, video_id).await, 1);
    let v = video::Entity::find_by_id(video_id).one(&db).await.unwrap().unwrap();
    let outputs = Outputs::new(v.owner_id, v.id, v.output_version.as_deref());
    let download = app.state.store.head(&outputs.download("video.mp4")).await.expect("the download is stored");
    assert!(download.size > 80 * 1024, "{download:?}");
}

#[actix_web::test]
async fn remote_workers_multipart_an_output_of_three_parts_is_completed_verified_and_published() {
    let app = multipart_app(6 * MIB, |_| {}).await;
    let mut run = leased_run(&app).await;
    // welcome announces the policy.
    assert_eq!(run.welcome["multipart"]["threshold_bytes"], 6 * MIB, "{}", run.welcome);
    assert_eq!(run.welcome["multipart"]["part_bytes"], PART, "{}", run.welcome);
    let keys = run.keys();
    for (request, key) in keys.iter().enumerate().filter(|(i, _)| *i != 1) {
        run.put_small(&app, 100 + request as u64, key).await;
    }
    // The download: 11 MiB as 5 + 5 + 1 MiB.
    let sizes = [PART, PART, MIB];
    let bodies: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, size)| body(*size, i as u8)).collect();
    let whole: Vec<u8> = bodies.concat();
    let parts: Vec<Value> = bodies.iter().map(|b| json!({ "size": b.len(), "sha256": sha256_hex(b) })).collect();
    let total = whole.len() as u64;
    let answer = run.announce(1, &keys[1], total, &sha256_hex(&whole), json!(parts)).await;
    assert_eq!(answer["type"], "multipart_urls", "{answer}");
    let upload_id = answer["upload_id"].as_str().unwrap().to_string();
    let urls = answer["parts"].as_array().unwrap().clone();
    assert_eq!(urls.len(), 3);
    if backend() == Backend::Postgres {
        // S3: each part URL signs its length and SHA-256.
        let signed = urls[0]["url"].as_str().unwrap().to_ascii_lowercase();
        assert!(signed.contains("x-amz-checksum-sha256") || signed.contains("content-length"), "{signed}");
    }
    let mut etags = Vec::new();
    for (index, (url, bytes)) in urls.iter().zip(bodies).enumerate() {
        let (status, etag) = put(&app, url, bytes).await;
        assert!(status.is_success(), "part {}: {status}", index + 1);
        etags.push((index as i32 + 1, etag.expect("a part's PUT answers its ETag")));
    }
    // Nothing is visible before completion.
    assert!(app.state.store.head(&keys[1]).await.is_err(), "a multipart object appears only when completed");
    let done = run.complete(2, &keys[1], &upload_id, &etags).await;
    assert_eq!(done["type"], "upload_done", "{done}");
    assert_eq!(done["size"], total);
    assert_eq!(app.state.remote_multiparts.completed(), 1);
    assert_eq!(app.state.store.head(&keys[1]).await.unwrap().size, total);

    let finished = run.result(total, &sha256_hex(&whole)).await;
    assert_eq!(finished["accepted"], true, "{finished}");
    let row = job_row(&app, run.job_id).await;
    assert_eq!(row.status, JobStatus::Succeeded, "{row:?}");
    assert_eq!(ready_events(&app, run.video_id).await, 1);
    let stored = app.state.store.get(&keys[1], None).await.unwrap().collect_bytes(12 * MIB as usize).await.unwrap();
    assert!(stored == whole, "the stored download is the parts in order");
}

#[actix_web::test]
async fn remote_workers_multipart_a_part_whose_body_differs_from_its_digest_is_refused_and_nothing_is_published() {
    let app = multipart_app(6 * MIB, |_| {}).await;
    let mut run = leased_run(&app).await;
    let keys = run.keys();
    for (request, key) in keys.iter().enumerate().filter(|(i, _)| *i != 1) {
        run.put_small(&app, 100 + request as u64, key).await;
    }
    let announced = [body(PART, 1), body(MIB, 2)];
    let whole = announced.concat();
    let parts: Vec<Value> = announced.iter().map(|b| json!({ "size": b.len(), "sha256": sha256_hex(b) })).collect();
    let total = whole.len() as u64;
    let answer = run.announce(1, &keys[1], total, &sha256_hex(&whole), json!(parts)).await;
    assert_eq!(answer["type"], "multipart_urls", "{answer}");
    let upload_id = answer["upload_id"].as_str().unwrap().to_string();
    let urls = answer["parts"].as_array().unwrap().clone();
    // Part 2 is sent with other bytes of the same length.
    let mut etags = Vec::new();
    let mut refused_on_the_way_in = false;
    for (index, url) in urls.iter().enumerate() {
        let bytes = if index == 1 { body(MIB, 7) } else { announced[0].clone() };
        let (status, etag) = put(&app, url, bytes).await;
        if index == 1 && !status.is_success() {
            // AWS S3 checks the signed x-amz-checksum-sha256 itself (BadDigest).
            refused_on_the_way_in = true;
            continue;
        }
        assert!(status.is_success(), "part {}: {status}", index + 1);
        etags.push((index as i32 + 1, etag.unwrap()));
    }
    let mut result_code = None;
    if refused_on_the_way_in {
        send(
            &mut run.socket,
            json!({ "type": "abort_upload", "job": run.job_id, "lease": run.lease, "key": keys[1], "upload_id": upload_id }),
        )
        .await;
    } else {
        let done = run.complete(2, &keys[1], &upload_id, &etags).await;
        match backend() {
            // The local store hashes each part as it assembles the object: refused,
            // and the upload aborted (nothing stored).
            Backend::Sqlite => {
                assert_eq!(done["type"], "refused", "{done}");
                assert_eq!(done["code"], "OUTPUT_MISMATCH", "{done}");
                assert!(app.state.store.head(&keys[1]).await.is_err(), "nothing half-written is stored");
            }
            // s3s-fs does not check a part's checksum: the object is assembled, and
            // the result's verification reads it back and finds it different.
            Backend::Postgres => {
                assert_eq!(done["type"], "upload_done", "{done}");
                result_code = Some("OUTPUT_MISMATCH");
            }
        }
    }
    assert_eq!(app.state.remote_multiparts.open(), 0, "a refused or abandoned upload is aborted");
    let finished = run.result(total, &sha256_hex(&whole)).await;
    assert_eq!(finished["accepted"], false, "{finished}");
    let code = finished["code"].as_str().unwrap_or_default().to_string();
    match result_code {
        Some(expected) => assert_eq!(code, expected, "{finished}"),
        None => assert_eq!(code, "OUTPUT_MISSING", "{finished}"),
    }
    // Spent and retried; nothing published; the run's outputs removed.
    let row = job_row(&app, run.job_id).await;
    assert_eq!(row.attempts, 1, "{row:?}");
    assert_ne!(row.status, JobStatus::Succeeded);
    assert!(row.last_error.as_deref().unwrap_or_default().contains(&code), "{row:?}");
    assert_eq!(ready_events(&app, run.video_id).await, 0);
    assert!(app.state.store.head(&keys[1]).await.is_err(), "the refused run's download is removed");
    assert!(app.state.store.head(&keys[0]).await.is_err(), "the refused run's outputs are removed");
    let v = video::Entity::find_by_id(run.video_id).one(&app.state.db).await.unwrap().unwrap();
    assert_ne!(v.status, VideoStatus::Ready);
    assert_eq!(app.state.remote_multiparts.completed(), u64::from(backend() == Backend::Postgres));
}

#[actix_web::test]
async fn remote_workers_multipart_parts_that_do_not_add_up_get_a_typed_refusal_and_a_lost_lease_aborts_the_upload() {
    let app = multipart_app(6 * MIB, |s| {
        s.jobs.lease_secs = 5;
        s.jobs.sweep_interval_secs = 1;
    })
    .await;
    let mut run = leased_run(&app).await;
    let key = format!("{}mp4/video.mp4", run.prefix);
    let digest = "a".repeat(64);
    let part = |size: u64| json!({ "size": size, "sha256": digest });
    let heartbeat = json!({ "type": "heartbeat", "leases": [{ "job": run.job_id, "lease": run.lease }] });
    let refusals = [
        // The sum differs from the size.
        (json!([part(PART), part(MIB)]), 7 * MIB),
        // A part but the last is not the part size.
        (json!([part(4 * MIB), part(PART), part(MIB)]), 10 * MIB),
        // The last part is longer than the part size.
        (json!([part(PART), part(PART + 1)]), 2 * PART + 1),
        // More than 10,000 parts.
        (json!(vec![part(PART); 10_001]), PART * 10_001),
        // A part without a SHA-256.
        (json!([{ "size": MIB, "sha256": "nope" }]), MIB),
    ];
    for (request, (parts, size)) in refusals.into_iter().enumerate() {
        let answer = run.announce(request as u64 + 1, &key, size, &digest, parts).await;
        assert_eq!(answer["type"], "refused", "{answer}");
        assert_eq!(answer["code"], "BAD_PARTS", "{answer}");
    }
    // The key is checked as for one PUT.
    let outside = format!("{}../../source", run.prefix);
    let answer = run.announce(10, &outside, MIB, &digest, json!([part(MIB)])).await;
    assert_eq!(answer["code"], "FORBIDDEN_KEY", "{answer}");
    assert_eq!(app.state.remote_multiparts.open(), 0, "nothing was opened for a refusal");
    send(&mut run.socket, heartbeat.clone()).await;

    // Completing with parts missing is refused, and the upload aborted.
    let answer = run.announce(11, &key, PART + MIB, &digest, json!([part(PART), part(MIB)])).await;
    assert_eq!(answer["type"], "multipart_urls", "{answer}");
    let upload_id = answer["upload_id"].as_str().unwrap().to_string();
    assert_eq!(app.state.remote_multiparts.open(), 1);
    let done = run.complete(12, &key, &upload_id, &[(1, "\"x\"".into())]).await;
    assert_eq!(done["code"], "BAD_PARTS", "{done}");
    assert_eq!(app.state.remote_multiparts.open(), 0, "a refused upload is aborted");
    let done = run.complete(13, &key, &upload_id, &[(1, "\"x\"".into()), (2, "\"y\"".into())]).await;
    assert_eq!(done["code"], "UPLOAD_UNKNOWN", "{done}");
    // Completing parts that were never PUT is refused.
    let answer = run
        .announce(
            14,
            &key,
            MIB,
            &sha256_hex(&body(MIB, 3)),
            json!([{ "size": MIB, "sha256": sha256_hex(&body(MIB, 3)) }]),
        )
        .await;
    let upload_id = answer["upload_id"].as_str().unwrap().to_string();
    let done = run.complete(15, &key, &upload_id, &[(1, "\"x\"".into())]).await;
    assert_eq!(done["code"], "OUTPUT_MISMATCH", "{done}");
    assert!(app.state.store.head(&key).await.is_err());

    // An upload left open when the lease is lost (no more heartbeats) is aborted.
    let answer = run.announce(16, &key, PART + MIB, &digest, json!([part(PART), part(MIB)])).await;
    assert_eq!(answer["type"], "multipart_urls", "{answer}");
    let upload_id = answer["upload_id"].as_str().unwrap().to_string();
    assert_eq!(app.state.remote_multiparts.open(), 1);
    assert!(
        eventually(200, || async { job_row(&app, run.job_id).await.status == JobStatus::Queued }).await,
        "the lease of a silent worker expires"
    );
    assert!(
        eventually(100, || async { app.state.remote_multiparts.open() == 0 }).await,
        "the upload of a lost lease is aborted"
    );
    if backend() == Backend::Sqlite {
        // The local store forgets it (s3s-fs lists an aborted upload's parts as none).
        // The abort follows taking the upload out of memory, so it may still be on
        // its way when the count above reads 0.
        let store = &app.state.store;
        assert!(
            eventually(100, || async {
                matches!(store.list_parts(&key, &upload_id).await, Err(reelhouse::storage::StoreError::UploadNotFound))
            })
            .await,
            "the local store aborted the upload"
        );
    }
}

/// A worker opening upload after upload for one job (each a multipart upload in the
/// store and an entry in the server's memory) is refused past a small bound.
#[actix_web::test]
async fn remote_workers_multipart_open_uploads_per_lease_are_bounded() {
    let app = multipart_app(6 * MIB, |_| {}).await;
    let mut run = leased_run(&app).await;
    let digest = "a".repeat(64);
    let parts = json!([{ "size": MIB, "sha256": digest }]);
    let mut opened = 0;
    let mut refused = None;
    for request in 1..=40u64 {
        let key = format!("{}mp4/{request}.mp4", run.prefix);
        let answer = run.announce(request, &key, MIB, &digest, parts.clone()).await;
        if answer["type"] == "multipart_urls" {
            opened += 1;
        } else {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("every upload was opened: no bound");
    assert_eq!(refused["code"], "TOO_MANY_UPLOADS", "{refused}");
    assert_eq!(opened, 16);
    assert_eq!(app.state.remote_multiparts.open(), 16);
}
