//! Object storage: one [`ObjectStore`] trait, two backends.
//!
//! - [`LocalStore`] keeps objects on local disk. Its "presigned" URLs point at the
//!   server itself ([`configure_signed_routes`]) and carry an HMAC signature.
//! - [`S3Store`] talks to any S3-compatible endpoint through aws-sdk-s3.
//!
//! Keys look like `users/{user}/videos/{video}/source` and are checked by
//! [`validate_key`] before either backend touches them, so the local store can never
//! escape its root and both backends accept exactly the same keys.

mod error;
mod guarded;
mod key;
pub mod layout;
mod local;
mod local_http;
mod op_metrics;
mod s3;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use error::StoreError;
pub use guarded::GuardedStore;
pub use key::{validate_key, validate_prefix, MAX_KEY_LEN};
pub use local::{LocalStore, LocalStoreConfig, StagedWriter};
pub use local_http::configure_signed_routes;
pub use s3::{S3Store, S3StoreConfig};

/// A body streamed in or out of storage. `'static + Send` so it can cross tasks.
pub type ByteStream = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

pub use crate::config::object_limits::{MAX_PART_NUMBER, MAX_PART_SIZE, MAX_SINGLE_PUT_SIZE, MIN_PART_SIZE};
/// Presigned URLs live between one second and seven days (the SigV4 maximum).
pub const MIN_PRESIGN_EXPIRY: Duration = Duration::from_secs(1);
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// What storage knows about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectMeta {
    pub key: String,
    /// Size of the whole object in bytes (also for ranged reads).
    pub size: u64,
    pub content_type: Option<String>,
    /// Entity tag without surrounding quotes. Local: hex SHA-256 of the content.
    /// S3: whatever the backend reports (MD5 for simple uploads, `md5-N` for multipart).
    pub etag: Option<String>,
    /// `None` when the backend does not report it (S3 `PutObject` responses).
    pub last_modified: Option<DateTime<Utc>>,
}

/// An object kept as a file on this machine (see [`ObjectStore::local_file`]).
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: std::path::PathBuf,
    pub size: u64,
    /// Hex SHA-256 of the content, when the store recorded it as it wrote the object.
    pub sha256: Option<String>,
}

/// The result of [`ObjectStore::get`].
pub struct GetResult {
    pub meta: ObjectMeta,
    /// The inclusive byte range the body covers when a range was requested.
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

impl std::fmt::Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult").field("meta", &self.meta).field("range", &self.range).finish_non_exhaustive()
    }
}

