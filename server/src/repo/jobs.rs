//! Putting jobs on the durable queue (the `jobs` table), reading them back as the
//! API shows them, and the registered workers. Leasing, heartbeats and outcomes are
//! the queue's (`jobs::queue`).

use chrono::Utc;
use entities::{job, worker, JobKind, JobStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Select, Set,
};
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

/// The job by id, whoever may see it (the caller checks).
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<job::Model>, DbErr> {
    job::Entity::find_by_id(id).one(conn).await
}

/// Is a TRANSCODE job of the video QUEUED or RUNNING?
pub async fn transcode_in_progress<C: ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<bool, DbErr> {
    let busy = job::Entity::find()
        .filter(job::Column::VideoId.eq(video_id))
        .filter(job::Column::Kind.eq(JobKind::Transcode))
        .filter(job::Column::Status.is_in([JobStatus::Queued, JobStatus::Running]))
        .count(conn)
        .await?;
    Ok(busy > 0)
}

/// The newest QUEUED or RUNNING job (of any kind) of the video, if any.
pub async fn active_of_video<C: ConnectionTrait>(conn: &C, video_id: Uuid) -> Result<Option<job::Model>, DbErr> {
    job::Entity::find()
        .filter(job::Column::VideoId.eq(video_id))
        .filter(job::Column::Status.is_in([JobStatus::Queued, JobStatus::Running]))
        .order_by_desc(job::Column::CreatedAt)
        .one(conn)
        .await
}

/// The jobs listing: `owner`'s jobs (`None`: everyone's), optionally of one
/// status; unordered, for paging by id.
pub fn listing(owner: Option<Uuid>, status: Option<JobStatus>) -> Select<job::Entity> {
    let mut query = job::Entity::find();
    if let Some(owner) = owner {
        query = query.filter(job::Column::OwnerId.eq(owner));
    }
    if let Some(status) = status {
        query = query.filter(job::Column::Status.eq(status));
    }
    query
}

/// The worker processes that announced themselves, oldest first.
pub async fn workers<C: ConnectionTrait>(conn: &C) -> Result<Vec<worker::Model>, DbErr> {
    worker::Entity::find().order_by_asc(worker::Column::StartedAt).all(conn).await
}
