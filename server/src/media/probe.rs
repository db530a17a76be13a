//! What a source file contains (Discoverer), and whether we accept it.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;

use super::pipeline::{discard_pad, make, stop, wait_async_done, Limits, NullOnDrop};
use super::{check_source_file, ensure_gstreamer, file_uri, MediaError};

/// How long Discoverer may take on one file.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The facts about a source that the ladder, limits and UI need.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MediaInfo {
    pub duration: Option<Duration>,
    /// Container description, e.g. "Quicktime" or "WebM".
    pub container: Option<String>,
    /// Container caps name, e.g. "video/quicktime".
    pub container_caps: Option<String>,
    /// Video codec description of the first video stream, e.g. "H.264 (High Profile)".
    pub video_codec: Option<String>,
    /// Caps name of the first video stream, e.g. "video/x-h264".
    pub video_caps: Option<String>,
    pub audio_codec: Option<String>,
    /// Coded size of the first video stream (before rotation).
    pub width: u32,
    pub height: u32,
    /// Frames per second (0 when unknown or variable).
    pub frame_rate: f64,
    /// The same as a fraction (numerator, denominator) when known.
    pub frame_rate_fraction: Option<(i32, i32)>,
    /// Clockwise rotation in degrees from the `image-orientation` tag: 0, 90, 180 or 270.
    pub rotation: u32,
    pub has_audio: bool,
    pub video_tracks: u32,
    pub audio_tracks: u32,
}

impl MediaInfo {
    /// The size of the picture as displayed, rotation applied.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation == 90 || self.rotation == 270 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// Accept or reject the source against configured limits, with a readable reason.
    pub fn check(&self, limits: &MediaLimits) -> Result<(), MediaError> {
        let reject = |reason: String| Err(MediaError::Rejected { reason });
        if self.video_tracks == 0 {
            return reject("the file has no video stream".into());
        }
        if self.width == 0 || self.height == 0 {
            return reject("the video stream has no picture size".into());
        }
        if self.width > limits.max_width || self.height > limits.max_height {
            return reject(format!(
                "the picture is {}x{}, larger than the allowed {}x{}",
                self.width, self.height, limits.max_width, limits.max_height
            ));
        }
        if u64::from(self.width) * u64::from(self.height) > limits.max_pixels {
            return reject(format!(
                "the picture has {} pixels, more than the allowed {}",
                u64::from(self.width) * u64::from(self.height),
                limits.max_pixels
            ));
        }
        match self.duration {
            None => return reject("the duration is unknown".into()),
            Some(d) if d.is_zero() => return reject("the duration is zero".into()),
            Some(d) if d > limits.max_duration => {
                return reject(format!(
                    "the video lasts {:.0} s, longer than the allowed {:.0} s",
                    d.as_secs_f64(),
                    limits.max_duration.as_secs_f64()
                ))
            }
            Some(_) => {}
        }
        if self.frame_rate > limits.max_fps {
            return reject(format!(
                "the frame rate is {:.2} fps, more than the allowed {:.0}",
                self.frame_rate, limits.max_fps
            ));
        }
        let tracks = self.video_tracks + self.audio_tracks;
        if tracks > limits.max_tracks {
            return reject(format!("the file has {tracks} tracks, more than the allowed {}", limits.max_tracks));
        }
        Ok(())
    }
}

/// What an accepted upload may be.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MediaLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub max_duration: Duration,
    pub max_fps: f64,
    pub max_tracks: u32,
}

impl Default for MediaLimits {
    fn default() -> Self {
        // 4K in either orientation, three hours, 120 fps, a handful of tracks.
        Self {
            max_width: 4096,
            max_height: 4096,
            max_pixels: 4096 * 2160,
            max_duration: Duration::from_secs(3 * 3600),
            max_fps: 120.0,
            max_tracks: 8,
        }
    }
}

/// Probe a file with the default timeout.
pub fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    probe_with_timeout(path, DEFAULT_PROBE_TIMEOUT)
}

/// Probe a file with Discoverer.
#[tracing::instrument(skip_all, fields(path = %path.display()), err(Display))]
pub fn probe_with_timeout(path: &Path, timeout: Duration) -> Result<MediaInfo, MediaError> {
    ensure_gstreamer()?;
    check_source_file(path)?;
    let uri = file_uri(path)?;
    preflight(path, timeout)?;
    let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_nseconds(timeout_ns))
        .map_err(|e| MediaError::Init(format!("creating Discoverer: {e}")))?;
    let info = discoverer.discover_uri(&uri).map_err(|e| {
        if e.matches(gst::CoreError::MissingPlugin) {
            MediaError::Unreadable { reason: format!("no decoder for this format ({e})") }
        } else if e.to_string().to_ascii_lowercase().contains("timeout") {
            MediaError::Timeout(timeout)
        } else {
            MediaError::Unreadable { reason: e.to_string() }
        }
    })?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(MediaError::Timeout(timeout)),
        pbutils::DiscovererResult::MissingPlugins => {
            return Err(MediaError::Unreadable { reason: "no decoder for this format".into() })
        }
        other => return Err(MediaError::Unreadable { reason: format!("discovery failed ({other:?})") }),
    }
    Ok(media_info(&info))
}

