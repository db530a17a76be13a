//! The tus 1.0 endpoint, as a stock tus client uses it, on both backends.

use std::time::Duration;

use base64::Engine as _;
use entities::{UploadStatus, VideoStatus};
use reelhouse::startup::Application;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{test_settings, TestApp, TestUser};
use crate::uploads::{
    big_clip, event_kinds, fixture, jobs_of, new_video, short_s3_prefix, small_clip, source_exists, spawn_uploads_app,
    ticket_for, upload_row, user_id, video_row,
};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn metadata(video: Uuid, filename: &str, filetype: &str) -> String {
    format!("videoId {},filename {},filetype {}", b64(&video.to_string()), b64(filename), b64(filetype))
}

async fn tus_create(app: &TestApp, user: &TestUser, video: Uuid, length: usize) -> reqwest::Response {
    app.client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata(video, "clip.mp4", "video/mp4"))
        .send()
        .await
        .unwrap()
}

/// Create a session and return its URL.
pub(crate) async fn tus_session(app: &TestApp, user: &TestUser, video: Uuid, length: usize) -> String {
    let res = tus_create(app, user, video, length).await;
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    res.headers()["location"].to_str().unwrap().to_string()
}

async fn head(client: &reqwest::Client, url: &str, user: &TestUser) -> reqwest::Response {
    client.head(url).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0").send().await.unwrap()
}

async fn offset(client: &reqwest::Client, url: &str, user: &TestUser) -> u64 {
    let res = head(client, url, user).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.headers()["upload-offset"].to_str().unwrap().parse().unwrap()
}

fn patch_request(
    client: &reqwest::Client,
    url: &str,
    user: &TestUser,
    at: u64,
    body: &[u8],
) -> reqwest::RequestBuilder {
    client
        .patch(url)
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", at.to_string())
        .body(body.to_vec())
}

async fn patch(client: &reqwest::Client, url: &str, user: &TestUser, at: u64, body: &[u8]) -> reqwest::Response {
    patch_request(client, url, user, at, body).send().await.unwrap()
}

/// PATCH `bytes[from..]` in chunks of `chunk`; returns the last response.
async fn send_rest(client: &reqwest::Client, url: &str, user: &TestUser, bytes: &[u8], from: usize, chunk: usize) {
    let mut at = from;
    while at < bytes.len() {
        let end = (at + chunk).min(bytes.len());
        let res = patch(client, url, user, at as u64, &bytes[at..end]).await;
        let status = res.status();
        assert_eq!(status, 204, "PATCH at {at}: {:?}", res.text().await);
        assert_eq!(res.headers()["upload-offset"].to_str().unwrap(), end.to_string());
        at = end;
    }
}

