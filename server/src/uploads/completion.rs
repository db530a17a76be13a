//! Completion: claim the session, assemble the object, verify it, probe it, and
//! either accept it (video PROCESSING + one TRANSCODE job, one transaction) or
//! reject it (video FAILED with a readable reason, bytes deleted).
//!
//! The claim is a conditional `UPDATE ... SET status = COMPLETING WHERE status =
//! OPEN`, so concurrent calls cannot both process; calling again after success
//! returns the same video (and there is still one job).

use std::io::{Read as _, Write as _};

use chrono::Utc;
use entities::{upload, video, JobKind, UploadMethod, UploadStatus};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::abort::cleanup_storage;
use super::{tail_key, TusState};
use crate::error::{local_write_failed, AppError, AppResult, ErrorCode};
use crate::events::{EventDetail, EventKind};
use crate::jail::MediaJail;
use crate::jobs::{self, NewJob};
use crate::media::{MediaError, MediaInfo};
use crate::repo;
use crate::storage::{CompletedPart, StoreError};
use crate::uploads::UploadDeps;

/// Bytes kept from the start of the file for the magic-number check.
const SNIFF_LEN: usize = 512;

/// Why completion stopped.
enum Failure {
    /// Not the file's fault (or not finished yet): the session goes back to OPEN.
    Reopen(AppError),
    /// The file is refused for good.
    Reject(ErrorCode, String),
}

impl From<AppError> for Failure {
    fn from(err: AppError) -> Self {
        Failure::Reopen(err)
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Reopen(err.into())
    }
}

/// Complete session `id` (the caller has checked access). Idempotent.
#[tracing::instrument(name = "upload complete", skip_all, fields(upload.id = %id))]
pub async fn complete(state: &dyn UploadDeps, id: Uuid) -> AppResult<video::Model> {
    // A partial tus upload waits for its final upload; one with a deferred length
    // waits for the length. Neither is a video's source by itself.
    if let Some(row) = repo::uploads::find(state.db(), id).await? {
        if row.status == UploadStatus::Open {
            if let Some(tus) = TusState::from_row(&row) {
                if tus.is_partial() {
                    return Err(AppError::new(
                        ErrorCode::Conflict,
                        "a partial upload is completed by a final upload that concatenates it (`Upload-Concat: final;…`)",
                    ));
                }
                if tus.deferred {
                    return Err(AppError::new(
                        ErrorCode::Conflict,
                        "the upload's length is not known yet: send `Upload-Length` with a PATCH",
                    ));
                }
            }
        }
    }
    let claimed =
        repo::uploads::set_status(state.db(), &[id], UploadStatus::Open, UploadStatus::Completing, Utc::now()).await?;
    let row = repo::uploads::find(state.db(), id).await?.ok_or_else(|| AppError::not_found("upload"))?;
    if claimed == 0 {
        return match row.status {
            UploadStatus::Completed => load_video(state, row.video_id).await,
            UploadStatus::Completing => {
                Err(AppError::new(ErrorCode::Conflict, "the upload is already being completed"))
            }
            UploadStatus::Failed => Err(AppError::new(
                ErrorCode::UnsupportedMedia,
                row.failure_reason.unwrap_or_else(|| "the file was refused".into()),
            )),
            UploadStatus::Aborted => Err(AppError::new(ErrorCode::Conflict, "the upload was aborted")),
            UploadStatus::Expired => Err(AppError::new(ErrorCode::Conflict, "the upload session expired")),
            UploadStatus::Open => Err(AppError::new(ErrorCode::Conflict, "the upload changed, try again")),
        };
    }
    // A video deleted while its bytes were arriving gets no job: the session ends.
    let video = load_video(state, row.video_id).await?;
    if video.deleted_at.is_some() {
        super::abort::finish_claimed(state, &row, UploadStatus::Aborted, "the video was deleted").await?;
        return Err(AppError::not_found("video"));
    }
    // A presigned PUT's bytes move from the upload's staging key into place before
    // anything reads them: from here on no URL can change what is verified.
    let row = match move_staging(state, row, &video).await {
        Ok(row) => row,
        Err(err) => {
            reopen(state, id).await;
            return Err(err);
        }
    };
    let started = std::time::Instant::now();
    let result = match verify(state, &row).await {
        Ok(info) => accept(state, &row, &info).await.map_err(Failure::Reopen),
        Err(failure) => Err(failure),
    };
    metrics::histogram!("reelhouse_upload_completion_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(video) => {
            metrics::counter!("reelhouse_uploads_completed_total", "outcome" => "accepted").increment(1);
            Ok(video)
        }
        Err(Failure::Reopen(err)) => {
            reopen(state, id).await;
            Err(err)
        }
        Err(Failure::Reject(code, reason)) => {
            metrics::counter!("reelhouse_uploads_completed_total", "outcome" => "rejected").increment(1);
            reject(state, &row, &reason).await?;
            Err(AppError::new(code, reason))
        }
    }
}

