//! Putting jobs on the durable queue (the `jobs` table). Leasing, heartbeats and
//! outcomes are the queue's (`jobs::queue`).

use chrono::Utc;
use entities::{job, JobKind, JobStatus};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use uuid::Uuid;

/// Default priority; higher runs first.
pub const DEFAULT_PRIORITY: i32 = 0;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub video_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub priority: i32,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
}

/// Insert a QUEUED job. Call inside the caller's transaction so the job exists
/// exactly when the change that needs it commits.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, new: NewJob) -> Result<job::Model, DbErr> {
    let now = crate::db::now(conn).await?;
    enqueue_at(conn, new, now).await
}

/// [`enqueue`] a job that is not leased before `run_after`.
pub async fn enqueue_at<C: ConnectionTrait>(
    conn: &C,
    new: NewJob,
    run_after: chrono::DateTime<Utc>,
) -> Result<job::Model, DbErr> {
    let now = crate::db::now(conn).await?;
    job::ActiveModel {
        id: Set(Uuid::now_v7()),
        video_id: Set(new.video_id),
        owner_id: Set(new.owner_id),
        kind: Set(new.kind),
        status: Set(JobStatus::Queued),
        priority: Set(new.priority),
        payload: Set(new.payload),
        attempts: Set(0),
        max_attempts: Set(new.max_attempts.max(1)),
        run_after: Set(run_after.max(now)),
        lease_owner: Set(None),
        lease_token: Set(None),
        lease_expires_at: Set(None),
        last_error: Set(None),
        progress: Set(None),
        cancel_requested: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
        trace_parent: Set(crate::telemetry::traces::current_traceparent()),
    }
    .insert(conn)
    .await
}
