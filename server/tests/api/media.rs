//! The media engine against real GStreamer and generated fixtures (scripts/make-fixtures.sh).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reelhouse::media::ladder::{plan_ladder, transcode_hls, HlsOptions, LadderConfig, Rung};
use reelhouse::media::mp4::{transcode_mp4, Format, Mp4Options, Preset};
use reelhouse::media::thumbs::{load_jpeg, poster_and_thumbnails, storyboard, StoryboardOptions, ThumbnailOptions};
use reelhouse::media::{probe, MediaError, MediaInfo, MediaLimits};

/// Fixtures are generated once per script version into a shared temp dir; the file
/// lock keeps parallel test processes (nextest) from generating them twice.
fn fixtures() -> &'static Path {
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

pub(crate) fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn never() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

fn info(width: u32, height: u32, rotation: u32) -> MediaInfo {
    MediaInfo {
        duration: Some(Duration::from_secs(4)),
        container: None,
        container_caps: None,
        video_codec: None,
        video_caps: None,
        audio_codec: None,
        width,
        height,
        frame_rate: 25.0,
        frame_rate_fraction: Some((25, 1)),
        rotation,
        has_audio: true,
        video_tracks: 1,
        audio_tracks: 1,
    }
}

fn sizes(rungs: &[Rung]) -> Vec<(u32, u32)> {
    rungs.iter().map(|r| (r.width, r.height)).collect()
}

/// Short segments so a 4 s clip makes several and alignment is visible.
fn quick_hls() -> HlsOptions {
    HlsOptions { segment_seconds: 1, speed_preset: "ultrafast".into(), ..HlsOptions::default() }
}

fn extinf(playlist: &Path) -> Vec<String> {
    std::fs::read_to_string(playlist)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("#EXTINF:"))
        .map(str::to_owned)
        .collect()
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn media_probe_reads_the_720p_clip() {
    let info = probe(&fixture("clip_720p.mp4")).unwrap();
    assert_eq!((info.width, info.height), (1280, 720));
    let secs = info.duration.unwrap().as_secs_f64();
    assert!((secs - 4.0).abs() <= 0.2, "duration {secs}");
    assert!(info.has_audio);
    assert_eq!((info.video_tracks, info.audio_tracks), (1, 1));
    assert_eq!(info.video_caps.as_deref(), Some("video/x-h264"));
    assert_eq!(info.container_caps.as_deref(), Some("video/quicktime"));
    assert!((info.frame_rate - 25.0).abs() < 0.01);
    assert_eq!(info.rotation, 0);
    info.check(&MediaLimits::default()).unwrap();
}

#[test]
fn media_probe_reads_rotation_and_audio_absence() {
    let rotated = probe(&fixture("rotated_90.mp4")).unwrap();
    assert_eq!(rotated.rotation, 90, "{rotated:?}");
    assert_eq!(rotated.display_size(), (360, 640));
    let silent = probe(&fixture("no_audio.mp4")).unwrap();
    assert!(!silent.has_audio);
    assert_eq!(silent.audio_tracks, 0);
}

#[test]
fn media_limits_give_readable_reasons() {
    let small = MediaLimits { max_width: 640, max_height: 640, ..MediaLimits::default() };
    let err = info(1280, 720, 0).check(&small).unwrap_err();
    assert!(err.to_string().contains("1280x720"), "{err}");
    let short = MediaLimits { max_duration: Duration::from_secs(1), ..MediaLimits::default() };
    assert!(info(640, 360, 0).check(&short).unwrap_err().to_string().contains("longer than"));
    let few = MediaLimits { max_tracks: 1, ..MediaLimits::default() };
    assert!(info(640, 360, 0).check(&few).unwrap_err().to_string().contains("tracks"));
    let mut no_video = info(0, 0, 0);
    no_video.video_tracks = 0;
    let err = no_video.check(&MediaLimits::default()).unwrap_err();
    assert!(err.to_string().contains("no video stream"), "{err}");
    let mut zero = info(640, 360, 0);
    zero.duration = Some(Duration::ZERO);
    assert!(zero.check(&MediaLimits::default()).unwrap_err().to_string().contains("zero"));
}

