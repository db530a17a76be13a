//! Why a job failed for good: the stable codes of permanent job failures. They are
//! written to the job's log, counted in `reelhouse_job_failures_total{code}` and
//! carried by a remote worker's `failure` message.

use std::fmt;

use crate::media::MediaError;

/// A permanent job failure: retrying will not help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The job's payload does not parse (a transcode, delete or mail request).
    InvalidPayload,
    /// The video was deleted, or the job names none.
    VideoGone,
    /// The video has no uploaded source.
    SourceMissing,
    /// The source is not the one that was verified at upload (size or checksum).
    SourceChanged,
    /// The outputs would take the owner over their storage quota.
    QuotaExceeded,
    /// The mail cannot be delivered (refused, or its sealed payload does not open).
    MailFailed,
    /// An account deletion ran for an account that is not marked deleted.
    NotDeleted,
    /// The upload is empty.
    MediaEmpty,
    /// No decoder could read the upload.
    MediaUnreadable,
    /// The upload is not allowed (container, codec, size, duration, frame rate).
    MediaRejected,
    /// The upload ends before its streams do.
    MediaTruncated,
    /// The pipeline failed on this upload.
    MediaPipeline,
    /// The jailed media process crashed on this upload.
    MediaCrashed,
    /// The upload needs more memory, CPU time or output than the jail allows.
    MediaLimit,
}

impl FailureCode {
    pub const ALL: [FailureCode; 14] = [
        FailureCode::InvalidPayload,
        FailureCode::VideoGone,
        FailureCode::SourceMissing,
        FailureCode::SourceChanged,
        FailureCode::QuotaExceeded,
        FailureCode::MailFailed,
        FailureCode::NotDeleted,
        FailureCode::MediaEmpty,
        FailureCode::MediaUnreadable,
        FailureCode::MediaRejected,
        FailureCode::MediaTruncated,
        FailureCode::MediaPipeline,
        FailureCode::MediaCrashed,
        FailureCode::MediaLimit,
    ];

    /// The code as logs, metrics and the worker protocol spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureCode::InvalidPayload => "INVALID_PAYLOAD",
            FailureCode::VideoGone => "VIDEO_GONE",
            FailureCode::SourceMissing => "SOURCE_MISSING",
            FailureCode::SourceChanged => "SOURCE_CHANGED",
            FailureCode::QuotaExceeded => "QUOTA_EXCEEDED",
            FailureCode::MailFailed => "MAIL_FAILED",
            FailureCode::NotDeleted => "NOT_DELETED",
            FailureCode::MediaEmpty => "MEDIA_EMPTY",
            FailureCode::MediaUnreadable => "MEDIA_UNREADABLE",
            FailureCode::MediaRejected => "MEDIA_REJECTED",
            FailureCode::MediaTruncated => "MEDIA_TRUNCATED",
            FailureCode::MediaPipeline => "MEDIA_PIPELINE",
            FailureCode::MediaCrashed => "MEDIA_CRASHED",
            FailureCode::MediaLimit => "MEDIA_LIMIT",
        }
    }

    /// The code a remote worker reported, if it is one a worker may report: the
    /// verdicts of its jailed pipeline about the upload, and what it checks of the
    /// job before it starts. Anything else is retried.
    pub fn reported_by_worker(code: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .filter(|known| {
                !matches!(known, FailureCode::VideoGone | FailureCode::MailFailed | FailureCode::NotDeleted)
            })
            .find(|known| known.as_str() == code)
    }

    /// The code of a media failure that is the upload's fault (`None`: retrying may
    /// help, or it was a cancel).
    pub fn of_media(err: &MediaError) -> Option<Self> {
        Some(match err {
            MediaError::EmptyFile => FailureCode::MediaEmpty,
            MediaError::Unreadable { .. } => FailureCode::MediaUnreadable,
            MediaError::Rejected { .. } => FailureCode::MediaRejected,
            MediaError::Truncated { .. } => FailureCode::MediaTruncated,
            MediaError::Pipeline { .. } => FailureCode::MediaPipeline,
            MediaError::Crashed { .. } => FailureCode::MediaCrashed,
            MediaError::ResourceLimit { .. } => FailureCode::MediaLimit,
            _ => return None,
        })
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_failures_that_are_the_uploads_fault_have_a_code_and_the_rest_do_not() {
        let unreadable = MediaError::Unreadable { reason: "x".into() };
        assert_eq!(FailureCode::of_media(&unreadable), Some(FailureCode::MediaUnreadable));
        assert_eq!(FailureCode::of_media(&unreadable).map(FailureCode::as_str), Some(unreadable.code()));
        assert_eq!(FailureCode::of_media(&MediaError::Cancelled), None);
        assert_eq!(FailureCode::of_media(&MediaError::Timeout(std::time::Duration::from_secs(1))), None);
        // The same line as the media layer's own: the upload's fault is permanent.
        let every = [
            MediaError::Init("x".into()),
            MediaError::Io { context: "x".into(), source: std::io::Error::other("x") },
            MediaError::EmptyFile,
            MediaError::Unreadable { reason: "x".into() },
            MediaError::Rejected { reason: "x".into() },
            MediaError::Truncated { reached_secs: 1.0, expected_secs: 2.0 },
            MediaError::Pipeline { element: "x".into(), reason: "x".into(), debug: None },
            MediaError::Build("x".into()),
            MediaError::Cancelled,
            MediaError::Timeout(std::time::Duration::from_secs(1)),
            MediaError::Crashed { reason: "x".into() },
            MediaError::ResourceLimit { reason: "x".into() },
            MediaError::Killed,
        ];
        for err in every {
            let code = FailureCode::of_media(&err);
            assert_eq!(code.is_some(), err.is_client_error(), "{err:?}");
            if let Some(code) = code {
                assert_eq!(code.as_str(), err.code(), "one spelling per code");
            }
        }
    }

    #[test]
    fn workers_report_only_their_own_codes() {
        assert_eq!(FailureCode::reported_by_worker("MEDIA_LIMIT"), Some(FailureCode::MediaLimit));
        assert_eq!(FailureCode::reported_by_worker("SOURCE_CHANGED"), Some(FailureCode::SourceChanged));
        assert_eq!(FailureCode::reported_by_worker("VIDEO_GONE"), None, "the server decides that");
        assert_eq!(FailureCode::reported_by_worker("MAIL_FAILED"), None);
        assert_eq!(FailureCode::reported_by_worker("media_limit"), None);
        for code in FailureCode::ALL {
            assert_eq!(code.as_str(), code.to_string());
        }
    }
}