/// PRESIGNED sessions: rename the staging object to the video's source key and
/// record that in the row (still COMPLETING). Afterwards the row's `object_key` is
/// the source, so a retried completion (after a transient failure) finds the bytes
/// there, and the staging URL is refused for good (its key no longer matches).
async fn move_staging(
    state: &dyn UploadDeps,
    mut row: upload::Model,
    video: &video::Model,
) -> AppResult<upload::Model> {
    let source = crate::storage::layout::source(video.owner_id, video.id);
    if row.method != UploadMethod::Presigned || row.object_key == source || row.s3_upload_id.is_some() {
        return Ok(row);
    }
    match state.store().rename(&row.object_key, &source).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => return Err(AppError::bad_input("nothing has been uploaded yet")),
        Err(err) => return Err(err.into()),
    }
    if !repo::uploads::set_object_key(state.db(), row.id, &source, Utc::now()).await? {
        return Err(AppError::new(ErrorCode::Conflict, "the upload changed while it was being completed"));
    }
    row.object_key = source;
    Ok(row)
}

async fn load_video(state: &dyn UploadDeps, id: Uuid) -> AppResult<video::Model> {
    repo::videos::find(state.db(), id).await?.ok_or_else(|| AppError::not_found("video"))
}

async fn reopen(state: &dyn UploadDeps, id: Uuid) {
    let result =
        repo::uploads::set_status(state.db(), &[id], UploadStatus::Completing, UploadStatus::Open, Utc::now()).await;
    if let Err(err) = result {
        tracing::error!(upload = %id, error = ?err, "could not reopen an upload after a failed completion");
    }
}

/// Assemble, check size/checksum/magic, probe. Returns what the probe found.
async fn verify(state: &dyn UploadDeps, row: &upload::Model) -> Result<MediaInfo, Failure> {
    let declared = u64::try_from(row.declared_size).unwrap_or(0);
    assemble(state, row, declared).await?;
    let meta = match state.store().head(&row.object_key).await {
        Ok(meta) => meta,
        Err(StoreError::NotFound { .. }) => {
            return Err(Failure::Reopen(AppError::bad_input("nothing has been uploaded yet")));
        }
        Err(err) => return Err(err.into()),
    };
    if meta.size != declared {
        return Err(Failure::Reject(
            ErrorCode::BadUserInput,
            format!("the uploaded file has {} bytes, not the declared {declared}", meta.size),
        ));
    }
    // On local disk the object is already a file: read it in place. Otherwise
    // download a copy (removed on drop, on every path), hashing on the way.
    let source = match state.store().local_file(&row.object_key).await? {
        Some(local) if local.size == declared => in_place(local).await?,
        _ => download(state, row, declared).await?,
    };
    if let Some(expected) = &row.checksum_sha256 {
        let actual = match &source.sha256 {
            Some(sha256) => sha256.clone(),
            None => hash_file(source.path()).await?,
        };
        if actual != *expected {
            return Err(Failure::Reject(
                ErrorCode::BadUserInput,
                "the file's SHA-256 does not match the declared checksum".into(),
            ));
        }
    }
    if sniff(&source.head).is_none() {
        return Err(Failure::Reject(
            ErrorCode::UnsupportedMedia,
            "the file is not a video container this server reads (MP4, QuickTime, Matroska/WebM, AVI, MPEG-TS/PS, Ogg)"
                .into(),
        ));
    }
    let timeout = state.settings().media.probe_timeout();
    let limits = state.settings().media.limits();
    // Decoding a stranger's bytes happens in a jailed child, never in this process.
    let probed = MediaJail::from_settings(state.settings()).probe(source.path(), timeout, limits).await;
    drop(source);
    match probed {
        Ok(info) => Ok(info),
        Err(err @ MediaError::Timeout(_)) => {
            tracing::info!(upload = %row.id, error = %err, "probe timed out");
            Err(Failure::Reject(ErrorCode::UnsupportedMedia, "the file could not be analysed in time".into()))
        }
        Err(err) if err.is_client_error() => Err(Failure::Reject(ErrorCode::UnsupportedMedia, reason_of(&err))),
        Err(err) => Err(Failure::Reopen(AppError::internal(err))),
    }
}

