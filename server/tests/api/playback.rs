//! Playback from `/media/...` of a video the real runner made READY: ranges,
//! conditional GETs, caching, signed URLs for private media (playlists rewritten so
//! every segment is signed), and a stock HLS player (GStreamer's playbin with
//! souphttpsrc + hlsdemux) playing the master playlist to the end.

use entities::{video, Visibility};
use reelhouse::http::media::{media_url, signed_query};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{backend, error_code, Backend, TestUser};
use crate::runner::{harness, landscape_clip, Harness};

/// A READY video owned by a user who can sign in, with the given visibility.
async fn ready_video(customize: impl FnOnce(&mut reelhouse::config::Settings)) -> (Harness, TestUser, video::Model) {
    let mut h = harness(customize).await;
    let owner = h.app.register_user().await;
    h.owner = Uuid::parse_str(&owner.id).unwrap();
    let (video, _, _) = h.transcode_ok(landscape_clip(), json!({})).await;
    (h, owner, video)
}

async fn set_visibility(h: &Harness, video: &video::Model, visibility: Visibility) -> video::Model {
    let mut active: video::ActiveModel = video.clone().into();
    active.visibility = Set(visibility);
    active.update(&h.app.state.db).await.unwrap()
}

async fn urls(h: &Harness, user: &TestUser, id: Uuid) -> serde_json::Value {
    let (status, body) = h
        .app
        .graphql_as(
            &user.bearer(),
            "query($id: ID!) { video(id: $id) { playbackUrl mp4Url thumbnailUrl storyboardUrl renditions { name playlistUrl } } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["video"].clone()
}

/// Play `url` with a stock HLS stack (playbin: souphttpsrc, hlsdemux, decoders) and
/// say whether it reached the end without an error.
/// Runs asynchronously: the server under test lives on this test's own runtime.
pub(crate) async fn plays_to_the_end(url: &str) -> bool {
    let output = tokio::process::Command::new("gst-launch-1.0")
        .env("GST_DEBUG", std::env::var("PLAYBACK_GST_DEBUG").unwrap_or_default())
        .args(["-q", "playbin", &format!("uri=\"{url}\""), "video-sink=fakesink", "audio-sink=fakesink"])
        .output()
        .await
        .unwrap();
    if !output.status.success() {
        eprintln!(
            "player failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.status.success()
}

#[actix_web::test]
async fn a_public_video_plays_with_ranges_conditional_gets_and_caching() {
    let (h, owner, video) = ready_video(|_| {}).await;
    let video = set_visibility(&h, &video, Visibility::Public).await;
    let client = &h.app.client;
    let urls = urls(&h, &owner, video.id).await;
    let master_url = urls["playbackUrl"].as_str().unwrap().to_string();
    assert!(!master_url.contains("sig="), "public media need no signature: {master_url}");

    // Master playlist: short caching, the rung playlist relative to it.
    let res = client.get(&master_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(res.headers()["cache-control"], "public, max-age=2");
    let master = res.text().await.unwrap();
    assert!(master.contains("360p/index.m3u8"), "{master}");

    // Segments: immutable caching, the right type.
    let rung = client.get(master_url.replace("master.m3u8", "360p/index.m3u8")).send().await.unwrap();
    let rung_text = rung.text().await.unwrap();
    let segment = rung_text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_string();
    let seg = client.get(master_url.replace("master.m3u8", &format!("360p/{segment}"))).send().await.unwrap();
    assert_eq!(seg.status(), 200);
    assert_eq!(seg.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(seg.headers()["content-type"], "video/mp2t");

    // The MP4 download: ranges.
    let mp4_url = urls["mp4Url"].as_str().unwrap();
    let full = client.get(mp4_url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    // Rewritten in place by a re-transcode: revalidated, never immutable.
    assert_eq!(full.headers()["cache-control"], "public, max-age=3600");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    let body = full.bytes().await.unwrap();
    let size = body.len();
    assert_eq!(&body[4..8], b"ftyp");

    let first = client.get(mp4_url).header("Range", "bytes=0-0").send().await.unwrap();
    assert_eq!(first.status(), 206);
    assert_eq!(first.headers()["content-range"], format!("bytes 0-0/{size}").as_str());
    assert_eq!(first.bytes().await.unwrap().as_ref(), &body[..1]);

    let last = client.get(mp4_url).header("Range", format!("bytes={}-", size - 1)).send().await.unwrap();
    assert_eq!(last.status(), 206);
    assert_eq!(last.bytes().await.unwrap().as_ref(), &body[size - 1..]);

    let suffix = client.get(mp4_url).header("Range", "bytes=-10").send().await.unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.headers()["content-range"], format!("bytes {}-{}/{size}", size - 10, size - 1).as_str());
    assert_eq!(suffix.bytes().await.unwrap().as_ref(), &body[size - 10..]);

    let beyond = client.get(mp4_url).header("Range", format!("bytes={size}-")).send().await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{size}").as_str());

    let multi = client.get(mp4_url).header("Range", "bytes=0-1,4-5").send().await.unwrap();
    assert_eq!(multi.status(), 200, "several ranges are answered with the whole object");
    assert_eq!(multi.bytes().await.unwrap().len(), size);

    // Conditional GET.
    let cached = client.get(mp4_url).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);
    let changed = client.get(mp4_url).header("If-None-Match", "\"something-else\"").send().await.unwrap();
    assert_eq!(changed.status(), 200);

    // Poster and storyboard.
    let poster = client.get(urls["thumbnailUrl"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    assert_eq!(&poster.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);
    let vtt = client.get(urls["storyboardUrl"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");

    // Never the uploaded source, never other paths.
    for path in ["source", "hls/../source", "thumbs/"] {
        let res = client.get(h.app.url(&format!("/media/{}/{path}", video.id))).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }

    assert!(plays_to_the_end(&master_url).await, "a stock HLS player plays the public master playlist");
}

#[actix_web::test]
async fn private_media_need_a_valid_signature_on_every_file() {
    let (h, owner, video) = ready_video(|_| {}).await;
    let client = &h.app.client;
    let plain = h.app.url(&format!("/media/{}/hls/master.m3u8", video.id));

    let refused = client.get(&plain).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "FORBIDDEN", "{body}");

    // A stranger cannot obtain URLs through the API.
    let stranger = h.app.register_user().await;
    let (_, body) = h
        .app
        .graphql_as(
            &stranger.bearer(),
            "query($id: ID!) { video(id: $id) { playbackUrl } }",
            json!({ "id": video.id.to_string() }),
        )
        .await;
    assert!(body["data"]["video"].is_null(), "{body}");
    assert_eq!(error_code(&body), None);

    // The owner's URL is signed, and so is every URI inside the playlists.
    let urls = urls(&h, &owner, video.id).await;
    let master_url = urls["playbackUrl"].as_str().unwrap().to_string();
    assert!(master_url.contains("sig="), "{master_url}");
    let master = client.get(&master_url).send().await.unwrap();
    assert_eq!(master.status(), 200);
    assert!(master.headers()["cache-control"].to_str().unwrap().starts_with("private"));
    let master = master.text().await.unwrap();
    let rung_uri = master.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
    assert!(rung_uri.starts_with("360p/index.m3u8?exp="), "{rung_uri}");
    let base = master_url.split("master.m3u8").next().unwrap();
    let rung = client.get(format!("{base}{rung_uri}")).send().await.unwrap().text().await.unwrap();
    let segment_uri = rung.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
    assert!(segment_uri.contains("sig="), "{segment_uri}");
    let segment = client.get(format!("{base}360p/{segment_uri}")).send().await.unwrap();
    assert_eq!(segment.status(), 200);
    assert!(urls["renditions"][0]["playlistUrl"].as_str().unwrap().contains("sig="));

    // Tampered, expired, and another video's signature: 403 with a reason.
    let tampered = master_url.replace("sig=", "sig=0");
    let res = client.get(&tampered).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let expired = format!("{plain}?{}", signed_query(&h.app.state, video.id, chrono::Utc::now().timestamp() - 1));
    let res = client.get(&expired).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("expired"), "{body}");
    let other = format!("{plain}?{}", signed_query(&h.app.state, Uuid::now_v7(), chrono::Utc::now().timestamp() + 600));
    assert_eq!(client.get(&other).send().await.unwrap().status(), 403);

    // A signed URL for the same video made by the server itself works, and a stock
    // player follows the rewritten playlists through every signed segment.
    let signed = media_url(&h.app.state, &video, "hls/master.m3u8");
    assert_eq!(client.get(&signed).send().await.unwrap().status(), 200);
    assert!(plays_to_the_end(&master_url).await, "a stock HLS player plays the signed private playlist");
}

#[actix_web::test]
async fn with_s3_files_can_redirect_to_presigned_storage_urls() {
    let (h, owner, video) = ready_video(|s| s.media.redirect_to_storage = true).await;
    let urls = urls(&h, &owner, video.id).await;
    let mp4_url = urls["mp4Url"].as_str().unwrap();
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirects.get(mp4_url).send().await.unwrap();
    if backend() == Backend::Postgres {
        // The postgres suite stores objects in S3: the file is a redirect...
        assert_eq!(res.status(), 302);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(!location.contains("/media/"), "{location}");
        let bytes = reqwest::get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(&bytes[4..8], b"ftyp");
        // ...while playlists are still served (and rewritten) by reelhouse.
        let master = no_redirects.get(urls["playbackUrl"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(master.status(), 200);
    } else {
        // Local storage has nothing to redirect to: the bytes are served directly.
        assert_eq!(res.status(), 200);
    }
}

#[actix_web::test]
async fn with_a_cdn_base_url_public_files_redirect_to_the_cdn_and_private_ones_stay_presigned() {
    let cdn = "https://cdn.example.test/vod/";
    let (h, owner, video) = ready_video(|s| {
        s.media.redirect_to_storage = true;
        s.media.cdn_base_url = Some(cdn.to_string());
    })
    .await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let video = set_visibility(&h, &video, Visibility::Public).await;
    let mp4_url = urls(&h, &owner, video.id).await["mp4Url"].as_str().unwrap().to_string();
    let res = no_redirects.get(&mp4_url).send().await.unwrap();
    if backend() != Backend::Postgres {
        // Local storage has no bucket for a CDN to front: the bytes are served directly.
        assert_eq!(res.status(), 200);
        return;
    }
    // Public: the CDN URL of the very object (the deployment's key prefix included).
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let path = mp4_url.split(&format!("/media/{}/", video.id)).nth(1).unwrap();
    let key = format!("{}{path}", reelhouse::storage::layout::video_prefix(video.owner_id, video.id));
    let prefix = &h.app.state.settings.storage.s3.key_prefix;
    assert_eq!(location, format!("https://cdn.example.test/vod/{prefix}{key}"));
    assert!(h.app.state.store.head(&key).await.unwrap().size > 0, "the CDN URL names a stored object");

    // Private: a CDN cannot check reelhouse's signatures, so a presigned storage URL.
    let video = set_visibility(&h, &video, Visibility::Private).await;
    let unsigned = no_redirects.get(mp4_url.split('?').next().unwrap()).send().await.unwrap();
    assert_eq!(unsigned.status(), 403, "the CDN redirect is no way around the signature");
    let mp4_url = urls(&h, &owner, video.id).await["mp4Url"].as_str().unwrap().to_string();
    let res = no_redirects.get(&mp4_url).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(!location.starts_with("https://cdn.example.test"), "{location}");
    let bytes = reqwest::get(&location).await.unwrap().bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");
}
