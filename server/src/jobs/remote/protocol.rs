//! The worker channel's messages (`GET /workers/ws`, subprotocol
//! [`SUBPROTOCOL`]): JSON text frames, `{"type": "...", ...}`, every message of one
//! protocol version ([`PROTOCOL_VERSION`], announced in `hello`).
//!
//! ```text
//! worker                                  server
//! hello {version, token, capacity, ...}  →
//!                                         ← welcome {worker_id, lease_secs, heartbeat_secs,
//!                                                    multipart: {threshold_bytes, part_bytes}}
//!                                         ← assign {job, lease, spec, source, expires_at}
//! accept {job, lease} | reject {..}      →
//! heartbeat {leases}                     →   (renews every lease still held)
//!                                         ← lease {job, lease, owned, cancel}
//! progress / log {job, lease, ..}        →
//! upload_url {request, job, lease, key, size, sha256} →
//!                                         ← upload_url {request, url, headers} | refused {request, code}
//! upload_url {.., parts: [{size, sha256}]} →   (an output > welcome.multipart.threshold_bytes)
//!                                         ← multipart_urls {request, upload_id, parts: [url]} | refused
//!   PUT each part to its URL (ranges of the file, a few at once), keeping each ETag
//! complete_upload {request, job, lease, key, upload_id, parts: [{number, etag}]} →
//!                                         ← upload_done {request, size} | refused {request, code}
//! abort_upload {job, lease, key, upload_id} →   (a part failed, the job stopped)
//! rung_ready {job, lease, rendition, files} →   (publish_early: the lowest rung)
//! result {job, lease, output, files}     →
//! failure {job, lease, code, message}    →
//!                                         ← finished {job, lease, accepted, code}
//!                                         ← cancel {job}
//! cancel_ack {job}                       →
//! drain                                  →   (no new assignments)
//! ```
//!
//! ## Multipart outputs
//!
//! One PUT carries at most 5 GiB, so `welcome` (since this server version; an
//! older server sends no `multipart` and every output is one PUT) announces a
//! threshold (`workers.remote_multipart_threshold_bytes`) and a part size
//! (`workers.remote_part_bytes`). A larger output is announced part by part: every
//! part `part_bytes` long but the last, at most 10,000. The server checks the key
//! and lease as for one PUT and that the parts add up (`BAD_PARTS` otherwise),
//! creates the multipart upload and presigns each part: S3 signs each part's
//! `Content-Length` and `x-amz-checksum-sha256` (the upload is created with
//! ChecksumAlgorithm SHA256, so AWS S3 refuses a part whose body differs,
//! BadDigest; s3s-fs accepts the header but does not check it); the local store
//! signs neither, and checks every part's SHA-256 against the announced one when it
//! assembles the object. `complete_upload` names every part's ETag; the server checks
//! the stored parts' sizes, completes (`OUTPUT_MISMATCH` when a part's digest or size
//! differs, `UPLOAD_UNKNOWN` when this server process did not open the upload) and
//! aborts the upload on any refusal, on `abort_upload`, when the run ends with the
//! upload still open, and when its lease is lost (the lease sweeper's pass). The
//! result is verified as for one PUT: size from the store; SHA-256 from the local
//! store's sidecar (computed from the assembled bytes), else by reading the object
//! back (S3 reports only a checksum of part checksums, `…-N`, for a multipart
//! object), so the whole-object SHA-256 is never only the worker's word.
//!
//! Close codes: [`CLOSE_UNAUTHENTICATED`] (no or unknown token), [`CLOSE_REVOKED`],
//! [`CLOSE_UNSUPPORTED_VERSION`], [`CLOSE_PROTOCOL_ERROR`] (a message that does not
//! parse or comes out of order), [`CLOSE_HELLO_TIMEOUT`], [`CLOSE_TAGS_NOT_ALLOWED`].

use entities::LogLevel;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::ProgressInfo;
use crate::jobs::runner::TranscodeOutput;
use crate::jobs::transcode::{MediaSpec, NewRendition};

pub const SUBPROTOCOL: &str = "reelhouse-worker.v1";
pub const PROTOCOL_VERSION: u32 = 1;

/// No token, or one that is malformed or unknown.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// The token was revoked (at `hello` or while connected).
pub const CLOSE_REVOKED: u16 = 4403;
/// No `hello` within the time allowed.
pub const CLOSE_HELLO_TIMEOUT: u16 = 4408;
/// A message that does not parse, or is not allowed now.
pub const CLOSE_PROTOCOL_ERROR: u16 = 4400;
/// `hello` named a protocol version this server does not speak.
pub const CLOSE_UNSUPPORTED_VERSION: u16 = 4426;
/// `hello` announced a tag its token does not carry.
pub const CLOSE_TAGS_NOT_ALLOWED: u16 = 4422;
/// The server is shutting down (the worker reconnects).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The server cannot check the token now (its database is unreachable): reconnect
/// with backoff, the token is not judged.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// The encoders a transcode may need, which a worker announces it has.
pub const KNOWN_ENCODERS: [&str; 5] = ["x264enc", "avenc_aac", "jpegenc", "vp8enc", "opusenc"];
/// Every transcode needs these (HLS ladder, MP4 download audio, poster and storyboard).
pub const TRANSCODE_ENCODERS: [&str; 3] = ["x264enc", "avenc_aac", "jpegenc"];
/// A WebM download needs these too.
pub const WEBM_ENCODERS: [&str; 2] = ["vp8enc", "opusenc"];

