//! How tus bytes reach storage with bounded memory and durable state, on any
//! backend and across restarts or replicas.
//!
//! A session writes into a storage multipart upload. Bytes stream into a buffer of
//! one part; each full part is uploaded and recorded in the row (`parts`,
//! `offset_bytes`) before the next one starts. What is left below one part when a
//! request ends is written to a staging object (`{source}.tus-tail`), then the
//! offset is recorded. Because every recorded part is exactly `part_size` bytes,
//! the first `offset - parts * part_size` bytes of the tail are the valid ones, so
//! a crash between writing the tail and recording the offset loses nothing that
//! was acknowledged. Each row update is conditional on the offset it started
//! from, so two writers (two replicas) can never both advance a session.
//!
//! On local disk (`uploads.tus_local_staging`, [`TusState::staged`]) there are no
//! parts and no tail: bytes are written straight into the multipart upload's one
//! staging file at the recorded offset ([`crate::storage::StagedWriter`]), synced
//! and recorded every `part_size` bytes and at the end of each request, and the
//! last PATCH renames the file into place. A checksummed (or unknown-length) body
//! is written there too, verified, and cut off again when refused: nothing is
//! spooled, every byte is written once. No part buffer is held in memory, so the
//! buffer budget is not charged.

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use entities::upload;
use futures::{Stream, StreamExt};

use super::{part_size_for, tail_key, StoredPart, TusState};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::storage::{layout, ByteRange};
use crate::uploads::UploadDeps;

/// Make sure the session has a multipart upload and tus state; returns both and
/// the key the multipart upload assembles into.
///
/// A PRESIGNED session a client writes with tus instead switches to a multipart
/// upload of the source key (only the server writes it, like any tus upload): its
/// presigned URL, bound to the staging key, stops working from then on.
pub async fn ensure_multipart(state: &dyn UploadDeps, row: &upload::Model) -> AppResult<(String, TusState, String)> {
    if let (Some(upload_id), Some(tus)) = (&row.s3_upload_id, TusState::from_row(row)) {
        return Ok((upload_id.clone(), tus, row.object_key.clone()));
    }
    let size = u64::try_from(row.declared_size).unwrap_or(0);
    let tus = TusState {
        part_size: part_size_for(&state.settings().uploads, size),
        staged: super::stages_tus(state),
        ..TusState::default()
    };
    let object_key = if row.s3_upload_id.is_none() {
        let video =
            crate::repo::videos::find(state.db(), row.video_id).await?.ok_or_else(|| AppError::not_found("upload"))?;
        layout::source(video.owner_id, video.id)
    } else {
        row.object_key.clone()
    };
    let (upload_id, created) = match &row.s3_upload_id {
        Some(id) => (id.clone(), false),
        None => (state.store().create_multipart(&object_key, Some(&row.content_type)).await?, true),
    };
    let recorded = crate::repo::uploads::set_multipart(
        state.db(),
        row.id,
        row.s3_upload_id.as_deref(),
        &upload_id,
        &object_key,
        tus.to_json(),
        Utc::now(),
    )
    .await?;
    if !recorded {
        if created {
            let _ = state.store().abort_multipart(&object_key, &upload_id).await;
        }
        return Err(AppError::new(ErrorCode::Conflict, "the upload changed, check its offset and try again"));
    }
    Ok((upload_id, tus, object_key))
}

/// Record a new durable offset (and parts), only if nobody moved it meanwhile.
async fn persist(state: &dyn UploadDeps, row: &upload::Model, from: u64, to: u64, tus: &TusState) -> AppResult<()> {
    let (from, to) = (i64::try_from(from).unwrap_or(i64::MAX), i64::try_from(to).unwrap_or(i64::MAX));
    let advanced = crate::repo::uploads::advance(state.db(), row.id, from, to, tus.to_json(), Utc::now()).await?;
    if !advanced {
        return Err(AppError::new(ErrorCode::Conflict, "the upload changed while this request was writing"));
    }
    Ok(())
}

/// The result of one append.
#[derive(Debug)]
pub struct Appended {
    /// The durable offset after the request.
    pub offset: u64,
    /// The body failed part-way (the client went away); what arrived before the
    /// failure is kept.
    pub body_error: Option<AppError>,
}

