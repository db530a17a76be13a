//! `[media]`: what an upload may be, and how the ladder is encoded.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::media::ladder::{HlsOptions, LadderConfig, RungSpec};
use crate::media::mp4::OutputFormat;
use crate::media::MediaLimits;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub max_duration_secs: u64,
    pub max_fps: f64,
    /// Fewest new pictures per second a source may carry on average (a still image
    /// shown for hours asks for hours of encoding); 0 turns the check off.
    pub min_fps: f64,
    pub max_tracks: u32,
    /// Highest bit rate a source may declare for a stream or hold on average over its
    /// declared duration, in kbit/s (checked before anything is decoded).
    pub max_bitrate_kbps: u64,
    /// The ladder, highest rung first; rungs above the source are skipped.
    pub ladder: Vec<LadderRung>,
    /// HLS target segment duration in seconds.
    pub segment_seconds: u32,
    /// x264 speed preset (e.g. `veryfast`).
    pub speed_preset: String,
    /// Wall-clock limit of one pipeline run.
    pub pipeline_timeout_secs: u64,
    /// Wall-clock limit of probing one file.
    pub probe_timeout_secs: u64,
    /// Lifetime of signed playback URLs of private videos.
    pub signed_url_ttl_secs: u64,
    /// With S3: answer file requests under `/media/` with a 302 to a presigned
    /// storage URL instead of proxying the bytes (playlists are always served).
    pub redirect_to_storage: bool,
    /// With `redirect_to_storage`: the base URL of a CDN that serves this
    /// deployment's bucket (`{cdn_base_url}/{object key}`, the S3 key prefix
    /// included). Files of videos that need no signature redirect there; private
    /// and hidden ones still get presigned URLs, which a CDN cannot check.
    pub cdn_base_url: Option<String>,
    /// Nice value (0..=19) of the GStreamer streaming threads and the encoder threads
    /// they start, so encodes yield CPU to API requests on the same machine; 0 leaves
    /// them at the process's priority.
    pub encoder_nice: i32,
    /// What an upload's first transcode makes (and `transcode` without `formats`):
    /// any of `HLS`, `MP4`, `WEBM`; HLS must be among them.
    pub default_formats: Vec<OutputFormat>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderRung {
    /// Lines of the picture's short side (720 for 1280x720 and for 720x1280).
    pub lines: u32,
    pub video_bitrate_kbps: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        let limits = MediaLimits::default();
        let hls = HlsOptions::default();
        Self {
            max_width: limits.max_width,
            max_height: limits.max_height,
            max_pixels: limits.max_pixels,
            max_duration_secs: limits.max_duration.as_secs(),
            max_fps: limits.max_fps,
            min_fps: limits.min_fps,
            max_tracks: limits.max_tracks,
            max_bitrate_kbps: limits.max_bitrate / 1000,
            ladder: LadderConfig::default()
                .rungs
                .into_iter()
                .map(|r| LadderRung { lines: r.lines, video_bitrate_kbps: r.video_bitrate_kbps })
                .collect(),
            segment_seconds: hls.segment_seconds,
            speed_preset: hls.speed_preset,
            pipeline_timeout_secs: hls.timeout.as_secs(),
            probe_timeout_secs: crate::media::DEFAULT_PROBE_TIMEOUT.as_secs().max(1),
            signed_url_ttl_secs: 6 * 3600,
            redirect_to_storage: false,
            cdn_base_url: None,
            encoder_nice: 10,
            default_formats: vec![OutputFormat::Hls, OutputFormat::Mp4],
        }
    }
}

impl MediaSettings {
    pub fn limits(&self) -> MediaLimits {
        MediaLimits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_pixels: self.max_pixels,
            max_duration: Duration::from_secs(self.max_duration_secs),
            max_fps: self.max_fps,
            min_fps: self.min_fps,
            max_tracks: self.max_tracks,
            max_bitrate: self.max_bitrate_kbps.saturating_mul(1000),
        }
    }

    pub fn ladder(&self) -> LadderConfig {
        LadderConfig {
            rungs: self
                .ladder
                .iter()
                .map(|r| RungSpec { lines: r.lines, video_bitrate_kbps: r.video_bitrate_kbps })
                .collect(),
        }
    }

    pub fn hls_options(&self) -> HlsOptions {
        HlsOptions {
            segment_seconds: self.segment_seconds,
            speed_preset: self.speed_preset.clone(),
            timeout: Duration::from_secs(self.pipeline_timeout_secs),
            ..HlsOptions::default()
        }
    }

    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs(self.probe_timeout_secs.max(1))
    }
}
