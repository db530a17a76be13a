//! The adaptive HLS ladder: which rungs to make, and one decode-once pipeline making them.
//!
//! ```text
//! uridecodebin ─ video ─ videoconvert ! videoflip(auto) ! videorate ! caps(fps) ! tee
//!                           tee ─ queue ! videoscale ! caps(WxH) ! x264enc ! h264parse ─ hlssink2[rung]
//!              └ audio ─ audioconvert ! audioresample ! avenc_aac ! aacparse ! tee
//!                           tee ─ queue ─ hlssink2[rung]
//! ```
//! Every rung's encoder sees the same frames at a fixed frame rate with the same
//! `key-int-max` and no scene-cut keyframes, so IDR frames (and therefore segment
//! boundaries) fall on the same timestamps in every rung and players can switch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{
    audio_normalizer, caps_filter, connect_decoder, ended_early, limit_decoder_errors, link_pads, link_pads_to, make,
    run_to_eos, x264_encoder, Limits, NullOnDrop,
};
use super::{ensure_gstreamer, file_uri, MediaError, MediaInfo, Progress, RungProgress};

/// One configured rung: a target short-side size and bitrates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RungSpec {
    /// Lines of the picture's short side (720 for 1280x720 and for 720x1280).
    pub lines: u32,
    pub video_bitrate_kbps: u32,
}

/// The configurable ladder, highest rung first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LadderConfig {
    pub rungs: Vec<RungSpec>,
}

impl Default for LadderConfig {
    fn default() -> Self {
        let rung = |lines, video_bitrate_kbps| RungSpec { lines, video_bitrate_kbps };
        Self { rungs: vec![rung(1080, 5000), rung(720, 2800), rung(480, 1400), rung(360, 800)] }
    }
}

/// One rendition to produce.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rung {
    /// Directory name and label, e.g. "720p".
    pub name: String,
    /// Output size as displayed (rotation applied), both even.
    pub width: u32,
    pub height: u32,
    pub video_bitrate_kbps: u32,
}

/// Plan the rungs for a source: never upscale, keep the aspect ratio and orientation,
/// even dimensions, at least one rung.
///
/// Rungs are chosen by the displayed picture's short side, so a portrait phone video
/// of 1080x1920 gets a 1080x1920 top rung rather than a 608x1080 one.
pub fn plan_ladder(info: &MediaInfo, config: &LadderConfig) -> Vec<Rung> {
    let (dw, dh) = info.display_size();
    let (dw, dh) = (dw.max(2), dh.max(2));
    let short = dw.min(dh);
    let long = dw.max(dh);
    let landscape = dw >= dh;
    let size_for = |lines: u32| {
        let other = nearest_even(f64::from(long) * f64::from(lines) / f64::from(short));
        let lines = even(lines);
        if landscape {
            (other, lines)
        } else {
            (lines, other)
        }
    };
    let mut rungs: Vec<Rung> = Vec::new();
    let mut specs = config.rungs.clone();
    specs.sort_by_key(|s| std::cmp::Reverse(s.lines));
    for spec in specs.iter().filter(|s| s.lines > 0 && s.lines <= short) {
        let (width, height) = size_for(spec.lines);
        if rungs.iter().any(|r| r.width == width && r.height == height) {
            continue;
        }
        rungs.push(Rung {
            name: format!("{}p", spec.lines),
            width,
            height,
            video_bitrate_kbps: spec.video_bitrate_kbps,
        });
    }
    if rungs.is_empty() {
        // Below the smallest rung: one rung at the source size, bitrate scaled by pixels.
        let (width, height) = (even(dw), even(dh));
        let smallest = specs.last().cloned().unwrap_or(RungSpec { lines: 360, video_bitrate_kbps: 800 });
        let ratio = f64::from(short) / f64::from(smallest.lines.max(1));
        let kbps = (f64::from(smallest.video_bitrate_kbps) * ratio * ratio).round().max(150.0) as u32;
        rungs.push(Rung { name: format!("{}p", even(short)), width, height, video_bitrate_kbps: kbps });
    }
    rungs
}

