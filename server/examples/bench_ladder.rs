//! Benchmark driver: one HLS ladder (720/480/360 by default) of a source file, the way
//! the worker makes it, timed from the outside. Used by `scripts/bench-transcode.py`
//! (`make bench`); not a test.
//!
//! ```text
//! bench_ladder <source> <out_dir> [lines,lines,...]
//! BENCH_JAIL=/path/to/reelhouse bench_ladder ...   # the same ladder in a media jail child
//! ```
//! Prints one JSON object: wall seconds, seconds until the first `on_rendition_ready`
//! (first playable rung), and each rung's size and bitrate target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use reelhouse::config::media::MediaSettings;
use reelhouse::media::ladder::{plan_ladder, transcode_hls, HlsOutput, LadderConfig};
use reelhouse::media::probe;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let source = PathBuf::from(args.next().expect("usage: bench_ladder <source> <out_dir> [lines,...]"));
    let out_dir = PathBuf::from(args.next().expect("usage: bench_ladder <source> <out_dir> [lines,...]"));
    let lines: Vec<u32> =
        args.next().unwrap_or_else(|| "720,480,360".into()).split(',').map(|s| s.trim().parse().unwrap()).collect();

    reelhouse::media::init_gstreamer("warning").expect("GStreamer");

    // The product's defaults (settings file defaults), restricted to the requested rungs.
    let settings = MediaSettings::default();
    let ladder = settings.ladder();
    let config = LadderConfig { rungs: ladder.rungs.into_iter().filter(|r| lines.contains(&r.lines)).collect() };
    let mut opts = settings.hls_options();
    // Diagnostics only (not used by `make bench`): try another videoscale method.
    if let Ok(method) = std::env::var("BENCH_SCALE_METHOD") {
        opts.scale_method = method;
    }

    let info = probe(&source).expect("probe");
    let rungs = plan_ladder(&info, &config);
    let fps =
        info.frame_rate_fraction.map(|(n, d)| f64::from(n) / f64::from(d)).unwrap_or(f64::from(opts.fallback_fps));
    let keyint = (fps * f64::from(opts.segment_seconds.max(1))).round() as u32;

    let started = Instant::now();
    let mut first_ready: Option<(f64, String)> = None;
    let output = if let Ok(binary) = std::env::var("BENCH_JAIL") {
        jailed(&binary, &source, &out_dir, config, opts.clone(), started, &mut first_ready)
    } else {
        in_process(&source, &out_dir, &rungs, &opts, started, &mut first_ready)
    };
    let wall = started.elapsed().as_secs_f64();

    let rungs_json: Vec<serde_json::Value> = output
        .rungs
        .iter()
        .map(|r| {
            let dir = r.playlist.parent().unwrap();
            serde_json::json!({
                "name": r.rung.name,
                "width": r.rung.width,
                "height": r.rung.height,
                "video_bitrate_kbps": r.rung.video_bitrate_kbps,
                "playlist": r.playlist,
                "segments": r.segments.len(),
                "bytes": dir_bytes(dir),
                "average_bandwidth": r.average_bandwidth,
            })
        })
        .collect();
    let report = serde_json::json!({
        "wall_s": wall,
        "first_playable_s": first_ready.as_ref().map(|(t, _)| *t),
        "first_playable_rung": first_ready.as_ref().map(|(_, n)| n.clone()),
        "keyint": keyint,
        "segment_seconds": opts.segment_seconds,
        "speed_preset": opts.speed_preset,
        "scale_method": opts.scale_method,
        "jailed": std::env::var("BENCH_JAIL").is_ok(),
        "audio_bitrate_kbps": opts.audio_bitrate_kbps,
        "rungs": rungs_json,
    });
    println!("{report}");
}

fn in_process(
    source: &std::path::Path,
    out_dir: &std::path::Path,
    rungs: &[reelhouse::media::ladder::Rung],
    opts: &reelhouse::media::ladder::HlsOptions,
    started: Instant,
    first_ready: &mut Option<(f64, String)>,
) -> HlsOutput {
    let cancel = AtomicBool::new(false);
    // Probed inside the timed run, as the jailed child does.
    let info = probe(source).expect("probe");
    transcode_hls(
        source,
        &info,
        out_dir,
        rungs,
        opts,
        &mut |_| {},
        &mut |ready| {
            if first_ready.is_none() {
                *first_ready = Some((started.elapsed().as_secs_f64(), ready.rung.name.clone()));
            }
        },
        &cancel,
    )
    .expect("transcode")
}

/// The same ladder the way the worker runs it now: in a `reelhouse media` child.
fn jailed(
    binary: &str,
    source: &std::path::Path,
    out_dir: &std::path::Path,
    ladder: LadderConfig,
    hls: reelhouse::media::ladder::HlsOptions,
    started: Instant,
    first_ready: &mut Option<(f64, String)>,
) -> HlsOutput {
    use reelhouse::jail::protocol::{Message, TranscodeTask};
    let mut settings = reelhouse::config::Settings::default();
    settings.jail.binary = Some(PathBuf::from(binary));
    // The jail's own cost is measured, not the encoder priority (in-process runs at 0).
    settings.media.encoder_nice = 0;
    let jail = reelhouse::jail::MediaJail::from_settings(&settings);
    // The child writes `hls/` under its work dir, as the worker's does; moved to
    // `out_dir` afterwards so both modes leave the same layout.
    let work = std::path::absolute(out_dir.with_extension("work")).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hls_out = rt.block_on(async {
        let task = TranscodeTask {
            probe_timeout: settings.media.probe_timeout(),
            limits: settings.media.limits(),
            ladder,
            hls,
            preset: reelhouse::media::mp4::Preset::Medium,
            downloads: Vec::new(),
            mp4: Default::default(),
            ladder_only: true,
        };
        let mut child = jail.transcode(source, &work, task, std::time::Duration::from_secs(3600)).await.unwrap();
        let cancel = reelhouse::media::cancel_flag();
        loop {
            match child.next(&cancel).await.expect("jailed ladder") {
                Message::RenditionReady { ready } if first_ready.is_none() => {
                    *first_ready = Some((started.elapsed().as_secs_f64(), ready.rung.name.clone()));
                }
                Message::Laddered { hls } => {
                    child.finish().await;
                    break hls;
                }
                Message::Failed { error } => panic!("jailed ladder failed: {error:?}"),
                _ => {}
            }
        }
    });
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::rename(work.join("hls"), out_dir).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    let moved = |p: &std::path::Path| out_dir.join(p.strip_prefix(work.join("hls")).unwrap());
    let mut hls_out = hls_out;
    hls_out.master_playlist = moved(&hls_out.master_playlist);
    for rung in &mut hls_out.rungs {
        rung.playlist = moved(&rung.playlist);
        rung.segments = rung.segments.iter().map(|s| moved(s)).collect();
    }
    hls_out
}
