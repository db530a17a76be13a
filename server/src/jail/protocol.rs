//! What the parent and a `reelhouse media` child say to each other.
//!
//! The parent writes one [`Request`] as a JSON line to the child's stdin and keeps
//! stdin open (the child exits when it closes). The child answers with JSON lines on
//! stdout: [`Message::Started`] first, any number of progress and rendition messages,
//! then exactly one final message ([`Message::Probed`] for a probe,
//! [`Message::Transcoded`] for a transcode, or [`Message::Failed`]). Everything the
//! child says is untrusted: the parent bounds line lengths and checks every path.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::media::ladder::{HlsOutput, LadderConfig, RenditionReady, Rung};
use crate::media::mp4::{Format, Mp4Options, Mp4Output, Preset};
use crate::media::thumbs::{Poster, Storyboard};
use crate::media::{MediaError, MediaInfo, MediaLimits, Progress};

/// Bumped whenever a message changes shape; parent and child are the same binary,
/// so a mismatch means a stale binary was configured.
pub const PROTOCOL_VERSION: u32 = 2;

/// The longest line either side accepts.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// The uploaded file; the child may only read it.
    pub source: PathBuf,
    /// Where a transcode writes its outputs (the only place the child may write).
    pub work_dir: Option<PathBuf>,
    /// Filter for the child's log lines on stderr, e.g. `warn`.
    pub log_level: String,
    /// GStreamer's own log threshold (`telemetry.gstreamer_level`).
    pub gstreamer_level: String,
    pub sandbox: SandboxRequest,
    pub task: Task,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRequest {
    pub landlock: bool,
    pub seccomp: bool,
    /// Extra directories the child may read (GStreamer plugin paths).
    pub read_dirs: Vec<PathBuf>,
    /// Directories the child may also write (the GStreamer registry cache).
    pub write_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Task {
    Probe { timeout: Duration, limits: MediaLimits },
    Transcode(Box<TranscodeTask>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscodeTask {
    pub probe_timeout: Duration,
    pub limits: MediaLimits,
    pub ladder: LadderConfig,
    pub hls: crate::media::ladder::HlsOptions,
    pub preset: Preset,
    /// The single-file downloads to make, in this order (none: HLS only).
    pub downloads: Vec<Format>,
    pub mp4: Mp4Options,
    /// Only the HLS ladder (benchmarks): ends with [`Message::Laddered`].
    #[serde(default)]
    pub ladder_only: bool,
}

/// A step of a transcode, for progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Ladder,
    Download,
    Thumbnails,
    Storyboard,
}

/// What a transcode child made, every path inside its work dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscodeFiles {
    pub hls: HlsOutput,
    /// One per requested download, in the task's order.
    pub downloads: Vec<DownloadFile>,
    pub poster: Poster,
    pub thumbnails: Vec<PathBuf>,
    pub storyboard: Storyboard,
}

/// A single-file download a transcode child made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadFile {
    pub format: Format,
    pub file: Mp4Output,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The child is set up; says which confinement the kernel granted.
    Started {
        version: u32,
        landlock: String,
        seccomp: bool,
    },
    /// The probe's facts and, for a transcode, the rungs it will encode.
    Probed {
        info: MediaInfo,
        rungs: Vec<Rung>,
    },
    Progress {
        step: Step,
        progress: Option<Progress>,
    },
    StepDone {
        step: Step,
    },
    RenditionReady {
        ready: RenditionReady,
    },
    Transcoded {
        files: Box<TranscodeFiles>,
    },
    Laddered {
        hls: HlsOutput,
    },
    Failed {
        error: WireError,
    },
    /// A GStreamer element warned (the run goes on); relayed into the job's log.
    /// At most [`MAX_WARNINGS`] per child; later ones stay in its stderr.
    Warning {
        element: String,
        message: String,
    },
}

/// GStreamer warnings a child relays to its parent; later ones stay in its stderr.
pub const MAX_WARNINGS: u32 = 20;

impl Message {
    /// True for the message that ends a child's run.
    pub fn is_final(&self) -> bool {
        matches!(self, Message::Failed { .. } | Message::Transcoded { .. } | Message::Laddered { .. })
    }
}