/// Append `body` at the row's offset. The caller has checked that the body fits
/// (`offset + len <= declared`); bytes past the declared size are refused with
/// PAYLOAD_TOO_LARGE (what came before them is kept, as when a client drops).
pub async fn append<S>(state: &dyn UploadDeps, row: &upload::Model, mut body: S) -> AppResult<Appended>
where
    S: Stream<Item = Result<Bytes, AppError>> + Unpin,
{
    let declared = u64::try_from(row.declared_size).unwrap_or(0);
    let (upload_id, mut tus, key) = ensure_multipart(state, row).await?;
    if tus.staged {
        return append_staged(state, row, &upload_id, &key, &tus, body).await;
    }
    let part_size = tus.part_size;
    let store = state.store().as_ref();
    let key = key.as_str();
    let mut durable = u64::try_from(row.offset_bytes).unwrap_or(0);
    let mut offset = durable;
    // Every byte is in and stored as parts, the last one short: a partial upload
    // (concatenation) waiting for its final upload, or a full one whose completion
    // is still to come. Nothing is in the tail and nothing more fits (a PATCH of no
    // bytes at the end met this as "inconsistent", HTTP 500: found by the fuzzer).
    let in_parts =
        durable == declared && durable <= tus.full_bytes() && tus.full_bytes().saturating_sub(part_size) < durable;
    let tail_len = if in_parts {
        0
    } else {
        durable.checked_sub(tus.full_bytes()).filter(|len| *len < part_size).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!("upload {} has an inconsistent offset and parts", row.id))
        })?
    };
    // Full, unless the length was named after the last bytes arrived (deferred
    // length): then the tail still has to become the last part, below.
    if durable >= declared && tail_len == 0 {
        return Ok(Appended { offset: durable, body_error: None });
    }
    // Buffer memory is reserved as bytes arrive (never by the declared length), so a
    // slow body holds only what it sent; the tail is reserved before a byte is read.
    let mut reservation = state.tus_buffers().reservation(row.user_id);
    reservation.ensure(tail_len).await?;
    let mut buffer = BytesMut::new();
    if tail_len > 0 {
        let tail = store.get(&tail_key(key), Some(ByteRange::FromTo(0, tail_len - 1))).await?;
        let mut stream = tail.body;
        while let Some(chunk) = stream.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| AppError::unavailable("object storage", e))?);
        }
        if buffer.len() as u64 != tail_len {
            return Err(AppError::internal(anyhow::anyhow!("the tus tail of upload {} is short", row.id)));
        }
    }

    let mut body_error = None;
    'body: while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                body_error = Some(err);
                break;
            }
        };
        while !chunk.is_empty() {
            if offset >= declared {
                body_error = Some(AppError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the body goes past the declared length of {declared} bytes"),
                ));
                break 'body;
            }
            let room = (part_size - buffer.len() as u64).min(declared - offset);
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
            if let Err(err) = reservation.ensure(buffer.len() as u64 + take as u64).await {
                // No memory for more: keep what arrived, refuse the rest.
                body_error = Some(err);
                break 'body;
            }
            buffer.extend_from_slice(&chunk.split_to(take));
            offset += take as u64;
            if buffer.len() as u64 == part_size || offset == declared {
                let number = i32::try_from(tus.parts.len() + 1).map_err(AppError::internal)?;
                let etag = store.upload_part(key, &upload_id, number, buffer.split().freeze()).await?;
                tus.parts.push(StoredPart { number, etag });
                reservation.shrink_to(0);
                persist(state, row, durable, offset, &tus).await?;
                durable = offset;
            }
        }
    }
    if offset == declared && !buffer.is_empty() {
        // Every byte is in (the length came with a PATCH after the bytes): the tail
        // is the last part.
        let number = i32::try_from(tus.parts.len() + 1).map_err(AppError::internal)?;
        let etag = store.upload_part(key, &upload_id, number, buffer.split().freeze()).await?;
        tus.parts.push(StoredPart { number, etag });
        persist(state, row, durable, offset, &tus).await?;
        durable = offset;
    } else if offset > durable && !buffer.is_empty() {
        // Below one part: keep it in the staging tail, then record the offset.
        store.put_bytes(&tail_key(key), buffer.freeze(), None).await?;
        persist(state, row, durable, offset, &tus).await?;
        durable = offset;
    }
    Ok(Appended { offset: durable, body_error })
}

fn past_declared(declared: u64) -> AppError {
    AppError::new(ErrorCode::PayloadTooLarge, format!("the body goes past the declared length of {declared} bytes"))
}

/// [`append`] into the staging file: synced and recorded every part and at the end.
async fn append_staged<S>(
    state: &dyn UploadDeps,
    row: &upload::Model,
    upload_id: &str,
    key: &str,
    tus: &TusState,
    mut body: S,
) -> AppResult<Appended>
where
    S: Stream<Item = Result<Bytes, AppError>> + Unpin,
{
    let declared = u64::try_from(row.declared_size).unwrap_or(0);
    let mut durable = u64::try_from(row.offset_bytes).unwrap_or(0);
    if durable >= declared {
        return Ok(Appended { offset: durable, body_error: None });
    }
    let mut writer = state.store().open_staged(key, upload_id, durable).await?;
    let sync_every = tus.part_size.max(1);
    let mut body_error = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                body_error = Some(err);
                break;
            }
        };
        let mut chunk = &chunk[..];
        while !chunk.is_empty() {
            if writer.offset() >= declared {
                body_error = Some(past_declared(declared));
                break;
            }
            // Synced and recorded at every multiple of the part size, as parts were.
            let boundary = (writer.offset() / sync_every + 1) * sync_every;
            let room = boundary.min(declared) - writer.offset();
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
            writer.write(&chunk[..take]).await?;
            chunk = &chunk[take..];
            if writer.offset() == boundary {
                let offset = writer.sync().await?;
                persist(state, row, durable, offset, tus).await?;
                durable = offset;
            }
        }
        if body_error.is_some() {
            break;
        }
    }
    if writer.offset() > durable {
        let offset = writer.sync().await?;
        persist(state, row, durable, offset, tus).await?;
        durable = offset;
    }
    Ok(Appended { offset: durable, body_error })
}