/// Send a PATCH over a raw socket: the headers announce `declared` bytes, only
/// `sent` go out; the socket stays open until the returned stream is dropped.
async fn partial_patch(
    app: &TestApp,
    path: &str,
    user: &TestUser,
    at: u64,
    declared: usize,
    sent: &[u8],
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\nContent-Length: {declared}\r\n\r\n",
        app.port, user.access_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

fn path_of(url: &str) -> String {
    url::Url::parse(url).unwrap().path().to_string()
}

#[actix_web::test]
async fn tus_options_and_version_check() {
    let app = spawn_uploads_app(|_| {}).await;
    let res = app.client.request(reqwest::Method::OPTIONS, app.url("/uploads/")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["tus-resumable"], "1.0.0");
    assert_eq!(h["tus-version"], "1.0.0");
    let extensions = h["tus-extension"].to_str().unwrap();
    for ext in ["creation", "termination", "checksum", "expiration"] {
        assert!(extensions.contains(ext), "{extensions}");
    }
    assert!(h["tus-checksum-algorithm"].to_str().unwrap().contains("sha256"));
    assert_eq!(h["tus-max-size"].to_str().unwrap(), app.state.settings.uploads.max_size_bytes.to_string());

    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let res = app
        .client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", metadata(video, "a.mp4", "video/mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    // No credentials: 401 as JSON.
    let res = app
        .client
        .post(app.url("/uploads/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", metadata(video, "a.mp4", "video/mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHENTICATED");
}

#[actix_web::test]
async fn tus_upload_in_chunks_completes_the_video() {
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    assert_eq!(offset(&app.client, &url, &user).await, 0);
    let res = head(&app.client, &url, &user).await;
    assert_eq!(res.headers()["upload-length"].to_str().unwrap(), clip.len().to_string());
    assert!(res.headers().contains_key("upload-expires"));

    // Stale offset: 409, nothing written.
    let res = patch(&app.client, &url, &user, 5, &clip[..10]).await;
    assert_eq!(res.status(), 409);
    assert_eq!(offset(&app.client, &url, &user).await, 0);
    // Wrong content type: refused.
    let res = app
        .client
        .patch(&url)
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/octet-stream")
        .header("Upload-Offset", "0")
        .body(clip[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);

    send_rest(&app.client, &url, &user, &clip, 0, 7_000).await;
    let row = video_row(&app, video).await;
    assert_eq!(row.status, VideoStatus::Processing);
    assert_eq!(row.width, Some(320));
    assert_eq!(jobs_of(&app, video).await.len(), 1);
    assert_eq!(event_kinds(&app, video).await, ["UPLOADED", "PROCESSING"]);
    let meta = app.state.store.head(&reelhouse::storage::layout::source(user_id(&user), video)).await.unwrap();
    assert_eq!(meta.size, clip.len() as u64);
    assert!(app
        .state
        .store
        .head(&reelhouse::uploads::tail_key(&reelhouse::storage::layout::source(user_id(&user), video)))
        .await
        .is_err());
    // HEAD after completion reports the whole length.
    assert_eq!(offset(&app.client, &url, &user).await, clip.len() as u64);
}

#[actix_web::test]
async fn tus_checksum_mismatch_changes_nothing() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    let chunk = &clip[..50_000];
    let wrong = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"something else"));
    let res = patch_request(&app.client, &url, &user, 0, chunk)
        .header("Upload-Checksum", format!("sha256 {wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 460);
    assert_eq!(offset(&app.client, &url, &user).await, 0);
    let res =
        patch_request(&app.client, &url, &user, 0, chunk).header("Upload-Checksum", "md5 AAAA").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let right = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(chunk));
    let res = patch_request(&app.client, &url, &user, 0, chunk)
        .header("Upload-Checksum", format!("sha256 {right}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(offset(&app.client, &url, &user).await, chunk.len() as u64);
    let sha1 = {
        use sha1::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&clip[chunk.len()..]))
    };
    let res = patch_request(&app.client, &url, &user, chunk.len() as u64, &clip[chunk.len()..])
        .header("Upload-Checksum", format!("sha1 {sha1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
}

#[actix_web::test]
async fn tus_resumes_after_a_dropped_patch_and_refuses_concurrent_writes() {
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = big_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    let path = path_of(&url);

    // A PATCH announcing the whole file sends 6 MiB (one full part and more) and
    // stays open: meanwhile a second PATCH is refused with 409 and writes nothing.
    let sent = 6 * 1024 * 1024;
    let stream = partial_patch(&app, &path, &user, 0, clip.len(), &clip[..sent]).await;
    // Once its first part is stored, that PATCH is mid-body and holds the session.
    // (Probing before it arrived could take the session first and get *it* refused.)
    let mut stored = 0;
    for _ in 0..400 {
        stored = offset(&app.client, &url, &user).await;
        if stored >= 5 * 1024 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(stored, 5 * 1024 * 1024, "the open PATCH never stored its first part");
    let mut saw_conflict = false;
    for _ in 0..100 {
        // A stale offset: refused either way (busy, or offset mismatch), so it never writes.
        let res = patch(&app.client, &url, &user, 1, &[0u8; 16]).await;
        if res.status() == 409 {
            let body: Value = res.json().await.unwrap();
            if body["message"].as_str().unwrap().contains("another request") {
                saw_conflict = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_conflict, "a concurrent PATCH was never refused");
    // The client goes away mid-body.
    drop(stream);

    // Resume where the server says, once the dropped request has let go.
    let mut resumed = false;
    for _ in 0..100 {
        let at = offset(&app.client, &url, &user).await;
        assert!(at <= sent as u64);
        let end = clip.len().min(at as usize + 3 * 1024 * 1024);
        let res = patch(&app.client, &url, &user, at, &clip[at as usize..end]).await;
        if res.status() == 204 {
            resumed = true;
            break;
        }
        assert_eq!(res.status(), 409);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed);
    let at = offset(&app.client, &url, &user).await as usize;
    send_rest(&app.client, &url, &user, &clip, at, 4 * 1024 * 1024).await;
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    let meta = app.state.store.head(&reelhouse::storage::layout::source(user_id(&user), video)).await.unwrap();
    assert_eq!(meta.size, clip.len() as u64);
    // The assembled object is byte-for-byte the file.
    let mut body =
        app.state.store.get(&reelhouse::storage::layout::source(user_id(&user), video), None).await.unwrap().body;
    let mut hash = Sha256::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        hash.update(chunk.unwrap());
    }
    assert_eq!(hash.finalize().to_vec(), Sha256::digest(&clip).to_vec());
    assert_eq!(jobs_of(&app, video).await.len(), 1);
}

/// Waits (polling) until the process-wide tus buffer budget has `bytes` free.
async fn wait_for_budget(app: &TestApp, bytes: u64) {
    for _ in 0..400 {
        if app.state.tus_buffers.available_bytes() == bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the tus buffer budget never reached {bytes} free bytes (has {})", app.state.tus_buffers.available_bytes());
}

/// The memory PATCHes hold in part buffers is bounded for the whole process: while one
/// PATCH holds most of the budget, a PATCH of another user gets what is left, then 503
/// + `Retry-After`, keeping the bytes it got, and goes on once the first lets go. Both
/// files arrive intact.
#[actix_web::test]
async fn tus_patches_beyond_the_buffer_budget_get_503_and_lose_nothing() {
    const PART: u64 = 5 * 1024 * 1024;
    let app = spawn_uploads_app(|s| {
        s.uploads.part_size_bytes = PART;
        s.uploads.tus_buffer_budget_bytes = PART;
        // Part buffers exist where bytes go to parts (S3, or local without staging).
        s.uploads.tus_local_staging = false;
    })
    .await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let clip = big_clip();
    assert!(clip.len() as u64 > PART, "the clip must span more than one part");
    let first = new_video(&app, user_id(&user)).await;
    let second = new_video(&app, user_id(&other)).await;
    let first_url = tus_session(&app, &user, first, clip.len()).await;
    let second_url = tus_session(&app, &other, second, clip.len()).await;
    wait_for_budget(&app, PART).await;

    // The first PATCH announces the whole file, sends all but 256 KiB of a part and
    // stays open: its part buffer holds what it sent.
    let held = (PART - 256 * 1024) as usize;
    let stream = partial_patch(&app, &path_of(&first_url), &user, 0, clip.len(), &clip[..held]).await;
    wait_for_budget(&app, PART - held as u64).await;

    // The second sends 384 KiB: it gets the 256 KiB left, then 503, keeping what it got.
    let mut refused = partial_patch(&app, &path_of(&second_url), &other, 0, clip.len(), &clip[..384 * 1024]).await;
    let (status, headers, body) = read_response(&mut refused).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["tus-resumable"], "1.0.0");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    let kept: u64 = headers["upload-offset"].parse().unwrap();
    assert!(kept <= 256 * 1024, "kept {kept} bytes past the budget");
    drop(refused);
    assert_eq!(settled_offset(&app, &second_url, &other).await, kept, "the refused PATCH lost or invented bytes");

    // The first client goes away: its request ends and the budget comes back.
    drop(stream);
    wait_for_budget(&app, PART).await;
    send_rest(&app.client, &second_url, &other, &clip, kept as usize, 4 * 1024 * 1024).await;

    // The first upload resumes from what it kept (its lease may take a moment to go).
    let mut resumed_at = None;
    for _ in 0..100 {
        let at = offset(&app.client, &first_url, &user).await;
        let end = clip.len().min(at as usize + 4 * 1024 * 1024);
        let res = patch(&app.client, &first_url, &user, at, &clip[at as usize..end]).await;
        if res.status() == 204 {
            resumed_at = Some(end);
            break;
        }
        assert_eq!(res.status(), 409, "{:?}", res.text().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = resumed_at.expect("the first upload never resumed");
    send_rest(&app.client, &first_url, &user, &clip, at, 4 * 1024 * 1024).await;

    for (video, owner) in [(first, &user), (second, &other)] {
        assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
        let key = reelhouse::storage::layout::source(user_id(owner), video);
        let mut body = app.state.store.get(&key, None).await.unwrap().body;
        let mut hash = Sha256::new();
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            hash.update(chunk.unwrap());
        }
        assert_eq!(hash.finalize().to_vec(), Sha256::digest(&clip).to_vec(), "video {video} was not stored intact");
    }
    wait_for_budget(&app, PART).await;
}

#[actix_web::test]
async fn tus_refuses_oversize_and_strangers_and_terminates() {
    let app = spawn_uploads_app(|s| s.uploads.max_size_bytes = 2_000_000).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    // Declared too large.
    let res = tus_create(&app, &user, video, 2_000_001).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    // Not a video type.
    let res = app
        .client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "100")
        .header("Upload-Metadata", metadata(video, "a.pdf", "application/pdf"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);

    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    // More than Upload-Length: 413, nothing written.
    let mut longer = clip.clone();
    longer.extend_from_slice(b"extra");
    let res = patch(&app.client, &url, &user, 0, &longer).await;
    assert_eq!(res.status(), 413);
    assert_eq!(offset(&app.client, &url, &user).await, 0);
    send_rest(&app.client, &url, &user, &clip[..30_000], 0, 30_000).await;

    // Only the owner may use the URL.
    let stranger = app.register_user().await;
    assert_eq!(head(&app.client, &url, &stranger).await.status(), 404);
    assert_eq!(patch(&app.client, &url, &stranger, 30_000, &clip[30_000..31_000]).await.status(), 404);
    let res = app
        .client
        .delete(&url)
        .bearer_auth(&stranger.access_token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(offset(&app.client, &url, &user).await, 30_000);

    // Termination.
    let res =
        app.client.delete(&url).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0").send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(head(&app.client, &url, &user).await.status(), 404);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Draft);
    assert!(!source_exists(&app, user_id(&user), video).await);
    let id = path_of(&url).rsplit('/').next().unwrap().to_string();
    assert_eq!(upload_row(&app, &id).await.status, UploadStatus::Aborted);
}

#[actix_web::test]
async fn tus_final_patch_of_a_hostile_file_answers_415() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let bytes = fixture("hostile_random.mp4");
    let url = tus_session(&app, &user, video, bytes.len()).await;
    let res = patch(&app.client, &url, &user, 0, &bytes).await;
    assert_eq!(res.status(), 415);
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "UNSUPPORTED_MEDIA");
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Failed);
    assert!(!source_exists(&app, user_id(&user), video).await);
    assert!(jobs_of(&app, video).await.is_empty());
}

#[actix_web::test]
async fn tus_url_of_a_create_upload_ticket_accepts_tus() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let ticket = ticket_for(&app, &user, video, &clip, "video/mp4").await;
    let url = ticket["tusUrl"].as_str().unwrap().to_string();
    assert_eq!(offset(&app.client, &url, &user).await, 0);
    send_rest(&app.client, &url, &user, &clip, 0, 20_000).await;
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    assert_eq!(jobs_of(&app, video).await.len(), 1);
}

/// A second server on the same database and storage resumes at the stored offset.
#[actix_web::test]
async fn tus_resumes_on_a_restarted_server() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(data_dir.path()).await;
    settings.uploads.part_size_bytes = 5 * 1024 * 1024;
    short_s3_prefix(&mut settings);
    let clip = big_clip();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let (first, first_handle) = start(settings.clone()).await;
    let user = first.register_user().await;
    let video = new_video(&first, user_id(&user)).await;
    let url = tus_session(&first, &user, video, clip.len()).await;
    // One full part plus a tail below one part.
    let cut = 6 * 1024 * 1024 + 12_345;
    send_rest(&client, &url, &user, &clip[..cut], 0, cut).await;
    let id = path_of(&url).rsplit('/').next().unwrap().to_string();
    first_handle.stop(true).await;
    drop(first);

    let (second, _second_handle) = start(settings.clone()).await;
    let url = second.url(&format!("/uploads/{id}"));
    let at = offset(&client, &url, &user).await;
    assert_eq!(at, 6 * 1024 * 1024 + 12_345);
    if second.state.store.supports_staged() {
        // Local disk: one staging file holding exactly the acknowledged bytes, no parts.
        let row = upload_row(&second, &id).await;
        assert_eq!(staged_len(&second, &row).await, Some(at));
        let upload_id = row.s3_upload_id.clone().unwrap();
        assert!(second.state.store.list_parts(&row.object_key, &upload_id).await.unwrap().is_empty());
    }
    send_rest(&client, &url, &user, &clip, at as usize, 2 * 1024 * 1024).await;
    assert_eq!(video_row(&second, video).await.status, VideoStatus::Processing);
    let mut body =
        second.state.store.get(&reelhouse::storage::layout::source(user_id(&user), video), None).await.unwrap().body;
    let mut hash = Sha256::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        hash.update(chunk.unwrap());
    }
    assert_eq!(hash.finalize().to_vec(), Sha256::digest(&clip).to_vec());
    drop(data_dir);
}

/// Bytes in the staging file of a session's multipart upload (local disk staging).
async fn staged_len(app: &TestApp, row: &entities::upload::Model) -> Option<u64> {
    let upload_id = row.s3_upload_id.as_deref()?;
    app.state.store.staged_len(&row.object_key, upload_id).await.unwrap()
}

/// Build and run a server from `settings` (not a fresh database: the caller's).
async fn start(settings: reelhouse::config::Settings) -> (TestApp, actix_web::dev::ServerHandle) {
    let app = Application::build(settings).await.expect("application builds");
    let port = app.port();
    let state = app.state().clone();
    let shared_frames = app.shared_frames_data();
    let handle = app.handle();
    actix_rt::spawn(async move {
        let _ = app.run_until_stopped().await;
    });
    let test_app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        state,
        shared_frames,
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        data_dir: tempfile::tempdir().unwrap(),
    };
    (test_app, handle)
}

#[actix_web::test]
async fn tus_chunked_bodies_without_length_are_accepted_and_bounded() {
    let app = spawn_uploads_app(|s| s.uploads.tus_max_chunk_bytes = 40_000).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    let chunked = |bytes: Vec<u8>| {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(7_000).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(pieces))
    };
    let send = |at: usize, bytes: Vec<u8>| {
        app.client
            .patch(&url)
            .bearer_auth(&user.access_token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", at.to_string())
            .body(chunked(bytes))
            .send()
    };
    // Over the spool limit: refused, nothing written.
    let res = send(0, clip[..50_000].to_vec()).await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(offset(&app.client, &url, &user).await, 0);
    let mut at = 0;
    while at < clip.len() {
        let end = (at + 35_000).min(clip.len());
        let res = send(at, clip[at..end].to_vec()).await.unwrap();
        assert_eq!(res.status(), 204, "{:?}", res.text().await);
        at = end;
    }
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
}

#[actix_web::test]
async fn tus_expired_sessions_are_swept() {
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = big_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    let cut = 5 * 1024 * 1024 + 1_000;
    send_rest(&app.client, &url, &user, &clip[..cut], 0, cut).await;
    let id = path_of(&url).rsplit('/').next().unwrap().to_string();
    let row = upload_row(&app, &id).await;
    assert_eq!(row.offset_bytes, cut as i64);
    assert!(
        source_exists(&app, user_id(&user), video).await || staged_len(&app, &row).await == Some(cut as u64),
        "the tail (or the staging file) holds the bytes"
    );

    // Nothing is due yet.
    assert_eq!(reelhouse::uploads::sweeper::sweep_once(&app.state).await.unwrap(), 0);
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    let mut expired = row.into_active_model();
    expired.expires_at = Set(chrono::Utc::now() - chrono::Duration::seconds(1));
    expired.update(&app.state.db).await.unwrap();
    assert_eq!(head(&app.client, &url, &user).await.status(), 404);
    assert_eq!(reelhouse::uploads::sweeper::sweep_once(&app.state).await.unwrap(), 1);
    let row = upload_row(&app, &id).await;
    assert_eq!(row.status, UploadStatus::Expired);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Draft);
    assert!(!source_exists(&app, user_id(&user), video).await);
    let key = reelhouse::storage::layout::source(user_id(&user), video);
    assert_eq!(staged_len(&app, &row).await, None, "the staging file is gone");
    // The multipart upload is gone (s3s-fs lists no parts instead of refusing).
    match app.state.store.list_parts(&key, row.s3_upload_id.as_deref().unwrap()).await {
        Err(reelhouse::storage::StoreError::UploadNotFound) => {}
        Ok(parts) => assert!(parts.is_empty(), "{parts:?}"),
        Err(err) => panic!("{err:?}"),
    }
}

