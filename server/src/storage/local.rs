//! Objects on local disk.
//!
//! Layout under the root (all on one filesystem, so renames are atomic):
//!
//! ```text
//! objects/<key>            the bytes, a plain file
//! meta/<key>               JSON sidecar: content type, SHA-256, size and mtime of the bytes
//! tmp/                     every write lands here first, then is renamed into place
//! uploads/<id>/upload.json a multipart upload in progress (key, content type)
//! uploads/<id>/part-NNNNN  its parts, concatenated on completion
//! uploads/<id>/staging     or its one staging file (tus), renamed into place on completion
//! ```
//!
//! A reader never sees a half-written object: bytes are written and synced to
//! `tmp/`, then renamed. The sidecar records the size and mtime of the file it
//! describes (a rename keeps both), so a reader that opens the object while a
//! writer swaps it only trusts a sidecar that matches the file it actually holds,
//! and otherwise falls back to an ETag made of size and mtime.
//!
//! ## Staging files
//!
//! A multipart upload the server writes itself (tus) may skip parts: the bytes go
//! into `uploads/<id>/staging` at increasing offsets ([`StagedWriter`]), synced
//! before the caller records an offset, and completion renames that file into
//! place, so each byte is written to disk once. One writer at a time holds an
//! exclusive lock on the file (also across processes sharing the root); opening at
//! the recorded offset drops whatever a writer wrote after it and never recorded.
//! The SHA-256 the sidecar needs is carried along as bytes are written (kept per
//! upload in memory at the last synced offset); after a restart it is computed from
//! the file at completion, reading it once in place.
//!
//! ## Signed URLs
//!
//! The local store's "presigned" URLs point at the server itself
//! ([`super::configure_signed_routes`]):
//!
//! ```text
//! {public_base_url}/storage/{key, each segment percent-encoded}
//!     ?X-Reelhouse-Method=GET|PUT
//!     &X-Reelhouse-Expires={unix seconds}
//!     [&X-Reelhouse-Content-Type={type}]                      presigned PUT with a type
//!     [&X-Reelhouse-Upload-Id={id}&X-Reelhouse-Part={n}]      presigned part upload
//!     [&X-Reelhouse-Session={uuid}&X-Reelhouse-Length={n}]     bound to an upload session
//!     &X-Reelhouse-Signature={hex HMAC-SHA256}
//! ```
//!
//! The signature is HMAC-SHA256 with the configured key over the string
//! `"reelhouse-storage-v2\n{METHOD}\n{key}\n{expires}\n{content type}\n{upload id}\n{part}\n{session}\n{length}"`
//! (absent fields are empty). A URL bound to an upload session carries exactly
//! `length` bytes (a longer or shorter body stores nothing), and the signed route
//! asks the [`super::UploadGate`] whether the session is still OPEN before it reads
//! a byte (`410 UPLOAD_CLOSED` otherwise). No field can contain a newline (keys and content
//! types are refused with control characters, the others are numbers or hex), so
//! the string is unambiguous. Verification is constant-time (`Mac::verify_slice`).
//! A `HEAD` request is accepted with a `GET` signature.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use url::Url;

use super::op_metrics::observe;
use super::{
    unquote_etag, validate_completed_parts, validate_expiry, validate_key, validate_part_number, validate_prefix,
    ByteRange, ByteStream, CompletedPart, GetResult, LocalFile, ObjectMeta, ObjectStore, PresignedRequest, StoreError,
    UploadBinding, UploadedPart, MAX_PART_SIZE, MAX_SINGLE_PUT_SIZE, MIN_PART_SIZE,
};

const BACKEND: &str = "local";
const SIGNATURE_VERSION: &str = "reelhouse-storage-v2";
const READ_CHUNK: usize = 64 * 1024;
const WRITE_BUFFER: usize = 256 * 1024;
/// The staging file of a multipart upload written at offsets (see "Staging files").
const STAGING_FILE: &str = "staging";
/// Running hashes of staging files kept at most (one per upload being written; a
/// dropped one is computed from the file at completion instead).
const MAX_STAGED_HASHES: usize = 4096;
/// A signing key shorter than this is refused: it would be guessable.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

pub(crate) const QUERY_METHOD: &str = "X-Reelhouse-Method";
pub(crate) const QUERY_EXPIRES: &str = "X-Reelhouse-Expires";
pub(crate) const QUERY_CONTENT_TYPE: &str = "X-Reelhouse-Content-Type";
pub(crate) const QUERY_UPLOAD_ID: &str = "X-Reelhouse-Upload-Id";
pub(crate) const QUERY_PART: &str = "X-Reelhouse-Part";
pub(crate) const QUERY_SESSION: &str = "X-Reelhouse-Session";
pub(crate) const QUERY_LENGTH: &str = "X-Reelhouse-Length";
pub(crate) const QUERY_SIGNATURE: &str = "X-Reelhouse-Signature";

/// How to build a [`LocalStore`].
#[derive(Clone)]
pub struct LocalStoreConfig {
    /// Directory holding everything; created if missing.
    pub root: PathBuf,
    /// HMAC key for signed URLs, at least [`MIN_SIGNING_KEY_LEN`] bytes. Every
    /// process serving the same root must use the same key.
    pub signing_key: Vec<u8>,
    /// Where clients reach this server, e.g. `http://127.0.0.1:8080`; signed URLs
    /// are `{public_base_url}/storage/...`.
    pub public_base_url: String,
}

impl std::fmt::Debug for LocalStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStoreConfig")
            .field("root", &self.root)
            .field("signing_key", &"[redacted]")
            .field("public_base_url", &self.public_base_url)
            .finish()
    }
}