impl GetResult {
    /// The whole body in memory, refused (`InvalidData`) past `limit` bytes. For
    /// small objects only (playlists).
    pub async fn collect_bytes(self, limit: usize) -> Result<Vec<u8>, std::io::Error> {
        use futures::StreamExt;
        let mut body = Vec::new();
        let mut stream = self.body;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > limit {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Length of the body in bytes.
    pub fn body_len(&self) -> u64 {
        match self.range {
            Some((first, last)) => last - first + 1,
            None => self.meta.size,
        }
    }
}

/// A byte range as in an HTTP `Range` header (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=first-`: from `first` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Resolve against an object of `size` bytes to an inclusive `(first, last)`,
    /// or `None` when the range is not satisfiable. Same rules as S3: `last` is
    /// clamped to the end, a suffix longer than the object means the whole object,
    /// `first` past the end, `first > last` and `-0` are unsatisfiable, and no range
    /// is satisfiable on an empty object.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        match self {
            ByteRange::FromTo(first, last) if first <= last && first < size => Some((first, last.min(size - 1))),
            ByteRange::FromTo(..) => None,
            ByteRange::From(first) if first < size => Some((first, size - 1)),
            ByteRange::From(_) => None,
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((size - n.min(size), size - 1)),
        }
    }

    /// The same range in S3's terms, whose positions are signed 64-bit: a `first`
    /// past `i64::MAX` is past the end of any object (`None`: not satisfiable), a
    /// larger `last` means the same as `i64::MAX` (clamped to the object), and a
    /// suffix at least as long as the largest S3 object (5 TiB) is the whole object,
    /// asked as `0-i64::MAX` (s3s-fs fails a suffix of `i64::MAX` with 503).
    /// S3-compatible stores refuse positions past `i64::MAX` outright (400
    /// InvalidArgument), which a `/media` request with
    /// `Range: bytes=18446744073709551615-` turned into HTTP 500 (found by the fuzzer).
    pub(crate) fn within_i64(self) -> Option<ByteRange> {
        const MAX: u64 = i64::MAX as u64;
        const LARGEST_OBJECT: u64 = 5 << 40;
        match self {
            ByteRange::FromTo(first, _) | ByteRange::From(first) if first > MAX => None,
            ByteRange::FromTo(first, last) => Some(ByteRange::FromTo(first, last.min(MAX))),
            ByteRange::From(first) => Some(ByteRange::From(first)),
            ByteRange::Suffix(n) if n >= LARGEST_OBJECT => Some(ByteRange::FromTo(0, MAX)),
            ByteRange::Suffix(n) => Some(ByteRange::Suffix(n)),
        }
    }

    /// Ranges that no object can satisfy (`first > last`, `-0`).
    pub(crate) fn is_never_satisfiable(self) -> bool {
        matches!(self, ByteRange::FromTo(first, last) if first > last) || self == ByteRange::Suffix(0)
    }

    /// Parse a `Range` header holding a single `bytes=` range (the unit is
    /// case-insensitive, RFC 9110 §14.1). `None` for anything else (other units,
    /// several ranges, bad syntax): per RFC 9110 a server may then ignore the header
    /// and send the whole object.
    pub fn parse_header(value: &str) -> Option<ByteRange> {
        let (unit, spec) = value.trim().split_once('=')?;
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return None;
        }
        let spec = spec.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        match (first.is_empty(), last.is_empty()) {
            (true, false) => last.parse().ok().map(ByteRange::Suffix),
            (false, true) => first.parse().ok().map(ByteRange::From),
            (false, false) => Some(ByteRange::FromTo(first.parse().ok()?, last.parse().ok()?)),
            (true, true) => None,
        }
    }

    /// The header value (`bytes=...`).
    pub fn to_header(self) -> String {
        match self {
            ByteRange::FromTo(first, last) => format!("bytes={first}-{last}"),
            ByteRange::From(first) => format!("bytes={first}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// A request someone else (a browser, a remote worker) can make without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresignedRequest {
    /// `GET` or `PUT`.
    pub method: String,
    pub url: String,
    /// Headers the caller must send exactly as given (they are part of the signature).
    pub headers: Vec<(String, String)>,
    pub expires_at: DateTime<Utc>,
}

/// What a presigned upload URL is bound to (see [`ObjectStore::presign_bound_put`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadBinding {
    /// The upload session (the `uploads` row) the URL belongs to.
    pub session: uuid::Uuid,
    /// The exact number of bytes the request must carry.
    pub length: u64,
}

/// Asked by the local store's signed `PUT` route, before it reads a byte, whether
/// the upload session a URL is bound to still accepts bytes at that key. Lives in
/// the uploads service; registered as `web::Data<Arc<dyn UploadGate>>` next to the
/// local store. Without one, session-bound URLs are refused.
#[async_trait]
pub trait UploadGate: Send + Sync + 'static {
    /// `Ok` while `session` accepts bytes at `key`, [`StoreError::UploadClosed`]
    /// once it does not (completed, completing, aborted, expired, video deleted).
    async fn check(&self, session: uuid::Uuid, key: &str) -> Result<(), StoreError>;
}

/// One uploaded part, as passed to [`ObjectStore::complete_multipart`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletedPart {
    pub number: i32,
    /// The ETag returned for the part (quoted or not; both backends accept either).
    pub etag: String,
}