// ---- slow bodies cannot pin the buffer budget (issue 18, item 2) -----------------

/// Read one HTTP response (status, lower-cased headers, body) from a raw socket.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, std::collections::HashMap<String, String>, String) {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the connection without a response");
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: std::collections::HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = raw[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    (status, headers, String::from_utf8_lossy(&body).to_string())
}

/// Waits (polling) until the upload's lease is free again and returns its offset.
async fn settled_offset(app: &TestApp, url: &str, user: &TestUser) -> u64 {
    // A zero-length PATCH at the stored offset succeeds only once no write holds the lease.
    for _ in 0..400 {
        let at = offset(&app.client, url, user).await;
        if patch(&app.client, url, user, at, &[]).await.status() == 204 {
            return offset(&app.client, url, user).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the upload at {url} stayed busy");
}

/// The reproduction, scaled down: PATCHes that announce whole files but
/// trickle bytes must not reserve buffer memory they have not received, so another
/// user's PATCH still goes through.
#[actix_web::test]
async fn tus_slow_bodies_do_not_pin_the_buffer_budget() {
    const PART: u64 = 5 * 1024 * 1024;
    const BUDGET: u64 = 2 * PART;
    let app = spawn_uploads_app(|s| {
        s.uploads.part_size_bytes = PART;
        s.uploads.tus_buffer_budget_bytes = BUDGET;
        s.uploads.tus_local_staging = false;
    })
    .await;
    let clip = big_clip();
    let slow = app.register_user().await;
    let mut streams = Vec::new();
    let mut slow_urls = Vec::new();
    for _ in 0..3 {
        let video = new_video(&app, user_id(&slow)).await;
        let url = tus_session(&app, &slow, video, clip.len()).await;
        streams.push(partial_patch(&app, &path_of(&url), &slow, 0, clip.len(), &clip[..1024]).await);
        slow_urls.push(url);
    }
    // Each slow PATCH has been read (and has taken whatever it takes).
    for _ in 0..400 {
        if app.state.tus_buffers.available_bytes() <= BUDGET - 3 * 64 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(app.state.tus_buffers.available_bytes() <= BUDGET - 3 * 64 * 1024, "the slow PATCHes never arrived");

    let other = app.register_user().await;
    let video = new_video(&app, user_id(&other)).await;
    let url = tus_session(&app, &other, video, clip.len()).await;
    let res = patch(&app.client, &url, &other, 0, &clip[..3 * 1024 * 1024]).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(offset(&app.client, &url, &other).await, 3 * 1024 * 1024);
    // The slow PATCHes hold what they sent, not what they announced.
    assert!(app.state.tus_buffers.available_bytes() >= BUDGET - 3 * 64 * 1024);

    // When they go away, the bytes they sent are kept.
    drop(streams);
    for url in &slow_urls {
        assert_eq!(settled_offset(&app, url, &slow).await, 1024);
    }
    wait_for_budget(&app, BUDGET).await;
}

/// A body that stops sending is ended with 408 BODY_TIMEOUT; what it sent is kept
/// and the upload resumes from there.
#[actix_web::test]
async fn tus_idle_bodies_time_out_and_keep_what_arrived() {
    let app = spawn_uploads_app(|s| s.uploads.tus_body_idle_timeout_secs = 1).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    let mut stream = partial_patch(&app, &path_of(&url), &user, 0, clip.len(), &clip[..10_000]).await;
    let (status, headers, body) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(headers["tus-resumable"], "1.0.0");
    assert_eq!(headers["upload-offset"], "10000");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "BODY_TIMEOUT", "{body}");
    drop(stream);
    let at = settled_offset(&app, &url, &user).await;
    assert_eq!(at, 10_000);
    send_rest(&app.client, &url, &user, &clip, at as usize, 20_000).await;
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
}

/// One user's PATCHes together hold at most their share of the budget: past it they
/// get 429 + Retry-After (keeping what arrived) while another user proceeds.
#[actix_web::test]
async fn tus_one_user_is_held_to_its_share_of_the_buffer_budget() {
    const PART: u64 = 5 * 1024 * 1024;
    let app = spawn_uploads_app(|s| {
        s.uploads.part_size_bytes = PART;
        s.uploads.tus_buffer_budget_bytes = 4 * PART;
        s.uploads.tus_buffer_per_user_bytes = PART;
        s.uploads.tus_local_staging = false;
    })
    .await;
    let clip = big_clip();
    let greedy = app.register_user().await;
    let first = tus_session(&app, &greedy, new_video(&app, user_id(&greedy)).await, clip.len()).await;
    let second = tus_session(&app, &greedy, new_video(&app, user_id(&greedy)).await, clip.len()).await;
    // The first PATCH sends all but 512 KiB of the user's share and stays open.
    let held = (PART - 512 * 1024) as usize;
    let _first_stream = partial_patch(&app, &path_of(&first), &greedy, 0, clip.len(), &clip[..held]).await;
    for _ in 0..400 {
        if app.state.tus_buffers.user_bytes(user_id(&greedy)) >= held as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(app.state.tus_buffers.user_bytes(user_id(&greedy)) >= held as u64);

    // The second sends 768 KiB: it gets what is left of the share, then 429.
    let mut stream = partial_patch(&app, &path_of(&second), &greedy, 0, clip.len(), &clip[..768 * 1024]).await;
    let (status, headers, body) = read_response(&mut stream).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "2");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
    let kept: u64 = headers["upload-offset"].parse().unwrap();
    assert!(kept <= 512 * 1024, "kept {kept} bytes past the share");
    drop(stream);
    assert_eq!(settled_offset(&app, &second, &greedy).await, kept);

    // Another user is not held back by the greedy one.
    let other = app.register_user().await;
    let url = tus_session(&app, &other, new_video(&app, user_id(&other)).await, clip.len()).await;
    let res = patch(&app.client, &url, &other, 0, &clip[..3 * 1024 * 1024]).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
}

// ---------------------------------------------------------------------------
// The extensions: metadata on HEAD, X-HTTP-Method-Override, creation-with-upload,
// creation-defer-length, concatenation.
// ---------------------------------------------------------------------------

fn tus_post(app: &TestApp, user: &TestUser) -> reqwest::RequestBuilder {
    app.client.post(app.url("/uploads/")).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0")
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

fn header_of(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

#[actix_web::test]
async fn tus_head_returns_the_metadata_and_method_override_works() {
    let app = spawn_uploads_app(|_| {}).await;
    let res = app.client.request(reqwest::Method::OPTIONS, app.url("/uploads/")).send().await.unwrap();
    let extensions = res.headers()["tus-extension"].to_str().unwrap().to_string();
    for ext in ["creation-with-upload", "creation-defer-length", "concatenation"] {
        assert!(extensions.split(',').any(|e| e == ext), "{extensions}");
    }
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let sent = format!("{},extra", metadata(video, "holiday clip.mp4", "video/mp4"));
    let res = tus_post(&app, &user)
        .header("Upload-Length", clip.len().to_string())
        .header("Upload-Metadata", &sent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    // HEAD answers the metadata exactly as it was sent (a key without a value too).
    let res = head(&app.client, &url, &user).await;
    assert_eq!(header_of(&res, "upload-metadata").as_deref(), Some(sent.as_str()));
    assert!(header_of(&res, "upload-concat").is_none());

    // POST + X-HTTP-Method-Override: PATCH is a PATCH (offset rules included).
    let overridden = |at: u64, body: &[u8]| {
        app.client
            .post(&url)
            .bearer_auth(&user.access_token)
            .header("Tus-Resumable", "1.0.0")
            .header("X-HTTP-Method-Override", "PATCH")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", at.to_string())
            .body(body.to_vec())
            .send()
    };
    let res = overridden(7, &clip[..10]).await.unwrap();
    assert_eq!(res.status(), 409);
    let half = clip.len() / 2;
    let res = overridden(0, &clip[..half]).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(header_of(&res, "upload-offset"), Some(half.to_string()));
    // X-HTTP-Method-Override: HEAD reports the offset; an unknown method is 405.
    let res = app
        .client
        .post(&url)
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("X-HTTP-Method-Override", "HEAD")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header_of(&res, "upload-offset"), Some(half.to_string()));
    let res =
        app.client.post(&url).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0").send().await.unwrap();
    assert_eq!(res.status(), 405);
    // Someone else's upload stays invisible through the override too.
    let stranger = app.register_user().await;
    let res = app
        .client
        .post(&url)
        .bearer_auth(&stranger.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = overridden(half as u64, &clip[half..]).await.unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);

    // A createUpload ticket's tus URL reports what the server knows as metadata.
    let other = new_video(&app, user_id(&user)).await;
    let ticket = ticket_for(&app, &user, other, &clip, "video/mp4").await;
    let tus_url = ticket["tusUrl"].as_str().unwrap().to_string();
    let res = head(&app.client, &tus_url, &user).await;
    let meta = header_of(&res, "upload-metadata").unwrap();
    assert!(meta.contains(&format!("videoId {}", b64(&other.to_string()))), "{meta}");
    assert!(meta.contains(&format!("filetype {}", b64("video/mp4"))), "{meta}");
    // X-HTTP-Method-Override: DELETE terminates.
    let res = app
        .client
        .post(&tus_url)
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(video_row(&app, other).await.status, VideoStatus::Draft);

    // Metadata is bounded.
    let third = new_video(&app, user_id(&user)).await;
    let res = tus_post(&app, &user)
        .header("Upload-Length", "10")
        .header(
            "Upload-Metadata",
            format!("{},filler {}", metadata(third, "a.mp4", "video/mp4"), b64(&"x".repeat(4000))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[actix_web::test]
async fn tus_creation_with_upload() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let clip = small_clip();
    let create = |video: Uuid, body: Vec<u8>| {
        tus_post(&app, &user)
            .header("Upload-Length", clip.len().to_string())
            .header("Upload-Metadata", metadata(video, "clip.mp4", "video/mp4"))
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
    };
    // The first bytes come with the POST; the rest with PATCH.
    let video = new_video(&app, user_id(&user)).await;
    let res = create(video, clip[..10_000].to_vec()).await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(header_of(&res, "upload-offset").as_deref(), Some("10000"));
    assert!(header_of(&res, "upload-expires").is_some());
    let url = location(&res);
    assert_eq!(offset(&app.client, &url, &user).await, 10_000);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Uploading);
    send_rest(&app.client, &url, &user, &clip, 10_000, 30_000).await;
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    assert_eq!(jobs_of(&app, video).await.len(), 1);

    // The whole file in the POST: created and completed at once.
    let video = new_video(&app, user_id(&user)).await;
    let res = create(video, clip.clone()).await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(header_of(&res, "upload-offset"), Some(clip.len().to_string()));
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    assert_eq!(event_kinds(&app, video).await, ["UPLOADED", "PROCESSING"]);

    // More than Upload-Length in the POST: refused, nothing past the length stored.
    let video = new_video(&app, user_id(&user)).await;
    let mut longer = clip.clone();
    longer.extend_from_slice(b"trailing");
    let res = create(video, longer).await.unwrap();
    assert_eq!(res.status(), 413);
    let url = location(&res);
    assert_eq!(offset(&app.client, &url, &user).await, 0);
}

#[actix_web::test]
async fn tus_deferred_length_is_named_later_and_bounded_as_bytes_arrive() {
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    let user = app.register_user().await;
    let clip = big_clip();
    let deferred = |video: Uuid| {
        tus_post(&app, &user)
            .header("Upload-Defer-Length", "1")
            .header("Upload-Metadata", metadata(video, "clip.mp4", "video/mp4"))
            .send()
    };
    // The length comes with the PATCH carrying the last bytes.
    let video = new_video(&app, user_id(&user)).await;
    let res = deferred(video).await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let url = location(&res);
    let res = head(&app.client, &url, &user).await;
    assert_eq!(header_of(&res, "upload-defer-length").as_deref(), Some("1"));
    assert!(header_of(&res, "upload-length").is_none());
    let first = 6 * 1024 * 1024; // one full part and a tail
    let res = patch(&app.client, &url, &user, 0, &clip[..first]).await;
    assert_eq!(res.status(), 204);
    // All bytes in without a length: nothing completes yet.
    let res = patch_request(&app.client, &url, &user, first as u64, &clip[first..])
        .header("Upload-Length", clip.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    let res = head(&app.client, &url, &user).await;
    assert_eq!(header_of(&res, "upload-length"), Some(clip.len().to_string()));
    let meta = app.state.store.head(&reelhouse::storage::layout::source(user_id(&user), video)).await.unwrap();
    assert_eq!(meta.size, clip.len() as u64);

    // The length comes after the last bytes, in an empty PATCH.
    let video = new_video(&app, user_id(&user)).await;
    let url = location(&deferred(video).await.unwrap());
    let res = patch(&app.client, &url, &user, 0, &clip[..first]).await;
    assert_eq!(res.status(), 204);
    let res = patch(&app.client, &url, &user, first as u64, &clip[first..]).await;
    assert_eq!(res.status(), 204);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Uploading);
    // completeUpload cannot finish it either: the length is unknown.
    assert!(reelhouse::uploads::completion::complete(&app.state, upload_row(&app, &path_of(&url)[9..]).await.id)
        .await
        .is_err());
    // A length below what arrived is refused.
    let res = patch_request(&app.client, &url, &user, clip.len() as u64, b"")
        .header("Upload-Length", (clip.len() - 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = patch_request(&app.client, &url, &user, clip.len() as u64, b"")
        .header("Upload-Length", clip.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    assert_eq!(jobs_of(&app, video).await.len(), 1);

    // Both lengths at once is a bad request.
    let video = new_video(&app, user_id(&user)).await;
    let res = tus_post(&app, &user)
        .header("Upload-Defer-Length", "1")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", metadata(video, "clip.mp4", "video/mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[actix_web::test]
async fn tus_deferred_length_bytes_are_held_to_the_size_limit_and_quota() {
    let app = spawn_uploads_app(|s| {
        s.uploads.max_size_bytes = 100_000;
        s.uploads.quota_bytes_per_user = 150_000;
    })
    .await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let res = tus_post(&app, &user)
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", metadata(video, "clip.mp4", "video/mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    // It reserves the most it may hold: the size limit.
    assert_eq!(upload_row(&app, &path_of(&url)[9..]).await.declared_size, 100_000);
    let bytes = vec![7u8; 100_001];
    let res = patch(&app.client, &url, &user, 0, &bytes).await;
    assert_eq!(res.status(), 413);
    let res = patch(&app.client, &url, &user, 0, &bytes[..60_000]).await;
    assert_eq!(res.status(), 204);
    // Without Content-Length (chunked) the limit holds as bytes arrive.
    let stream = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 10_000]))));
    let res = app
        .client
        .patch(&url)
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "60000")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(offset(&app.client, &url, &user).await, 60_000);
    let res =
        patch_request(&app.client, &url, &user, 60_000, b"").header("Upload-Length", "100001").send().await.unwrap();
    assert_eq!(res.status(), 413);
    // A second deferred upload only gets what is left of the quota.
    let other = new_video(&app, user_id(&user)).await;
    let res = tus_post(&app, &user)
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", metadata(other, "clip.mp4", "video/mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(upload_row(&app, &path_of(&location(&res))[9..]).await.declared_size, 50_000);
    // Naming the length gives the rest back.
    let res =
        patch_request(&app.client, &url, &user, 60_000, b"").header("Upload-Length", "60000").send().await.unwrap();
    // 60 000 bytes of sevens are no video: refused when it completes.
    assert_eq!(res.status(), 415, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Failed);
}

async fn partial(app: &TestApp, user: &TestUser, video: Uuid, bytes: &[u8]) -> String {
    let res = tus_post(app, user)
        .header("Upload-Concat", "partial")
        .header("Upload-Length", bytes.len().to_string())
        .header("Upload-Metadata", format!("videoId {}", b64(&video.to_string())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let url = location(&res);
    send_rest(&app.client, &url, user, bytes, 0, 4 * 1024 * 1024).await;
    url
}

fn final_request(app: &TestApp, user: &TestUser, video: Uuid, urls: &[&str]) -> reqwest::RequestBuilder {
    tus_post(app, user)
        .header("Upload-Concat", format!("final;{}", urls.join(" ")))
        .header("Upload-Metadata", metadata(video, "clip.mp4", "video/mp4"))
}

#[actix_web::test]
async fn tus_concatenation_joins_partial_uploads_into_the_video() {
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    let user = app.register_user().await;
    let owner = user_id(&user);
    let video = new_video(&app, owner).await;
    let clip = big_clip();
    let third = clip.len() / 3;
    let pieces = [&clip[..third], &clip[third..2 * third], &clip[2 * third..]];

    let a = partial(&app, &user, video, pieces[0]).await;
    let res = head(&app.client, &a, &user).await;
    assert_eq!(header_of(&res, "upload-concat").as_deref(), Some("partial"));
    assert_eq!(header_of(&res, "upload-offset"), Some(pieces[0].len().to_string()));
    // A finished partial upload completes nothing by itself.
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Uploading);
    assert!(jobs_of(&app, video).await.is_empty());
    let b = partial(&app, &user, video, pieces[1]).await;
    // Only partial uploads may join: a whole upload of the same video is refused.
    assert_eq!(tus_create(&app, &user, video, 10).await.status(), 409);
    // Ending one partial upload leaves the video to the others.
    let spare = partial(&app, &user, video, b"spare").await;
    let res = app
        .client
        .delete(&spare)
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Uploading);

    // An unfinished partial upload cannot be joined.
    let res = tus_post(&app, &user)
        .header("Upload-Concat", "partial")
        .header("Upload-Length", pieces[2].len().to_string())
        .header("Upload-Metadata", format!("videoId {}", b64(&video.to_string())))
        .send()
        .await
        .unwrap();
    let c = location(&res);
    let res = final_request(&app, &user, video, &[&a, &b, &c]).send().await.unwrap();
    assert_eq!(res.status(), 409);
    send_rest(&app.client, &c, &user, pieces[2], 0, 4 * 1024 * 1024).await;
    // Another user cannot join these partial uploads (nor learn they exist).
    let stranger = app.register_user().await;
    let res = final_request(&app, &stranger, video, &[&a, &b, &c]).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // The same partial upload twice is refused.
    let res = final_request(&app, &user, video, &[&a, &a]).send().await.unwrap();
    assert_eq!(res.status(), 400);

    // Paths work as well as URLs.
    let res = final_request(&app, &user, video, &[&a, &path_of(&b), &c]).send().await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let url = location(&res);
    let row = video_row(&app, video).await;
    assert_eq!(row.status, VideoStatus::Processing);
    assert_eq!(row.source_size_bytes, Some(clip.len() as i64));
    assert_eq!(jobs_of(&app, video).await.len(), 1);
    let mut source = app.state.store.get(&reelhouse::storage::layout::source(owner, video), None).await.unwrap().body;
    let mut stored = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut source).await {
        stored.extend_from_slice(&chunk.unwrap());
    }
    assert!(stored == clip, "the source is the partial uploads in order");
    // The partial uploads' bytes are gone; they are done.
    for partial in [&a, &b, &c] {
        let row = upload_row(&app, &path_of(partial)[9..]).await;
        assert_eq!(row.status, UploadStatus::Completed);
        assert!(app.state.store.head(&row.object_key).await.is_err());
    }
    // HEAD of the final upload names its parts; it takes no PATCH.
    let res = head(&app.client, &url, &user).await;
    assert_eq!(header_of(&res, "upload-offset"), Some(clip.len().to_string()));
    let concat = header_of(&res, "upload-concat").unwrap();
    assert_eq!(concat, format!("final;{a} {b} {c}"));
    let res = patch(&app.client, &url, &user, 0, b"x").await;
    assert_eq!(res.status(), 403);
    // The same final request again (a client that lost the answer) gets the same
    // final upload, and the video still has one job.
    let res = final_request(&app, &user, video, &[&a, &b, &c]).send().await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(location(&res), url);
    assert_eq!(jobs_of(&app, video).await.len(), 1);
    // A partial upload is used once.
    let other = new_video(&app, owner).await;
    let res = final_request(&app, &user, other, &[&a]).send().await.unwrap();
    assert_eq!(res.status(), 409);
}

#[actix_web::test]
async fn tus_partial_uploads_are_bounded() {
    let app = spawn_uploads_app(|s| s.uploads.max_size_bytes = 1_000).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let create = |len: usize| {
        tus_post(&app, &user)
            .header("Upload-Concat", "partial")
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", format!("videoId {}", b64(&video.to_string())))
            .send()
    };
    assert_eq!(create(600).await.unwrap().status(), 201);
    // Together the partial uploads of a video are held to the size limit.
    assert_eq!(create(600).await.unwrap().status(), 413);
    for _ in 1..reelhouse::uploads::MAX_PARTIALS {
        assert_eq!(create(10).await.unwrap().status(), 201);
    }
    // And to a number of them.
    assert_eq!(create(10).await.unwrap().status(), 409);
    // A partial upload must name its video (it is counted against that video).
    let res =
        tus_post(&app, &user).header("Upload-Concat", "partial").header("Upload-Length", "10").send().await.unwrap();
    assert_eq!(res.status(), 400);
}

#[actix_web::test]
async fn tus_expired_partial_uploads_are_swept_and_free_the_video() {
    let app = spawn_uploads_app(|_| {}).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    // Two partial uploads, both full: at expiry neither may complete the video.
    let a = partial(&app, &user, video, b"first part").await;
    let b = partial(&app, &user, video, b"second part").await;
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    for url in [&a, &b] {
        let row = upload_row(&app, &path_of(url)[9..]).await;
        let mut expired = row.into_active_model();
        expired.expires_at = Set(chrono::Utc::now() - chrono::Duration::seconds(1));
        expired.update(&app.state.db).await.unwrap();
    }
    assert_eq!(reelhouse::uploads::sweeper::sweep_once(&app.state).await.unwrap(), 2);
    for url in [&a, &b] {
        assert_eq!(upload_row(&app, &path_of(url)[9..]).await.status, UploadStatus::Expired);
    }
    assert!(jobs_of(&app, video).await.is_empty());
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Draft);
    // The video takes a new upload.
    assert_eq!(tus_create(&app, &user, video, 10).await.status(), 201);
}

/// An object store that holds the first read of one key until the test lets it go:
/// a join that is "still running" for as long as the test needs.
struct GatedStore {
    inner: std::sync::Arc<dyn reelhouse::storage::ObjectStore>,
    key: String,
    reached: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl reelhouse::storage::ObjectStore for GatedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn put(
        &self,
        key: &str,
        body: reelhouse::storage::ByteStream,
        content_type: Option<&str>,
    ) -> Result<reelhouse::storage::ObjectMeta, reelhouse::storage::StoreError> {
        self.inner.put(key, body, content_type).await
    }
    async fn put_bytes(
        &self,
        key: &str,
        bytes: bytes::Bytes,
        content_type: Option<&str>,
    ) -> Result<reelhouse::storage::ObjectMeta, reelhouse::storage::StoreError> {
        self.inner.put_bytes(key, bytes, content_type).await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<reelhouse::storage::ByteRange>,
    ) -> Result<reelhouse::storage::GetResult, reelhouse::storage::StoreError> {
        if key == self.key {
            self.reached.notify_one();
            self.release.notified().await;
        }
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &str) -> Result<reelhouse::storage::ObjectMeta, reelhouse::storage::StoreError> {
        self.inner.head(key).await
    }
    fn supports_staged(&self) -> bool {
        self.inner.supports_staged()
    }
    async fn open_staged(
        &self,
        key: &str,
        upload_id: &str,
        offset: u64,
    ) -> Result<reelhouse::storage::StagedWriter, reelhouse::storage::StoreError> {
        self.inner.open_staged(key, upload_id, offset).await
    }
    async fn staged_len(&self, key: &str, upload_id: &str) -> Result<Option<u64>, reelhouse::storage::StoreError> {
        self.inner.staged_len(key, upload_id).await
    }
    async fn complete_staged(
        &self,
        key: &str,
        upload_id: &str,
        size: u64,
    ) -> Result<reelhouse::storage::ObjectMeta, reelhouse::storage::StoreError> {
        self.inner.complete_staged(key, upload_id, size).await
    }
    async fn local_file(
        &self,
        key: &str,
    ) -> Result<Option<reelhouse::storage::LocalFile>, reelhouse::storage::StoreError> {
        self.inner.local_file(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), reelhouse::storage::StoreError> {
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, reelhouse::storage::StoreError> {
        self.inner.delete_prefix(prefix).await
    }
    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
    ) -> Result<reelhouse::storage::PresignedRequest, reelhouse::storage::StoreError> {
        self.inner.presign_put(key, expires_in, content_type).await
    }
    async fn presign_bound_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        binding: reelhouse::storage::UploadBinding,
    ) -> Result<reelhouse::storage::PresignedRequest, reelhouse::storage::StoreError> {
        self.inner.presign_bound_put(key, expires_in, content_type, binding).await
    }
    async fn presign_bound_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        binding: reelhouse::storage::UploadBinding,
    ) -> Result<reelhouse::storage::PresignedRequest, reelhouse::storage::StoreError> {
        self.inner.presign_bound_part(key, upload_id, part_number, expires_in, binding).await
    }
    async fn rename(
        &self,
        from: &str,
        to: &str,
    ) -> Result<reelhouse::storage::ObjectMeta, reelhouse::storage::StoreError> {
        self.inner.rename(from, to).await
    }
    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<reelhouse::storage::PresignedRequest, reelhouse::storage::StoreError> {
        self.inner.presign_get(key, expires_in).await
    }
    async fn create_multipart(
        &self,
        key: &str,
        content_type: Option<&str>,
    ) -> Result<String, reelhouse::storage::StoreError> {
        self.inner.create_multipart(key, content_type).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: bytes::Bytes,
    ) -> Result<String, reelhouse::storage::StoreError> {
        self.inner.upload_part(key, upload_id, part_number, body).await
    }
    async fn presign_upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
    ) -> Result<reelhouse::storage::PresignedRequest, reelhouse::storage::StoreError> {
        self.inner.presign_upload_part(key, upload_id, part_number, expires_in).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<reelhouse::storage::CompletedPart>,
    ) -> Result<reelhouse::storage::ObjectMeta, reelhouse::storage::StoreError> {
        self.inner.complete_multipart(key, upload_id, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), reelhouse::storage::StoreError> {
        self.inner.abort_multipart(key, upload_id).await
    }
    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<reelhouse::storage::UploadedPart>, reelhouse::storage::StoreError> {
        self.inner.list_parts(key, upload_id).await
    }
    async fn check(&self) -> Result<(), reelhouse::storage::StoreError> {
        self.inner.check().await
    }
}