/// 853.3 -> 854: the even number nearest to `v`.
fn nearest_even(v: f64) -> u32 {
    ((v / 2.0).round() as u32 * 2).max(2)
}

fn even(v: u32) -> u32 {
    (v / 2 * 2).max(2)
}

/// How the ladder is encoded. The scaler and keyframe interval are pinned here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HlsOptions {
    /// Target segment duration (hlssink2 `target-duration`); one keyframe per segment.
    pub segment_seconds: u32,
    /// x264 `speed-preset` nick, e.g. "veryfast".
    pub speed_preset: String,
    /// x264 `tune` flags, e.g. "zerolatency"; `None` keeps x264's default.
    pub tune: Option<String>,
    /// videoscale `method` nick, pinned so every run scales the same way.
    pub scale_method: String,
    pub audio_bitrate_kbps: u32,
    /// Frame rate forced when the source's is unknown.
    pub fallback_fps: i32,
    /// Consecutive undecodable frames that fail the job (decoders conceal forever otherwise).
    pub max_decoder_errors: i32,
    pub timeout: Duration,
    /// Progress callback period (at least 250 ms).
    pub progress_interval: Duration,
}

impl Default for HlsOptions {
    fn default() -> Self {
        Self {
            segment_seconds: 4,
            speed_preset: "veryfast".into(),
            tune: None,
            scale_method: crate::media::pipeline::SCALE_METHOD.into(),
            audio_bitrate_kbps: 128,
            fallback_fps: 30,
            max_decoder_errors: 10,
            timeout: Duration::from_secs(3600),
            progress_interval: Duration::from_millis(250),
        }
    }
}

/// The lowest rendition, playable: reported each time its media playlist lists more
/// segments while the ladder runs (`complete: false`, a growing playlist), and once
/// more when the playlist is final (ENDLIST written).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenditionReady {
    pub rung: Rung,
    pub playlist: PathBuf,
    /// The playlist is final; otherwise it lists `segments` segments so far.
    pub complete: bool,
    pub segments: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RungOutput {
    pub rung: Rung,
    /// `{out_dir}/{rung}/index.m3u8`
    pub playlist: PathBuf,
    pub segments: Vec<PathBuf>,
    /// Peak segment bitrate in bits/s (the master playlist's BANDWIDTH).
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HlsOutput {
    /// `{out_dir}/master.m3u8`
    pub master_playlist: PathBuf,
    pub rungs: Vec<RungOutput>,
    pub elapsed: Duration,
}

/// What each rung's probes collect while the pipeline runs.
#[derive(Default)]
struct RungState {
    /// End (pts + duration) of the last encoded buffer, ns.
    encoded_until: AtomicU64,
    eos: AtomicBool,
    video_codec: Mutex<Option<String>>,
}

/// Removes what a failed run wrote.
struct CleanupGuard {
    paths: Vec<PathBuf>,
    armed: bool,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for path in &self.paths {
            let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        }
    }
}