/// Objects on local disk; see the module documentation for the layout.
pub struct LocalStore {
    root: PathBuf,
    objects: PathBuf,
    meta: PathBuf,
    tmp: PathBuf,
    uploads: PathBuf,
    signing_key: Vec<u8>,
    public_base_url: Url,
    staged_hashes: StagedHashes,
}

/// Per upload id: the SHA-256 state of a staging file's first `offset` bytes.
type StagedHashes = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, Sha256)>>>;

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.root)
            .field("public_base_url", &self.public_base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// The sidecar next to each object (`meta/<key>`).
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    content_type: Option<String>,
    sha256: String,
    size: u64,
    mtime_ns: u128,
}

/// `uploads/<id>/upload.json`.
#[derive(Debug, Serialize, Deserialize)]
struct UploadInfo {
    key: String,
    content_type: Option<String>,
    created_at: DateTime<Utc>,
}

/// The signed query parameters of a request to the signed routes.
#[derive(Debug, Default, Clone)]
pub(crate) struct SignedParams {
    pub method: String,
    pub expires: i64,
    pub content_type: Option<String>,
    pub upload_id: Option<String>,
    pub part: Option<i32>,
    /// The upload session a bound URL belongs to (a UUID).
    pub session: Option<String>,
    /// The exact body length of a bound URL.
    pub length: Option<u64>,
    pub signature: String,
}

/// A file under `tmp/`, removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover is swept by `sweep_stale`.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bytes written to a temp file, with what we learned while writing them.
struct Written {
    temp: TempFile,
    size: u64,
    sha256: String,
}

/// Appends to the staging file of one multipart upload (see "Staging files" in the
/// module documentation). Holds the file's lock until dropped. Bytes written are
/// durable only after [`StagedWriter::sync`].
pub struct StagedWriter {
    writer: BufWriter<File>,
    upload_id: String,
    offset: u64,
    /// SHA-256 of the file's first `offset` bytes, when known.
    hasher: Option<Sha256>,
    hashes: StagedHashes,
}

impl std::fmt::Debug for StagedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedWriter").field("upload_id", &self.upload_id).field("offset", &self.offset).finish()
    }
}

impl StagedWriter {
    /// The end of what was written (synced or not).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Append `bytes` at [`StagedWriter::offset`].
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.writer.write_all(bytes).await.map_err(StoreError::io("write staging file"))?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Flush and sync: everything written so far survives a crash. Returns the offset.
    pub async fn sync(&mut self) -> Result<u64, StoreError> {
        self.writer.flush().await.map_err(StoreError::io("write staging file"))?;
        self.writer.get_ref().sync_data().await.map_err(StoreError::io("sync staging file"))?;
        if let (Some(hasher), Ok(mut hashes)) = (&self.hasher, self.hashes.lock()) {
            if hashes.len() >= MAX_STAGED_HASHES && !hashes.contains_key(&self.upload_id) {
                hashes.clear();
            }
            hashes.insert(self.upload_id.clone(), (self.offset, hasher.clone()));
        }
        Ok(self.offset)
    }

    /// Drop what was written after `offset` (not recorded by the caller: a body
    /// refused after it was written, e.g. a checksum mismatch).
    pub async fn truncate(&mut self, offset: u64) -> Result<(), StoreError> {
        self.writer.flush().await.map_err(StoreError::io("write staging file"))?;
        let file = self.writer.get_mut();
        file.set_len(offset).await.map_err(StoreError::io("truncate staging file"))?;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(StoreError::io("seek staging file"))?;
        self.offset = offset;
        self.hasher = cached_hash(&self.hashes, &self.upload_id, offset);
        Ok(())
    }
}

/// The running hash of `upload_id` if it covers exactly the first `offset` bytes.
fn cached_hash(hashes: &StagedHashes, upload_id: &str, offset: u64) -> Option<Sha256> {
    let hashes = hashes.lock().ok()?;
    hashes.get(upload_id).filter(|(at, _)| *at == offset).map(|(_, hasher)| hasher.clone())
}

/// Open (creating it) and lock a staging file; `Busy` if another writer holds it.
fn open_locked(path: &Path) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(StoreError::io("open staging file"))?;
    // A writer that just finished may still be closing its handle: wait a moment
    // before calling the file busy.
    for _ in 0..LOCK_ATTEMPTS {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(LOCK_RETRY),
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(StoreError::Io { op: "lock staging file", source: err })
            }
        }
    }
    Err(StoreError::Busy)
}

/// How long [`open_locked`] waits for a staging file's lock: 50 × 10 ms.
const LOCK_ATTEMPTS: u32 = 50;
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Hex SHA-256 of a file's first `len` bytes, read in place.
fn hash_prefix(file: &mut std::fs::File, len: u64) -> Result<String, StoreError> {
    use std::io::{Read as _, Seek as _};
    file.seek(std::io::SeekFrom::Start(0)).map_err(StoreError::io("hash staging file"))?;
    let mut hasher = Sha256::new();
    let copied = std::io::copy(&mut file.take(len), &mut hasher).map_err(StoreError::io("hash staging file"))?;
    if copied != len {
        return Err(StoreError::Io {
            op: "hash staging file",
            source: std::io::Error::new(ErrorKind::UnexpectedEof, "the staging file ended early"),
        });
    }
    Ok(hex::encode(hasher.finalize()))
}

