//! The runner's traffic with object storage: stream a source down to scratch, stream
//! outputs up, each call bounded in time and checked against cancellation.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::runner::JobError;
use crate::media::CancelFlag;
use crate::storage::{ByteStream, ObjectStore, StoreError};

/// Longest wait for the next chunk of a download before the attempt is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one upload may take (segments and playlists are small; the MP4 is the big one).
const PUT_TIMEOUT: Duration = Duration::from_secs(1800);
const READ_CHUNK: usize = 256 * 1024;
/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// One file to upload.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub path: PathBuf,
    pub key: String,
    pub content_type: &'static str,
}

/// Content type of an output file, by extension.
pub(crate) fn content_type_for(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("vtt") => "text/vtt",
        _ => "application/octet-stream",
    }
}

pub(crate) fn storage_error(what: &str, err: &StoreError) -> JobError {
    tracing::warn!(error = ?err, "{what}");
    if err.is_storage_full() {
        // Retried with backoff like an outage (space may come back); when the
        // attempts run out the job is DEAD with this code in its error. The
        // half-written output was never published (`put` renames a complete file).
        return JobError::Retryable(format!("{what}: storage is full ({STORAGE_FULL})"));
    }
    JobError::Retryable(format!("{what}: storage is unavailable"))
}

/// The code a job's error carries when local storage was full.
pub(crate) const STORAGE_FULL: &str = "STORAGE_FULL";

fn check_cancel(cancel: &CancelFlag) -> Result<(), JobError> {
    if cancel.load(Ordering::Relaxed) {
        Err(JobError::Cancelled)
    } else {
        Ok(())
    }
}

/// Stream object `key` into `dest` (bounded memory: one chunk at a time). Returns the size.
pub(crate) async fn download_to_file(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    dest: &Path,
    cancel: &CancelFlag,
    expected_size: Option<u64>,
) -> Result<u64, JobError> {
    let got = match tokio::time::timeout(IDLE_TIMEOUT, store.get(key, None)).await {
        Err(_) => return Err(JobError::Retryable("downloading the source timed out".into())),
        Ok(Err(StoreError::NotFound { .. })) => {
            return Err(JobError::Permanent {
                code: crate::jobs::FailureCode::SourceMissing,
                reason: "the uploaded file is missing from storage".into(),
            })
        }
        Ok(Err(err)) => return Err(storage_error("downloading the source failed", &err)),
        Ok(Ok(got)) => got,
    };
    // The source was checked (size, type, probe) when its upload completed; bytes
    // that differ now were written behind that check and are not processed.
    let changed = || JobError::Permanent {
        code: crate::jobs::FailureCode::SourceChanged,
        reason: "the stored file changed after its upload was checked; upload it again".into(),
    };
    if expected_size.is_some_and(|size| size != got.meta.size) {
        return Err(changed());
    }
    let local_error = |err: std::io::Error| {
        tracing::warn!(error = %err, path = %dest.display(), "writing the source to scratch failed");
        JobError::Retryable("the worker could not store the source locally".into())
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(local_error)?;
    let mut body = got.body;
    let mut written = 0u64;
    loop {
        check_cancel(cancel)?;
        let next = tokio::time::timeout(IDLE_TIMEOUT, body.next())
            .await
            .map_err(|_| JobError::Retryable("downloading the source stalled".into()))?;
        match next {
            None => break,
            Some(Ok(chunk)) => {
                written += chunk.len() as u64;
                if expected_size.is_some_and(|size| written > size) {
                    return Err(changed());
                }
                file.write_all(&chunk).await.map_err(local_error)?;
            }
            Some(Err(err)) => return Err(storage_error("downloading the source failed", &StoreError::Body(err))),
        }
    }
    file.flush().await.map_err(local_error)?;
    Ok(written)
}

/// A file as a stream of chunks (the whole file is never in memory).
pub(crate) fn file_stream(file: tokio::fs::File) -> ByteStream {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some((buf.freeze(), file)))
    })
    .boxed()
}

async fn upload_one(store: &Arc<dyn ObjectStore>, upload: &Upload, cancel: &CancelFlag) -> Result<u64, JobError> {
    check_cancel(cancel)?;
    let file = tokio::fs::File::open(&upload.path).await.map_err(|err| {
        tracing::warn!(error = %err, path = %upload.path.display(), "an output file is missing");
        JobError::Retryable("an output file went missing before upload".into())
    })?;
    let put = store.put(&upload.key, file_stream(file), Some(upload.content_type));
    match tokio::time::timeout(PUT_TIMEOUT, put).await {
        Err(_) => Err(JobError::Retryable("uploading the outputs timed out".into())),
        Ok(Err(err)) => Err(storage_error("uploading the outputs failed", &err)),
        Ok(Ok(meta)) => Ok(meta.size),
    }
}

/// Upload `uploads`, a few at a time; `on_done` runs after each one.
pub(crate) async fn upload_all(
    store: &Arc<dyn ObjectStore>,
    uploads: &[Upload],
    cancel: &CancelFlag,
    on_done: &mut (dyn FnMut() + Send),
) -> Result<u64, JobError> {
    let mut results = futures::stream::iter(uploads.iter().map(|u| upload_one(store, u, cancel)))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .into_stream();
    let mut bytes = 0;
    while let Some(size) = results.try_next().await? {
        bytes += size;
        on_done();
    }
    Ok(bytes)
}

/// Upload small text (a rewritten playlist).
pub(crate) async fn upload_text(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    text: String,
    content_type: &str,
) -> Result<(), JobError> {
    match tokio::time::timeout(PUT_TIMEOUT, store.put_bytes(key, text.into(), Some(content_type))).await {
        Err(_) => Err(JobError::Retryable("uploading the outputs timed out".into())),
        Ok(Err(err)) => Err(storage_error("uploading the outputs failed", &err)),
        Ok(Ok(_)) => Ok(()),
    }
}