#[test]
fn media_plan_ladder_cases() {
    let config = LadderConfig::default();
    let ladder = plan_ladder(&info(1280, 720, 0), &config);
    assert_eq!(sizes(&ladder), vec![(1280, 720), (854, 480), (640, 360)]);
    assert_eq!(ladder.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["720p", "480p", "360p"]);
    assert!(ladder.windows(2).all(|w| w[0].video_bitrate_kbps > w[1].video_bitrate_kbps));

    let small = plan_ladder(&info(320, 180, 0), &config);
    assert_eq!(sizes(&small), vec![(320, 180)]);

    let portrait = plan_ladder(&info(360, 640, 0), &config);
    assert_eq!(sizes(&portrait), vec![(360, 640)]);
    let tall = plan_ladder(&info(1080, 1920, 0), &config);
    assert_eq!(sizes(&tall), vec![(1080, 1920), (720, 1280), (480, 854), (360, 640)]);

    // Rotation applied: a 1280x720 picture tagged rotate-90 is displayed portrait.
    let rotated = plan_ladder(&info(1280, 720, 90), &config);
    assert_eq!(sizes(&rotated), vec![(720, 1280), (480, 854), (360, 640)]);

    // Odd sizes become even; never upscaled; at least one rung.
    let odd = plan_ladder(&info(201, 113, 0), &config);
    assert_eq!(sizes(&odd), vec![(200, 112)]);
    assert!(plan_ladder(&info(1920, 1080, 0), &config).iter().all(|r| r.width % 2 == 0 && r.height % 2 == 0));
}

#[test]
fn media_hls_ladder_from_720p_clip() {
    let out = tempfile::tempdir().unwrap();
    let source = fixture("clip_720p.mp4");
    let info = probe(&source).unwrap();
    let rungs = plan_ladder(&info, &LadderConfig::default());
    assert_eq!(rungs.len(), 3);
    let mut reports = Vec::new();
    let mut ready = Vec::new();
    let started = Instant::now();
    let output = transcode_hls(
        &source,
        &info,
        out.path(),
        &rungs,
        &quick_hls(),
        &mut |p| reports.push((started.elapsed(), p.clone())),
        &mut |r| ready.push(r.clone()),
        &never(),
    )
    .unwrap();

    let master = std::fs::read_to_string(out.path().join("master.m3u8")).unwrap();
    for (res, dir) in [("1280x720", "720p"), ("854x480", "480p"), ("640x360", "360p")] {
        assert!(master.contains(&format!("RESOLUTION={res}")), "{master}");
        assert!(master.contains(&format!("{dir}/index.m3u8")), "{master}");
    }
    assert!(master.contains("BANDWIDTH="), "{master}");
    // The avc1 profile/level comes from the encoder's real output caps.
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    assert!(master.contains("mp4a.40.2"), "{master}");

    let mut timelines = Vec::new();
    for rung in &output.rungs {
        let text = std::fs::read_to_string(&rung.playlist).unwrap();
        assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
        assert!(rung.segments.len() >= 3, "{text}");
        for segment in &rung.segments {
            assert!(std::fs::metadata(segment).unwrap().len() > 0);
        }
        timelines.push(extinf(&rung.playlist));
    }
    // Keyframes aligned: every rung cut its segments at the same timestamps.
    assert!(timelines.windows(2).all(|w| w[0] == w[1]), "{timelines:?}");

    // The lowest rung, reported as its playlist grows and once more when final.
    assert!(ready.iter().all(|r| r.rung.name == "360p"), "{ready:?}");
    assert_eq!(ready.iter().filter(|r| r.complete).count(), 1, "{ready:?}");
    let last = ready.last().unwrap();
    assert!(
        last.complete && last.segments == output.rungs.iter().find(|r| r.rung.name == "360p").unwrap().segments.len(),
        "{ready:?}"
    );
    assert!(ready.windows(2).all(|w| w[0].segments < w[1].segments || w[1].complete), "{ready:?}");
    assert!(ready.iter().all(|r| r.segments >= 1), "{ready:?}");
    let last = &reports.last().unwrap().1;
    assert_eq!(last.percent, 100.0);
    assert_eq!(last.rungs.len(), 3);
    // Throttled to about 4 reports a second. Counted over the whole run rather than
    // per gap: a tick delayed by a busy machine may land close to the next one.
    let elapsed = reports.last().unwrap().0.as_secs_f64();
    assert!(reports.len() as f64 <= elapsed / 0.25 + 3.0, "{} reports in {elapsed:.2} s", reports.len());
}