impl LocalStore {
    /// Create the directories under `root` if needed and check the configuration.
    pub fn new(config: LocalStoreConfig) -> Result<Self, StoreError> {
        if config.signing_key.len() < MIN_SIGNING_KEY_LEN {
            return Err(StoreError::Config(format!(
                "the local storage signing key must be at least {MIN_SIGNING_KEY_LEN} bytes"
            )));
        }
        let public_base_url = Url::parse(&config.public_base_url)
            .map_err(|_| StoreError::Config("the public base URL is not a valid URL".into()))?;
        if !matches!(public_base_url.scheme(), "http" | "https") || public_base_url.cannot_be_a_base() {
            return Err(StoreError::Config("the public base URL must be an http(s) URL".into()));
        }
        if public_base_url.query().is_some() || public_base_url.fragment().is_some() {
            return Err(StoreError::Config("the public base URL must not have a query or fragment".into()));
        }
        std::fs::create_dir_all(&config.root).map_err(StoreError::io("create storage root"))?;
        let root = config.root.canonicalize().map_err(StoreError::io("resolve storage root"))?;
        let store = LocalStore {
            objects: root.join("objects"),
            meta: root.join("meta"),
            tmp: root.join("tmp"),
            uploads: root.join("uploads"),
            root,
            signing_key: config.signing_key,
            public_base_url,
            staged_hashes: StagedHashes::default(),
        };
        for dir in [&store.objects, &store.meta, &store.tmp, &store.uploads] {
            std::fs::create_dir_all(dir).map_err(StoreError::io("create storage directories"))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remove temp files and multipart uploads older than `older_than` (writers
    /// that crashed, uploads nobody completed). Returns how many were removed.
    pub async fn sweep_stale(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        for (dir, is_dir) in [(&self.tmp, false), (&self.uploads, true)] {
            let mut entries = fs::read_dir(dir).await.map_err(StoreError::io("sweep stale files"))?;
            while let Some(entry) = entries.next_entry().await.map_err(StoreError::io("sweep stale files"))? {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                if meta.modified().map(|m| m >= cutoff).unwrap_or(true) {
                    continue;
                }
                // Appending to a staging file does not touch its directory's mtime.
                if is_dir {
                    if let Ok(staging) = fs::metadata(entry.path().join(STAGING_FILE)).await {
                        if staging.modified().map(|m| m >= cutoff).unwrap_or(true) {
                            continue;
                        }
                    }
                }
                let result =
                    if is_dir { fs::remove_dir_all(entry.path()).await } else { fs::remove_file(entry.path()).await };
                match result {
                    Ok(()) => removed += 1,
                    Err(err) if err.kind() == ErrorKind::NotFound => {}
                    Err(err) => return Err(StoreError::Io { op: "sweep stale files", source: err }),
                }
            }
        }
        Ok(removed)
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.objects.join(key)
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.meta.join(key)
    }

    fn temp_path(&self) -> PathBuf {
        self.tmp.join(format!("{}.tmp", uuid::Uuid::new_v4().simple()))
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, StoreError> {
        // Upload ids are ours (a simple UUID); anything else cannot name a directory.
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::UploadNotFound);
        }
        Ok(self.uploads.join(upload_id))
    }

    // ---- writing -------------------------------------------------------------

    async fn write_temp(&self, mut body: ByteStream, limit: Option<u64>) -> Result<Written, StoreError> {
        let temp = TempFile { path: self.temp_path(), keep: false };
        let file = File::create(&temp.path).await.map_err(StoreError::io("create temp file"))?;
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            size += chunk.len() as u64;
            if let Some(limit) = limit.filter(|limit| size > *limit) {
                return Err(StoreError::TooLarge { limit });
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).await.map_err(StoreError::io("write object"))?;
        }
        writer.flush().await.map_err(StoreError::io("write object"))?;
        writer.into_inner().sync_all().await.map_err(StoreError::io("sync object"))?;
        Ok(Written { temp, size, sha256: hex::encode(hasher.finalize()) })
    }

    /// Rename `from` to `to`, creating parent directories. Retries when a
    /// concurrent delete prunes a parent directory between the two steps.
    async fn rename_into_place(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(parent) = to.parent() {
                if let Err(err) = fs::create_dir_all(parent).await {
                    return Err(match err.kind() {
                        ErrorKind::AlreadyExists | ErrorKind::NotADirectory => StoreError::KeyConflict,
                        _ => StoreError::Io { op: "create object directory", source: err },
                    });
                }
            }
            match fs::rename(from, to).await {
                Ok(()) => return Ok(()),
                Err(err) if err.kind() == ErrorKind::NotFound && attempts < 5 => continue,
                Err(err) if matches!(err.kind(), ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty) => {
                    return Err(StoreError::KeyConflict)
                }
                Err(err) if err.kind() == ErrorKind::NotADirectory => return Err(StoreError::KeyConflict),
                Err(err) => return Err(StoreError::Io { op: "rename object into place", source: err }),
            }
        }
    }

    /// Make a written temp file the object at `key`, with its sidecar.
    async fn commit(
        &self,
        key: &str,
        mut written: Written,
        content_type: Option<String>,
    ) -> Result<ObjectMeta, StoreError> {
        let stat = fs::metadata(&written.temp.path).await.map_err(StoreError::io("stat temp file"))?;
        let modified = stat.modified().map_err(StoreError::io("stat temp file"))?;
        let sidecar = Sidecar {
            content_type: content_type.clone(),
            sha256: written.sha256.clone(),
            size: written.size,
            mtime_ns: mtime_ns(modified),
        };
        let sidecar_json = serde_json::to_vec(&sidecar)
            .map_err(|err| StoreError::Io { op: "encode object metadata", source: std::io::Error::other(err) })?;
        let mut sidecar_temp = TempFile { path: self.temp_path(), keep: false };
        fs::write(&sidecar_temp.path, &sidecar_json).await.map_err(StoreError::io("write object metadata"))?;

        let object_path = self.object_path(key);
        if fs::metadata(&object_path).await.map(|m| m.is_dir()).unwrap_or(false) {
            return Err(StoreError::KeyConflict);
        }
        self.rename_into_place(&written.temp.path, &object_path).await?;
        written.temp.keep = true;
        self.rename_into_place(&sidecar_temp.path, &self.meta_path(key)).await?;
        sidecar_temp.keep = true;

        Ok(ObjectMeta {
            key: key.to_owned(),
            size: written.size,
            content_type,
            etag: Some(written.sha256),
            last_modified: Some(DateTime::<Utc>::from(modified)),
        })
    }