/// The digest a PATCH's `Upload-Checksum` names.
pub enum ExpectedDigest {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

/// A body that is stored whole or not at all (a checksum, or no `Content-Length`).
pub struct WholeBody {
    /// Most bytes it may have (at most what is left of the upload).
    pub limit: u64,
    pub digest: Option<ExpectedDigest>,
}

/// Why a whole body stored nothing.
#[derive(Debug)]
pub enum Refused {
    TooLarge,
    Mismatch,
    Body(AppError),
}

/// Whether a whole body of this session can be written in place (staging file)
/// instead of being spooled first.
pub fn writes_whole_in_place(state: &dyn UploadDeps, row: &upload::Model) -> bool {
    match TusState::from_row(row) {
        Some(tus) => tus.staged,
        // A ticket's session switching to tus decides now (`ensure_multipart`).
        None => super::stages_tus(state),
    }
}

/// Write a whole body into the staging file at the recorded offset, hashing it on
/// the way; record it only if it is within `limit` and matches the digest, and cut
/// it off again otherwise. Returns the new offset, or why nothing was stored.
pub async fn append_whole<S>(
    state: &dyn UploadDeps,
    row: &upload::Model,
    mut body: S,
    whole: WholeBody,
) -> AppResult<Result<u64, Refused>>
where
    S: Stream<Item = Result<Bytes, AppError>> + Unpin,
{
    use sha1::Sha1;
    use sha2::{Digest, Sha256};
    let (upload_id, tus, key) = ensure_multipart(state, row).await?;
    if !tus.staged {
        return Err(AppError::internal(anyhow::anyhow!("upload {} has no staging file", row.id)));
    }
    let durable = u64::try_from(row.offset_bytes).unwrap_or(0);
    let mut writer = state.store().open_staged(&key, &upload_id, durable).await?;
    let mut sha1 = matches!(whole.digest, Some(ExpectedDigest::Sha1(_))).then(Sha1::new);
    let mut sha256 = matches!(whole.digest, Some(ExpectedDigest::Sha256(_))).then(Sha256::new);
    let mut len = 0u64;
    let refused = loop {
        let Some(chunk) = body.next().await else { break None };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => break Some(Refused::Body(err)),
        };
        len += chunk.len() as u64;
        if len > whole.limit {
            break Some(Refused::TooLarge);
        }
        if let Some(hasher) = &mut sha1 {
            hasher.update(&chunk);
        }
        if let Some(hasher) = &mut sha256 {
            hasher.update(&chunk);
        }
        writer.write(&chunk).await?;
    };
    let refused = refused.or_else(|| {
        let matches = match &whole.digest {
            None => true,
            Some(ExpectedDigest::Sha1(expected)) => sha1.map(|h| h.finalize().to_vec()).as_ref() == Some(expected),
            Some(ExpectedDigest::Sha256(expected)) => sha256.map(|h| h.finalize().to_vec()).as_ref() == Some(expected),
        };
        (!matches).then_some(Refused::Mismatch)
    });
    if let Some(refused) = refused {
        writer.truncate(durable).await?;
        return Ok(Err(refused));
    }
    if writer.offset() == durable {
        return Ok(Ok(durable));
    }
    let offset = writer.sync().await?;
    persist(state, row, durable, offset, &tus).await?;
    Ok(Ok(offset))
}

/// A deferred-length upload learns its length: at least what arrived, at most
/// what it was allowed to hold. Returns the row as it is now.
pub async fn set_length(
    state: &dyn UploadDeps,
    row: &upload::Model,
    tus: &TusState,
    length: u64,
) -> AppResult<upload::Model> {
    let offset = u64::try_from(row.offset_bytes).unwrap_or(0);
    let cap = u64::try_from(row.declared_size).unwrap_or(0);
    if length == 0 {
        return Err(AppError::bad_input("the file is empty: an upload needs at least one byte"));
    }
    if length < offset {
        return Err(AppError::bad_input(format!(
            "Upload-Length {length} is below the {offset} bytes already received"
        )));
    }
    if length > cap {
        return Err(AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("Upload-Length {length} is more than this upload may hold ({cap} bytes: size limit and quota)"),
        ));
    }
    let tus = TusState { deferred: false, ..tus.clone() };
    let length = i64::try_from(length).unwrap_or(i64::MAX);
    let set = crate::repo::uploads::set_length(state.db(), row.id, row.offset_bytes, length, tus.to_json(), Utc::now());
    if !set.await? {
        return Err(AppError::new(ErrorCode::Conflict, "the upload changed, check its offset and try again"));
    }
    Ok(upload::Model { declared_size: length, parts: Some(tus.to_json()), ..row.clone() })
}
