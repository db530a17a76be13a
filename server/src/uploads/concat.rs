//! tus concatenation: partial uploads sent side by side (tus-js-client's
//! `parallelUploads`), then one final upload that joins them and completes the video.
//!
//! A partial upload is an ordinary tus session of the video (`Upload-Metadata`
//! names it, as for any tus upload) with its own key ([`layout::partial`]); the first one claims
//! the video (DRAFT/FAILED → UPLOADING), more may join while only partial uploads
//! of the same user are open (at most [`super::MAX_PARTIALS`], together at most
//! `uploads.max_size_bytes`). Each counts against the quota like any upload. A
//! partial upload never completes a video by itself.
//!
//! `Upload-Concat: final;/uploads/a /uploads/b` names finished partial uploads of
//! the caller, all of one video: they are claimed at once (a partial upload is
//! used by one final upload only), assembled in storage, streamed in order into
//! the final session's multipart upload of the video's source, removed, and the
//! final session completes as any upload does (size, magic bytes, probe, job). While
//! the join runs it marks the partial uploads and the final session alive (their
//! `updated_at`), so the sweeper never takes them for stuck or abandoned. If
//! storage fails half-way, the final session is aborted and the partial uploads
//! are open again, so the client can retry the final request.

use chrono::Utc;
use entities::{upload, UploadMethod, UploadStatus, VideoStatus};
use futures::StreamExt;
use sea_orm::Set;
use uuid::Uuid;

use super::{part_size_for, tail_key, Concat, TusState, MAX_PARTIALS};
use crate::auth::principal::Principal;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::repo;
use crate::storage::{layout, CompletedPart, StoreError};
use crate::uploads::UploadDeps;

/// What the final request asks for.
#[derive(Debug, Clone)]
pub struct FinalRequest {
    /// The video the metadata names, if it does (it must then be the partials' video).
    pub video_id: Option<Uuid>,
    /// The raw `Upload-Metadata`, returned by HEAD.
    pub metadata: Option<String>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub checksum_sha256: Option<String>,
    /// The partial uploads, in order.
    pub parts: Vec<Uuid>,
}