/// Regression (issue 24 follow-up): a join that runs longer than the sweeper's
/// patience with COMPLETING sessions (a quarter of an hour) and past the partial
/// uploads' own expiry must not have them reopened, expired and deleted under it:
/// the running join keeps their `updated_at` fresh, and the final session lives its
/// own session length, not what the partials had left.
#[actix_web::test]
async fn tus_a_long_concatenation_keeps_its_partial_uploads_from_the_sweeper() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let app = spawn_uploads_app(|s| s.uploads.sweep_interval_secs = 1).await;
    let user = app.register_user().await;
    let owner = user_id(&user);
    let video = new_video(&app, owner).await;
    let clip = small_clip();
    let half = clip.len() / 2;
    let a = partial(&app, &user, video, &clip[..half]).await;
    let b = partial(&app, &user, video, &clip[half..]).await;
    let parts: Vec<Uuid> = [&a, &b].iter().map(|url| Uuid::parse_str(&path_of(url)[9..]).unwrap()).collect();
    // An hour left on the partial uploads when the final request comes.
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    entities::upload::Entity::update_many()
        .col_expr(entities::upload::Column::ExpiresAt, sea_orm::sea_query::Expr::value(soon))
        .filter(entities::upload::Column::Id.is_in(parts.clone()))
        .exec(&app.state.db)
        .await
        .unwrap();

    // The join is held on reading the second partial upload's bytes.
    let gate_key = upload_row(&app, &parts[1].to_string()).await.object_key;
    let (reached, release) =
        (std::sync::Arc::new(tokio::sync::Notify::new()), std::sync::Arc::new(tokio::sync::Notify::new()));
    let mut state = app.state.clone();
    state.store = std::sync::Arc::new(GatedStore {
        inner: app.state.store.clone(),
        key: gate_key,
        reached: reached.clone(),
        release: release.clone(),
    });
    let principal = reelhouse::auth::principal::Principal {
        user_id: owner,
        role: entities::Role::User,
        method: reelhouse::auth::principal::AuthMethod::AccessToken,
        family_id: None,
        api_key_id: None,
    };
    let request = reelhouse::uploads::concat::FinalRequest {
        video_id: Some(video),
        metadata: None,
        filename: Some("clip.mp4".into()),
        content_type: Some("video/mp4".into()),
        checksum_sha256: None,
        parts: parts.clone(),
    };
    let joining =
        actix_rt::spawn(async move { reelhouse::uploads::concat::concatenate(&state, &principal, request).await });
    tokio::time::timeout(Duration::from_secs(60), reached.notified()).await.expect("the join reaches the second part");

    // The final session has a session's length of its own, not the hour the partials had.
    let finals: Vec<entities::upload::Model> = entities::upload::Entity::find()
        .filter(entities::upload::Column::VideoId.eq(video))
        .filter(entities::upload::Column::Id.is_not_in(parts.clone()))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(finals.len(), 1);
    let final_row = finals[0].clone();
    assert!(final_row.expires_at > chrono::Utc::now() + chrono::Duration::hours(23), "{final_row:?}");

    // Let the join seem to have run a long while: its partial uploads' last sign of
    // life 10 minutes ago (within the sweeper's quarter hour, so the background sweep
    // of this test's app does not race what follows) and their session over. A live
    // join shows itself again within `uploads.sweep_interval_secs`...
    let long_ago = chrono::Utc::now() - chrono::Duration::minutes(10);
    entities::upload::Entity::update_many()
        .col_expr(entities::upload::Column::UpdatedAt, sea_orm::sea_query::Expr::value(long_ago))
        .col_expr(
            entities::upload::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(entities::upload::Column::Id.is_in(parts.clone()))
        .exec(&app.state.db)
        .await
        .unwrap();
    let refreshed = crate::helpers::eventually(100, || async {
        let mut fresh = true;
        for id in &parts {
            fresh &= upload_row(&app, &id.to_string()).await.updated_at > long_ago + chrono::Duration::minutes(5);
        }
        fresh
    })
    .await;
    assert!(refreshed, "the running join refreshes its partial uploads' updated_at");
    // ...so that the sweeper (twice: reopening as stuck, then expiring, was the
    // failure) leaves it be, though the partial uploads' own session has ended.
    for _ in 0..2 {
        reelhouse::uploads::sweeper::sweep_once(&app.state).await.unwrap();
    }
    for id in &parts {
        assert_eq!(upload_row(&app, &id.to_string()).await.status, UploadStatus::Completing, "partial {id}");
    }
    assert_eq!(upload_row(&app, &final_row.id.to_string()).await.status, UploadStatus::Open);

    release.notify_one();
    let (row, completed) = joining.await.unwrap().expect("the join finishes");
    assert_eq!(row.id, final_row.id);
    let completed = completed.expect("the joined upload completes the video");
    assert_eq!(completed.status, VideoStatus::Processing);
    for id in &parts {
        assert_eq!(upload_row(&app, &id.to_string()).await.status, UploadStatus::Completed);
    }
    let mut source = app.state.store.get(&reelhouse::storage::layout::source(owner, video), None).await.unwrap().body;
    let mut stored = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut source).await {
        stored.extend_from_slice(&chunk.unwrap());
    }
    assert!(stored == clip, "the source is the partial uploads in order");
}