/// What a worker's announced encoders let it run: (any transcode, a WebM one).
pub fn encoder_coverage(encoders: &[String]) -> (bool, bool) {
    if encoders.is_empty() {
        return (true, true);
    }
    let has = |name: &&str| encoders.iter().any(|e| e == name);
    let transcode = TRANSCODE_ENCODERS.iter().all(has);
    (transcode, transcode && WEBM_ENCODERS.iter().all(has))
}

/// A lease as both sides name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    pub job: Uuid,
    pub lease: Uuid,
}

/// Worker → server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    Hello {
        version: u32,
        token: String,
        /// Jobs it will run at once (the token's capacity caps it).
        capacity: u32,
        /// Tags it asks to be routed by: a subset of its token's (else
        /// [`CLOSE_TAGS_NOT_ALLOWED`]); none: the token's.
        #[serde(default)]
        tags: Vec<String>,
        /// The reelhouse version of the worker.
        reelhouse: String,
        gstreamer: Option<String>,
        /// The GStreamer encoders it has (of [`KNOWN_ENCODERS`]); none: not
        /// announced (an older worker), taken as all.
        #[serde(default)]
        encoders: Vec<String>,
        /// Leases it still holds from an earlier connection (resumed when still live).
        #[serde(default)]
        leases: Vec<LeaseRef>,
    },
    Accept {
        #[serde(flatten)]
        lease: LeaseRef,
    },
    Reject {
        #[serde(flatten)]
        lease: LeaseRef,
        reason: String,
    },
    Heartbeat {
        leases: Vec<LeaseRef>,
    },
    Progress {
        #[serde(flatten)]
        lease: LeaseRef,
        progress: ProgressInfo,
    },
    Log {
        #[serde(flatten)]
        lease: LeaseRef,
        level: LogLevel,
        message: String,
    },
    UploadUrl {
        request: u64,
        #[serde(flatten)]
        lease: LeaseRef,
        key: String,
        content_type: String,
        /// The exact length and hex SHA-256 of the body to be sent: S3 signs both
        /// (it refuses any other body); the result is checked against them too.
        size: u64,
        sha256: String,
        /// A multipart upload (an output larger than `welcome`'s
        /// `multipart.threshold_bytes`): each part's exact length and hex SHA-256,
        /// every part `multipart.part_bytes` long but the last. Answered with
        /// `multipart_urls`; empty (or absent, an older worker): one PUT.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parts: Vec<PartSpec>,
    },
    /// Every part of a multipart upload was PUT: the server completes it (answered
    /// `upload_done`, or `refused` and the upload is aborted).
    CompleteUpload {
        request: u64,
        #[serde(flatten)]
        lease: LeaseRef,
        key: String,
        upload_id: String,
        /// Every part in ascending order, with the `ETag` its PUT answered.
        parts: Vec<PartEtag>,
    },
    /// The worker gives up a multipart upload (a part PUT failed, the job was
    /// cancelled): the server aborts it. Not answered.
    AbortUpload {
        #[serde(flatten)]
        lease: LeaseRef,
        key: String,
        upload_id: String,
    },
    Result {
        #[serde(flatten)]
        lease: LeaseRef,
        output: Box<TranscodeOutput>,
        files: Vec<OutputFile>,
    },
    /// The lowest rung is encoded and uploaded (an `assign` with `publish_early`):
    /// its rendition and files (checked like a result's), published at once.
    RungReady {
        #[serde(flatten)]
        lease: LeaseRef,
        rendition: NewRendition,
        files: Vec<OutputFile>,
    },
    Failure {
        #[serde(flatten)]
        lease: LeaseRef,
        /// A media error code (`MEDIA_UNREADABLE`, ...) for a permanent failure;
        /// `RETRYABLE` or `CANCELLED` otherwise.
        code: String,
        message: String,
    },
    CancelAck {
        job: Uuid,
    },
    Drain,
}

/// One part of a multipart upload as the worker announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSpec {
    pub size: u64,
    /// Hex SHA-256 of the part's bytes.
    pub sha256: String,
}

/// One part of a multipart upload as its PUT answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEtag {
    /// 1-based.
    pub number: i32,
    pub etag: String,
}

/// When and how a worker uploads by multipart (announced in `welcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartPolicy {
    /// Outputs larger than this many bytes go by multipart (`workers.remote_multipart_threshold_bytes`).
    pub threshold_bytes: u64,
    /// Every part but the last is exactly this long (`workers.remote_part_bytes`).
    pub part_bytes: u64,
}