    /// `put` with an optional size limit (the signed PUT route uses S3's 5 GiB).
    pub(crate) async fn put_limited(
        &self,
        key: &str,
        body: ByteStream,
        content_type: Option<&str>,
        limit: Option<u64>,
    ) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "put", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            let written = self.write_temp(body, limit).await?;
            self.commit(key, written, content_type).await
        })
        .await
    }

    /// `put` of exactly `length` bytes (a session-bound URL): a longer body is cut
    /// off at `length + 1` bytes, and a body of any other length stores nothing.
    pub(crate) async fn put_exact(
        &self,
        key: &str,
        body: ByteStream,
        content_type: Option<&str>,
        length: u64,
    ) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "put", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            let written = self.write_temp(body, Some(length)).await?;
            check_exact(written.size, length)?;
            self.commit(key, written, content_type).await
        })
        .await
    }

    /// Upload a part from a stream (the signed part route streams straight to disk).
    /// With `exact`, the part must be exactly that many bytes (a session-bound URL).
    pub(crate) async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: ByteStream,
        exact: Option<u64>,
    ) -> Result<String, StoreError> {
        observe(BACKEND, "upload_part", key, async {
            validate_key(key)?;
            validate_part_number(part_number)?;
            let dir = self.open_upload(key, upload_id).await?.0;
            let limit = exact.map_or(MAX_PART_SIZE, |len| len.min(MAX_PART_SIZE));
            let mut written = self.write_temp(body, Some(limit)).await?;
            if let Some(length) = exact {
                check_exact(written.size, length)?;
            }
            match fs::rename(&written.temp.path, dir.join(part_file_name(part_number))).await {
                Ok(()) => written.temp.keep = true,
                // The upload was aborted or completed while the part was arriving.
                Err(err) if err.kind() == ErrorKind::NotFound => return Err(StoreError::UploadNotFound),
                Err(err) => return Err(StoreError::Io { op: "store part", source: err }),
            }
            Ok(written.sha256)
        })
        .await
    }

    /// Concatenate the parts into the object (`complete_multipart`); with `sha256s`,
    /// part `i` must have the hex SHA-256 `sha256s[i]`.
    async fn assemble(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        sha256s: Option<&[String]>,
    ) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "complete_multipart", key, async {
            validate_key(key)?;
            validate_completed_parts(&parts)?;
            let (dir, info) = self.open_upload(key, upload_id).await?;

            let temp = TempFile { path: self.temp_path(), keep: false };
            let file = File::create(&temp.path).await.map_err(StoreError::io("create temp file"))?;
            let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut whole = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; READ_CHUNK];
            for (index, part) in parts.iter().enumerate() {
                let is_last = index + 1 == parts.len();
                let mut part_file = match File::open(dir.join(part_file_name(part.number))).await {
                    Ok(file) => file,
                    Err(err) if is_missing(&err) => {
                        return Err(StoreError::InvalidRequest(format!("part {} was not uploaded", part.number)))
                    }
                    Err(err) => return Err(StoreError::Io { op: "read part", source: err }),
                };
                let mut part_hash = Sha256::new();
                let mut part_size = 0u64;
                loop {
                    let n = part_file.read(&mut buf).await.map_err(StoreError::io("read part"))?;
                    if n == 0 {
                        break;
                    }
                    part_hash.update(&buf[..n]);
                    whole.update(&buf[..n]);
                    writer.write_all(&buf[..n]).await.map_err(StoreError::io("write object"))?;
                    part_size += n as u64;
                }
                if !is_last && part_size < MIN_PART_SIZE {
                    return Err(StoreError::InvalidRequest(format!(
                        "part {} is smaller than {MIN_PART_SIZE} bytes and is not the last part",
                        part.number
                    )));
                }
                let part_sha256 = hex::encode(part_hash.finalize());
                if part_sha256 != unquote_etag(&part.etag) {
                    return Err(StoreError::InvalidRequest(format!("the ETag of part {} does not match", part.number)));
                }
                if sha256s.and_then(|d| d.get(index)).is_some_and(|want| !want.eq_ignore_ascii_case(&part_sha256)) {
                    return Err(StoreError::InvalidRequest(format!(
                        "the SHA-256 of part {} differs from the announced one",
                        part.number
                    )));
                }
                size += part_size;
            }
            writer.flush().await.map_err(StoreError::io("write object"))?;
            writer.into_inner().sync_all().await.map_err(StoreError::io("sync object"))?;

            let written = Written { temp, size, sha256: hex::encode(whole.finalize()) };
            let meta = self.commit(key, written, info.content_type).await?;
            if let Err(err) = fs::remove_dir_all(&dir).await {
                tracing::warn!(error = %err, "could not remove a completed multipart upload; sweep_stale will");
            }
            Ok(meta)
        })
        .await
    }

    async fn open_upload(&self, key: &str, upload_id: &str) -> Result<(PathBuf, UploadInfo), StoreError> {
        let dir = self.upload_dir(upload_id)?;
        let raw = match fs::read(dir.join("upload.json")).await {
            Ok(raw) => raw,
            Err(err) if matches!(err.kind(), ErrorKind::NotFound) => return Err(StoreError::UploadNotFound),
            Err(err) => return Err(StoreError::Io { op: "read multipart upload", source: err }),
        };
        let info: UploadInfo = serde_json::from_slice(&raw).map_err(|err| StoreError::Io {
            op: "read multipart upload",
            source: std::io::Error::new(ErrorKind::InvalidData, err),
        })?;
        if info.key != key {
            return Err(StoreError::UploadNotFound);
        }
        Ok((dir, info))
    }

    // ---- reading -------------------------------------------------------------

    /// Open the object and describe the very file that was opened.
    async fn open_object(&self, key: &str) -> Result<(File, ObjectMeta), StoreError> {
        self.open_object_checked(key).await.map(|(file, meta, _)| (file, meta))
    }

    /// [`Self::open_object`], also telling whether the sidecar matched the file (then
    /// the ETag is the content's SHA-256, recorded when the object was written).
    async fn open_object_checked(&self, key: &str) -> Result<(File, ObjectMeta, bool), StoreError> {
        let file = match File::open(self.object_path(key)).await {
            Ok(file) => file,
            Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(StoreError::not_found(key))
            }
            Err(err) => return Err(StoreError::Io { op: "open object", source: err }),
        };
        let stat = file.metadata().await.map_err(StoreError::io("stat object"))?;
        if !stat.is_file() {
            return Err(StoreError::not_found(key));
        }
        let modified = stat.modified().map_err(StoreError::io("stat object"))?;
        let (size, mtime) = (stat.len(), mtime_ns(modified));

        let mut meta = ObjectMeta {
            key: key.to_owned(),
            size,
            content_type: None,
            etag: Some(format!("{size:x}-{mtime:x}")),
            last_modified: Some(DateTime::<Utc>::from(modified)),
        };
        // A writer renames the bytes, then the sidecar: retry briefly when we caught
        // the gap. A sidecar that never matches (object copied in by hand, a
        // concurrent delete) leaves the size/mtime ETag and no content type.
        let mut sidecar_matched = false;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let Ok(raw) = fs::read(self.meta_path(key)).await else {
                continue;
            };
            let Ok(sidecar) = serde_json::from_slice::<Sidecar>(&raw) else {
                break;
            };
            if sidecar.size == size && sidecar.mtime_ns == mtime {
                meta.content_type = sidecar.content_type;
                meta.etag = Some(sidecar.sha256);
                sidecar_matched = true;
                break;
            }
        }
        Ok((file, meta, sidecar_matched))
    }

    // ---- deleting ------------------------------------------------------------

    /// Remove an object and its sidecar, then prune directories left empty.
    async fn remove_object(&self, key: &str) -> Result<bool, StoreError> {
        let existed = match fs::remove_file(self.object_path(key)).await {
            Ok(()) => true,
            Err(err) if is_missing(&err) => false,
            Err(err) => return Err(StoreError::Io { op: "delete object", source: err }),
        };
        match fs::remove_file(self.meta_path(key)).await {
            Ok(()) => {}
            Err(err) if is_missing(&err) => {}
            Err(err) => return Err(StoreError::Io { op: "delete object metadata", source: err }),
        }
        prune_empty_parents(&self.objects, key).await;
        prune_empty_parents(&self.meta, key).await;
        Ok(existed)
    }

    /// Every object key under the directory `dir` (a key prefix ending at a `/`).
    async fn list_keys_under(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(dir) = pending.pop() {
            let path = if dir.is_empty() { self.objects.clone() } else { self.object_path(&dir) };
            let mut entries = match fs::read_dir(&path).await {
                Ok(entries) => entries,
                Err(err) if is_missing(&err) => continue,
                Err(err) => return Err(StoreError::Io { op: "list objects", source: err }),
            };
            while let Some(entry) = entries.next_entry().await.map_err(StoreError::io("list objects"))? {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let key = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                let file_type = entry.file_type().await.map_err(StoreError::io("list objects"))?;
                if file_type.is_dir() {
                    pending.push(key);
                } else if file_type.is_file() {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    // ---- signing -------------------------------------------------------------

    fn mac(&self) -> Result<Hmac<Sha256>, StoreError> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.signing_key)
            .map_err(|_| StoreError::Config("the local storage signing key is unusable".into()))
    }

    fn string_to_sign(method: &str, key: &str, expires: i64, params: &SignedParams) -> String {
        format!(
            "{SIGNATURE_VERSION}\n{method}\n{key}\n{expires}\n{}\n{}\n{}\n{}\n{}",
            params.content_type.as_deref().unwrap_or(""),
            params.upload_id.as_deref().unwrap_or(""),
            params.part.map(|p| p.to_string()).unwrap_or_default(),
            params.session.as_deref().unwrap_or(""),
            params.length.map(|l| l.to_string()).unwrap_or_default(),
        )
    }

    fn sign_url(
        &self,
        method: &str,
        key: &str,
        expires_in: Duration,
        mut params: SignedParams,
    ) -> Result<PresignedRequest, StoreError> {
        validate_expiry(expires_in)?;
        let expires_at = Utc::now()
            + chrono::Duration::from_std(expires_in)
                .map_err(|_| StoreError::InvalidRequest("presigned URL expiry is out of range".into()))?;
        let expires = expires_at.timestamp();
        let mut mac = self.mac()?;
        mac.update(Self::string_to_sign(method, key, expires, &params).as_bytes());
        params.signature = hex::encode(mac.finalize().into_bytes());

        let mut url = self.public_base_url.clone();
        url.path_segments_mut()
            .map_err(|_| StoreError::Config("the public base URL must be an http(s) URL".into()))?
            .pop_if_empty()
            .push("storage")
            .extend(key.split('/'));
        {
            let mut query = url.query_pairs_mut();
            query.append_pair(QUERY_METHOD, method).append_pair(QUERY_EXPIRES, &expires.to_string());
            if let Some(content_type) = &params.content_type {
                query.append_pair(QUERY_CONTENT_TYPE, content_type);
            }
            if let (Some(upload_id), Some(part)) = (&params.upload_id, params.part) {
                query.append_pair(QUERY_UPLOAD_ID, upload_id).append_pair(QUERY_PART, &part.to_string());
            }
            if let (Some(session), Some(length)) = (&params.session, params.length) {
                query.append_pair(QUERY_SESSION, session).append_pair(QUERY_LENGTH, &length.to_string());
            }
            query.append_pair(QUERY_SIGNATURE, &params.signature);
        }
        let headers = params.content_type.iter().map(|ct| ("content-type".to_owned(), ct.clone())).collect();
        Ok(PresignedRequest { method: method.to_owned(), url: url.into(), headers, expires_at })
    }

    /// Check a signed request: the signature first (constant time), then expiry.
    /// `method` is the request's method; `HEAD` is accepted with a `GET` signature.
    pub(crate) fn verify_signed(&self, method: &str, key: &str, params: &SignedParams) -> Result<(), StoreError> {
        let allowed = params.method == method || (method == "HEAD" && params.method == "GET");
        let signature = hex::decode(&params.signature).map_err(|_| StoreError::InvalidSignature)?;
        let mut mac = self.mac()?;
        mac.update(Self::string_to_sign(&params.method, key, params.expires, params).as_bytes());
        mac.verify_slice(&signature).map_err(|_| StoreError::InvalidSignature)?;
        if !allowed {
            return Err(StoreError::InvalidSignature);
        }
        if Utc::now().timestamp() > params.expires {
            return Err(StoreError::SignatureExpired);
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(name = "storage put", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn put(&self, key: &str, body: ByteStream, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        self.put_limited(key, body, content_type, None).await
    }

    #[tracing::instrument(name = "storage put bytes", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        self.put_limited(key, single_chunk(bytes), content_type, None).await
    }

    #[tracing::instrument(name = "storage get", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResult, StoreError> {
        observe(BACKEND, "get", key, async {
            validate_key(key)?;
            let (mut file, meta) = self.open_object(key).await?;
            let resolved = match range {
                Some(range) => {
                    Some(range.resolve(meta.size).ok_or(StoreError::RangeNotSatisfiable { size: Some(meta.size) })?)
                }
                None => None,
            };
            let (start, len) = match resolved {
                Some((first, last)) => (first, last - first + 1),
                None => (0, meta.size),
            };
            if start > 0 {
                file.seek(std::io::SeekFrom::Start(start)).await.map_err(StoreError::io("seek object"))?;
            }
            Ok(GetResult { meta, range: resolved, body: read_stream(file, len) })
        })
        .await
    }

    #[tracing::instrument(name = "storage head", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "head", key, async {
            validate_key(key)?;
            Ok(self.open_object(key).await?.1)
        })
        .await
    }

    async fn local_file(&self, key: &str) -> Result<Option<LocalFile>, StoreError> {
        observe(BACKEND, "local_file", key, async {
            validate_key(key)?;
            let (_, meta, sidecar_matched) = self.open_object_checked(key).await?;
            Ok(Some(LocalFile {
                path: self.object_path(key),
                size: meta.size,
                sha256: meta.etag.filter(|_| sidecar_matched),
            }))
        })
        .await
    }

    #[tracing::instrument(name = "storage delete", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        observe(BACKEND, "delete", key, async {
            validate_key(key)?;
            self.remove_object(key).await.map(|_| ())
        })
        .await
    }

    #[tracing::instrument(name = "storage delete prefix", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %prefix))]
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        observe(BACKEND, "delete_prefix", prefix, async {
            validate_prefix(prefix)?;
            // Only the directory the prefix ends in can hold matching keys.
            let dir = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
            let mut deleted = 0;
            for key in self.list_keys_under(dir).await? {
                if key.starts_with(prefix) && self.remove_object(&key).await? {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
    ) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_put", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            self.sign_url("PUT", key, expires_in, SignedParams { content_type, ..SignedParams::default() })
        })
        .await
    }

    async fn presign_bound_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_put", key, async {
            validate_key(key)?;
            check_bound_length(binding.length, MAX_SINGLE_PUT_SIZE)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            let params = SignedParams {
                content_type,
                session: Some(binding.session.to_string()),
                length: Some(binding.length),
                ..SignedParams::default()
            };
            self.sign_url("PUT", key, expires_in, params)
        })
        .await
    }

    async fn presign_bound_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_upload_part", key, async {
            validate_key(key)?;
            validate_part_number(part_number)?;
            check_bound_length(binding.length, MAX_PART_SIZE)?;
            self.upload_dir(upload_id)?;
            let params = SignedParams {
                upload_id: Some(upload_id.to_owned()),
                part: Some(part_number),
                session: Some(binding.session.to_string()),
                length: Some(binding.length),
                ..SignedParams::default()
            };
            self.sign_url("PUT", key, expires_in, params)
        })
        .await
    }

    #[tracing::instrument(name = "storage rename", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %to))]
    async fn rename(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "rename", to, async {
            validate_key(from)?;
            validate_key(to)?;
            if from == to {
                return self.open_object(to).await.map(|(_, meta)| meta);
            }
            if fs::metadata(self.object_path(to)).await.map(|m| m.is_dir()).unwrap_or(false) {
                return Err(StoreError::KeyConflict);
            }
            // The bytes first, then the sidecar: a reader of `to` in between falls
            // back to the size/mtime ETag (see `open_object_checked`).
            match fs::metadata(self.object_path(from)).await {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => return Err(StoreError::not_found(from)),
                Err(err) if is_missing(&err) => return Err(StoreError::not_found(from)),
                Err(err) => return Err(StoreError::Io { op: "rename object", source: err }),
            }
            self.rename_into_place(&self.object_path(from), &self.object_path(to)).await?;
            match fs::metadata(self.meta_path(from)).await {
                Ok(_) => self.rename_into_place(&self.meta_path(from), &self.meta_path(to)).await?,
                Err(_) => {
                    // No sidecar (written by hand): drop a stale one of `to`.
                    let _ = fs::remove_file(self.meta_path(to)).await;
                }
            }
            prune_empty_parents(&self.objects, from).await;
            prune_empty_parents(&self.meta, from).await;
            self.open_object(to).await.map(|(_, meta)| meta)
        })
        .await
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_get", key, async {
            validate_key(key)?;
            self.sign_url("GET", key, expires_in, SignedParams::default())
        })
        .await
    }

    #[tracing::instrument(name = "storage create multipart", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        observe(BACKEND, "create_multipart", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            let upload_id = uuid::Uuid::new_v4().simple().to_string();
            let dir = self.upload_dir(&upload_id)?;
            fs::create_dir_all(&dir).await.map_err(StoreError::io("create multipart upload"))?;
            let info = UploadInfo { key: key.to_owned(), content_type, created_at: Utc::now() };
            let json = serde_json::to_vec(&info)
                .map_err(|err| StoreError::Io { op: "create multipart upload", source: std::io::Error::other(err) })?;
            // Written then renamed, so `open_upload` never reads half a file.
            let mut temp = TempFile { path: self.temp_path(), keep: false };
            fs::write(&temp.path, json).await.map_err(StoreError::io("create multipart upload"))?;
            fs::rename(&temp.path, dir.join("upload.json")).await.map_err(StoreError::io("create multipart upload"))?;
            temp.keep = true;
            Ok(upload_id)
        })
        .await
    }

    #[tracing::instrument(name = "storage upload part", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        if body.len() as u64 > MAX_PART_SIZE {
            return Err(StoreError::TooLarge { limit: MAX_PART_SIZE });
        }
        self.upload_part_stream(key, upload_id, part_number, single_chunk(body), None).await
    }

    async fn presign_upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_upload_part", key, async {
            validate_key(key)?;
            validate_part_number(part_number)?;
            self.upload_dir(upload_id)?;
            let params = SignedParams {
                upload_id: Some(upload_id.to_owned()),
                part: Some(part_number),
                ..SignedParams::default()
            };
            self.sign_url("PUT", key, expires_in, params)
        })
        .await
    }

    #[tracing::instrument(name = "storage complete multipart", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<ObjectMeta, StoreError> {
        self.assemble(key, upload_id, parts, None).await
    }

    /// Each part's SHA-256 is computed as the object is assembled anyway: one that
    /// differs from the announced one stores nothing.
    #[tracing::instrument(name = "storage complete multipart", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn complete_checked_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        sha256s: &[String],
    ) -> Result<ObjectMeta, StoreError> {
        if sha256s.len() != parts.len() {
            return Err(StoreError::InvalidRequest("every part needs its SHA-256".into()));
        }
        self.assemble(key, upload_id, parts, Some(sha256s)).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        observe(BACKEND, "abort_multipart", key, async {
            validate_key(key)?;
            let (dir, _) = self.open_upload(key, upload_id).await?;
            if let Ok(mut hashes) = self.staged_hashes.lock() {
                hashes.remove(upload_id);
            }
            match fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(err) if is_missing(&err) => Err(StoreError::UploadNotFound),
                Err(err) => Err(StoreError::Io { op: "abort multipart upload", source: err }),
            }
        })
        .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<UploadedPart>, StoreError> {
        observe(BACKEND, "list_parts", key, async {
            validate_key(key)?;
            let (dir, _) = self.open_upload(key, upload_id).await?;
            let mut entries = fs::read_dir(&dir).await.map_err(StoreError::io("list parts"))?;
            let mut parts = Vec::new();
            while let Some(entry) = entries.next_entry().await.map_err(StoreError::io("list parts"))? {
                let name = entry.file_name();
                let Some(number) =
                    name.to_str().and_then(|n| n.strip_prefix("part-")).and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                // The ETag of a local part is the hex SHA-256 of its bytes.
                let mut file = match File::open(entry.path()).await {
                    Ok(file) => file,
                    Err(err) if is_missing(&err) => continue,
                    Err(err) => return Err(StoreError::Io { op: "list parts", source: err }),
                };
                let mut hash = Sha256::new();
                let mut size = 0u64;
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let n = file.read(&mut buf).await.map_err(StoreError::io("list parts"))?;
                    if n == 0 {
                        break;
                    }
                    hash.update(&buf[..n]);
                    size += n as u64;
                }
                parts.push(UploadedPart { number, etag: hex::encode(hash.finalize()), size });
            }
            parts.sort_by_key(|p| p.number);
            Ok(parts)
        })
        .await
    }

    fn supports_staged(&self) -> bool {
        true
    }

    #[tracing::instrument(name = "storage open staged", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn open_staged(&self, key: &str, upload_id: &str, offset: u64) -> Result<StagedWriter, StoreError> {
        observe(BACKEND, "open_staged", key, async {
            validate_key(key)?;
            let (dir, _) = self.open_upload(key, upload_id).await?;
            let path = dir.join(STAGING_FILE);
            let file = tokio::task::spawn_blocking(move || {
                let file = open_locked(&path)?;
                let len = file.metadata().map_err(StoreError::io("stat staging file"))?.len();
                if len < offset {
                    return Err(StoreError::Io {
                        op: "open staging file",
                        source: std::io::Error::new(
                            ErrorKind::UnexpectedEof,
                            format!("the staging file has {len} bytes, fewer than the recorded {offset}"),
                        ),
                    });
                }
                if len > offset {
                    // Written by a request that never recorded them: not acknowledged.
                    file.set_len(offset).map_err(StoreError::io("truncate staging file"))?;
                }
                Ok(file)
            })
            .await
            .map_err(|err| StoreError::Io { op: "open staging file", source: std::io::Error::other(err) })??;
            let mut file = File::from_std(file);
            file.seek(std::io::SeekFrom::Start(offset)).await.map_err(StoreError::io("seek staging file"))?;
            let hasher =
                if offset == 0 { Some(Sha256::new()) } else { cached_hash(&self.staged_hashes, upload_id, offset) };
            Ok(StagedWriter {
                writer: BufWriter::with_capacity(WRITE_BUFFER, file),
                upload_id: upload_id.to_owned(),
                offset,
                hasher,
                hashes: self.staged_hashes.clone(),
            })
        })
        .await
    }

    async fn staged_len(&self, key: &str, upload_id: &str) -> Result<Option<u64>, StoreError> {
        observe(BACKEND, "staged_len", key, async {
            validate_key(key)?;
            let dir = match self.open_upload(key, upload_id).await {
                Ok((dir, _)) => dir,
                Err(StoreError::UploadNotFound) => return Ok(None),
                Err(err) => return Err(err),
            };
            match fs::metadata(dir.join(STAGING_FILE)).await {
                Ok(meta) => Ok(Some(meta.len())),
                Err(err) if is_missing(&err) => Ok(None),
                Err(err) => Err(StoreError::Io { op: "stat staging file", source: err }),
            }
        })
        .await
    }

    #[tracing::instrument(name = "storage complete staged", skip_all, fields(otel.kind = "client", storage.backend = "local", storage.key = %key))]
    async fn complete_staged(&self, key: &str, upload_id: &str, size: u64) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "complete_staged", key, async {
            validate_key(key)?;
            let (dir, info) = self.open_upload(key, upload_id).await?;
            let path = dir.join(STAGING_FILE);
            let cached = cached_hash(&self.staged_hashes, upload_id, size).map(|h| hex::encode(h.finalize()));
            let (lock, sha256) = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    if !path.exists() {
                        return Err(StoreError::InvalidRequest("nothing has been uploaded yet".into()));
                    }
                    let mut file = open_locked(&path)?;
                    let len = file.metadata().map_err(StoreError::io("stat staging file"))?.len();
                    if len < size {
                        return Err(StoreError::InvalidRequest(format!(
                            "the upload is not finished: {len} of {size} bytes have arrived"
                        )));
                    }
                    if len > size {
                        file.set_len(size).map_err(StoreError::io("truncate staging file"))?;
                    }
                    file.sync_all().map_err(StoreError::io("sync staging file"))?;
                    let sha256 = match cached {
                        Some(sha256) => sha256,
                        None => hash_prefix(&mut file, size)?,
                    };
                    Ok((file, sha256))
                })
                .await
                .map_err(|err| StoreError::Io { op: "complete staged upload", source: std::io::Error::other(err) })??
            };
            // Renamed with its lock held: no writer can slip in between.
            let written = Written { temp: TempFile { path, keep: true }, size, sha256 };
            let meta = self.commit(key, written, info.content_type).await?;
            drop(lock);
            if let Ok(mut hashes) = self.staged_hashes.lock() {
                hashes.remove(upload_id);
            }
            if let Err(err) = fs::remove_dir_all(&dir).await {
                tracing::warn!(error = %err, "could not remove a completed multipart upload; sweep_stale will");
            }
            Ok(meta)
        })
        .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        observe(BACKEND, "check", "", async {
            let probe = TempFile { path: self.temp_path(), keep: false };
            fs::write(&probe.path, b"ok").await.map_err(StoreError::io("write readiness probe"))?;
            fs::remove_file(&probe.path).await.map_err(StoreError::io("remove readiness probe"))?;
            Ok(())
        })
        .await
    }
}