/// Create the final session from `request.parts` and fill it. Returns the final
/// session and the outcome of its completion (the video, or why it was refused).
pub async fn concatenate(
    state: &dyn UploadDeps,
    principal: &Principal,
    request: FinalRequest,
) -> AppResult<(upload::Model, AppResult<entities::video::Model>)> {
    state.limiter().enforce(crate::limits::Policy::Upload, principal.user_id.to_string(), 1).await?;
    if request.parts.is_empty() {
        return Err(AppError::bad_input("Upload-Concat: final needs at least one partial upload"));
    }
    if request.parts.len() > MAX_PARTIALS {
        return Err(AppError::bad_input(format!("a final upload may join at most {MAX_PARTIALS} partial uploads")));
    }
    for (i, id) in request.parts.iter().enumerate() {
        if request.parts[..i].contains(id) {
            return Err(AppError::bad_input("Upload-Concat: final names a partial upload twice"));
        }
    }
    let now = Utc::now();
    let mut partials = Vec::with_capacity(request.parts.len());
    for id in &request.parts {
        // Only the caller's own partial uploads: anyone else's are not found.
        let row = super::find_owned(state, principal, *id).await?;
        if !TusState::from_row(&row).is_some_and(|t| t.is_partial()) {
            return Err(AppError::bad_input(format!("upload {id} is not a partial upload (`Upload-Concat: partial`)")));
        }
        match row.status {
            UploadStatus::Open if row.expires_at > now => {}
            UploadStatus::Completed => {
                // A retried final request (its answer was lost, or completion failed
                // for a moment) finds the final upload it made.
                if let Some(done) = earlier_final(state, &row, &request.parts).await? {
                    return Ok(done);
                }
                return Err(AppError::new(ErrorCode::Conflict, format!("partial upload {id} is already concatenated")));
            }
            UploadStatus::Completing => {
                return Err(AppError::new(ErrorCode::Conflict, format!("partial upload {id} is being concatenated")))
            }
            _ => return Err(AppError::not_found("upload")),
        }
        if row.offset_bytes != row.declared_size {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("partial upload {id} is not finished: {} of {} bytes", row.offset_bytes, row.declared_size),
            ));
        }
        partials.push(row);
    }
    let video_id = partials[0].video_id;
    if partials.iter().any(|p| p.video_id != video_id) || request.video_id.is_some_and(|v| v != video_id) {
        return Err(AppError::bad_input("the partial uploads and the final upload must all name the same video"));
    }
    let video = crate::repo::videos::find_writable(state.db(), principal, video_id).await?;
    if video.status != VideoStatus::Uploading {
        return Err(AppError::new(ErrorCode::Conflict, "the video is not being uploaded"));
    }
    let size = partials.iter().map(|p| p.declared_size).fold(0i64, i64::saturating_add);
    let settings = &state.settings().uploads;
    if u64::try_from(size).unwrap_or(u64::MAX) > settings.max_size_bytes {
        return Err(AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("the file is {size} bytes, more than the allowed {} bytes", settings.max_size_bytes),
        ));
    }
    let filename = super::sanitize_filename(request.filename.as_deref().unwrap_or(&partials[0].filename));
    let content_type = request
        .content_type
        .clone()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| super::content_type_from_filename(&filename).map(str::to_string))
        .unwrap_or_else(|| partials[0].content_type.clone());
    let content_type = super::normalize_content_type(&content_type);
    if !settings.allowed_content_types.iter().any(|t| t.eq_ignore_ascii_case(&content_type)) {
        return Err(AppError::new(
            ErrorCode::UnsupportedMedia,
            format!(
                "files of type `{}` are not accepted; send a video",
                content_type.chars().take(100).collect::<String>()
            ),
        ));
    }
    let checksum = match request.checksum_sha256.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Some(hex.to_ascii_lowercase()),
        Some(_) => return Err(AppError::bad_input("checksumSha256 must be 64 hexadecimal characters")),
    };

    let object_key = layout::source(video.owner_id, video.id);
    let multipart_id = state.store().create_multipart(&object_key, Some(&content_type)).await?;
    let tus = TusState {
        part_size: part_size_for(settings, u64::try_from(size).unwrap_or(0)),
        metadata: request.metadata.clone(),
        concat: Some(Concat::Final { parts: request.parts.clone() }),
        staged: super::stages_tus(state),
        ..TusState::default()
    };
    let id = Uuid::now_v7();
    let inserted = async {
        let txn = crate::db::begin_write(state.db()).await?;
        // The claim: every partial upload OPEN → COMPLETING, or none.
        let claimed = repo::uploads::claim_parts(&txn, &request.parts, principal.user_id, now).await?;
        if claimed != request.parts.len() as u64 {
            return Err(AppError::new(ErrorCode::Conflict, "a partial upload changed meanwhile, try again"));
        }
        let row = upload::ActiveModel {
            id: Set(id),
            video_id: Set(video.id),
            user_id: Set(principal.user_id),
            method: Set(UploadMethod::Tus),
            status: Set(UploadStatus::Open),
            filename: Set(filename),
            content_type: Set(content_type),
            declared_size: Set(size),
            checksum_sha256: Set(checksum),
            offset_bytes: Set(0),
            object_key: Set(object_key.clone()),
            s3_upload_id: Set(Some(multipart_id.clone())),
            parts: Set(Some(tus.to_json())),
            // A session of its own length: inheriting the partial uploads' (as
            // earlier) let one begun near their expiry expire mid-join.
            expires_at: Set(now + session_ttl(state)),
            failure_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            completed_at: Set(None),
            staging_swept_at: Set(None),
        };
        let row = repo::uploads::create(&txn, row).await?;
        txn.commit().await?;
        Ok::<_, AppError>(row)
    }
    .await;
    let row = match inserted {
        Ok(row) => row,
        Err(err) => {
            if let Err(abort) = state.store().abort_multipart(&object_key, &multipart_id).await {
                tracing::warn!(error = %abort, "could not abort the multipart upload of a refused final upload");
            }
            return Err(err);
        }
    };
    metrics::counter!("reelhouse_uploads_created_total", "method" => "tus_final").increment(1);

    if let Err(err) = join_keeping_alive(state, &row, &request.parts, &partials).await {
        // Give the partial uploads back, end the final one: the client may retry.
        let reopened = repo::uploads::set_status(
            state.db(),
            &request.parts,
            UploadStatus::Completing,
            UploadStatus::Open,
            Utc::now(),
        )
        .await;
        if let Err(db) = reopened {
            tracing::error!(upload = %row.id, error = ?db, "could not reopen partial uploads after a failed concatenation");
        }
        if let Err(end) = super::abort::abort(state, row.id, Some("the concatenation failed".into())).await {
            end.log();
        }
        return Err(err);
    }
    let done = repo::uploads::set_status(
        state.db(),
        &request.parts,
        UploadStatus::Completing,
        UploadStatus::Completed,
        Utc::now(),
    )
    .await;
    if let Err(err) = done {
        tracing::error!(upload = %row.id, error = ?err, "could not mark concatenated partial uploads completed");
    }
    // Their multipart uploads are complete: only the objects are left (the staging
    // sweep retries what fails here).
    for partial in &partials {
        if let Err(err) = state.store().delete(&partial.object_key).await {
            tracing::warn!(upload = %partial.id, error = %err, "could not delete a concatenated partial upload");
        }
    }
    let row = repo::uploads::find(state.db(), row.id).await?.ok_or_else(|| AppError::not_found("upload"))?;
    let completed = super::completion::complete(state, row.id).await;
    Ok((row, completed))
}

