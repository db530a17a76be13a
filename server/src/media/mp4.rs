//! Single-file downloads: progressive MP4 (H.264/AAC, faststart) and WebM (VP8/Opus).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{audio_normalizer, connect_decoder, ended_early, upright_at_size, x264_encoder, SCALE_METHOD};
use super::pipeline::{limit_decoder_errors, make, run_to_eos, Limits, NullOnDrop};
use super::{ensure_gstreamer, file_uri, MediaError, MediaInfo, Progress};

/// Quality presets of `transcode(videoId, preset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Preset {
    Low,
    Medium,
    High,
}

/// Output container and codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// H.264 + AAC in a progressive MP4 (moov first).
    Mp4,
    /// VP8 + Opus in WebM.
    WebM,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Mp4 => "mp4",
            Format::WebM => "webm",
        }
    }

    /// The name of the format in the API (`MP4`, `WEBM`).
    pub fn api_name(self) -> &'static str {
        match self {
            Format::Mp4 => "MP4",
            Format::WebM => "WEBM",
        }
    }
}

/// An output a transcode may be asked for: the HLS ladder (always made: playback,
/// renditions and PLAYABLE rest on it) and any of the single-file downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OutputFormat {
    Hls,
    Mp4,
    Webm,
}

impl OutputFormat {
    /// The download this format names (`None` for HLS).
    pub fn download(self) -> Option<Format> {
        match self {
            OutputFormat::Hls => None,
            OutputFormat::Mp4 => Some(Format::Mp4),
            OutputFormat::Webm => Some(Format::WebM),
        }
    }

    /// Parse an API name (`HLS`, `MP4`, `WEBM`, any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "HLS" => Some(OutputFormat::Hls),
            "MP4" => Some(OutputFormat::Mp4),
            "WEBM" => Some(OutputFormat::Webm),
            _ => None,
        }
    }
}

/// Check a requested set of outputs: not empty, HLS among them. Sorted, without
/// duplicates (HLS, MP4, WEBM order). The error is a sentence for the caller.
pub fn normalize_formats(formats: &[OutputFormat]) -> Result<Vec<OutputFormat>, String> {
    let mut out: Vec<OutputFormat> = formats.to_vec();
    out.sort();
    out.dedup();
    if !out.contains(&OutputFormat::Hls) {
        return Err("formats must include HLS: every video is played through its HLS ladder".into());
    }
    Ok(out)
}

/// What a preset means for the encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetSettings {
    /// Short side of the output, never upscaled.
    pub max_lines: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    /// x264 speed preset nick.
    pub x264_speed_preset: &'static str,
    /// vpx `cpu-used` (higher is faster).
    pub vpx_cpu_used: i32,
}