impl MultipartPolicy {
    /// The part sizes of an output of `size` bytes, if it goes by multipart.
    pub fn part_sizes(&self, size: u64) -> Option<Vec<u64>> {
        if size <= self.threshold_bytes || self.part_bytes == 0 {
            return None;
        }
        let full = size / self.part_bytes;
        let rest = size % self.part_bytes;
        let mut sizes = vec![self.part_bytes; usize::try_from(full).ok()?];
        if rest > 0 {
            sizes.push(rest);
        }
        Some(sizes)
    }
}

/// One stored output, as the worker uploaded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    pub key: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes sent.
    pub sha256: String,
}

/// Server → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        worker_id: Uuid,
        lease_secs: u64,
        heartbeat_secs: u64,
        /// The leases of `hello` that are still this worker's.
        resumed: Vec<LeaseRef>,
        /// Outputs above a threshold go by multipart; absent (an older server):
        /// every output is one PUT.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        multipart: Option<MultipartPolicy>,
    },
    Assign {
        #[serde(flatten)]
        lease: LeaseRef,
        spec: Box<MediaSpec>,
        /// Presigned GET of the source.
        source: PresignedUrl,
        /// A first transcode of the video: send its lowest rung (`rung_ready`) as
        /// soon as it is encoded and uploaded, and the server publishes it.
        #[serde(default)]
        publish_early: bool,
    },
    Lease {
        #[serde(flatten)]
        lease: LeaseRef,
        owned: bool,
        cancel: bool,
    },
    UploadUrl {
        request: u64,
        url: PresignedUrl,
    },
    /// The multipart upload asked for by `upload_url` with `parts`: one presigned
    /// PUT per part, in order (each signs that part's length and SHA-256 where the
    /// store can), expiring with the lease.
    MultipartUrls {
        request: u64,
        upload_id: String,
        parts: Vec<PresignedUrl>,
    },
    /// A multipart upload was completed (`complete_upload`).
    UploadDone {
        request: u64,
        size: u64,
    },
    Refused {
        request: u64,
        code: String,
        message: String,
    },
    Finished {
        #[serde(flatten)]
        lease: LeaseRef,
        accepted: bool,
        code: Option<String>,
    },
    Cancel {
        job: Uuid,
    },
}

/// A presigned request: send exactly these headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresignedUrl {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl From<crate::storage::PresignedRequest> for PresignedUrl {
    fn from(p: crate::storage::PresignedRequest) -> Self {
        Self { method: p.method, url: p.url, headers: p.headers, expires_at: p.expires_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_encoders_decide_what_a_worker_may_run() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(encoder_coverage(&[]), (true, true), "not announced: taken as all");
        assert_eq!(encoder_coverage(&names(&KNOWN_ENCODERS)), (true, true));
        assert_eq!(encoder_coverage(&names(&["x264enc", "avenc_aac", "jpegenc"])), (true, false));
        assert_eq!(encoder_coverage(&names(&["avenc_aac", "jpegenc", "vp8enc", "opusenc"])), (false, false));
    }

    #[test]
    fn outputs_above_the_threshold_are_split_into_equal_parts_but_the_last() {
        let policy = MultipartPolicy { threshold_bytes: 10, part_bytes: 4 };
        assert_eq!(policy.part_sizes(10), None);
        assert_eq!(policy.part_sizes(11), Some(vec![4, 4, 3]));
        assert_eq!(policy.part_sizes(12), Some(vec![4, 4, 4]));
        let one = MultipartPolicy { threshold_bytes: 1, part_bytes: 100 };
        assert_eq!(one.part_sizes(50), Some(vec![50]));
    }

    #[test]
    fn an_older_peer_reads_the_multipart_fields_as_absent() {
        let ask: WorkerMessage = serde_json::from_str(&format!(
            r#"{{"type":"upload_url","request":1,"job":"{0}","lease":"{0}","key":"k","content_type":"video/mp4","size":3,"sha256":"x"}}"#,
            Uuid::nil()
        ))
        .unwrap();
        assert!(matches!(ask, WorkerMessage::UploadUrl { parts, .. } if parts.is_empty()));
        let welcome: ServerMessage = serde_json::from_str(&format!(
            r#"{{"type":"welcome","worker_id":"{0}","lease_secs":30,"heartbeat_secs":5,"resumed":[]}}"#,
            Uuid::nil()
        ))
        .unwrap();
        assert!(matches!(welcome, ServerMessage::Welcome { multipart: None, .. }));
    }

    #[test]
    fn messages_are_tagged_snake_case_json() {
        let lease = LeaseRef { job: Uuid::nil(), lease: Uuid::nil() };
        let text = serde_json::to_string(&WorkerMessage::Accept { lease }).unwrap();
        assert_eq!(text, format!(r#"{{"type":"accept","job":"{0}","lease":"{0}"}}"#, Uuid::nil()));
        let back: WorkerMessage = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, WorkerMessage::Accept { .. }));
        let drain: WorkerMessage = serde_json::from_str(r#"{"type":"drain"}"#).unwrap();
        assert!(matches!(drain, WorkerMessage::Drain));
        assert!(serde_json::from_str::<WorkerMessage>(r#"{"type":"launch_missiles"}"#).is_err());
    }
}
