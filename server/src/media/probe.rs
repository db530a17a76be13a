//! What a source file contains, and whether we accept it: first what it declares,
//! read without a decoder ([`super::look`]); only if that passes, Discoverer (which
//! decodes a frame, and so runs in the media jail's child process).

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::{Deserialize, Serialize};

use super::look::{look, Declared};
use super::{check_source_file, ensure_gstreamer, file_uri, MediaError};

/// How long Discoverer may take on one file.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The facts about a source that the ladder, limits and UI need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        check_picture(self.width, self.height, limits)?;
        match self.duration {
            None => return reject("the duration is unknown".into()),
            Some(d) if d.is_zero() => return reject("the duration is zero".into()),
            Some(d) => check_duration(d, limits)?,
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

/// The picture size against the limits (shared by the look and the probe).
pub(crate) fn check_picture(width: u32, height: u32, limits: &MediaLimits) -> Result<(), MediaError> {
    if width > limits.max_width || height > limits.max_height {
        return Err(MediaError::Rejected {
            reason: format!(
                "the picture is {width}x{height}, larger than the allowed {}x{}",
                limits.max_width, limits.max_height
            ),
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(MediaError::Rejected {
            reason: format!("the picture has {pixels} pixels, more than the allowed {}", limits.max_pixels),
        });
    }
    Ok(())
}

/// A known duration against the limit (shared by the look and the probe).
pub(crate) fn check_duration(duration: Duration, limits: &MediaLimits) -> Result<(), MediaError> {
    if duration > limits.max_duration {
        return Err(MediaError::Rejected {
            reason: format!(
                "the video lasts {:.0} s, longer than the allowed {:.0} s",
                duration.as_secs_f64(),
                limits.max_duration.as_secs_f64()
            ),
        });
    }
    Ok(())
}

/// What an accepted upload may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub max_duration: Duration,
    pub max_fps: f64,
    /// Fewest new pictures per second a video may carry on average: a still image
    /// shown for hours is a tiny source that asks for hours of encoding.
    pub min_fps: f64,
    /// Streams of any kind (video, audio, subtitles, data).
    pub max_tracks: u32,
    /// Bits per second, declared by a stream or averaged over the declared duration.
    pub max_bitrate: u64,
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
            // One new picture every ten seconds: slideshows and audio with a cover
            // picture pass, one frame shown for hours does not.
            min_fps: 0.1,
            max_tracks: 8,
            // Above what cameras record in H.264/HEVC at 4K; lossless and intra-only
            // codecs that need more are not on the allow-list anyway.
            max_bitrate: 250_000_000,
        }
    }
}

/// Probe a file with the default timeout (see [`probe_with_timeout`]: no limits).
pub fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    probe_with_timeout(path, DEFAULT_PROBE_TIMEOUT)
}

/// Look at what the file declares (typefind, demuxer, parsers: no decoder) and refuse
/// it unless container and codecs are on the allow-list and size, frame rate,
/// duration, track count and bit rate are within `limits`; only then run Discoverer
/// (which decodes). The probed facts are checked against `limits` again. The whole
/// call takes at most `timeout`. This is the call to make on an upload.
#[tracing::instrument(skip_all, fields(path = %path.display()), err(Display))]
pub fn probe_with_limits(path: &Path, timeout: Duration, limits: &MediaLimits) -> Result<MediaInfo, MediaError> {
    let deadline = Instant::now() + timeout;
    let declared = look_at(path, deadline, timeout)?;
    declared.check(limits)?;
    let info = discover(path, deadline, timeout)?;
    info.check(limits)?;
    Ok(info)
}

/// Probe a file: the allow-list look ([`Declared::check_allowed`]), then Discoverer.
/// No limit is applied before decoding here; [`probe_with_limits`] applies them.
#[tracing::instrument(skip_all, fields(path = %path.display()), err(Display))]
pub fn probe_with_timeout(path: &Path, timeout: Duration) -> Result<MediaInfo, MediaError> {
    let deadline = Instant::now() + timeout;
    look_at(path, deadline, timeout)?.check_allowed()?;
    discover(path, deadline, timeout)
}

/// What `path` declares, read without a decoder (see [`super::look`]); not checked.
pub fn declared(path: &Path, timeout: Duration) -> Result<Declared, MediaError> {
    look_at(path, Instant::now() + timeout, timeout)
}

fn look_at(path: &Path, deadline: Instant, timeout: Duration) -> Result<Declared, MediaError> {
    ensure_gstreamer()?;
    check_source_file(path)?;
    let declared = look(path, deadline, timeout)?;
    tracing::debug!(?declared, "looked at the source");
    Ok(declared)
}

/// Discoverer on a file that passed the look, with what is left of the time.
fn discover(path: &Path, deadline: Instant, timeout: Duration) -> Result<MediaInfo, MediaError> {
    let uri = file_uri(path)?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(MediaError::Timeout(timeout));
    }
    let left_ns = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_nseconds(left_ns))
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