/// Transcode `source` (probed as `info`: one probe per job, see
/// [`crate::jail`]'s child) into an HLS ladder under `out_dir` (one directory per rung
/// and `master.m3u8`). Blocking; run it on a worker thread. On any failure, cancel or
/// timeout, what it wrote is removed and the pipeline ends in `Null`.
///
/// One pipeline decodes the source once ([`video_head`], [`audio_head`]) and tees it
/// into one encoder branch per rung ([`rung_branch`]); the run reports progress and
/// the lowest rung as its playlist grows and once final; [`finish_rungs`] checks and
/// measures what was written and the master playlist is written last.
#[tracing::instrument(skip_all, fields(source = %source.display(), rungs = rungs.len()), err(Display))]
#[allow(clippy::too_many_arguments)]
pub fn transcode_hls(
    source: &Path,
    info: &MediaInfo,
    out_dir: &Path,
    rungs: &[Rung],
    opts: &HlsOptions,
    progress: &mut dyn FnMut(&Progress),
    on_rendition_ready: &mut dyn FnMut(&RenditionReady),
    cancel: &AtomicBool,
) -> Result<HlsOutput, MediaError> {
    let started = Instant::now();
    let limits = Limits { cancel, deadline: started + opts.timeout, timeout: opts.timeout };
    ensure_gstreamer()?;
    if rungs.is_empty() {
        return Err(MediaError::Build("the ladder has no rungs".into()));
    }
    limits.check()?;
    if info.video_tracks == 0 {
        return Err(MediaError::Rejected { reason: "the file has no video stream".into() });
    }
    let (master_path, mut cleanup, rung_dirs) = output_dirs(out_dir, rungs)?;
    let (fps_n, fps_d) = info.frame_rate_fraction.unwrap_or((opts.fallback_fps.max(1), 1));
    let keyint =
        ((f64::from(fps_n) / f64::from(fps_d)) * f64::from(opts.segment_seconds.max(1))).round().max(1.0) as u32;

    let pipeline = super::pipeline::new_pipeline("hls-ladder");
    let _null = NullOnDrop(pipeline.clone());
    let states: Vec<Arc<RungState>> = rungs.iter().map(|_| Arc::new(RungState::default())).collect();
    let video = video_head(&pipeline, source, (fps_n, fps_d), opts)?;
    let audio = if info.has_audio { Some(audio_head(&pipeline, opts)?) } else { None };
    for ((rung, dir), state) in rungs.iter().zip(&rung_dirs).zip(&states) {
        let branch = RungBranch { rung, dir, keyint, state };
        rung_branch(&pipeline, &branch, opts, &video.tee, audio.as_ref().map(|(_, tee)| tee))?;
    }
    connect_decoder(&pipeline, &video.decode, &video.convert, audio.as_ref().map(|(head, _)| head));

    // Run, reporting progress and the lowest rung: each time its playlist grows, and
    // once more when it is final.
    let lowest = (0..rungs.len()).min_by_key(|&i| u64::from(rungs[i].width) * u64::from(rungs[i].height)).unwrap_or(0);
    let ready_sent = std::cell::Cell::new(false);
    let segments_sent = std::cell::Cell::new(0usize);
    let tick = opts.progress_interval.max(Duration::from_millis(250));
    let mut report = |final_report: bool| -> Result<(), MediaError> {
        let playlist = rung_dirs[lowest].join("index.m3u8");
        if !ready_sent.get() && (final_report || states[lowest].eos.load(Ordering::Acquire)) {
            if playlist_complete(&playlist) {
                ready_sent.set(true);
                let segments = listed_segments(&playlist);
                on_rendition_ready(&RenditionReady { rung: rungs[lowest].clone(), playlist, complete: true, segments });
            }
        } else if !ready_sent.get() {
            let segments = listed_segments(&playlist);
            if segments > segments_sent.get() {
                segments_sent.set(segments);
                on_rendition_ready(&RenditionReady {
                    rung: rungs[lowest].clone(),
                    playlist,
                    complete: false,
                    segments,
                });
            }
        }
        let run = RunState { pipeline: &pipeline, started, duration: info.duration, frames: &video.frames };
        progress(&ladder_progress(&run, rungs, &states, final_report));
        Ok(())
    };
    run_to_eos(&pipeline, &limits, tick, &mut || report(false))?;

    // The source must have been read to its end: a truncated file often just stops early.
    let reached = Duration::from_nanos(video.decoded_until.load(Ordering::Relaxed));
    if let Some(expected) = info.duration {
        if ended_early(reached, expected) {
            return Err(MediaError::Truncated {
                reached_secs: reached.as_secs_f64(),
                expected_secs: expected.as_secs_f64(),
            });
        }
    }
    let outputs = finish_rungs(rungs, &rung_dirs, &states, info.has_audio, opts)?;
    write_master(&master_path, &outputs, f64::from(fps_n) / f64::from(fps_d))?;
    report(true)?;
    cleanup.armed = false;
    Ok(HlsOutput { master_playlist: master_path, rungs: outputs, elapsed: started.elapsed() })
}