/// The uploaded bytes as a file to check and probe.
struct Source {
    file: SourceFile,
    /// The first [`SNIFF_LEN`] bytes (fewer if the file is shorter).
    head: Vec<u8>,
    /// Hex SHA-256 of the content, when known without reading it again.
    sha256: Option<String>,
}

enum SourceFile {
    /// A downloaded copy, removed when dropped.
    Temp(tempfile::TempPath),
    /// The stored object itself (local disk), only read.
    InPlace(std::path::PathBuf),
}

impl Source {
    fn path(&self) -> &std::path::Path {
        match &self.file {
            SourceFile::Temp(path) => path,
            SourceFile::InPlace(path) => path,
        }
    }
}

fn storage_read_failed(err: impl Into<anyhow::Error>) -> Failure {
    Failure::Reopen(AppError::unavailable("object storage", err))
}

/// The stored object's own file: no copy. The store recorded its SHA-256 when it
/// wrote it (a missing record means hashing it later, only if a checksum was declared).
async fn in_place(local: crate::storage::LocalFile) -> Result<Source, Failure> {
    let path = local.path;
    let head = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut head = Vec::with_capacity(SNIFF_LEN);
            std::fs::File::open(&path)?.take(SNIFF_LEN as u64).read_to_end(&mut head)?;
            Ok::<_, std::io::Error>(head)
        })
        .await
        .map_err(AppError::internal)?
        .map_err(storage_read_failed)?
    };
    Ok(Source { file: SourceFile::InPlace(path), head, sha256: local.sha256 })
}

/// Download the object to a temp file, hashing it and keeping its first bytes.
async fn download(state: &dyn UploadDeps, row: &upload::Model, declared: u64) -> Result<Source, Failure> {
    let temp = tempfile::Builder::new().prefix("reelhouse-upload-").tempfile().map_err(local_write_failed)?;
    let (mut file, path) = temp.into_parts();
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut written = 0u64;
    let mut body = state.store().get(&row.object_key, None).await?.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(storage_read_failed)?;
        if head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        written += chunk.len() as u64;
        let chunk_for_write = chunk.clone();
        file = tokio::task::spawn_blocking(move || file.write_all(&chunk_for_write).map(|()| file))
            .await
            .map_err(AppError::internal)?
            .map_err(local_write_failed)?;
    }
    file.flush().map_err(local_write_failed)?;
    drop(file);
    if written != declared {
        return Err(storage_read_failed(anyhow::anyhow!("read {written} bytes of {declared}")));
    }
    Ok(Source { file: SourceFile::Temp(path), head, sha256: Some(hex::encode(hasher.finalize())) })
}

/// Hex SHA-256 of a local file.
async fn hash_file(path: &std::path::Path) -> Result<String, Failure> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        std::io::copy(&mut std::fs::File::open(&path)?, &mut hasher)?;
        Ok::<_, std::io::Error>(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(AppError::internal)?
    .map_err(storage_read_failed)
}