/// Regression (review of tus concatenation): several sessions can write to the
/// video's source key (a final upload whose join was cut off, left OPEN, next to the
/// one that completed the video). Ending the stale one, by expiry or termination,
/// must not delete the source the video was accepted with.
#[actix_web::test]
async fn tus_ending_a_stale_session_keeps_the_accepted_source() {
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    send_rest(&app.client, &url, &user, &clip, 0, 64 * 1024).await;
    let source = reelhouse::storage::layout::source(user_id(&user), video);
    assert_eq!(video_row(&app, video).await.source_key.as_deref(), Some(source.as_str()));
    assert_eq!(app.state.store.head(&source).await.unwrap().size, clip.len() as u64);

    // A second, stale session writing to the same key (as a cut-off final upload
    // is), still OPEN.
    let completed = upload_row(&app, path_of(&url).trim_start_matches("/uploads/")).await;
    let mut stale = completed.clone().into_active_model();
    stale.id = Set(Uuid::now_v7());
    stale.status = Set(UploadStatus::Open);
    stale.offset_bytes = Set(1024);
    stale.s3_upload_id = Set(None);
    let stale = stale.insert(&app.state.db).await.unwrap();
    assert_eq!(stale.object_key, source);

    reelhouse::uploads::abort::end_session(&app.state, stale.id, UploadStatus::Expired, "expired").await.unwrap();
    assert_eq!(upload_row(&app, &stale.id.to_string()).await.status, UploadStatus::Expired);
    let meta = app.state.store.head(&source).await.expect("the accepted source survives the stale session's end");
    assert_eq!(meta.size, clip.len() as u64);
    assert_ne!(video_row(&app, video).await.status, VideoStatus::Draft);
}

