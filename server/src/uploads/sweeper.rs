//! Ends sessions nobody finished: OPEN uploads past `expires_at` become EXPIRED,
//! their bytes are removed and the video goes back to DRAFT. Sessions stuck in
//! COMPLETING (the process died mid-completion) are reopened, so the client's next
//! `completeUpload` (or final tus PATCH) runs the completion again.
//!
//! Once every presigned URL of an ended upload has expired, [`sweep_staging`]
//! removes what such a URL may still have written: the upload's staging object
//! (an S3 presigned `PUT` cannot be revoked, only made useless), its multipart
//! upload if still open (e.g. its video was deleted) and its tus tail. The video's
//! source is never touched here.

use std::time::Duration;

use chrono::Utc;
use entities::{UploadMethod, UploadStatus};

use crate::error::AppResult;
use crate::repo;
use crate::uploads::UploadDeps;

/// Sessions handled per sweep; the next sweep takes the rest.
const BATCH: u64 = 100;
/// A completion takes seconds (download + probe); one this old has died.
const STUCK_COMPLETING_AFTER: chrono::Duration = chrono::Duration::minutes(15);

/// An ended upload is left alone this long, so nothing races the code that ended it.
const STAGING_GRACE: chrono::Duration = chrono::Duration::minutes(1);

/// Sweep forever every `uploads.sweep_interval_secs` (startup runs it under `supervise`).
pub async fn run(state: impl UploadDeps) {
    let every = Duration::from_secs(state.settings().uploads.sweep_interval_secs.max(1));
    loop {
        actix_rt::time::sleep(every).await;
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "expired upload sessions"),
            Err(err) => err.log(),
        }
        match sweep_staging(&state, Utc::now()).await {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "swept the storage of ended uploads"),
            Err(err) => err.log(),
        }
    }
}

/// Clean the storage of ended uploads (ABORTED, EXPIRED, FAILED, COMPLETED) whose
/// URLs have all expired by `now` (`created_at + uploads.upload_url_ttl_secs`),
/// once each. Returns how many uploads were swept.
pub async fn sweep_staging(state: &dyn UploadDeps, now: chrono::DateTime<Utc>) -> AppResult<u64> {
    let ttl = chrono::Duration::seconds(
        i64::try_from(state.settings().uploads.upload_url_ttl_secs).unwrap_or(i64::MAX / 2).min(365 * 24 * 3600),
    );
    let rows = repo::uploads::ended_unswept(state.db(), now - ttl - STAGING_GRACE, now - STAGING_GRACE, BATCH).await?;
    let store = state.store().as_ref();
    let mut count = 0;
    for row in rows {
        if let Some(video) = repo::videos::find(state.db(), row.video_id).await? {
            if row.method == UploadMethod::Presigned {
                let staging = crate::storage::layout::staging(video.owner_id, video.id, row.id);
                if !best_effort(row.id, store.delete(&staging).await)? {
                    continue;
                }
            }
        }
        // A partial upload's own object (tus concatenation) is scratch once it ended.
        if super::TusState::from_row(&row).is_some_and(|t| t.is_partial())
            && !best_effort(row.id, store.delete(&row.object_key).await)?
        {
            continue;
        }
        if row.status != UploadStatus::Completed {
            if let Some(upload_id) = &row.s3_upload_id {
                match store.abort_multipart(&row.object_key, upload_id).await {
                    Ok(()) | Err(crate::storage::StoreError::UploadNotFound) => {}
                    // Storage is down: try again on the next sweep.
                    Err(err @ crate::storage::StoreError::Unavailable { .. }) => return Err(err.into()),
                    // Some S3-compatible servers refuse (rather than 404) an upload
                    // that is already gone (e.g. aborted when the video was deleted).
                    Err(err) => {
                        tracing::warn!(upload = %row.id, error = %err, "could not abort a leftover multipart upload")
                    }
                }
            }
            if !best_effort(row.id, store.delete(&super::tail_key(&row.object_key)).await)? {
                continue;
            }
        }
        repo::uploads::mark_swept(state.db(), row.id, now).await?;
        count += 1;
    }
    Ok(count)
}

/// Expire what is due now; returns how many sessions were expired.
pub async fn sweep_once(state: &dyn UploadDeps) -> AppResult<u64> {
    let now = Utc::now();
    let due = repo::uploads::expired_open(state.db(), now, BATCH).await?;
    let stuck = repo::uploads::reopen_stuck(state.db(), now - STUCK_COMPLETING_AFTER, now).await?;
    if stuck > 0 {
        tracing::warn!(count = stuck, "reopened upload sessions stuck in COMPLETING");
    }
    let mut count = 0;
    for row in due {
        // Every byte is in and only completion failed (e.g. storage was down):
        // complete it rather than throw a whole upload away.
        if row.method == entities::UploadMethod::Tus
            && row.offset_bytes == row.declared_size
            && super::completes_video(&row)
        {
            if let Err(err) = super::completion::complete(state, row.id).await {
                tracing::info!(upload = %row.id, code = err.code().as_str(), "completing a full upload at expiry failed");
            }
            continue;
        }
        super::abort::end_session(state, row.id, UploadStatus::Expired, "the upload session expired").await?;
        count += 1;
    }
    // Full tus uploads whose completion failed are completed on the next sweep too.
    let full = repo::uploads::full_tus_open(state.db(), Utc::now() - chrono::TimeDelta::seconds(30), BATCH).await?;
    for row in full.into_iter().filter(super::completes_video) {
        if let Err(err) = super::completion::complete(state, row.id).await {
            tracing::info!(upload = %row.id, code = err.code().as_str(), "completing a full upload failed again");
        }
    }
    Ok(count)
}

/// A storage step of the staging sweep: storage down is an error (the whole sweep
/// stops and retries next time); any other failure is logged and leaves the row
/// for the next sweep (`false`), so one bad object cannot stall the others.
fn best_effort(id: uuid::Uuid, result: Result<(), crate::storage::StoreError>) -> AppResult<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(err @ crate::storage::StoreError::Unavailable { .. }) => Err(err.into()),
        Err(err) => {
            tracing::warn!(upload = %id, error = %err, "could not remove an ended upload's leftovers");
            Ok(false)
        }
    }
}