fn reason_of(err: &MediaError) -> String {
    match err {
        MediaError::Rejected { reason } => reason.clone(),
        MediaError::Unreadable { .. } | MediaError::Pipeline { .. } => "the file is not readable video".into(),
        MediaError::Truncated { .. } => "the file is truncated or corrupt".into(),
        MediaError::EmptyFile => "the file is empty".into(),
        other => other.to_string(),
    }
}

/// Turn the session's bytes into the object at `object_key`.
async fn assemble(state: &dyn UploadDeps, row: &upload::Model, declared: u64) -> Result<(), Failure> {
    let store = state.store().as_ref();
    let Some(upload_id) = row.s3_upload_id.as_deref() else {
        return Ok(()); // PRESIGNED: the object is already there (or not: checked next).
    };
    let parts: Vec<CompletedPart> = if let Some(tus) = TusState::from_row(row) {
        if u64::try_from(row.offset_bytes).unwrap_or(0) != declared {
            return Err(Failure::Reopen(AppError::bad_input(format!(
                "the upload is not finished: {} of {declared} bytes have arrived",
                row.offset_bytes
            ))));
        }
        if tus.staged {
            return match store.complete_staged(&row.object_key, upload_id, declared).await {
                Ok(_) => Ok(()),
                Err(StoreError::UploadNotFound) => already_assembled(state, row, declared).await,
                Err(StoreError::InvalidRequest(reason)) => Err(Failure::Reopen(AppError::bad_input(reason))),
                Err(err) => Err(err.into()),
            };
        }
        tus.parts.into_iter().map(|p| CompletedPart { number: p.number, etag: p.etag }).collect()
    } else if row.method == UploadMethod::Presigned {
        return Ok(());
    } else {
        let listed = match store.list_parts(&row.object_key, upload_id).await {
            Ok(listed) => listed,
            Err(StoreError::UploadNotFound) => return already_assembled(state, row, declared).await,
            Err(err) => return Err(err.into()),
        };
        let arrived: u64 = listed.iter().map(|p| p.size).sum();
        if listed.is_empty() || arrived != declared {
            return Err(Failure::Reopen(AppError::bad_input(format!(
                "the upload is not finished: {arrived} of {declared} bytes have arrived"
            ))));
        }
        listed.into_iter().map(|p| CompletedPart { number: p.number, etag: p.etag }).collect()
    };
    match store.complete_multipart(&row.object_key, upload_id, parts).await {
        Ok(_) => {}
        Err(StoreError::UploadNotFound) => return already_assembled(state, row, declared).await,
        Err(StoreError::InvalidRequest(reason)) => return Err(Failure::Reject(ErrorCode::BadUserInput, reason)),
        Err(err) => return Err(err.into()),
    }
    if let Err(err) = store.delete(&tail_key(&row.object_key)).await {
        tracing::warn!(upload = %row.id, error = %err, "could not delete a tus tail");
    }
    Ok(())
}

