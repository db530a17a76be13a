//! `abortUpload`, tus termination and expiry: end an open session and remove
//! whatever bytes it left in storage. The video goes back to DRAFT (it has no
//! usable source), so its owner can start a new upload right away.

use chrono::Utc;
use entities::{upload, UploadStatus};
use uuid::Uuid;

use super::tail_key;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::repo;
use crate::storage::ObjectStore;
use crate::uploads::UploadDeps;

/// Longest stored failure reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// Abort an OPEN session: ABORTED with `reason`, storage cleaned, video DRAFT.
/// Aborting an already aborted session is a no-op.
pub async fn abort(state: &dyn UploadDeps, id: Uuid, reason: Option<String>) -> AppResult<()> {
    let reason = reason
        .map(|r| r.chars().filter(|c| !c.is_control()).take(MAX_REASON_CHARS).collect::<String>())
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "aborted by the client".to_string());
    end_session(state, id, UploadStatus::Aborted, &reason).await
}

/// Move an OPEN session to `status` (ABORTED or EXPIRED) and clean up after it.
pub async fn end_session(state: &dyn UploadDeps, id: Uuid, status: UploadStatus, reason: &str) -> AppResult<()> {
    let now = Utc::now();
    let ended = repo::uploads::transition(state.db(), id, UploadStatus::Open, status, reason, now).await?;
    let row = repo::uploads::find(state.db(), id).await?.ok_or_else(|| AppError::not_found("upload"))?;
    if !ended {
        return match row.status {
            s if s == status => Ok(()),
            UploadStatus::Aborted | UploadStatus::Expired => Ok(()),
            UploadStatus::Completing => {
                Err(AppError::new(ErrorCode::Conflict, "the upload is being completed and can no longer be aborted"))
            }
            _ => Err(AppError::new(ErrorCode::Conflict, "the upload is finished and can no longer be aborted")),
        };
    }
    let object = !is_accepted_source(state, &row).await?;
    cleanup_storage(state.store().as_ref(), &row, object).await;
    // Partial uploads (tus concatenation) share their video: it goes back to DRAFT
    // only when the last of them has ended.
    if repo::uploads::others_in_flight(state.db(), row.video_id, row.id).await? > 0 {
        metrics::counter!("reelhouse_uploads_ended_total", "status" => status_label(status)).increment(1);
        return Ok(());
    }
    repo::videos::back_to_draft(state.db(), row.video_id, now).await?;
    state.access_signals().video_changed(row.video_id).await;
    metrics::counter!("reelhouse_uploads_ended_total", "status" => status_label(status)).increment(1);
    Ok(())
}

/// End a session this process has claimed (COMPLETING) without completing it,
/// removing its bytes (the object too).
pub async fn finish_claimed(
    state: &dyn UploadDeps,
    row: &upload::Model,
    status: UploadStatus,
    reason: &str,
) -> AppResult<()> {
    repo::uploads::transition(state.db(), row.id, UploadStatus::Completing, status, reason, Utc::now()).await?;
    let object = !is_accepted_source(state, row).await?;
    cleanup_storage(state.store().as_ref(), row, object).await;
    Ok(())
}

/// Whether `row`'s object is its video's accepted source: several sessions may
/// write to the source key (a stale tus final upload next to the one that
/// completed the video, a retried join), and ending one of them must never delete
/// what another made the video's source.
async fn is_accepted_source(state: &dyn UploadDeps, row: &upload::Model) -> AppResult<bool> {
    let video = repo::videos::find(state.db(), row.video_id).await?;
    Ok(video.is_some_and(|v| v.deleted_at.is_none() && v.source_key.as_deref() == Some(row.object_key.as_str())))
}

fn status_label(status: UploadStatus) -> &'static str {
    match status {
        UploadStatus::Open => "open",
        UploadStatus::Completing => "completing",
        UploadStatus::Completed => "completed",
        UploadStatus::Aborted => "aborted",
        UploadStatus::Expired => "expired",
        UploadStatus::Failed => "failed",
    }
}

/// The uploads a video's deletion ends (OPEN or COMPLETING). Their unfinished
/// multipart parts and tus tails are not under the video's prefix, so they are
/// read before the delete and cleaned after it ([`cleanup_ended`]).
pub async fn open_of_video(state: &dyn UploadDeps, video_id: Uuid) -> AppResult<Vec<upload::Model>> {
    Ok(repo::uploads::in_flight_of_video(state.db(), video_id).await?)
}

/// Clean the storage of uploads ended by their video's deletion, within the
/// request. Best effort: what fails is logged, and the staging sweeper removes it
/// once the upload's URLs have expired.
pub async fn cleanup_ended(state: &dyn UploadDeps, rows: &[upload::Model]) {
    for row in rows {
        cleanup_storage(state.store().as_ref(), row, true).await;
    }
}

/// Best effort: abort the multipart upload, delete the tus tail and (when
/// `object` is set) the object itself. Failures are logged; the storage sweep of
/// the store removes stale multipart uploads later.
pub async fn cleanup_storage(store: &dyn ObjectStore, row: &upload::Model, object: bool) {
    if let Some(upload_id) = &row.s3_upload_id {
        match store.abort_multipart(&row.object_key, upload_id).await {
            Ok(()) | Err(crate::storage::StoreError::UploadNotFound) => {}
            Err(err) => tracing::warn!(upload = %row.id, error = %err, "could not abort a multipart upload"),
        }
    }
    if let Err(err) = store.delete(&tail_key(&row.object_key)).await {
        tracing::warn!(upload = %row.id, error = %err, "could not delete a tus tail");
    }
    if object {
        if let Err(err) = store.delete(&row.object_key).await {
            tracing::warn!(upload = %row.id, error = %err, "could not delete an upload's object");
        }
    }
}