/// A bound URL carries at least one byte and at most what one request may.
fn check_bound_length(length: u64, max: u64) -> Result<(), StoreError> {
    if length == 0 || length > max {
        return Err(StoreError::InvalidRequest(format!("a bound upload URL carries between 1 and {max} bytes")));
    }
    Ok(())
}

/// A session-bound body must be exactly as long as signed.
fn check_exact(size: u64, length: u64) -> Result<(), StoreError> {
    if size != length {
        return Err(StoreError::InvalidRequest(format!(
            "the body has {size} bytes but this URL accepts exactly {length}; nothing was stored"
        )));
    }
    Ok(())
}

fn single_chunk(bytes: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(bytes) }).boxed()
}

/// Stream `len` bytes from the file's current position in bounded chunks.
fn read_stream(file: File, len: u64) -> ByteStream {
    futures::stream::try_unfold((file.take(len), len), |(mut reader, remaining)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        let mut buf = BytesMut::with_capacity(READ_CHUNK.min(usize::try_from(remaining).unwrap_or(READ_CHUNK)));
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            // The open file cannot shrink under us unless someone truncates it in place.
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "object ended early"));
        }
        Ok(Some((buf.freeze(), (reader, remaining - n as u64))))
    })
    .boxed()
}

fn part_file_name(part_number: i32) -> String {
    format!("part-{part_number:05}")
}

fn mtime_ns(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn is_missing(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory)
}

/// A content type must be a plain header value (it is signed and echoed back).
pub(crate) fn validated_content_type(content_type: &str) -> Result<String, StoreError> {
    let ok = !content_type.is_empty()
        && content_type.len() <= 255
        && content_type.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !ok {
        return Err(StoreError::InvalidRequest("invalid content type".into()));
    }
    Ok(content_type.to_owned())
}

/// Remove the now-empty directories between `key` and `base`, deepest first. A
/// directory that is not empty (or is being filled concurrently) stops the walk.
async fn prune_empty_parents(base: &Path, key: &str) {
    let mut dir = key;
    while let Some((parent, _)) = dir.rsplit_once('/') {
        if fs::remove_dir(base.join(parent)).await.is_err() {
            break;
        }
        dir = parent;
    }
}
