//! Outputs on request (issue 20 item 5): `transcode(formats:)` and
//! `media.default_formats` make exactly the downloads asked for, probed with ffprobe;
//! `Video.downloads` lists them, served with Range and signed for private videos;
//! HIGH encodes the 1080p rung of a 1080p source and its playlist plays.

use entities::{video, Visibility};
use reelhouse::media::mp4::OutputFormat;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::error_code;
use crate::media::fixture;
use crate::playback::plays_to_the_end;
use crate::runner::harness;

/// What ffprobe says of a file: (codec_type, codec_name, width, height) per stream,
/// and the container's duration in seconds.
fn ffprobe(bytes: &[u8]) -> (Vec<(String, String, i64, i64)>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                s["codec_name"].as_str().unwrap_or_default().to_string(),
                s["width"].as_i64().unwrap_or(0),
                s["height"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (streams, duration)
}

fn codecs(streams: &[(String, String, i64, i64)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = streams.iter().map(|(t, c, _, _)| (t.as_str(), c.as_str())).collect();
    out.sort();
    out
}

#[actix_web::test]
async fn formats_each_combination_makes_exactly_those_downloads() {
    use OutputFormat::{Hls, Mp4, Webm};
    let h = harness(|_| {}).await;
    for formats in [vec![Hls], vec![Hls, Mp4], vec![Hls, Webm], vec![Webm, Hls, Mp4]] {
        let payload = reelhouse::jobs::transcode_payload("LOW", &formats);
        let (video, out, _) = h.transcode_ok(&fixture("small_320x180.mp4"), payload).await;
        let o = h.outputs(&video);
        // HLS is always there.
        assert!(h.exists(&o.hls_master()).await, "{formats:?}");
        assert_eq!(out.renditions.len(), 1, "{formats:?}");

        let wanted: Vec<&str> = formats.iter().filter_map(|f| f.download()).map(|f| f.api_name()).collect();
        let mut wanted_sorted = wanted.clone();
        wanted_sorted.sort();
        let made: Vec<&str> = out.downloads.iter().map(|d| d.format.as_str()).collect();
        assert_eq!(made, wanted_sorted, "{formats:?}");
        assert_eq!(out.download.as_ref(), out.downloads.first(), "the first download, for older readers");
        let stored: Vec<String> = video
            .downloads
            .clone()
            .expect("a new transcode records its downloads")
            .0
            .into_iter()
            .map(|d| d.format)
            .collect();
        assert_eq!(stored, wanted_sorted, "{formats:?}");

        for (format, ext, expect) in [
            ("MP4", "mp4", [("audio", "aac"), ("video", "h264")]),
            ("WEBM", "webm", [("audio", "opus"), ("video", "vp8")]),
        ] {
            let key = o.download(&format!("video.{ext}"));
            if !wanted.contains(&format) {
                assert!(!h.exists(&key).await, "{format} was not asked for: {formats:?}");
                continue;
            }
            let bytes = h.object(&key).await;
            let (streams, duration) = ffprobe(&bytes);
            assert_eq!(codecs(&streams), expect.to_vec(), "{format}: {streams:?}");
            assert!((duration - 2.0).abs() < 0.3, "{format}: {duration} s");
            let video_stream = streams.iter().find(|s| s.0 == "video").unwrap();
            assert_eq!((video_stream.2, video_stream.3), (320, 180), "{format}");
            let recorded = out.downloads.iter().find(|d| d.format == format).unwrap();
            assert_eq!(recorded.bytes, bytes.len() as u64);
            assert_eq!((recorded.width, recorded.height), (320, 180));
        }
    }
}

#[actix_web::test]
async fn formats_default_comes_from_settings_for_uploads() {
    // The upload path writes the configured default into the job it enqueues.
    let h = harness(|s| {
        s.media.default_formats = vec![OutputFormat::Hls, OutputFormat::Webm];
    })
    .await;
    let payload = reelhouse::jobs::transcode_payload("MEDIUM", &h.app.state.settings.media.default_formats);
    assert_eq!(payload, json!({ "preset": "MEDIUM", "formats": ["HLS", "WEBM"] }));

    // A setting without HLS is refused at start-up.
    let mut bad = h.app.state.settings.as_ref().clone();
    bad.media.default_formats = vec![OutputFormat::Mp4];
    let err = bad.validate().unwrap_err();
    assert!(err.to_string().contains("media.default_formats"), "{err}");
}

async fn downloads_of(h: &crate::runner::Harness, bearer: &crate::helpers::Credentials, id: Uuid) -> serde_json::Value {
    let (status, body) = h
        .app
        .graphql_as(
            bearer,
            "query($id: ID!) { video(id: $id) { mp4Url downloads { format url width height size } } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["video"].clone()
}

#[actix_web::test]
async fn formats_downloads_are_listed_ranged_and_signed_for_private_videos() {
    let mut h = harness(|_| {}).await;
    let owner = h.app.register_user().await;
    h.owner = Uuid::parse_str(&owner.id).unwrap();

    // WebM only: listed alone, mp4Url is null (no MP4 was made).
    let payload = reelhouse::jobs::transcode_payload("LOW", &[OutputFormat::Hls, OutputFormat::Webm]);
    let (video, out, _) = h.transcode_ok(&fixture("small_320x180.mp4"), payload).await;
    assert_eq!(video.visibility, Visibility::Private);
    let got = downloads_of(&h, &owner.bearer(), video.id).await;
    assert_eq!(got["mp4Url"], serde_json::Value::Null, "{got}");
    let downloads = got["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 1, "{got}");
    assert_eq!(downloads[0]["format"], "WEBM");
    assert_eq!((downloads[0]["width"].as_i64(), downloads[0]["height"].as_i64()), (Some(320), Some(180)));
    assert_eq!(downloads[0]["size"].as_u64(), Some(out.downloads[0].bytes));
    let url = downloads[0]["url"].as_str().unwrap().to_string();
    assert!(url.contains("sig="), "a private download is signed: {url}");
    assert!(url.contains("/mp4/video.webm"), "{url}");

    let client = &h.app.client;
    let ranged = client.get(&url).header("Range", "bytes=0-3").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-type"], "video/webm");
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &[0x1A, 0x45, 0xDF, 0xA3], "the EBML magic");
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(client.get(unsigned).send().await.unwrap().status(), 403, "no signature, no bytes");
    assert_eq!(client.get(url.replace("sig=", "sig=0")).send().await.unwrap().status(), 403);

    // Another user sees no such video at all.
    let stranger = h.app.register_user().await;
    let (_, body) = h
        .app
        .graphql_as(
            &stranger.bearer(),
            "query($id: ID!) { video(id: $id) { id } }",
            json!({ "id": video.id.to_string() }),
        )
        .await;
    assert_eq!(body["data"]["video"], serde_json::Value::Null, "{body}");

    // Public: unsigned URLs.
    let mut active: video::ActiveModel = video.clone().into();
    active.visibility = Set(Visibility::Public);
    active.update(&h.app.state.db).await.unwrap();
    // Written behind the server's back: tell its video cache, as updateVideo does.
    h.app.state.access_signals.video_changed(video.id).await;
    let got = downloads_of(&h, &owner.bearer(), video.id).await;
    let url = got["downloads"][0]["url"].as_str().unwrap();
    assert!(!url.contains("sig="), "{url}");
    assert_eq!(client.get(url).send().await.unwrap().status(), 200);
}

#[actix_web::test]
async fn formats_transcode_mutation_takes_formats_and_refuses_a_list_without_hls() {
    let mut h = harness(|_| {}).await;
    let owner = h.app.register_user().await;
    h.owner = Uuid::parse_str(&owner.id).unwrap();
    let video = h.video_from(&fixture("small_320x180.mp4")).await;
    let mutation = "mutation($id: ID!, $formats: [OutputFormat!]) { transcode(videoId: $id, preset: LOW, formats: $formats) { id } }";
    for bad in [json!(["MP4"]), json!([]), json!(["WEBM", "MP4"])] {
        let (_, body) =
            h.app.graphql_as(&owner.bearer(), mutation, json!({ "id": video.id.to_string(), "formats": bad })).await;
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{bad}: {body}");
    }
    let (_, body) = h
        .app
        .graphql_as(
            &owner.bearer(),
            mutation,
            json!({ "id": video.id.to_string(), "formats": ["WEBM", "HLS", "WEBM"] }),
        )
        .await;
    let job_id = Uuid::parse_str(body["data"]["transcode"]["id"].as_str().unwrap_or_else(|| panic!("{body}"))).unwrap();
    let job = entities::job::Entity::find_by_id(job_id).one(&h.app.state.db).await.unwrap().unwrap();
    assert_eq!(job.payload, json!({ "preset": "LOW", "formats": ["HLS", "WEBM"] }), "checked, sorted, deduplicated");
}

/// Seconds of each `#EXTINF` of a media playlist.
fn extinf(playlist: &str) -> Vec<f64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|rest| rest.split(',').next().unwrap().trim().parse().unwrap())
        .collect()
}

#[actix_web::test]
async fn formats_high_preset_encodes_the_1080p_rung_of_a_1080p_source() {
    let h = harness(|_| {}).await;
    let segment_seconds = f64::from(h.app.state.settings.media.segment_seconds);
    let payload = reelhouse::jobs::transcode_payload("HIGH", &[OutputFormat::Hls, OutputFormat::Mp4]);
    let (video, out, _) = h.transcode_ok(&fixture("hd_1080p.mp4"), payload).await;
    let names: Vec<(&str, u32, u32)> = out.renditions.iter().map(|r| (r.name.as_str(), r.width, r.height)).collect();
    assert_eq!(
        names,
        vec![("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)],
        "the whole default ladder, 1080p on top"
    );
    let o = h.outputs(&video);
    let master = String::from_utf8(h.object(&o.hls_master()).await).unwrap();
    assert!(master.contains("RESOLUTION=1920x1080"), "{master}");

    // The 1080p playlist: every segment within the target, together the source's 2 s,
    // and each one 1920x1080 H.264 when probed.
    let playlist = String::from_utf8(h.object(&o.hls_playlist("1080p")).await).unwrap();
    let durations = extinf(&playlist);
    assert!(!durations.is_empty(), "{playlist}");
    assert!(durations.iter().all(|d| *d > 0.0 && *d <= segment_seconds + 0.05), "{durations:?}");
    let total: f64 = durations.iter().sum();
    assert!((total - 2.0).abs() < 0.1, "{total} s: {playlist}");
    for segment in playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (streams, _) = ffprobe(&h.object(&o.hls_segment("1080p", segment)).await);
        let v = streams.iter().find(|s| s.0 == "video").unwrap_or_else(|| panic!("{segment}: {streams:?}"));
        assert_eq!((v.1.as_str(), v.2, v.3), ("h264", 1920, 1080), "{segment}");
    }

    // The HIGH download is 1080p too.
    let mp4 = out.downloads.iter().find(|d| d.format == "MP4").unwrap();
    assert_eq!((mp4.width, mp4.height, mp4.preset.as_str()), (1920, 1080, "HIGH"));
    let (streams, _) = ffprobe(&h.object(&mp4.key).await);
    assert!(streams.iter().any(|s| s.0 == "video" && (s.2, s.3) == (1920, 1080)), "{streams:?}");

    // And the master playlist plays to the end in a stock HLS player.
    let mut active: video::ActiveModel = video.clone().into();
    active.visibility = Set(Visibility::Public);
    let video = active.update(&h.app.state.db).await.unwrap();
    let url = reelhouse::playback::media_url(&h.app.state, &video, "hls/master.m3u8");
    assert!(plays_to_the_end(&url).await, "{url}");
}

#[actix_web::test]
async fn formats_a_worker_process_makes_exactly_the_requested_downloads() {
    use crate::helpers::{backend, eventually, Backend};
    use entities::{job, JobKind, JobStatus, VideoStatus};
    if backend() != Backend::Postgres {
        eprintln!("skipped: a worker process shares a PostgreSQL database (REELHOUSE_TEST_BACKEND=postgres)");
        return;
    }
    let h = harness(|_| {}).await;
    let video = h.video_from(&fixture("small_320x180.mp4")).await;
    let job = reelhouse::jobs::enqueue(
        &h.app.state.db,
        reelhouse::jobs::NewJob {
            kind: JobKind::Transcode,
            video_id: Some(video.id),
            owner_id: Some(h.owner),
            priority: 0,
            payload: reelhouse::jobs::transcode_payload("LOW", &[OutputFormat::Hls, OutputFormat::Webm]),
            max_attempts: 2,
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut worker = crate::worker_process::worker_command(&h.app.state.settings, dir.path(), &[]).spawn().unwrap();
    let db = h.app.state.db.clone();
    let finished = eventually(1200, || async {
        job::Entity::find_by_id(job.id)
            .one(&db)
            .await
            .unwrap()
            .is_some_and(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead))
    })
    .await;
    crate::worker_process::sigterm(&worker);
    worker.wait().await.unwrap();
    assert!(finished, "{}", std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default());
    let row = job::Entity::find_by_id(job.id).one(&db).await.unwrap().unwrap();
    assert_eq!(row.status, JobStatus::Succeeded, "{:?}", row.last_error);
    let video = h.video(video.id).await;
    assert_eq!(video.status, VideoStatus::Ready);
    let formats: Vec<String> = video.downloads.clone().unwrap().0.into_iter().map(|d| d.format).collect();
    assert_eq!(formats, vec!["WEBM".to_string()]);
    let o = h.outputs(&video);
    assert!(!h.exists(&o.download("video.mp4")).await, "no MP4 was asked for");
    let (streams, _) = ffprobe(&h.object(&o.download("video.webm")).await);
    assert_eq!(codecs(&streams), vec![("audio", "opus"), ("video", "vp8")]);
}