/// The final upload of the caller that joined exactly `parts` (of `partial`'s
/// video), completed again if it is still open; `None` if there is none.
async fn earlier_final(
    state: &dyn UploadDeps,
    partial: &upload::Model,
    parts: &[Uuid],
) -> AppResult<Option<(upload::Model, AppResult<entities::video::Model>)>> {
    let candidates = repo::uploads::tus_of_video_by(state.db(), partial.video_id, partial.user_id).await?;
    let Some(row) = candidates
        .into_iter()
        .find(|row| TusState::from_row(row).and_then(|t| t.concat) == Some(Concat::Final { parts: parts.to_vec() }))
    else {
        return Ok(None);
    };
    let completed = super::completion::complete(state, row.id).await;
    Ok(Some((row, completed)))
}

fn session_ttl(state: &dyn UploadDeps) -> chrono::Duration {
    chrono::Duration::seconds(
        i64::try_from(state.settings().uploads.session_ttl_secs).unwrap_or(i64::MAX / 2).min(365 * 24 * 3600),
    )
}

/// How often a running concatenation shows the sweeper it is alive: as often as the
/// sweeper looks (`uploads.sweep_interval_secs`), at least once a minute — far inside
/// the quarter of an hour after which it reopens a COMPLETING session as stuck.
pub fn keep_alive_interval(state: &dyn UploadDeps) -> std::time::Duration {
    std::time::Duration::from_secs(state.settings().uploads.sweep_interval_secs.clamp(1, 60))
}

/// [`join`], while marking the claimed partial uploads (COMPLETING) and the final
/// session (OPEN) as alive every [`keep_alive_interval`]. A join of large partial
/// uploads can outlast the sweeper's patience with COMPLETING sessions; without this
/// it would reopen them mid-join and then expire them (their bytes deleted under
/// the join).
async fn join_keeping_alive(
    state: &dyn UploadDeps,
    row: &upload::Model,
    parts: &[Uuid],
    partials: &[upload::Model],
) -> AppResult<()> {
    let work = join(state, row, partials);
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(keep_alive_interval(state));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = &mut work => return joined,
            _ = ticker.tick() => {
                if let Err(err) = mark_alive(state, row.id, parts).await {
                    tracing::warn!(upload = %row.id, error = %err, "could not mark a running concatenation alive");
                }
            }
        }
    }
}

/// Refresh `updated_at` of the partial uploads a running concatenation holds and of
/// its final session (only while they are in the states the join put them in).
pub async fn mark_alive(state: &dyn UploadDeps, final_id: Uuid, parts: &[Uuid]) -> AppResult<()> {
    let now = Utc::now();
    repo::uploads::touch(state.db(), parts, UploadStatus::Completing, now).await?;
    repo::uploads::touch(state.db(), &[final_id], UploadStatus::Open, now).await?;
    Ok(())
}

/// Assemble each partial upload and stream it, in order, into the final session.
async fn join(state: &dyn UploadDeps, row: &upload::Model, partials: &[upload::Model]) -> AppResult<()> {
    for partial in partials {
        assemble_partial(state, partial).await?;
        let current = repo::uploads::find(state.db(), row.id).await?.ok_or_else(|| AppError::not_found("upload"))?;
        let body = state
            .store()
            .get(&partial.object_key, None)
            .await?
            .body
            .map(|chunk| chunk.map_err(|e| AppError::unavailable("object storage", e)));
        let appended = super::tus_store::append(state, &current, body).await?;
        if let Some(err) = appended.body_error {
            return Err(err);
        }
        let expected = current.offset_bytes.saturating_add(partial.declared_size);
        if i64::try_from(appended.offset).unwrap_or(i64::MAX) != expected {
            return Err(AppError::internal(anyhow::anyhow!(
                "partial upload {} gave {} bytes, not {}",
                partial.id,
                appended.offset,
                expected
            )));
        }
    }
    Ok(())
}

/// Turn a finished partial upload's multipart upload into its staging object.
async fn assemble_partial(state: &dyn UploadDeps, row: &upload::Model) -> AppResult<()> {
    let store = state.store().as_ref();
    if let (Some(upload_id), Some(tus)) = (&row.s3_upload_id, TusState::from_row(row)) {
        let size = u64::try_from(row.declared_size).unwrap_or(0);
        let parts = tus.parts.iter().map(|p| CompletedPart { number: p.number, etag: p.etag.clone() }).collect();
        let assembled = if tus.staged {
            store.complete_staged(&row.object_key, upload_id, size).await.map(|_| ())
        } else {
            store.complete_multipart(&row.object_key, upload_id, parts).await.map(|_| ())
        };
        match assembled {
            // Gone: an earlier, failed concatenation assembled it already.
            Ok(_) | Err(StoreError::UploadNotFound) => {}
            Err(err) => return Err(err.into()),
        }
        if let Err(err) = store.delete(&tail_key(&row.object_key)).await {
            tracing::warn!(upload = %row.id, error = %err, "could not delete a tus tail");
        }
    }
    match store.head(&row.object_key).await {
        Ok(meta) if i64::try_from(meta.size).unwrap_or(i64::MAX) == row.declared_size => Ok(()),
        Ok(_) | Err(StoreError::NotFound { .. }) => {
            Err(AppError::internal(anyhow::anyhow!("the bytes of partial upload {} are missing", row.id)))
        }
        Err(err) => Err(err.into()),
    }
}