/// One part of an open multipart upload, as [`ObjectStore::list_parts`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
    pub size: u64,
}

/// Where objects live. Both backends follow the same contract (see
/// `server/tests/api/storage.rs`, which runs one suite against each).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// `"local"` or `"s3"`, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Store `body` under `key`, replacing any object there. Streams with bounded
    /// memory; readers never see a half-written object.
    async fn put(&self, key: &str, body: ByteStream, content_type: Option<&str>) -> Result<ObjectMeta, StoreError>;

    /// [`ObjectStore::put`] for a body already in memory.
    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, StoreError>;

    /// Read an object, or one range of it.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResult, StoreError>;

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// The object as a file on this machine, for callers that need a path (the media
    /// probe) and would otherwise download a copy: local disk answers with the object's
    /// own file, which must only be read; remote backends answer `None`.
    async fn local_file(&self, _key: &str) -> Result<Option<LocalFile>, StoreError> {
        Ok(None)
    }

    /// Delete an object. Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Delete every object whose key starts with `prefix` (plain string prefix, as
    /// in S3; `prefix` is a valid key optionally followed by `/`). Returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;

    /// A URL that accepts one `PUT` of the whole object until `expires_in` has passed.
    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
    ) -> Result<PresignedRequest, StoreError>;

    /// [`ObjectStore::presign_put`] for an upload session: the URL accepts one `PUT`
    /// of exactly `binding.length` bytes. S3 signs the `Content-Length`; the local
    /// store signs the session and length, caps the body at that length and asks
    /// the [`UploadGate`] before it reads a byte, so the URL stops working the
    /// moment its upload is no longer OPEN.
    async fn presign_bound_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError>;

    /// [`ObjectStore::presign_upload_part`] bound like [`ObjectStore::presign_bound_put`]
    /// (`binding.length` is this part's exact length).
    async fn presign_bound_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError>;

    /// Move the object at `from` to `to`, replacing any object there. Local disk:
    /// a rename; S3: a server-side copy, then the delete of `from`. Objects up to
    /// [`MAX_SINGLE_PUT_SIZE`] (what one presigned `PUT` can carry).
    async fn rename(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError>;

    /// [`ObjectStore::presign_put`] for a body whose length and SHA-256 (hex) are
    /// known in advance. S3 signs both (`Content-Length`, `x-amz-checksum-sha256`),
    /// so it refuses any other body. The default (local disk) signs neither: the
    /// local store keeps every object's SHA-256, see [`ObjectStore::stored_sha256`].
    async fn presign_checked_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        _length: u64,
        _sha256: &str,
    ) -> Result<PresignedRequest, StoreError> {
        self.presign_put(key, expires_in, content_type).await
    }

    /// [`ObjectStore::create_multipart`] for parts whose SHA-256 will be announced
    /// ([`ObjectStore::presign_checked_part`]): S3 creates it with `ChecksumAlgorithm`
    /// SHA256, so it keeps each part's checksum and the object's composite one.
    async fn create_checked_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        self.create_multipart(key, content_type).await
    }

    /// [`ObjectStore::presign_upload_part`] for a part of exactly `length` bytes whose
    /// SHA-256 (hex) is `sha256`. S3 signs both (`Content-Length`,
    /// `x-amz-checksum-sha256`): another length is refused, and S3 itself refuses a
    /// body of another digest (BadDigest; s3s-fs does not check part checksums). The
    /// default (local disk) signs neither: the digests are checked on completion,
    /// [`ObjectStore::complete_checked_multipart`].
    async fn presign_checked_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        _length: u64,
        _sha256: &str,
    ) -> Result<PresignedRequest, StoreError> {
        self.presign_upload_part(key, upload_id, part_number, expires_in).await
    }

    /// [`ObjectStore::complete_multipart`] of an upload made through
    /// [`ObjectStore::presign_checked_part`]: `sha256s[i]` is the announced hex SHA-256
    /// of `parts[i]`. Local disk hashes each part as it assembles the object and
    /// refuses ([`StoreError::InvalidRequest`], nothing stored) when one differs; S3
    /// names each part's checksum (S3 checks them against those it stored with the
    /// parts). The default only completes.
    async fn complete_checked_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        _sha256s: &[String],
    ) -> Result<ObjectMeta, StoreError> {
        self.complete_multipart(key, upload_id, parts).await
    }

    /// The hex SHA-256 of a stored object's bytes when the backend keeps one (local
    /// disk: always, unless its sidecar is stale; S3: the `ChecksumSHA256` of an
    /// object uploaded with one), `None` when it does not.
    async fn stored_sha256(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.local_file(key).await?.and_then(|file| file.sha256))
    }

    /// A URL that serves `GET` (ranges allowed) until `expires_in` has passed.
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedRequest, StoreError>;

    /// Start a multipart upload; returns its upload id.
    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError>;

    /// Upload part `part_number` (1..=10000); returns its ETag. Every part but the
    /// last must be at least [`MIN_PART_SIZE`], none larger than [`MAX_PART_SIZE`].
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError>;

    /// A URL that accepts one `PUT` of part `part_number`; the response carries the
    /// part's `ETag` header.
    async fn presign_upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
    ) -> Result<PresignedRequest, StoreError>;

    /// Assemble the parts (ascending part numbers) into the object.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<ObjectMeta, StoreError>;

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;

    /// The parts uploaded so far to an open multipart upload, ascending by number.
    /// Lets the server complete an upload whose parts a client sent straight to
    /// storage through presigned part URLs (their ETags never reach the server).
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<UploadedPart>, StoreError>;

    /// Readiness probe. S3: `HeadBucket`; local: the root is writable.
    async fn check(&self) -> Result<(), StoreError>;

    /// Whether a multipart upload can instead be written as one staging file at
    /// increasing offsets ([`ObjectStore::open_staged`], local disk), so every byte is
    /// written once: no parts, no assembly copy.
    fn supports_staged(&self) -> bool {
        false
    }

    /// Open the staging file of multipart upload `upload_id` (of `key`) to append at
    /// `offset`, the last offset its caller recorded: bytes past it (written by a
    /// request that never recorded them) are dropped; a file shorter than `offset` is
    /// an error. One writer at a time, also across processes (a file lock): another
    /// gets [`StoreError::Busy`].
    async fn open_staged(&self, _key: &str, _upload_id: &str, _offset: u64) -> Result<StagedWriter, StoreError> {
        Err(StoreError::InvalidRequest("this store writes multipart uploads as parts".into()))
    }

    /// How many bytes the staging file of `upload_id` holds (`None`: none).
    async fn staged_len(&self, _key: &str, _upload_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Make the first `size` bytes of the staging file of `upload_id` the object at
    /// `key` (a rename: no copy) and end the multipart upload.
    /// [`StoreError::UploadNotFound`] when the upload is gone (completed before).
    async fn complete_staged(&self, _key: &str, _upload_id: &str, _size: u64) -> Result<ObjectMeta, StoreError> {
        Err(StoreError::InvalidRequest("this store writes multipart uploads as parts".into()))
    }
}

