//! `[uploads]`: sizes, types, quotas and session lifetimes of uploads.

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    /// Largest accepted upload, bytes.
    pub max_size_bytes: u64,
    /// Bytes of sources one user may store; 0 means no quota.
    pub quota_bytes_per_user: u64,
    /// Declared content types accepted by `createUpload` and tus.
    pub allowed_content_types: Vec<String>,
    /// Seconds an open upload session lives without completing (tus URLs work as long).
    pub session_ttl_secs: u64,
    /// Seconds a presigned upload URL (`createUpload`'s `url` and part URLs) stays
    /// valid, at most the session's lifetime. Short: a leaked URL is useful briefly.
    pub upload_url_ttl_secs: u64,
    /// Declared sizes above this use multipart (S3) instead of one presigned PUT.
    pub multipart_threshold_bytes: u64,
    /// Part size of multipart uploads (S3: at least 5 MiB, at most 10000 parts).
    pub part_size_bytes: u64,
    /// Largest body of one tus PATCH request.
    pub tus_max_chunk_bytes: u64,
    /// Memory all tus PATCHes of this process may hold in part buffers at once; a
    /// PATCH that finds it spent waits briefly, then gets 503 + `Retry-After`.
    pub tus_buffer_budget_bytes: u64,
    /// Of that budget, what one user's PATCHes may hold at once; past it the user's
    /// PATCHes wait briefly, then get 429 + `Retry-After` (what arrived is kept).
    pub tus_buffer_per_user_bytes: u64,
    /// Seconds a tus PATCH body may send nothing before the server ends it with
    /// 408 `BODY_TIMEOUT`; the bytes received so far are kept (resume at the offset).
    pub tus_body_idle_timeout_secs: u64,
    /// Seconds between sweeps for expired sessions and orphaned multipart uploads.
    pub sweep_interval_secs: u64,
    /// Local disk: tus bytes go into one staging file at their offset, renamed into
    /// place by the last PATCH (each byte written once, no part buffers in memory).
    /// Off: parts and an assembly copy, as on S3. Sessions keep the mode they began with.
    pub tus_local_staging: bool,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            max_size_bytes: 10 * GIB,
            quota_bytes_per_user: 100 * GIB,
            allowed_content_types: [
                "video/mp4",
                "video/quicktime",
                "video/webm",
                "video/x-matroska",
                "video/x-msvideo",
                "video/mpeg",
                "video/mp2t",
                "video/ogg",
                "video/3gpp",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            session_ttl_secs: 24 * 3600,
            upload_url_ttl_secs: 3600,
            multipart_threshold_bytes: 64 * MIB,
            part_size_bytes: 16 * MIB,
            tus_max_chunk_bytes: 64 * MIB,
            tus_buffer_budget_bytes: 256 * MIB,
            tus_buffer_per_user_bytes: 64 * MIB,
            tus_body_idle_timeout_secs: 30,
            sweep_interval_secs: 60,
            tus_local_staging: true,
        }
    }
}