/// [`MediaError`] as it crosses the pipe (its I/O source becomes text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireError {
    Init { message: String },
    Io { context: String, message: String },
    EmptyFile,
    Unreadable { reason: String },
    Rejected { reason: String },
    Truncated { reached_secs: f64, expected_secs: f64 },
    Pipeline { element: String, reason: String, debug: Option<String> },
    Build { message: String },
    Cancelled,
    Timeout { after: Duration },
    Crashed { reason: String },
    ResourceLimit { reason: String },
    Killed,
}

impl From<&MediaError> for WireError {
    fn from(err: &MediaError) -> Self {
        match err {
            MediaError::Init(message) => WireError::Init { message: message.clone() },
            MediaError::Io { context, source } => {
                WireError::Io { context: context.clone(), message: source.to_string() }
            }
            MediaError::EmptyFile => WireError::EmptyFile,
            MediaError::Unreadable { reason } => WireError::Unreadable { reason: reason.clone() },
            MediaError::Rejected { reason } => WireError::Rejected { reason: reason.clone() },
            MediaError::Truncated { reached_secs, expected_secs } => {
                WireError::Truncated { reached_secs: *reached_secs, expected_secs: *expected_secs }
            }
            MediaError::Pipeline { element, reason, debug } => {
                WireError::Pipeline { element: element.clone(), reason: reason.clone(), debug: debug.clone() }
            }
            MediaError::Build(message) => WireError::Build { message: message.clone() },
            MediaError::Cancelled => WireError::Cancelled,
            MediaError::Timeout(after) => WireError::Timeout { after: *after },
            MediaError::Crashed { reason } => WireError::Crashed { reason: reason.clone() },
            MediaError::ResourceLimit { reason } => WireError::ResourceLimit { reason: reason.clone() },
            MediaError::Killed => WireError::Killed,
        }
    }
}

impl From<WireError> for MediaError {
    fn from(err: WireError) -> Self {
        match err {
            WireError::Init { message } => MediaError::Init(message),
            WireError::Io { context, message } => MediaError::Io { context, source: std::io::Error::other(message) },
            WireError::EmptyFile => MediaError::EmptyFile,
            WireError::Unreadable { reason } => MediaError::Unreadable { reason },
            WireError::Rejected { reason } => MediaError::Rejected { reason },
            WireError::Truncated { reached_secs, expected_secs } => {
                MediaError::Truncated { reached_secs, expected_secs }
            }
            WireError::Pipeline { element, reason, debug } => MediaError::Pipeline { element, reason, debug },
            WireError::Build { message } => MediaError::Build(message),
            WireError::Cancelled => MediaError::Cancelled,
            WireError::Timeout { after } => MediaError::Timeout(after),
            WireError::Crashed { reason } => MediaError::Crashed { reason },
            WireError::ResourceLimit { reason } => MediaError::ResourceLimit { reason },
            WireError::Killed => MediaError::Killed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_media_error_survives_the_pipe() {
        let errors = vec![
            MediaError::Init("no gst".into()),
            MediaError::EmptyFile,
            MediaError::Unreadable { reason: "bad".into() },
            MediaError::Rejected { reason: "too big".into() },
            MediaError::Truncated { reached_secs: 1.5, expected_secs: 3.0 },
            MediaError::Pipeline { element: "qtdemux0".into(), reason: "r".into(), debug: Some("d".into()) },
            MediaError::Build("b".into()),
            MediaError::Cancelled,
            MediaError::Timeout(Duration::from_millis(1500)),
            MediaError::Crashed { reason: "c".into() },
            MediaError::ResourceLimit { reason: "m".into() },
            MediaError::Killed,
        ];
        for err in errors {
            let line = serde_json::to_string(&Message::Failed { error: WireError::from(&err) }).unwrap();
            let Message::Failed { error } = serde_json::from_str(&line).unwrap() else { panic!("{line}") };
            let back = MediaError::from(error);
            assert_eq!(back.code(), err.code(), "{line}");
            assert_eq!(back.to_string(), err.to_string(), "{line}");
            assert_eq!(back.is_client_error(), err.is_client_error(), "{line}");
        }
        let io = MediaError::io("reading x", std::io::Error::other("boom"));
        let back = MediaError::from(WireError::from(&io));
        assert_eq!((back.code(), back.to_string()), ("MEDIA_IO", "reading x: boom".to_string()));
    }
}
