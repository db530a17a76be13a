//! Playback from `/media/...` of a video the real runner made READY: ranges and
//! conditional requests as RFC 9110 has them, URLs that name the output version,
//! caching by visibility, signed URLs for private media (playlists rewritten so every
//! segment is signed), and a stock HLS player (GStreamer's playbin with souphttpsrc +
//! hlsdemux) playing the master playlist to the end.

use entities::{rendition, video, Visibility};
use reelhouse::jobs::runner::JobOutput;
use reelhouse::playback::{media_url, signed_query};
use reelhouse::storage::layout::Outputs;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{backend, error_code, Backend, TestUser};
use crate::runner::{harness, landscape_clip, Harness};

/// Cache-Control of anything under an output version of a public video.
const IMMUTABLE_PUBLIC: &str = "public, max-age=31536000, s-maxage=60, immutable";

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
    let video = active.update(&h.app.state.db).await.unwrap();
    // Written behind the server's back: tell its video cache, as updateVideo does.
    h.app.state.access_signals.video_changed(video.id).await;
    video
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
    let version = video.output_version.clone().unwrap();
    assert!(master_url.ends_with(&format!("/media/{}/{version}/hls/master.m3u8", video.id)), "{master_url}");

    // Master playlist: never changes under its version, so cached for good by
    // browsers; shared caches ask again after a minute.
    let res = client.get(&master_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(res.headers()["cache-control"], IMMUTABLE_PUBLIC);
    let master = res.text().await.unwrap();
    assert!(master.contains("360p/index.m3u8"), "{master}");

    // Segments: immutable caching, the right type.
    let rung = client.get(master_url.replace("master.m3u8", "360p/index.m3u8")).send().await.unwrap();
    let rung_text = rung.text().await.unwrap();
    let segment = rung_text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_string();
    let seg = client.get(master_url.replace("master.m3u8", &format!("360p/{segment}"))).send().await.unwrap();
    assert_eq!(seg.status(), 200);
    assert_eq!(seg.headers()["cache-control"], IMMUTABLE_PUBLIC);
    assert_eq!(seg.headers()["content-type"], "video/mp2t");

    // The MP4 download: ranges.
    let mp4_url = urls["mp4Url"].as_str().unwrap();
    let full = client.get(mp4_url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    // Versioned like everything else: a re-transcode writes a new file elsewhere.
    assert_eq!(full.headers()["cache-control"], IMMUTABLE_PUBLIC);
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    let last_modified = full.headers()["last-modified"].to_str().unwrap().to_string();
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

    // The range unit is case-insensitive; other units are ignored.
    let upper = client.get(mp4_url).header("Range", "Bytes=2-5").send().await.unwrap();
    assert_eq!(upper.status(), 206);
    assert_eq!(upper.headers()["content-range"], format!("bytes 2-5/{size}").as_str());
    assert_eq!(upper.bytes().await.unwrap().as_ref(), &body[2..6]);
    let items = client.get(mp4_url).header("Range", "items=0-1").send().await.unwrap();
    assert_eq!(items.status(), 200, "an unknown range unit is ignored");
    assert_eq!(items.bytes().await.unwrap().len(), size);

    // If-Range: the range holds while the entity tag (strong) or the date matches.
    for (validator, partial) in [
        (etag.clone(), true),
        (last_modified.clone(), true),
        ("\"something-else\"".to_string(), false),
        (format!("W/{etag}"), false),
        ("Thu, 01 Jan 2015 00:00:00 GMT".to_string(), false),
    ] {
        let res = client.get(mp4_url).header("Range", "bytes=0-9").header("If-Range", &validator).send().await.unwrap();
        if partial {
            assert_eq!(res.status(), 206, "If-Range: {validator}");
            assert_eq!(res.headers()["content-range"], format!("bytes 0-9/{size}").as_str());
            assert_eq!(res.bytes().await.unwrap().as_ref(), &body[..10]);
        } else {
            assert_eq!(res.status(), 200, "If-Range: {validator} no longer matches: the whole object");
            assert!(res.headers().get("content-range").is_none());
            assert_eq!(res.bytes().await.unwrap().len(), size);
        }
    }

    // Conditional GET: If-None-Match, else If-Modified-Since.
    let cached = client.get(mp4_url).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    let changed = client.get(mp4_url).header("If-None-Match", "\"something-else\"").send().await.unwrap();
    assert_eq!(changed.status(), 200);
    let since = client.get(mp4_url).header("If-Modified-Since", &last_modified).send().await.unwrap();
    assert_eq!(since.status(), 304, "not modified since its own Last-Modified");
    assert_eq!(since.headers()["cache-control"], IMMUTABLE_PUBLIC);
    let older = client.get(mp4_url).header("If-Modified-Since", "Thu, 01 Jan 2015 00:00:00 GMT").send().await.unwrap();
    assert_eq!(older.status(), 200);
    let both = client
        .get(mp4_url)
        .header("If-None-Match", "\"something-else\"")
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 200, "If-Modified-Since is ignored when If-None-Match is present");

    // If-Match / If-Unmodified-Since: 412 when they fail, checked before the range.
    let guarded = client.get(mp4_url).header("If-Match", &etag).header("Range", "bytes=0-0").send().await.unwrap();
    assert_eq!(guarded.status(), 206);
    let failed = client.get(mp4_url).header("If-Match", "\"something-else\"").send().await.unwrap();
    assert_eq!(failed.status(), 412);
    // A 412 is the requester's own: a shared cache must not keep it for everyone
    // (the file's `public, max-age=…` would let it).
    assert_eq!(failed.headers()["cache-control"], "no-store");
    let stale =
        client.get(mp4_url).header("If-Unmodified-Since", "Thu, 01 Jan 2015 00:00:00 GMT").send().await.unwrap();
    assert_eq!(stale.status(), 412);

    // HEAD: the validators and the size, no body.
    let head = client.head(mp4_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"], etag.as_str());
    assert_eq!(head.headers()["last-modified"], last_modified.as_str());
    assert_eq!(head.headers()["content-length"], size.to_string().as_str());
    assert_eq!(head.headers()["accept-ranges"], "bytes");

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

    // The poster and the storyboard: signed, and the sprite every storyboard cue names
    // resolves (as a browser or player resolves it: against the index's URL, which
    // drops the query) to a signed URL too.
    let poster_url = urls["thumbnailUrl"].as_str().unwrap();
    assert!(poster_url.contains("sig="), "{poster_url}");
    let poster = client.get(poster_url).send().await.unwrap();
    assert_eq!(poster.status(), 200);
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    let unsigned_poster = poster_url.split('?').next().unwrap();
    assert_eq!(client.get(unsigned_poster).send().await.unwrap().status(), 403);
    for sprite in storyboard_sprites(client, urls["storyboardUrl"].as_str().unwrap()).await {
        let res = client.get(sprite.clone()).send().await.unwrap();
        assert_eq!(res.status(), 200, "{sprite}");
        assert_eq!(res.headers()["content-type"], "image/jpeg", "{sprite}");
        assert_eq!(&res.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);
    }

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
        // So is the storyboard index: its sprite resolves against `/media` (signed),
        // which redirects in turn, not against a presigned storage URL.
        let sprites = storyboard_sprites(&no_redirects, urls["storyboardUrl"].as_str().unwrap()).await;
        for sprite in sprites {
            assert!(sprite.path().contains("/media/"), "{sprite}");
            let res = no_redirects.get(sprite.clone()).send().await.unwrap();
            assert_eq!(res.status(), 302, "{sprite}");
            let location = res.headers()["location"].to_str().unwrap().to_string();
            let bytes = reqwest::get(&location).await.unwrap().bytes().await.unwrap();
            assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
        }
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
    let key = h.outputs(&video).download("video.mp4");
    let path = mp4_url.split(&format!("/media/{}/", video.id)).nth(1).unwrap();
    assert_eq!(Some(path.to_string()), reelhouse::storage::layout::media_path(video.owner_id, video.id, &key));
    let prefix = &h.app.state.settings.storage.s3.key_prefix;
    assert_eq!(location, format!("https://cdn.example.test/vod/{prefix}{key}"));
    assert_eq!(res.headers()["cache-control"], "public, max-age=300, s-maxage=60");
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

/// Fetch a storyboard index (200, WebVTT) and resolve each cue's sprite reference
/// against the index's URL, as RFC 3986 has it (a relative reference does not keep
/// the base's query): the distinct sprite URLs, fragment removed.
async fn storyboard_sprites(client: &reqwest::Client, vtt_url: &str) -> Vec<reqwest::Url> {
    let res = client.get(vtt_url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{vtt_url}");
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/vtt"));
    let base = res.url().clone();
    let vtt = res.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let mut sprites: Vec<reqwest::Url> = Vec::new();
    let lines: Vec<&str> = vtt.lines().collect();
    for pair in lines.windows(2) {
        if pair[0].contains("-->") {
            assert!(pair[1].contains("#xywh="), "{vtt}");
            let mut url = base.join(pair[1].trim()).unwrap();
            url.set_fragment(None);
            if !sprites.contains(&url) {
                sprites.push(url);
            }
        }
    }
    assert!(!sprites.is_empty(), "{vtt}");
    sprites
}

/// The first segment's URL of the first rung a master playlist names (`base` is the
/// master's URL without its file name; a query, if any, carried along as written).
async fn first_segment_url(client: &reqwest::Client, master_url: &str) -> String {
    let (path, query) = master_url.split_once('?').map_or((master_url, None), |(p, q)| (p, Some(q)));
    let base = path.trim_end_matches("master.m3u8");
    let master = client.get(master_url).send().await.unwrap().text().await.unwrap();
    let rung_uri = master.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_string();
    let rung_dir = rung_uri.split('?').next().unwrap().trim_end_matches("index.m3u8").to_string();
    let rung = client.get(format!("{base}{rung_uri}")).send().await.unwrap().text().await.unwrap();
    let segment = rung.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_string();
    match (query, segment.contains('?')) {
        (Some(query), false) => format!("{base}{rung_dir}{segment}?{query}"),
        _ => format!("{base}{rung_dir}{segment}"),
    }
}

fn max_age(cache_control: &str) -> u64 {
    cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {cache_control}"))
        .parse()
        .unwrap()
}

#[actix_web::test]
async fn caching_follows_visibility_and_shared_caches_lose_a_video_made_private() {
    let (h, owner, video) = ready_video(|_| {}).await;
    let client = &h.app.client;
    let video = set_visibility(&h, &video, Visibility::Public).await;
    let public_urls = urls(&h, &owner, video.id).await;
    let mp4_url = public_urls["mp4Url"].as_str().unwrap().to_string();
    let segment_url = first_segment_url(client, public_urls["playbackUrl"].as_str().unwrap()).await;
    for url in [&mp4_url, &segment_url] {
        let res = client.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        assert_eq!(res.headers()["cache-control"], IMMUTABLE_PUBLIC, "{url}");
    }
    let etag = client.get(&mp4_url).send().await.unwrap().headers()["etag"].to_str().unwrap().to_string();

    // Unlisted: anyone with the URL, but no shared cache may keep it.
    let video = set_visibility(&h, &video, Visibility::Unlisted).await;
    for url in [&mp4_url, &segment_url] {
        let res = client.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        assert_eq!(res.headers()["cache-control"], "private, max-age=31536000, immutable", "{url}");
    }

    // Private: a shared cache revalidating its public copy (it must within
    // s-maxage) is refused, so it stops serving the video; signed answers are
    // private and never outlive the signature.
    let video = set_visibility(&h, &video, Visibility::Private).await;
    let revalidation = client.get(&mp4_url).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(revalidation.status(), 403);
    let private_urls = urls(&h, &owner, video.id).await;
    let signed_mp4 = private_urls["mp4Url"].as_str().unwrap().to_string();
    let ttl = h.app.state.settings.media.signed_url_ttl_secs;
    let signed_segment = first_segment_url(client, private_urls["playbackUrl"].as_str().unwrap()).await;
    for url in [&signed_mp4, &signed_segment, &private_urls["playbackUrl"].as_str().unwrap().to_string()] {
        let res = client.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
        assert!(cache.starts_with("private, max-age="), "{url}: {cache}");
        assert!(max_age(&cache) <= ttl, "{cache}");
    }
    let path = mp4_url.split('?').next().unwrap();
    let soon = format!("{path}?{}", signed_query(&h.app.state, video.id, chrono::Utc::now().timestamp() + 100));
    let res = client.get(&soon).send().await.unwrap();
    let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
    assert!(max_age(&cache) <= 100, "bounded by the signature's expiry: {cache}");

    // Hidden by a moderator: like private, whatever the visibility.
    let mut active: video::ActiveModel = set_visibility(&h, &video, Visibility::Public).await.into();
    active.hidden_at = Set(Some(chrono::Utc::now()));
    active.update(&h.app.state.db).await.unwrap();
    assert_eq!(client.get(&mp4_url).header("If-None-Match", &etag).send().await.unwrap().status(), 403);
    assert_eq!(client.get(&segment_url).send().await.unwrap().status(), 403);
}

#[actix_web::test]
async fn urls_name_the_output_version_and_videos_from_before_versions_keep_playing() {
    let (h, owner, video) = ready_video(|_| {}).await;
    let client = &h.app.client;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let video = set_visibility(&h, &video, Visibility::Public).await;
    let version = video.output_version.clone().unwrap();
    let current = urls(&h, &owner, video.id).await;
    for field in ["playbackUrl", "mp4Url", "thumbnailUrl", "storyboardUrl"] {
        let url = current[field].as_str().unwrap();
        assert!(url.contains(&format!("/media/{}/{version}/", video.id)), "{field}: {url}");
    }
    let rung_url = current["renditions"][0]["playlistUrl"].as_str().unwrap();
    assert!(rung_url.ends_with(&format!("/{version}/hls/360p/index.m3u8")), "{rung_url}");

    // An unversioned URL is sent on to the current version, query and all.
    let unversioned = h.app.url(&format!("/media/{}/hls/master.m3u8", video.id));
    let res = no_redirects.get(format!("{unversioned}?x=1")).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], format!("{}?x=1", current["playbackUrl"].as_str().unwrap()).as_str());
    assert_eq!(res.headers()["cache-control"], "public, no-cache");
    // A version that never existed (or was retired): 404.
    let gone = h.app.url(&format!("/media/{}/v0000000000/hls/master.m3u8", video.id));
    assert_eq!(client.get(&gone).send().await.unwrap().status(), 404);

    // Make it a video transcoded by an earlier release: its outputs unversioned.
    let o = h.outputs(&video);
    let legacy = Outputs::new(video.owner_id, video.id, None);
    let rung_text = String::from_utf8(h.object(&o.hls_playlist("360p")).await).unwrap();
    let mut copies = vec![
        (o.hls_master(), legacy.hls_master()),
        (o.hls_playlist("360p"), legacy.hls_playlist("360p")),
        (o.download("video.mp4"), legacy.download("video.mp4")),
        (o.poster(), legacy.poster()),
    ];
    for name in rung_text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        copies.push((o.hls_segment("360p", name), legacy.hls_segment("360p", name)));
    }
    for (from, to) in &copies {
        let bytes = h.object(from).await;
        h.ctx.store.put_bytes(to, bytes.into(), None).await.unwrap();
    }
    h.ctx.store.delete_prefix(o.prefix()).await.unwrap();
    let mut active: video::ActiveModel = video.clone().into();
    active.output_version = Set(None);
    let video = active.update(&h.app.state.db).await.unwrap();
    rendition::Entity::update_many()
        .col_expr(rendition::Column::PlaylistKey, sea_orm::sea_query::Expr::value(legacy.hls_playlist("360p")))
        .filter(rendition::Column::VideoId.eq(video.id))
        .exec(&h.app.state.db)
        .await
        .unwrap();
    h.app.state.access_signals.video_changed(video.id).await;

    // It plays from its unversioned objects, with the caching of that layout.
    let old = urls(&h, &owner, video.id).await;
    assert_eq!(old["playbackUrl"], unversioned.as_str());
    assert!(old["renditions"][0]["playlistUrl"].as_str().unwrap().ends_with("/hls/360p/index.m3u8"));
    let master = client.get(&unversioned).send().await.unwrap();
    assert_eq!(master.status(), 200);
    assert_eq!(master.headers()["cache-control"], "public, max-age=2");
    let segment = client.get(first_segment_url(client, &unversioned).await).send().await.unwrap();
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.headers()["cache-control"], IMMUTABLE_PUBLIC);
    let mp4 = client.get(old["mp4Url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(mp4.status(), 200);
    assert_eq!(mp4.headers()["cache-control"], "public, max-age=3600, s-maxage=60");
    assert!(plays_to_the_end(&unversioned).await, "a stock HLS player plays the unversioned layout");

    // Its next transcode puts it on a version and retires the whole unversioned
    // layout (never the source beside it).
    let job = h.transcode_job(&video, json!({})).await;
    let (result, _) = h.run(&job).await;
    let output = result.unwrap();
    h.apply_success(&job, &output).await;
    let after = h.video(video.id).await;
    let new_version = after.output_version.clone().expect("versioned now");
    let retire = h.delete_jobs().await;
    assert_eq!(retire.len(), 1, "{retire:?}");
    assert_eq!(retire[0].payload, json!({ "prefixes": legacy.prefixes() }));
    let res = no_redirects.get(&unversioned).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains(&format!("/{new_version}/hls/master.m3u8")), "{location}");
    assert_eq!(client.get(&unversioned).send().await.unwrap().status(), 200, "followed to the new version");
    assert!(matches!(h.run(&retire[0]).await.0, Ok(JobOutput::ObjectsDeleted { .. })));
    for (_, key) in &copies {
        assert!(!h.exists(key).await, "{key} survived");
    }
    assert!(h.exists(video.source_key.as_deref().unwrap()).await, "the source stays");
    assert!(plays_to_the_end(&unversioned).await, "an old URL still plays, through the redirect");
}