// ---- local disk: one staging file, each byte written once (issue 19, item 3) -------

async fn stored_sha256(app: &TestApp, key: &str) -> Vec<u8> {
    let mut body = app.state.store.get(key, None).await.unwrap().body;
    let mut hash = Sha256::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        hash.update(chunk.unwrap());
    }
    hash.finalize().to_vec()
}

/// On local disk a PATCH streams into the upload's staging file: a body larger than
/// the whole buffer budget goes through in one request without reserving any of it,
/// nothing is left in parts, and the last byte renames the file into place.
#[actix_web::test]
async fn tus_local_uploads_stream_into_one_staging_file() {
    const PART: u64 = 5 * 1024 * 1024;
    let app = spawn_uploads_app(|s| {
        s.uploads.part_size_bytes = PART;
        s.uploads.tus_buffer_budget_bytes = PART;
        s.uploads.tus_buffer_per_user_bytes = PART;
    })
    .await;
    if !app.state.store.supports_staged() {
        eprintln!("skipped: staging files are a local-disk feature");
        return;
    }
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = big_clip();
    assert!(clip.len() as u64 > 2 * PART, "the clip must be larger than the whole budget");
    let url = tus_session(&app, &user, video, clip.len()).await;
    let id = path_of(&url).rsplit('/').next().unwrap().to_string();

    let first = clip.len() - 100_000;
    let res = patch(&app.client, &url, &user, 0, &clip[..first]).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    let row = upload_row(&app, &id).await;
    assert_eq!(row.offset_bytes, first as i64);
    assert_eq!(staged_len(&app, &row).await, Some(first as u64));
    let upload_id = row.s3_upload_id.clone().unwrap();
    assert!(app.state.store.list_parts(&row.object_key, &upload_id).await.unwrap().is_empty(), "no parts");
    assert_eq!(app.state.tus_buffers.available_bytes(), PART, "no part buffer was reserved");

    let res = patch(&app.client, &url, &user, first as u64, &clip[first..]).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    let key = reelhouse::storage::layout::source(user_id(&user), video);
    assert_eq!(stored_sha256(&app, &key).await, Sha256::digest(&clip).to_vec());
    // The sidecar's SHA-256 (the ETag) was carried along, not recomputed wrongly.
    let meta = app.state.store.head(&key).await.unwrap();
    assert_eq!(meta.etag.as_deref(), Some(hex::encode(Sha256::digest(&clip)).as_str()));
    assert_eq!(staged_len(&app, &row).await, None, "the staging file became the source");
}