impl Preset {
    pub fn settings(self) -> PresetSettings {
        match self {
            Preset::Low => PresetSettings {
                max_lines: 480,
                video_bitrate_kbps: 1000,
                audio_bitrate_kbps: 96,
                x264_speed_preset: "veryfast",
                vpx_cpu_used: 8,
            },
            Preset::Medium => PresetSettings {
                max_lines: 720,
                video_bitrate_kbps: 2500,
                audio_bitrate_kbps: 128,
                x264_speed_preset: "fast",
                vpx_cpu_used: 5,
            },
            Preset::High => PresetSettings {
                max_lines: 1080,
                video_bitrate_kbps: 5000,
                audio_bitrate_kbps: 192,
                x264_speed_preset: "medium",
                vpx_cpu_used: 3,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mp4Options {
    pub timeout: Duration,
    pub progress_interval: Duration,
    pub max_decoder_errors: i32,
    /// Keyframe interval in seconds.
    pub keyframe_seconds: u32,
}

impl Default for Mp4Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3600),
            progress_interval: Duration::from_millis(250),
            max_decoder_errors: 10,
            keyframe_seconds: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mp4Output {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Encode `source` into one file at `out_path`. The file is written under a temporary
/// name next to `out_path` and renamed at the end, so `out_path` never holds a partial
/// file; on failure nothing is left behind.
#[tracing::instrument(skip_all, fields(source = %source.display(), ?preset, ?format), err(Display))]
#[allow(clippy::too_many_arguments)]
pub fn transcode_mp4(
    source: &Path,
    info: &MediaInfo,
    out_path: &Path,
    preset: Preset,
    format: Format,
    opts: &Mp4Options,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<Mp4Output, MediaError> {
    let started = Instant::now();
    let limits = Limits { cancel, deadline: started + opts.timeout, timeout: opts.timeout };
    ensure_gstreamer()?;
    limits.check()?;
    if info.video_tracks == 0 {
        return Err(MediaError::Rejected { reason: "the file has no video stream".into() });
    }
    let settings = preset.settings();
    let (width, height) = fit(info.display_size(), settings.max_lines);
    let (fps_n, fps_d) = info.frame_rate_fraction.unwrap_or((30, 1));
    let keyint =
        ((f64::from(fps_n) / f64::from(fps_d)) * f64::from(opts.keyframe_seconds.max(1))).round().max(1.0) as u32;

    let parent = out_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| MediaError::io(format!("creating {}", parent.display()), e))?;
    // Scratch space for the partial output and mp4mux's faststart file; removed on drop.
    let scratch = tempfile::Builder::new()
        .prefix(".transcode-")
        .tempdir_in(parent)
        .map_err(|e| MediaError::io(format!("creating a temporary directory in {}", parent.display()), e))?;
    let partial = scratch.path().join(format!("partial.{}", format.extension()));

    let pipeline = super::pipeline::new_pipeline(match format {
        Format::Mp4 => "mp4-download",
        Format::WebM => "webm-download",
    });
    let _null = NullOnDrop(pipeline.clone());
    let decode = make("uridecodebin", Some("decode"))?;
    decode.set_property("uri", file_uri(source)?);
    limit_decoder_errors(&decode, opts.max_decoder_errors);
    pipeline.add(&decode)?;
    let target = Target { format, settings: &settings, width, height, keyint, scratch: scratch.path() };
    let video = video_chain(&pipeline, &target)?;
    let sink = make("filesink", Some("file"))?;
    sink.set_property("location", partial.to_string_lossy().to_string());
    pipeline.add(&sink)?;
    video.mux.link(&sink)?;
    let audio_head = if info.has_audio { Some(audio_chain(&pipeline, &target, &video.mux)?) } else { None };
    connect_decoder(&pipeline, &decode, &video.head, audio_head.as_ref());

    let duration = info.duration;
    let tick = opts.progress_interval.max(Duration::from_millis(250));
    run_to_eos(&pipeline, &limits, tick, &mut || {
        progress(&download_progress(&pipeline, started, duration, &video.counters));
        Ok(())
    })?;

    let reached = Duration::from_nanos(video.counters.encoded_until.load(Ordering::Relaxed));
    if let Some(expected) = duration {
        if ended_early(reached, expected) {
            return Err(MediaError::Truncated {
                reached_secs: reached.as_secs_f64(),
                expected_secs: expected.as_secs_f64(),
            });
        }
    }
    std::fs::rename(&partial, out_path).map_err(|e| MediaError::io(format!("writing {}", out_path.display()), e))?;
    let bytes = std::fs::metadata(out_path).map(|m| m.len()).unwrap_or(0);
    progress(&Progress {
        percent: 100.0,
        position: duration.unwrap_or_default(),
        duration,
        fps: video.counters.frames.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64().max(1e-3),
        eta: Some(Duration::ZERO),
        rungs: Vec::new(),
    });
    Ok(Mp4Output { path: out_path.to_path_buf(), width, height, bytes, elapsed: started.elapsed() })
}

/// What the download is encoded to.
struct Target<'a> {
    format: Format,
    settings: &'a PresetSettings,
    width: u32,
    height: u32,
    /// Frames between keyframes.
    keyint: u32,
    /// Where mp4mux may keep its faststart file.
    scratch: &'a Path,
}

/// How far the encoder got, counted on its output.
#[derive(Default)]
struct Encoded {
    /// End (pts + duration) of the last encoded buffer, ns.
    encoded_until: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
}

struct VideoChain {
    /// Where the decoder's video pad is linked.
    head: gst::Element,
    mux: gst::Element,
    counters: Encoded,
}

/// `videoconvert ! rotate ! videoscale ! videoconvert ! I420 at size ! encoder
/// [! parser] ! mux`, added to `pipeline`; the encoded buffers are counted.
fn video_chain(pipeline: &gst::Pipeline, target: &Target<'_>) -> Result<VideoChain, MediaError> {
    let [convert, flip, scale, convert_out, size] = upright_at_size("I420", target.width, target.height, SCALE_METHOD)?;
    let (encoder, parse, mux) = video_encoder(target)?;
    pipeline.add_many([&convert, &flip, &scale, &convert_out, &size, &encoder, &mux])?;
    gst::Element::link_many([&convert, &flip, &scale, &convert_out, &size, &encoder])?;
    let tail = match &parse {
        Some(parse) => {
            pipeline.add(parse)?;
            encoder.link(parse)?;
            parse.clone()
        }
        None => encoder.clone(),
    };
    tail.link(&mux)?;
    let counters = Encoded::default();
    if let Some(pad) = tail.static_pad("src") {
        let (encoded_until, frames) = (counters.encoded_until.clone(), counters.frames.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                frames.fetch_add(1, Ordering::Relaxed);
                if let Some(pts) = buffer.pts() {
                    let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
                    encoded_until.fetch_max(end.nseconds(), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    Ok(VideoChain { head: convert, mux, counters })
}

/// The video encoder, its parser (H.264 only) and the muxer of `target.format`:
/// x264 into a faststart MP4, or VP8 into WebM.
fn video_encoder(target: &Target<'_>) -> Result<(gst::Element, Option<gst::Element>, gst::Element), MediaError> {
    let settings = target.settings;
    Ok(match target.format {
        Format::Mp4 => {
            let enc =
                x264_encoder("x264", settings.video_bitrate_kbps, target.keyint, settings.x264_speed_preset, None)?;
            let parse = make("h264parse", Some("h264parse"))?;
            let mux = make("mp4mux", Some("mux"))?;
            mux.set_property("faststart", true);
            mux.set_property("faststart-file", target.scratch.join("faststart.tmp").to_string_lossy().to_string());
            (enc, Some(parse), mux)
        }
        Format::WebM => {
            let enc = make("vp8enc", Some("vp8"))?;
            enc.set_property("target-bitrate", i32::try_from(settings.video_bitrate_kbps * 1000).unwrap_or(i32::MAX));
            enc.set_property("deadline", 1i64);
            enc.set_property("cpu-used", settings.vpx_cpu_used);
            enc.set_property("keyframe-max-dist", i32::try_from(target.keyint).unwrap_or(i32::MAX));
            enc.set_property_from_str("end-usage", "vbr");
            (enc, None, make("webmmux", Some("mux"))?)
        }
    })
}

/// The audio branch into `mux`: normalised, then AAC (MP4) or Opus (WebM), queued.
/// Returns its head, where the decoder's audio pad is linked.
fn audio_chain(pipeline: &gst::Pipeline, target: &Target<'_>, mux: &gst::Element) -> Result<gst::Element, MediaError> {
    let (convert, caps) = audio_normalizer(pipeline)?;
    let bitrate = i32::try_from(target.settings.audio_bitrate_kbps * 1000).unwrap_or(128_000);
    let (enc, parse) = match target.format {
        Format::Mp4 => {
            let enc = make("avenc_aac", Some("aac-encoder"))?;
            enc.set_property("bitrate", bitrate);
            (enc, Some(make("aacparse", Some("aac-parse"))?))
        }
        Format::WebM => {
            let enc = make("opusenc", Some("opus-encoder"))?;
            enc.set_property("bitrate", bitrate.clamp(4000, 650_000));
            (enc, None)
        }
    };
    let queue = make("queue", Some("audio-queue"))?;
    pipeline.add_many([&enc, &queue])?;
    gst::Element::link_many([&caps, &enc])?;
    match &parse {
        Some(parse) => {
            pipeline.add(parse)?;
            gst::Element::link_many([&enc, parse, &queue])?;
        }
        None => enc.link(&queue)?,
    }
    queue.link(mux)?;
    Ok(convert)
}

/// Where the download is: the pipeline's position (or the encoder's, when the
/// pipeline does not answer), the encode rate and the ETA.
fn download_progress(
    pipeline: &gst::Pipeline,
    started: Instant,
    duration: Option<Duration>,
    counters: &Encoded,
) -> Progress {
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let position = pipeline
        .query_position::<gst::ClockTime>()
        .map(|p| Duration::from_nanos(p.nseconds()))
        .unwrap_or_else(|| Duration::from_nanos(counters.encoded_until.load(Ordering::Relaxed)));
    let (percent, eta) = match duration {
        Some(d) if !d.is_zero() => {
            let speed = position.as_secs_f64() / elapsed;
            let remaining = (d.as_secs_f64() - position.as_secs_f64()).max(0.0);
            (
                (position.as_secs_f64() / d.as_secs_f64() * 100.0).clamp(0.0, 100.0),
                (speed > 0.0).then(|| Duration::from_secs_f64(remaining / speed)),
            )
        }
        _ => (0.0, None),
    };
    Progress {
        percent,
        position,
        duration,
        fps: counters.frames.load(Ordering::Relaxed) as f64 / elapsed,
        eta,
        rungs: Vec::new(),
    }
}

/// Scale a displayed size so its short side is at most `max_lines`, keeping the aspect
/// ratio, with even dimensions.
fn fit((w, h): (u32, u32), max_lines: u32) -> (u32, u32) {
    let even = |v: f64| ((v.round() as u32) / 2 * 2).max(2);
    let short = w.min(h).max(1);
    if short <= max_lines {
        return (even(f64::from(w)), even(f64::from(h)));
    }
    let scale = f64::from(max_lines) / f64::from(short);
    (even(f64::from(w) * scale), even(f64::from(h) * scale))
}