/// A fresh directory per rung under `out_dir` (an earlier attempt's is cleared), and
/// the guard that removes them and the master playlist unless the run succeeds.
fn output_dirs(out_dir: &Path, rungs: &[Rung]) -> Result<(PathBuf, CleanupGuard, Vec<PathBuf>), MediaError> {
    std::fs::create_dir_all(out_dir).map_err(|e| MediaError::io(format!("creating {}", out_dir.display()), e))?;
    let master_path = out_dir.join("master.m3u8");
    let mut cleanup =
        CleanupGuard { paths: vec![master_path.clone(), master_path.with_extension("m3u8.tmp")], armed: true };
    let mut rung_dirs = Vec::with_capacity(rungs.len());
    for rung in rungs {
        let dir = out_dir.join(&rung.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| MediaError::io(format!("clearing {}", dir.display()), e))?;
        }
        cleanup.paths.push(dir.clone());
        std::fs::create_dir_all(&dir).map_err(|e| MediaError::io(format!("creating {}", dir.display()), e))?;
        rung_dirs.push(dir);
    }
    Ok((master_path, cleanup, rung_dirs))
}

/// The decoded video, once for every rung: `uridecodebin` (linked later, as its
/// pads appear) and `convert ! I420 ! rotate ! videorate ! fps ! tee`.
struct VideoHead {
    decode: gst::Element,
    /// Where the decoder's video pad is linked.
    convert: gst::Element,
    tee: gst::Element,
    /// How far the source was really decoded (ns): measured before videorate, which
    /// repeats the last frame up to the declared duration when a truncated file ends
    /// early.
    decoded_until: Arc<AtomicU64>,
    /// Frames that reached the tee (for the encode rate).
    frames: Arc<AtomicU64>,
}