#[test]
fn media_hls_audio_less_and_rotated_sources() {
    let out = tempfile::tempdir().unwrap();
    let source = fixture("no_audio.mp4");
    let info = probe(&source).unwrap();
    let rungs = plan_ladder(&info, &LadderConfig::default());
    let output =
        transcode_hls(&source, &info, out.path(), &rungs, &quick_hls(), &mut |_| {}, &mut |_| {}, &never()).unwrap();
    assert_eq!(output.rungs.len(), 1);
    let master = std::fs::read_to_string(&output.master_playlist).unwrap();
    assert!(!master.contains("mp4a"), "{master}");
    assert!(master.contains("RESOLUTION=640x360"), "{master}");

    let rotated_out = tempfile::tempdir().unwrap();
    let source = fixture("rotated_90.mp4");
    let info = probe(&source).unwrap();
    let rungs = plan_ladder(&info, &LadderConfig::default());
    assert_eq!(sizes(&rungs), vec![(360, 640)]);
    transcode_hls(&source, &info, rotated_out.path(), &rungs, &quick_hls(), &mut |_| {}, &mut |_| {}, &never())
        .unwrap();
    let segment = rotated_out.path().join("360p/segment00000.ts");
    let info = probe(&segment).unwrap();
    assert_eq!((info.width, info.height), (360, 640), "rotation applied to the pixels");
}

/// Top-level MP4 box types in file order.
fn mp4_boxes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        let size = match size {
            1 => u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize,
            0 => bytes.len() - at,
            s => s,
        };
        at += size.max(8);
    }
    boxes
}

#[test]
fn media_mp4_preset_is_h264_with_faststart() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("download.mp4");
    let source = fixture("portrait_360x640.mp4");
    let result = transcode_mp4(
        &source,
        &probe(&source).unwrap(),
        &path,
        Preset::Low,
        Format::Mp4,
        &Mp4Options::default(),
        &mut |_| {},
        &never(),
    )
    .unwrap();
    assert_eq!((result.width, result.height), (360, 640));
    let info = probe(&path).unwrap();
    assert_eq!(info.video_caps.as_deref(), Some("video/x-h264"));
    assert!(info.has_audio);
    let boxes = mp4_boxes(&path);
    let moov = boxes.iter().position(|b| b == "moov").unwrap();
    let mdat = boxes.iter().position(|b| b == "mdat").unwrap();
    assert!(moov < mdat, "{boxes:?}");
    // Only the output is left: no partial or faststart scratch files.
    let names: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("download.mp4")]);
}

#[test]
fn media_webm_preset_is_vp8() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("download.webm");
    let source = fixture("small_320x180.mp4");
    transcode_mp4(
        &source,
        &probe(&source).unwrap(),
        &path,
        Preset::Low,
        Format::WebM,
        &Mp4Options::default(),
        &mut |_| {},
        &never(),
    )
    .unwrap();
    let info = probe(&path).unwrap();
    assert!(matches!(info.video_caps.as_deref(), Some("video/x-vp8" | "video/x-vp9")), "{info:?}");
    assert!(info.audio_codec.as_deref().unwrap_or_default().to_lowercase().contains("opus"), "{info:?}");
    assert_eq!((info.width, info.height), (320, 180));
}

#[test]
fn media_poster_is_a_bright_jpeg_and_storyboard_matches_vtt() {
    let out = tempfile::tempdir().unwrap();
    let source = fixture("clip_720p.mp4");
    let info = probe(&source).unwrap();
    let (poster, thumbs) =
        poster_and_thumbnails(&source, &info, out.path(), &ThumbnailOptions::default(), &never()).unwrap();
    let bytes = std::fs::read(&poster.path).unwrap();
    assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "JPEG magic");
    let decoded = load_jpeg(&poster.path).unwrap();
    assert_eq!((decoded.width, decoded.height), (640, 360));
    assert!(decoded.mean_luma() > 30.0, "poster luma {}", decoded.mean_luma());
    assert_eq!(thumbs.len(), 3);
    assert!(thumbs.iter().all(|t| load_jpeg(t).is_ok()));

    let board = storyboard(&source, &info, out.path(), &StoryboardOptions::default(), &never()).unwrap();
    let sprite = load_jpeg(&board.sprite).unwrap();
    let vtt = std::fs::read_to_string(&board.vtt).unwrap();
    assert!(vtt.starts_with("WEBVTT"));
    let cues: Vec<(u32, u32, u32, u32)> = vtt
        .lines()
        .filter_map(|l| l.split_once("#xywh="))
        .map(|(file, xywh)| {
            assert_eq!(file, "storyboard.jpg");
            let v: Vec<u32> = xywh.split(',').map(|n| n.parse().unwrap()).collect();
            (v[0], v[1], v[2], v[3])
        })
        .collect();
    assert_eq!(cues.len() as u32, board.tiles);
    assert_eq!(vtt.matches(" --> ").count() as u32, board.tiles);
    assert!(board.tiles >= 4);
    for (x, y, w, h) in cues {
        assert_eq!((w, h), (160, 90));
        assert!(
            x + w <= sprite.width && y + h <= sprite.height,
            "tile {x},{y} outside {}x{}",
            sprite.width,
            sprite.height
        );
    }
}