/// Checks shared by both backends before presigning.
pub(crate) fn validate_expiry(expires_in: Duration) -> Result<(), StoreError> {
    if !(MIN_PRESIGN_EXPIRY..=MAX_PRESIGN_EXPIRY).contains(&expires_in) {
        return Err(StoreError::InvalidRequest(format!(
            "presigned URL expiry must be between {} second and {} seconds",
            MIN_PRESIGN_EXPIRY.as_secs(),
            MAX_PRESIGN_EXPIRY.as_secs()
        )));
    }
    Ok(())
}

pub(crate) fn validate_part_number(part_number: i32) -> Result<(), StoreError> {
    if !(1..=MAX_PART_NUMBER).contains(&part_number) {
        return Err(StoreError::InvalidRequest(format!("part number must be between 1 and {MAX_PART_NUMBER}")));
    }
    Ok(())
}

/// Parts must be listed once each, in ascending order (S3's rule).
pub(crate) fn validate_completed_parts(parts: &[CompletedPart]) -> Result<(), StoreError> {
    if parts.is_empty() {
        return Err(StoreError::InvalidRequest("a multipart upload needs at least one part".into()));
    }
    for part in parts {
        validate_part_number(part.number)?;
    }
    if parts.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(StoreError::InvalidRequest("parts must be listed in ascending order, each once".into()));
    }
    Ok(())
}