fn video_head(
    pipeline: &gst::Pipeline,
    source: &Path,
    (fps_n, fps_d): (i32, i32),
    opts: &HlsOptions,
) -> Result<VideoHead, MediaError> {
    let decode = make("uridecodebin", Some("decode"))?;
    decode.set_property("uri", file_uri(source)?);
    limit_decoder_errors(&decode, opts.max_decoder_errors);
    let convert = make("videoconvert", Some("video-convert"))?;
    let format = caps_filter("video-format", gst::Caps::builder("video/x-raw").field("format", "I420").build())?;
    let flip = make("videoflip", Some("rotate"))?;
    flip.set_property_from_str("method", "automatic");
    let rate = make("videorate", Some("video-rate"))?;
    let rate_caps = caps_filter(
        "video-fps",
        gst::Caps::builder("video/x-raw").field("framerate", gst::Fraction::new(fps_n, fps_d)).build(),
    )?;
    let tee = make("tee", Some("video-tee"))?;
    pipeline.add_many([&decode, &convert, &format, &flip, &rate, &rate_caps, &tee])?;
    gst::Element::link_many([&convert, &format, &flip, &rate, &rate_caps, &tee])?;
    let decoded_until = Arc::new(AtomicU64::new(0));
    if let Some(pad) = convert.static_pad("sink") {
        let decoded_until = decoded_until.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                if let Some(pts) = buffer.pts() {
                    let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
                    decoded_until.fetch_max(end.nseconds(), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let frames = Arc::new(AtomicU64::new(0));
    if let Some(pad) = tee.static_pad("sink") {
        let frames = frames.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            frames.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
    Ok(VideoHead { decode, convert, tee, decoded_until, frames })
}

/// The decoded audio, encoded to AAC once and teed to every rung; returns its head
/// (where the decoder's audio pad is linked) and the tee.
fn audio_head(pipeline: &gst::Pipeline, opts: &HlsOptions) -> Result<(gst::Element, gst::Element), MediaError> {
    let (convert, caps) = audio_normalizer(pipeline)?;
    let enc = make("avenc_aac", Some("aac-encoder"))?;
    enc.set_property("bitrate", i32::try_from(opts.audio_bitrate_kbps * 1000).unwrap_or(128_000));
    let parse = make("aacparse", Some("aac-parse"))?;
    let tee = make("tee", Some("audio-tee"))?;
    pipeline.add_many([&enc, &parse, &tee])?;
    gst::Element::link_many([&caps, &enc, &parse, &tee])?;
    Ok((convert, tee))
}

/// One rung of the ladder and where it goes.
struct RungBranch<'a> {
    rung: &'a Rung,
    dir: &'a Path,
    /// Frames between keyframes: one segment's worth, the same in every rung.
    keyint: u32,
    state: &'a Arc<RungState>,
}

/// `queue ! videoscale ! size ! x264 ! high profile ! h264parse ! hlssink2` from the
/// video tee, and the encoded audio from the audio tee into the same sink.
fn rung_branch(
    pipeline: &gst::Pipeline,
    branch: &RungBranch<'_>,
    opts: &HlsOptions,
    video_tee: &gst::Element,
    audio_tee: Option<&gst::Element>,
) -> Result<(), MediaError> {
    let RungBranch { rung, dir, keyint, state } = branch;
    let id = &rung.name;
    let queue = make("queue", Some(&format!("video-queue-{id}")))?;
    queue.set_property("max-size-buffers", 8u32);
    queue.set_property("max-size-time", 0u64);
    queue.set_property("max-size-bytes", 0u32);
    let scale = make("videoscale", Some(&format!("scale-{id}")))?;
    scale.set_property_from_str("method", &opts.scale_method);
    let size = caps_filter(
        &format!("size-{id}"),
        gst::Caps::builder("video/x-raw")
            .field("width", i32::try_from(rung.width).unwrap_or(i32::MAX))
            .field("height", i32::try_from(rung.height).unwrap_or(i32::MAX))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    )?;
    let enc = x264_encoder(
        &format!("x264-{id}"),
        rung.video_bitrate_kbps,
        *keyint,
        &opts.speed_preset,
        opts.tune.as_deref(),
    )?;
    let profile =
        caps_filter(&format!("profile-{id}"), gst::Caps::builder("video/x-h264").field("profile", "high").build())?;
    let parse = make("h264parse", Some(&format!("h264parse-{id}")))?;
    let sink = make("hlssink2", Some(&format!("hls-{id}")))?;
    sink.set_property("location", dir.join("segment%05d.ts").to_string_lossy().to_string());
    sink.set_property("playlist-location", dir.join("index.m3u8").to_string_lossy().to_string());
    sink.set_property("target-duration", opts.segment_seconds.max(1));
    sink.set_property("playlist-length", 0u32);
    sink.set_property("max-files", 0u32);
    // Keyframes come from the pinned key-int-max, identical in every rung.
    sink.set_property("send-keyframe-requests", false);
    pipeline.add_many([&queue, &scale, &size, &enc, &profile, &parse, &sink])?;
    gst::Element::link_many([&queue, &scale, &size, &enc, &profile, &parse])?;
    let video_pad =
        sink.request_pad_simple("video").ok_or_else(|| MediaError::Build("hlssink2 gave no video pad".into()))?;
    link_pads(&parse, "src", &video_pad)?;
    let tee_pad =
        video_tee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Build("tee gave no src pad".into()))?;
    link_pads_to(&tee_pad, &queue)?;
    watch_rung(&parse, &video_pad, state);

    if let Some(atee) = audio_tee {
        let aqueue = make("queue", Some(&format!("audio-queue-{id}")))?;
        // Encoded audio waits here while the video encoders' lookahead catches up.
        aqueue.set_property("max-size-buffers", 0u32);
        aqueue.set_property("max-size-bytes", 0u32);
        aqueue.set_property("max-size-time", 20 * gst::ClockTime::SECOND.nseconds());
        pipeline.add(&aqueue)?;
        let atee_pad =
            atee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Build("tee gave no src pad".into()))?;
        link_pads_to(&atee_pad, &aqueue)?;
        let audio_pad =
            sink.request_pad_simple("audio").ok_or_else(|| MediaError::Build("hlssink2 gave no audio pad".into()))?;
        link_pads(&aqueue, "src", &audio_pad)?;
    }
    Ok(())
}

/// What a progress report reads of the running pipeline.
struct RunState<'a> {
    pipeline: &'a gst::Pipeline,
    started: Instant,
    duration: Option<Duration>,
    frames: &'a AtomicU64,
}

