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

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use entities::{upload, UploadStatus};
use futures::{Stream, StreamExt};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::{part_size_for, tail_key, StoredPart, TusState};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::startup::AppState;
use crate::storage::{layout, ByteRange};

/// Make sure the session has a multipart upload and tus state; returns both and
/// the key the multipart upload assembles into.
///
/// A PRESIGNED session a client writes with tus instead switches to a multipart
/// upload of the source key (only the server writes it, like any tus upload): its
/// presigned URL, bound to the staging key, stops working from then on.
pub async fn ensure_multipart(state: &AppState, row: &upload::Model) -> AppResult<(String, TusState, String)> {
    if let (Some(upload_id), Some(tus)) = (&row.s3_upload_id, TusState::from_row(row)) {
        return Ok((upload_id.clone(), tus, row.object_key.clone()));
    }
    let size = u64::try_from(row.declared_size).unwrap_or(0);
    let tus = TusState { part_size: part_size_for(&state.settings.uploads, size), ..TusState::default() };
    let object_key = if row.s3_upload_id.is_none() {
        let video = entities::video::Entity::find_by_id(row.video_id)
            .one(&state.db)
            .await?
            .ok_or_else(|| AppError::not_found("upload"))?;
        layout::source(video.owner_id, video.id)
    } else {
        row.object_key.clone()
    };
    let (upload_id, created) = match &row.s3_upload_id {
        Some(id) => (id.clone(), false),
        None => (state.store.create_multipart(&object_key, Some(&row.content_type)).await?, true),
    };
    let mut update = upload::Entity::update_many()
        .col_expr(upload::Column::S3UploadId, Expr::value(upload_id.clone()))
        .col_expr(upload::Column::ObjectKey, Expr::value(object_key.clone()))
        .col_expr(upload::Column::Parts, Expr::value(tus.to_json()))
        .col_expr(upload::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(upload::Column::Id.eq(row.id))
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::OffsetBytes.eq(0));
    update = match &row.s3_upload_id {
        Some(id) => update.filter(upload::Column::S3UploadId.eq(id.clone())),
        None => update.filter(upload::Column::S3UploadId.is_null()),
    };
    let result = update.exec(&state.db).await?;
    if result.rows_affected != 1 {
        if created {
            let _ = state.store.abort_multipart(&object_key, &upload_id).await;
        }
        return Err(AppError::new(ErrorCode::Conflict, "the upload changed, check its offset and try again"));
    }
    Ok((upload_id, tus, object_key))
}

/// Record a new durable offset (and parts), only if nobody moved it meanwhile.
async fn persist(state: &AppState, row: &upload::Model, from: u64, to: u64, tus: &TusState) -> AppResult<()> {
    let result = upload::Entity::update_many()
        .col_expr(upload::Column::OffsetBytes, Expr::value(i64::try_from(to).unwrap_or(i64::MAX)))
        .col_expr(upload::Column::Parts, Expr::value(tus.to_json()))
        .col_expr(upload::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(upload::Column::Id.eq(row.id))
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::OffsetBytes.eq(i64::try_from(from).unwrap_or(i64::MAX)))
        .exec(&state.db)
        .await?;
    if result.rows_affected != 1 {
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
pub async fn append<S>(state: &AppState, row: &upload::Model, mut body: S) -> AppResult<Appended>
where
    S: Stream<Item = Result<Bytes, AppError>> + Unpin,
{
    let declared = u64::try_from(row.declared_size).unwrap_or(0);
    let (upload_id, mut tus, key) = ensure_multipart(state, row).await?;
    let part_size = tus.part_size;
    let store = state.store.as_ref();
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
    let mut reservation = state.tus_buffers.reservation(row.user_id);
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