/// Bytes a request wrote into the staging file but never recorded (the server died
/// before it could) are not the upload's: the next PATCH at the recorded offset
/// replaces them, and while one writer holds the file another is refused.
#[actix_web::test]
async fn tus_unrecorded_staged_bytes_are_dropped_on_resume() {
    let app = spawn_uploads_app(|s| s.uploads.part_size_bytes = 5 * 1024 * 1024).await;
    if !app.state.store.supports_staged() {
        eprintln!("skipped: staging files are a local-disk feature");
        return;
    }
    let user = app.register_user().await;
    let video = new_video(&app, user_id(&user)).await;
    let clip = small_clip();
    let url = tus_session(&app, &user, video, clip.len()).await;
    let id = path_of(&url).rsplit('/').next().unwrap().to_string();
    let cut = 40_000;
    assert_eq!(patch(&app.client, &url, &user, 0, &clip[..cut]).await.status(), 204);

    let row = upload_row(&app, &id).await;
    let upload_id = row.s3_upload_id.clone().unwrap();
    let mut writer = app.state.store.open_staged(&row.object_key, &upload_id, cut as u64).await.unwrap();
    writer.write(&vec![0xAB; 30_000]).await.unwrap();
    writer.sync().await.unwrap();
    assert!(matches!(
        app.state.store.open_staged(&row.object_key, &upload_id, cut as u64).await,
        Err(reelhouse::storage::StoreError::Busy)
    ));
    let res = patch(&app.client, &url, &user, cut as u64, &clip[cut..]).await;
    assert_eq!(res.status(), 409, "a second writer is refused while one holds the file");
    drop(writer); // the crashed request is gone; nothing recorded its bytes
    assert_eq!(staged_len(&app, &row).await, Some(cut as u64 + 30_000));
    assert_eq!(offset(&app.client, &url, &user).await, cut as u64);

    let res = patch(&app.client, &url, &user, cut as u64, &clip[cut..]).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(video_row(&app, video).await.status, VideoStatus::Processing);
    let key = reelhouse::storage::layout::source(user_id(&user), video);
    assert_eq!(stored_sha256(&app, &key).await, Sha256::digest(&clip).to_vec());
}