#[test]
fn media_poster_skips_a_black_start() {
    let out = tempfile::tempdir().unwrap();
    let source = fixture("black_start.mp4");
    let info = probe(&source).unwrap();
    let (poster, _) =
        poster_and_thumbnails(&source, &info, out.path(), &ThumbnailOptions::default(), &never()).unwrap();
    assert!(poster.position >= Duration::from_secs(1), "poster taken at {:?}", poster.position);
    let decoded = load_jpeg(&poster.path).unwrap();
    assert!(decoded.mean_luma() > 60.0, "poster luma {}", decoded.mean_luma());
    // The first frame really is black.
    let first =
        ThumbnailOptions { poster_candidates: vec![0.0], thumbnail_fractions: vec![], ..ThumbnailOptions::default() };
    let black_dir = tempfile::tempdir().unwrap();
    let (black, _) = poster_and_thumbnails(&source, &info, black_dir.path(), &first, &never()).unwrap();
    assert!(black.mean_luma < 20.0, "first frame luma {}", black.mean_luma);
}

/// What a worker does with an upload: probe, check limits, encode the ladder.
fn process(source: &Path, out: &Path) -> Result<(), MediaError> {
    let info = probe(source)?;
    info.check(&MediaLimits::default())?;
    let rungs = plan_ladder(&info, &LadderConfig::default());
    transcode_hls(source, &info, out, &rungs, &quick_hls(), &mut |_| {}, &mut |_| {}, &never())?;
    Ok(())
}

#[test]
fn media_hostile_corpus_fails_with_typed_errors() {
    let cases = [
        "hostile_truncated.mp4",
        "hostile_moov_at_end_truncated.mp4",
        "hostile_garbage_mdat.mp4",
        "hostile_random.mp4",
        "hostile_empty.mp4",
        "audio_only.m4a",
    ];
    let mut failures = Vec::new();
    for name in cases {
        let out = tempfile::tempdir().unwrap();
        let source = fixture(name);
        let result = std::panic::catch_unwind(|| process(&source, out.path()));
        let err = match result {
            Ok(Err(err)) => err,
            Ok(Ok(())) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(_) => panic!("{name}: panicked"),
        };
        eprintln!("{name}: {} ({err})", err.code());
        assert!(err.is_client_error(), "{name}: {err:?}");
        assert!(!err.to_string().is_empty());
        assert!(dir_is_empty(out.path()), "{name}: left files in the output dir");
        let expected_kind = match name {
            "hostile_empty.mp4" => matches!(err, MediaError::EmptyFile),
            "audio_only.m4a" => matches!(&err, MediaError::Rejected { reason } if reason.contains("no video")),
            _ => true,
        };
        assert!(expected_kind, "{name}: {err:?}");
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn media_cancel_mid_transcode_returns_quickly_and_leaves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let source = fixture("clip_720p.mp4");
    let info = probe(&source).unwrap();
    let rungs = plan_ladder(&info, &LadderConfig::default());
    let cancel = never();
    let trigger = cancel.clone();
    let mut cancelled_at = None;
    let opts = HlsOptions { speed_preset: "medium".into(), ..quick_hls() };
    let result = transcode_hls(
        &source,
        &info,
        out.path(),
        &rungs,
        &opts,
        &mut |p| {
            if p.position > Duration::ZERO && cancelled_at.is_none() {
                trigger.store(true, Ordering::SeqCst);
                cancelled_at = Some(Instant::now());
            }
        },
        &mut |_| {},
        &cancel,
    );
    // Cancelled (not finished) is the proof the pipeline stopped mid-way; how fast
    // is a benchmark question, not a test's, on a shared machine.
    assert!(matches!(result, Err(MediaError::Cancelled)), "{result:?}");
    assert!(cancelled_at.is_some());
    assert!(dir_is_empty(out.path()), "files left after cancel");
}

#[test]
fn media_timeout_is_typed() {
    let out = tempfile::tempdir().unwrap();
    let source = fixture("clip_720p.mp4");
    let info = probe(&source).unwrap();
    let rungs = plan_ladder(&info, &LadderConfig::default());
    let opts = HlsOptions { timeout: Duration::from_millis(300), ..quick_hls() };
    let result = transcode_hls(&source, &info, out.path(), &rungs, &opts, &mut |_| {}, &mut |_| {}, &never());
    assert!(matches!(result, Err(MediaError::Timeout(_))), "{result:?}");
    assert!(dir_is_empty(out.path()));
}