/// Where the ladder is: the pipeline's position (or, when it does not answer, the
/// slowest rung's), the encode rate, the ETA and every rung's percent. The final
/// report says 100 % everywhere.
fn ladder_progress(run: &RunState<'_>, rungs: &[Rung], states: &[Arc<RungState>], final_report: bool) -> Progress {
    let elapsed = run.started.elapsed().as_secs_f64().max(1e-3);
    let position =
        run.pipeline.query_position::<gst::ClockTime>().map(|p| Duration::from_nanos(p.nseconds())).unwrap_or_else(
            || Duration::from_nanos(states.iter().map(|s| s.encoded_until.load(Ordering::Relaxed)).min().unwrap_or(0)),
        );
    let duration = run.duration;
    let position = if final_report { duration.unwrap_or(position) } else { position };
    let percent_of = |pos: Duration| match duration {
        Some(d) if !d.is_zero() => (pos.as_secs_f64() / d.as_secs_f64() * 100.0).clamp(0.0, 100.0),
        _ => 0.0,
    };
    let speed = position.as_secs_f64() / elapsed;
    let eta = duration
        .filter(|_| speed > 0.0)
        .map(|d| Duration::from_secs_f64((d.as_secs_f64() - position.as_secs_f64()).max(0.0) / speed));
    Progress {
        percent: percent_of(position),
        position,
        duration,
        fps: run.frames.load(Ordering::Relaxed) as f64 / elapsed,
        eta,
        rungs: rungs
            .iter()
            .zip(states)
            .map(|(r, s)| RungProgress {
                name: r.name.clone(),
                percent: if final_report {
                    100.0
                } else {
                    percent_of(Duration::from_nanos(s.encoded_until.load(Ordering::Relaxed)))
                },
            })
            .collect(),
    }
}

/// Every rung's result: its playlist must be final; bandwidth is measured from its
/// segments (the nominal bitrate when they cannot be), codecs from its stream.
fn finish_rungs(
    rungs: &[Rung],
    rung_dirs: &[PathBuf],
    states: &[Arc<RungState>],
    has_audio: bool,
    opts: &HlsOptions,
) -> Result<Vec<RungOutput>, MediaError> {
    let audio_codec = if has_audio { Some("mp4a.40.2") } else { None };
    let mut outputs = Vec::with_capacity(rungs.len());
    for ((rung, dir), state) in rungs.iter().zip(rung_dirs).zip(states) {
        let playlist = dir.join("index.m3u8");
        if !playlist_complete(&playlist) {
            return Err(MediaError::Pipeline {
                element: format!("hls-{}", rung.name),
                reason: "the playlist was not finalised".into(),
                debug: None,
            });
        }
        let segments = read_segments(&playlist, dir)?;
        let nominal = u64::from(rung.video_bitrate_kbps + if has_audio { opts.audio_bitrate_kbps } else { 0 }) * 1000;
        let (peak, average) = measured_bandwidth(&segments).unwrap_or((nominal, nominal));
        let video_codec = lock(&state.video_codec).clone().unwrap_or_else(|| "avc1.640028".into());
        let codecs = match audio_codec {
            Some(a) => format!("{video_codec},{a}"),
            None => video_codec,
        };
        outputs.push(RungOutput {
            rung: rung.clone(),
            playlist,
            segments: segments.into_iter().map(|s| s.path).collect(),
            bandwidth: peak,
            average_bandwidth: average,
            codecs,
        });
    }
    Ok(outputs)
}