/// A multipart upload that is gone was completed by an earlier attempt whose
/// database update did not happen; the object tells.
async fn already_assembled(state: &dyn UploadDeps, row: &upload::Model, declared: u64) -> Result<(), Failure> {
    match state.store().head(&row.object_key).await {
        Ok(meta) if meta.size == declared => Ok(()),
        Ok(_) | Err(StoreError::NotFound { .. }) => {
            Err(Failure::Reject(ErrorCode::BadUserInput, "the uploaded parts are missing".into()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Which container the first bytes announce, if any we accept.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        return Some("mp4"); // MP4, QuickTime, 3GP
    }
    if [&b"moov"[..], b"mdat", b"wide", b"free", b"skip", b"pnot"].iter().any(|m| at(4, m)) {
        return Some("quicktime");
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("matroska");
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return Some("avi");
    }
    if at(0, b"OggS") {
        return Some("ogg");
    }
    if at(0, &[0x00, 0x00, 0x01, 0xBA]) {
        return Some("mpeg-ps");
    }
    // MPEG-TS: sync bytes every 188 bytes (or 192 for M2TS with a 4-byte prefix).
    if head.len() >= 377 && head[0] == 0x47 && head[188] == 0x47 && head[376] == 0x47 {
        return Some("mpeg-ts");
    }
    if head.len() >= 389 && head[4] == 0x47 && head[196] == 0x47 && head[388] == 0x47 {
        return Some("m2ts");
    }
    None
}

/// One transaction: video PROCESSING with the probe's facts, upload COMPLETED,
/// UPLOADED + PROCESSING events, one TRANSCODE job. Published after commit.
async fn accept(state: &dyn UploadDeps, row: &upload::Model, info: &MediaInfo) -> AppResult<video::Model> {
    let now = Utc::now();
    let txn = crate::db::begin_write(state.db()).await?;
    let current = repo::videos::find(&txn, row.video_id).await?.ok_or_else(|| AppError::not_found("video"))?;
    let source = repo::videos::AcceptedSource { info, source_key: &row.object_key, source_size: row.declared_size };
    let video = repo::videos::accept_source(&txn, current, source, now).await?;
    if !repo::uploads::complete(&txn, row.id, row.declared_size, now).await? {
        return Err(AppError::new(ErrorCode::Conflict, "the upload changed while it was being completed"));
    }
    let job = jobs::enqueue(
        &txn,
        NewJob {
            kind: JobKind::Transcode,
            video_id: Some(video.id),
            owner_id: Some(video.owner_id),
            priority: jobs::DEFAULT_PRIORITY,
            payload: jobs::transcode_payload("MEDIUM", &state.settings().media.default_formats),
            max_attempts: state.settings().jobs.max_attempts,
        },
    )
    .await?;
    let uploaded = crate::repo::outbox::record(&txn, &video, EventKind::Uploaded, EventDetail::default()).await?;
    let processing = crate::repo::outbox::record(
        &txn,
        &video,
        EventKind::Processing,
        EventDetail { job_id: Some(job.id), ..Default::default() },
    )
    .await?;
    txn.commit().await?;
    state.publisher().publish_all([uploaded, processing]);
    tracing::info!(upload = %row.id, video = %video.id, job = %job.id, "upload accepted");
    Ok(video)
}

/// Upload FAILED, video FAILED with `reason`, bytes deleted, FAILED event.
async fn reject(state: &dyn UploadDeps, row: &upload::Model, reason: &str) -> AppResult<()> {
    tracing::info!(upload = %row.id, reason, "upload rejected");
    cleanup_storage(state.store().as_ref(), row, true).await;
    let now = Utc::now();
    let txn = crate::db::begin_write(state.db()).await?;
    repo::uploads::fail(&txn, row.id, reason, now).await?;
    let Some(current) = repo::videos::find(&txn, row.video_id).await? else {
        txn.commit().await?;
        return Ok(());
    };
    let video = repo::videos::mark_failed(&txn, current, reason, now).await?;
    let failed = crate::repo::outbox::record(
        &txn,
        &video,
        EventKind::Failed,
        EventDetail { error: Some(reason.into()), ..Default::default() },
    )
    .await?;
    txn.commit().await?;
    state.publisher().publish(failed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn magic_numbers() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        assert_eq!(sniff(&mp4), Some("mp4"));
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1]), Some("matroska"));
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Some("avi"));
        assert_eq!(sniff(b"OggS\0"), Some("ogg"));
        assert_eq!(sniff(&[0, 0, 1, 0xBA, 0x44]), Some("mpeg-ps"));
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert_eq!(sniff(&ts), Some("mpeg-ts"));
        assert_eq!(sniff(b"PK\x03\x04zipfile"), None);
        assert_eq!(sniff(b"%PDF-1.7"), None);
        assert_eq!(sniff(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]), None);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), None);
        assert_eq!(sniff(&[]), None);
    }
}
