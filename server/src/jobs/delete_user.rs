//! A DELETE_USER job: remove what a deleted account owned. Every step is
//! idempotent, so a retry (the job has many attempts) picks up where one failed:
//! 1. each of its videos is marked deleted as `deleteVideo` does (uploads aborted,
//!    jobs cancelled, DELETED recorded and published, so subscribers learn of it);
//! 2. it waits (retrying) until the account's running transcodes have stopped, so
//!    no output lands after step 3;
//! 3. every object under `users/{id}/` is deleted;
//! 4. the rows go: videos, sessions, API keys, usage; the account row stays as a
//!    tombstone (see `repo::users::purge_rows`).

use std::sync::Arc;

use entities::{job, LogLevel};
use serde::Deserialize;
use uuid::Uuid;

use super::runner::{JobContext, JobError, JobReporter};
use super::runner_storage::storage_error;
use crate::repo::users;

/// `{"userId": "…"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeleteUserPayload {
    user_id: Uuid,
}

/// Videos marked deleted per transaction.
const VIDEOS_PER_BATCH: u64 = 50;

fn db_error(what: &str, err: &sea_orm::DbErr) -> JobError {
    tracing::warn!(error = ?err, "{what}");
    JobError::Retryable(format!("{what}: the database is unavailable"))
}

/// Returns how many objects were deleted.
#[tracing::instrument(skip_all, fields(job_id = %job.id), err(Display))]
pub(crate) async fn run_delete_user(
    ctx: &JobContext,
    job: &job::Model,
    reporter: Arc<dyn JobReporter>,
) -> Result<u64, JobError> {
    let DeleteUserPayload { user_id } =
        serde_json::from_value(job.payload.clone()).map_err(|e| JobError::Permanent {
            code: crate::jobs::FailureCode::InvalidPayload,
            reason: format!("the delete request is malformed: {e}"),
        })?;
    let account = users::find_any(&ctx.db, user_id).await.map_err(|e| db_error("reading the account", &e))?;
    // Only an account an admin deleted: a stray job must never wipe a live one.
    if account.as_ref().is_some_and(|u| u.deleted_at.is_none()) {
        return Err(JobError::Permanent {
            code: crate::jobs::FailureCode::NotDeleted,
            reason: "the account is not marked deleted; nothing was removed".into(),
        });
    }

    let mut videos = 0u64;
    loop {
        let batch = users::live_videos_of(&ctx.db, user_id, VIDEOS_PER_BATCH)
            .await
            .map_err(|e| db_error("listing the account's videos", &e))?;
        if batch.is_empty() {
            break;
        }
        let txn = crate::db::begin_write(&ctx.db).await.map_err(|e| db_error("deleting videos", &e))?;
        let mut events = Vec::with_capacity(batch.len());
        for video in batch {
            if let Some((_, event)) =
                crate::repo::videos::mark_deleted_in(&txn, video).await.map_err(|e| db_error("deleting a video", &e))?
            {
                events.push(event);
            }
        }
        txn.commit().await.map_err(|e| db_error("deleting videos", &e))?;
        videos += events.len() as u64;
        ctx.publisher.publish_all(events);
    }
    reporter.log(LogLevel::Info, format!("marked {videos} video(s) deleted"));

    let running = users::running_transcodes_of(&ctx.db, user_id)
        .await
        .map_err(|e| db_error("looking for running transcodes", &e))?;
    if running > 0 {
        return Err(JobError::Retryable(format!("waiting for {running} running transcode(s) to stop")));
    }

    let prefix = format!("users/{user_id}/");
    reporter.log(LogLevel::Info, format!("deleting objects under {prefix}"));
    let objects =
        ctx.store.delete_prefix(&prefix).await.map_err(|e| storage_error("deleting the account's objects", &e))?;
    reporter.log(LogLevel::Info, format!("deleted {objects} object(s)"));

    let txn = crate::db::begin_write(&ctx.db).await.map_err(|e| db_error("removing the account's rows", &e))?;
    let rows = users::purge_rows(&txn, user_id).await.map_err(|e| db_error("removing the account's rows", &e))?;
    txn.commit().await.map_err(|e| db_error("removing the account's rows", &e))?;
    reporter.log(LogLevel::Info, format!("removed {rows} video row(s); the account is gone"));
    Ok(objects)
}