fn media_info(info: &pbutils::DiscovererInfo) -> MediaInfo {
    let videos = info.video_streams();
    let audios = info.audio_streams();
    let container_caps = info.stream_info().and_then(|s| s.caps());
    let video = videos.first();
    let video_caps = video.and_then(|v| v.caps());
    let frame_rate_fraction =
        video.map(|v| v.framerate()).filter(|f| f.denom() > 0 && f.numer() > 0).map(|f| (f.numer(), f.denom()));
    let frame_rate = frame_rate_fraction.map(|(n, d)| f64::from(n) / f64::from(d)).unwrap_or(0.0);
    let rotation = video
        .and_then(|v| v.tags())
        .and_then(|t| orientation(&t))
        .or_else(|| info.tags().and_then(|t| orientation(&t)))
        .unwrap_or(0);
    MediaInfo {
        duration: info.duration().map(|d| Duration::from_nanos(d.nseconds())),
        container: container_caps.as_ref().map(codec_description),
        container_caps: container_caps.as_ref().and_then(caps_name),
        video_codec: video_caps.as_ref().map(codec_description),
        video_caps: video_caps.as_ref().and_then(caps_name),
        audio_codec: audios.first().and_then(|a| a.caps()).as_ref().map(codec_description),
        width: video.map(|v| v.width()).unwrap_or(0),
        height: video.map(|v| v.height()).unwrap_or(0),
        frame_rate,
        frame_rate_fraction,
        rotation,
        has_audio: !audios.is_empty(),
        video_tracks: u32::try_from(videos.len()).unwrap_or(u32::MAX),
        audio_tracks: u32::try_from(audios.len()).unwrap_or(u32::MAX),
    }
}

fn caps_name(caps: &gst::Caps) -> Option<String> {
    caps.structure(0).map(|s| s.name().to_string())
}

fn codec_description(caps: &gst::Caps) -> String {
    pbutils::pb_utils_get_codec_description(caps).to_string()
}

/// Degrees clockwise from an `image-orientation` tag ("rotate-90", ...); flips count as 0.
fn orientation(tags: &gst::TagList) -> Option<u32> {
    let value = tags.get::<gst::tags::ImageOrientation>()?;
    match value.get() {
        "rotate-90" => Some(90),
        "rotate-180" => Some(180),
        "rotate-270" => Some(270),
        _ => Some(0),
    }
}

/// Preroll the file with a plain decode pipeline first, in push mode (filesrc ! queue !
/// decodebin). Broken files fail here within milliseconds with the demuxer's own reason.
/// In pull mode (what Discoverer and uridecodebin use) GStreamer 1.22's qtdemux was seen
/// to stop on a moov-less file without posting its error, leaving the caller to time out.
fn preflight(path: &Path, timeout: Duration) -> Result<(), MediaError> {
    let never = std::sync::atomic::AtomicBool::new(false);
    let limits = Limits { cancel: &never, deadline: std::time::Instant::now() + timeout, timeout };
    let pipeline = super::pipeline::new_pipeline("probe-preflight");
    let _null = NullOnDrop(pipeline.clone());
    let src = make("filesrc", Some("source"))?;
    src.set_property("location", path.to_string_lossy().to_string());
    let queue = make("queue", Some("push-mode"))?;
    let decode = make("decodebin", Some("decode"))?;
    pipeline.add_many([&src, &queue, &decode])?;
    gst::Element::link_many([&src, &queue, &decode])?;
    let weak = pipeline.downgrade();
    decode.connect_pad_added(move |_, pad| {
        if let Some(pipeline) = weak.upgrade() {
            if let Err(e) = discard_pad(&pipeline, pad) {
                tracing::warn!(error = %e, "probe preflight could not link a stream");
            }
        }
    });
    let _ = pipeline.set_state(gst::State::Paused);
    let result = wait_async_done(&pipeline, &limits);
    stop(&pipeline);
    result.map_err(|e| match e {
        MediaError::Pipeline { reason, .. } => MediaError::Unreadable { reason },
        other => other,
    })
}