/// ETags travel quoted in HTTP and unquoted in [`ObjectMeta`].
pub(crate) fn unquote_etag(etag: &str) -> &str {
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.strip_prefix('"').and_then(|e| e.strip_suffix('"')).unwrap_or(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_s3() {
        assert_eq!(ByteRange::FromTo(0, 0).resolve(10), Some((0, 0)));
        assert_eq!(ByteRange::FromTo(2, 100).resolve(10), Some((2, 9)));
        assert_eq!(ByteRange::FromTo(10, 12).resolve(10), None);
        assert_eq!(ByteRange::FromTo(5, 4).resolve(10), None);
        assert_eq!(ByteRange::From(9).resolve(10), Some((9, 9)));
        assert_eq!(ByteRange::From(10).resolve(10), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), None);
        assert_eq!(ByteRange::From(0).resolve(0), None);
    }

    #[test]
    fn ranges_past_i64_are_put_in_s3_terms() {
        let max = i64::MAX as u64;
        assert_eq!(ByteRange::From(u64::MAX).within_i64(), None);
        assert_eq!(ByteRange::FromTo(max + 1, u64::MAX).within_i64(), None);
        assert_eq!(ByteRange::From(max).within_i64(), Some(ByteRange::From(max)));
        assert_eq!(ByteRange::FromTo(3, u64::MAX).within_i64(), Some(ByteRange::FromTo(3, max)));
        assert_eq!(ByteRange::Suffix(u64::MAX).within_i64(), Some(ByteRange::FromTo(0, max)));
        assert_eq!(ByteRange::Suffix(10).within_i64(), Some(ByteRange::Suffix(10)));
        assert_eq!(ByteRange::FromTo(0, 9).within_i64(), Some(ByteRange::FromTo(0, 9)));
        // The meaning is kept for any real object.
        assert_eq!(ByteRange::FromTo(3, u64::MAX).resolve(10), ByteRange::FromTo(3, max).resolve(10));
        assert_eq!(ByteRange::Suffix(u64::MAX).resolve(10), ByteRange::FromTo(0, max).resolve(10));
    }

    #[test]
    fn range_headers_round_trip() {
        for range in [ByteRange::FromTo(1, 2), ByteRange::From(7), ByteRange::Suffix(5)] {
            assert_eq!(ByteRange::parse_header(&range.to_header()), Some(range));
        }
        assert_eq!(ByteRange::parse_header("bytes=0-1,3-4"), None);
        assert_eq!(ByteRange::parse_header("items=0-1"), None);
        assert_eq!(ByteRange::parse_header("Bytes=0-1"), Some(ByteRange::FromTo(0, 1)));
        assert_eq!(ByteRange::parse_header("BYTES=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(ByteRange::parse_header("bytesx=0-1"), None);
        assert_eq!(ByteRange::parse_header("bytes=-"), None);
        assert_eq!(ByteRange::parse_header("bytes=a-1"), None);
    }

    #[test]
    fn etags_are_unquoted() {
        assert_eq!(unquote_etag("\"abc\""), "abc");
        assert_eq!(unquote_etag("W/\"abc\""), "abc");
        assert_eq!(unquote_etag("abc"), "abc");
    }
}