/// Follow a rung: how far it has encoded, its codec string, and when EOS reaches its sink.
fn watch_rung(parse: &gst::Element, sink_pad: &gst::Pad, state: &Arc<RungState>) {
    if let Some(pad) = parse.static_pad("src") {
        let state = state.clone();
        pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(buffer) = info.buffer() {
                if let Some(pts) = buffer.pts() {
                    let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
                    state.encoded_until.fetch_max(end.nseconds(), Ordering::Relaxed);
                }
            } else if let Some(event) = info.event() {
                if let gst::EventView::Caps(caps) = event.view() {
                    if let Some(codec) = avc1_codec(caps.caps()) {
                        *lock(&state.video_codec) = Some(codec);
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let state = state.clone();
    sink_pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if info.event().is_some_and(|e| e.type_() == gst::EventType::Eos) {
            state.eos.store(true, Ordering::Release);
        }
        gst::PadProbeReturn::Ok
    });
}

/// RFC 6381 `avc1.PPCCLL` from h264parse caps (profile and level fields).
fn avc1_codec(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let (profile_idc, constraints) = match s.get::<&str>("profile").ok()? {
        "constrained-baseline" => (0x42, 0xe0),
        "baseline" => (0x42, 0x00),
        "main" => (0x4d, 0x40),
        "high" => (0x64, 0x00),
        "high-10" => (0x6e, 0x00),
        "high-4:2:2" => (0x7a, 0x00),
        "high-4:4:4" => (0xf4, 0x00),
        _ => return None,
    };
    let level: f64 = match s.get::<&str>("level").ok()? {
        "1b" => 1.1,
        other => other.parse().ok()?,
    };
    Some(format!("avc1.{profile_idc:02x}{constraints:02x}{:02x}", (level * 10.0).round() as u32))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Segments a media playlist lists so far (0 when it is not written yet).
fn listed_segments(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|text| text.lines().filter(|l| l.starts_with("#EXTINF:")).count()).unwrap_or(0)
}

fn playlist_complete(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains("#EXT-X-ENDLIST"))
}

struct Segment {
    path: PathBuf,
    seconds: f64,
}

fn read_segments(playlist: &Path, dir: &Path) -> Result<Vec<Segment>, MediaError> {
    let text =
        std::fs::read_to_string(playlist).map_err(|e| MediaError::io(format!("reading {}", playlist.display()), e))?;
    let mut segments = Vec::new();
    let mut pending: Option<f64> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            pending = rest.split(',').next().and_then(|d| d.trim().parse().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = Path::new(line).file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(line));
            segments.push(Segment { path: dir.join(name), seconds: pending.take().unwrap_or(0.0) });
        }
    }
    Ok(segments)
}

/// Peak and average bits per second over the written segments.
fn measured_bandwidth(segments: &[Segment]) -> Option<(u64, u64)> {
    let mut peak = 0.0f64;
    let (mut bits, mut seconds) = (0.0f64, 0.0f64);
    for segment in segments {
        let bytes = std::fs::metadata(&segment.path).ok()?.len() as f64;
        if segment.seconds > 0.0 {
            peak = peak.max(bytes * 8.0 / segment.seconds);
        }
        bits += bytes * 8.0;
        seconds += segment.seconds;
    }
    (seconds > 0.0).then(|| (peak.ceil() as u64, (bits / seconds).ceil() as u64))
}

fn write_master(path: &Path, rungs: &[RungOutput], fps: f64) -> Result<(), MediaError> {
    let mut ordered: Vec<&RungOutput> = rungs.iter().collect();
    ordered.sort_by_key(|r| std::cmp::Reverse(r.bandwidth));
    let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in ordered {
        text.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},FRAME-RATE={:.3},CODECS=\"{}\"\n{}/index.m3u8\n",
            r.bandwidth, r.average_bandwidth, r.rung.width, r.rung.height, fps, r.codecs, r.rung.name
        ));
    }
    let tmp = path.with_extension("m3u8.tmp");
    std::fs::write(&tmp, text).map_err(|e| MediaError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| MediaError::io(format!("writing {}", path.display()), e))
}
