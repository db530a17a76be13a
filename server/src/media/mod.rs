//! GStreamer media processing: look (no decoder), probe, HLS ladder, MP4/WebM, thumbnails, storyboard.
//!
//! Every entry point is a blocking function meant to run on a worker's own thread.
//! Each takes a cancellation flag and (where it runs a pipeline) a progress callback,
//! drives its pipeline's bus itself, has a wall-clock timeout, always leaves the
//! pipeline in `Null` and removes what it wrote when it fails.

pub mod ladder;
pub mod log_bridge;
pub mod mp4;
pub mod thumbs;

mod look;
mod pipeline;
mod probe;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use log_bridge::{gst_level, init_gstreamer};
pub use look::{Declared, DeclaredStream, StreamKind};
pub use pipeline::{forward_warnings, set_streaming_nice, Progress, RungProgress, WarningSink};
pub use probe::{
    declared, probe, probe_with_limits, probe_with_timeout, MediaInfo, MediaLimits, DEFAULT_PROBE_TIMEOUT,
};

/// Set to `true` to stop a running pipeline; the call returns [`MediaError::Cancelled`].
pub type CancelFlag = Arc<AtomicBool>;

/// A fresh, unset cancellation flag.
pub fn cancel_flag() -> CancelFlag {
    Arc::new(AtomicBool::new(false))
}

/// Why a media operation failed. Client errors (the upload is bad) are told apart from
/// server-side failures by [`MediaError::is_client_error`].
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer is unavailable: {0}")]
    Init(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the file is empty")]
    EmptyFile,
    #[error("the file is not readable media: {reason}")]
    Unreadable { reason: String },
    #[error("the media is not accepted: {reason}")]
    Rejected { reason: String },
    #[error("the source ended early at {reached_secs:.2} s of {expected_secs:.2} s (truncated or corrupt)")]
    Truncated { reached_secs: f64, expected_secs: f64 },
    #[error("pipeline element {element} failed: {reason}")]
    Pipeline { element: String, reason: String, debug: Option<String> },
    #[error("building the pipeline failed: {0}")]
    Build(String),
    #[error("cancelled")]
    Cancelled,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The media child died on this input (a decoder crashed or aborted).
    #[error("the file could not be processed: {reason}")]
    Crashed { reason: String },
    /// The media child hit its memory or CPU limit on this input.
    #[error("the file needs more resources than allowed: {reason}")]
    ResourceLimit { reason: String },
    /// The media child was killed from outside (not by us): retrying may help.
    #[error("the media process was killed")]
    Killed,
}

impl MediaError {
    /// A stable code for APIs and job logs.
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::Init(_) => "MEDIA_INIT",
            MediaError::Io { .. } => "MEDIA_IO",
            MediaError::EmptyFile => "MEDIA_EMPTY",
            MediaError::Unreadable { .. } => "MEDIA_UNREADABLE",
            MediaError::Rejected { .. } => "MEDIA_REJECTED",
            MediaError::Truncated { .. } => "MEDIA_TRUNCATED",
            MediaError::Pipeline { .. } => "MEDIA_PIPELINE",
            MediaError::Build(_) => "MEDIA_BUILD",
            MediaError::Cancelled => "MEDIA_CANCELLED",
            MediaError::Timeout(_) => "MEDIA_TIMEOUT",
            MediaError::Crashed { .. } => "MEDIA_CRASHED",
            MediaError::ResourceLimit { .. } => "MEDIA_LIMIT",
            MediaError::Killed => "MEDIA_KILLED",
        }
    }

    /// True when the input is at fault (retrying will not help).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            MediaError::EmptyFile
                | MediaError::Unreadable { .. }
                | MediaError::Rejected { .. }
                | MediaError::Truncated { .. }
                | MediaError::Pipeline { .. }
                | MediaError::Crashed { .. }
                | MediaError::ResourceLimit { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MediaError::Io { context: context.into(), source }
    }
}

impl From<gstreamer::glib::BoolError> for MediaError {
    fn from(err: gstreamer::glib::BoolError) -> Self {
        MediaError::Build(err.to_string())
    }
}

/// Initialise GStreamer (idempotent) before any pipeline is built.
pub(crate) fn ensure_gstreamer() -> Result<(), MediaError> {
    init_gstreamer("warning").map_err(|e| MediaError::Init(format!("{e:#}")))
}

/// `file://` URI for a local path (made absolute first).
pub(crate) fn file_uri(path: &Path) -> Result<String, MediaError> {
    let absolute = std::path::absolute(path).map_err(|e| MediaError::io(format!("resolving {}", path.display()), e))?;
    url::Url::from_file_path(&absolute)
        .map(|u| u.to_string())
        .map_err(|()| MediaError::Unreadable { reason: format!("{} is not a valid file path", path.display()) })
}

/// Reject missing and zero-length files before GStreamer sees them.
pub(crate) fn check_source_file(path: &Path) -> Result<(), MediaError> {
    let meta = std::fs::metadata(path).map_err(|e| MediaError::io(format!("reading {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(MediaError::Unreadable { reason: format!("{} is not a regular file", path.display()) });
    }
    if meta.len() == 0 {
        return Err(MediaError::EmptyFile);
    }
    Ok(())
}
