//! Putting jobs on the durable queue (the `jobs` table), reading them back as the
//! API shows them, and the queue's own statements: leasing, renewing, every
//! transition of a leased job, cancel, retry, priority, progress, the job log and
//! the counts behind the queue metrics. What the transitions mean (backoff, dead
//! letters, the runner's consequences) is the queue's (`jobs::queue`).

use chrono::{DateTime, NaiveDate, Utc};
use entities::{job, JobKind, JobStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, Set, Statement,
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

// ---------------------------------------------------------------------------
// The queue's statements (`jobs::queue`). A lease is (owner, token, expiry); every
// transition of a RUNNING job is conditional on its token and status.
// ---------------------------------------------------------------------------

/// Which jobs a scheduler leases. Mail has its own lane (and its own slots in every
/// worker process), so a SEND_MAIL job never waits for a transcode to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Everything but SEND_MAIL: transcodes, object deletions.
    Media,
    /// SEND_MAIL only.
    Mail,
    /// TRANSCODE only: what a remote worker can run (it reaches storage through
    /// presigned URLs, and nothing else).
    Remote,
}

impl Lane {
    fn kind_filter(self) -> &'static str {
        match self {
            Lane::Media => "c.kind <> 'SEND_MAIL'",
            Lane::Mail => "c.kind = 'SEND_MAIL'",
            Lane::Remote => "c.kind = 'TRANSCODE'",
        }
    }
}

fn lease_sql(backend: DbBackend, lane: Lane) -> String {
    lease_sql_template(backend)
        .replace("c.status = 'QUEUED' AND", &format!("c.status = 'QUEUED' AND {} AND", lane.kind_filter()))
}

fn lease_sql_template(backend: DbBackend) -> &'static str {
    // Order: priority, then the owner with the fewest RUNNING jobs, then the owner
    // served longest ago (never served first), then oldest job. An owner's 50 queued
    // uploads therefore alternate with everybody else's work. Owners who used up
    // today's processing budget (their own, `users.processing_budget_secs_per_day`, or
    // the server's; 0 is none) are passed over until tomorrow.
    match backend {
        DbBackend::Postgres => {
            r#"UPDATE jobs SET status = 'RUNNING', attempts = attempts + 1, lease_owner = $1, lease_token = $2,
                lease_expires_at = $3, cancel_requested = FALSE, updated_at = $4
            WHERE id = (
                SELECT c.id FROM jobs c
                WHERE c.status = 'QUEUED' AND c.run_after <= $4
                    AND (c.owner_id IS NULL OR NOT EXISTS (SELECT 1 FROM processing_usage u
                        WHERE u.user_id = c.owner_id AND u.day = $5 AND u.seconds >= (SELECT CASE
                            WHEN b.processing_budget_secs_per_day IS NULL THEN $6
                            WHEN b.processing_budget_secs_per_day = 0 THEN 1e300
                            ELSE b.processing_budget_secs_per_day END
                        FROM users b WHERE b.id = c.owner_id)))
                ORDER BY c.priority DESC,
                    (SELECT COUNT(*) FROM jobs r WHERE r.owner_id = c.owner_id AND r.status = 'RUNNING') ASC,
                    (SELECT MAX(s.updated_at) FROM jobs s WHERE s.owner_id = c.owner_id AND s.status <> 'QUEUED')
                        ASC NULLS FIRST,
                    c.created_at ASC, c.id ASC
                LIMIT 1
                FOR UPDATE OF c SKIP LOCKED
            ) AND status = 'QUEUED'
            RETURNING *"#
        }
        _ => {
            r#"UPDATE jobs SET status = 'RUNNING', attempts = attempts + 1, lease_owner = ?1, lease_token = ?2,
                lease_expires_at = ?3, cancel_requested = FALSE, updated_at = ?4
            WHERE id = (
                SELECT c.id FROM jobs c
                WHERE c.status = 'QUEUED' AND c.run_after <= ?4
                    AND (c.owner_id IS NULL OR NOT EXISTS (SELECT 1 FROM processing_usage u
                        WHERE u.user_id = c.owner_id AND u.day = ?5 AND u.seconds >= (SELECT CASE
                            WHEN b.processing_budget_secs_per_day IS NULL THEN ?6
                            WHEN b.processing_budget_secs_per_day = 0 THEN 1e300
                            ELSE b.processing_budget_secs_per_day END
                        FROM users b WHERE b.id = c.owner_id)))
                ORDER BY c.priority DESC,
                    (SELECT COUNT(*) FROM jobs r WHERE r.owner_id = c.owner_id AND r.status = 'RUNNING') ASC,
                    (SELECT MAX(s.updated_at) FROM jobs s WHERE s.owner_id = c.owner_id AND s.status <> 'QUEUED')
                        ASC NULLS FIRST,
                    c.created_at ASC, c.id ASC
                LIMIT 1
            ) AND status = 'QUEUED'
            RETURNING *"#
        }
    }
}

/// A HIGH-preset transcode (the payload's `preset`, any case).
fn high_preset_filter(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "(c.kind = 'TRANSCODE' AND UPPER(COALESCE(c.payload->>'preset', '')) = 'HIGH')",
        _ => "(c.kind = 'TRANSCODE' AND UPPER(COALESCE(json_extract(c.payload, '$.preset'), '')) = 'HIGH')",
    }
}

/// A WebM download's transcode (it needs `vp8enc` and `opusenc`).
fn webm_filter(_backend: DbBackend) -> &'static str {
    // `"formats": [.., "WEBM"]`, or `"format": "WEBM"` of earlier releases.
    "(c.kind = 'TRANSCODE' AND UPPER(CAST(c.payload AS TEXT)) LIKE '%\"WEBM\"%')"
}

/// What a lease asks for: who takes the next runnable job, under which token, until
/// when, and which jobs it passes over.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    pub worker_id: &'a str,
    pub lane: Lane,
    pub token: Uuid,
    /// The database's clock (`db::now`).
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Today, as processing usage is bucketed (`usage::today`).
    pub day: NaiveDate,
    /// The server's daily processing budget per owner in seconds, for owners without
    /// their own (`f64::MAX`: none).
    pub default_budget_secs: f64,
    /// Pass HIGH-preset transcodes over (the worker lacks `jobs.high_preset_tag`).
    pub skip_high_preset: bool,
    /// Pass WebM transcodes over (the worker lacks the WebM encoders).
    pub skip_webm: bool,
}

/// Lease the next runnable job of `request.lane` inside `txn`, in one statement: `UPDATE
/// jobs ... WHERE id = (SELECT ... LIMIT 1)` (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
pub async fn lease_next(txn: &DatabaseTransaction, request: LeaseRequest<'_>) -> Result<Option<job::Model>, DbErr> {
    let backend = txn.get_database_backend();
    let mut sql = lease_sql(backend, request.lane);
    if request.skip_high_preset {
        sql = sql.replace(
            "c.status = 'QUEUED' AND",
            &format!("c.status = 'QUEUED' AND NOT {} AND", high_preset_filter(backend)),
        );
    }
    if request.skip_webm {
        sql = sql
            .replace("c.status = 'QUEUED' AND", &format!("c.status = 'QUEUED' AND NOT {} AND", webm_filter(backend)));
    }
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        [
            request.worker_id.into(),
            request.token.into(),
            request.expires_at.into(),
            request.now.into(),
            request.day.into(),
            request.default_budget_secs.into(),
        ],
    );
    job::Entity::find().from_raw_sql(statement).one(txn).await
}

/// Extend the lease to `expires_at` if `token` still holds it (RUNNING); `false`
/// when it does not.
pub async fn renew_lease<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    token: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    update_leased(conn, job_id, token, job::Column::LeaseExpiresAt, Expr::value(expires_at)).await
}

/// Set `column` of the RUNNING job to `value` only while `token` holds its lease;
/// `false` when it does not.
async fn update_leased<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    token: Uuid,
    column: job::Column,
    value: sea_orm::sea_query::SimpleExpr,
) -> Result<bool, DbErr> {
    let updated = job::Entity::update_many()
        .col_expr(column, value)
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::LeaseToken.eq(token))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// The job's status, lease token and cancel flag, if it exists.
pub async fn lease_of<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
) -> Result<Option<(JobStatus, Option<Uuid>, bool)>, DbErr> {
    job::Entity::find_by_id(job_id)
        .select_only()
        .column(job::Column::Status)
        .column(job::Column::LeaseToken)
        .column(job::Column::CancelRequested)
        .into_tuple()
        .one(conn)
        .await
}

/// A transition of a job's row: the lease cleared, the cancel flag down, the new
/// status (`finished_at` set when it is final).
#[derive(Debug, Clone)]
pub struct JobTransition {
    pub status: JobStatus,
    /// `None` keeps the current one.
    pub last_error: Option<String>,
    /// `None` keeps the current one.
    pub run_after: Option<DateTime<Utc>>,
    /// Give the attempt back.
    pub refund_attempt: bool,
    /// `Some`: only while this token holds the lease of the RUNNING job; `None`:
    /// only while the job is QUEUED.
    pub token: Option<Uuid>,
    /// Only if the lease has expired by `now`.
    pub only_if_expired: bool,
    pub now: DateTime<Utc>,
}

/// Apply `change` to the job if its conditions hold; `false` (nothing changed) when not.
pub async fn transition<C: ConnectionTrait>(conn: &C, job_id: Uuid, change: JobTransition) -> Result<bool, DbErr> {
    let now = change.now;
    let terminal = !matches!(change.status, JobStatus::Queued | JobStatus::Running);
    let mut update = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(change.status))
        .col_expr(job::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LeaseToken, Expr::value(Option::<Uuid>::None))
        .col_expr(job::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::CancelRequested, Expr::value(false))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .col_expr(job::Column::FinishedAt, Expr::value(terminal.then_some(now)))
        .filter(job::Column::Id.eq(job_id));
    if let Some(error) = change.last_error {
        update = update.col_expr(job::Column::LastError, Expr::value(error));
    }
    if let Some(run_after) = change.run_after {
        update = update.col_expr(job::Column::RunAfter, Expr::value(run_after));
    }
    if change.refund_attempt {
        update = update.col_expr(job::Column::Attempts, Expr::col(job::Column::Attempts).sub(1));
    }
    update = match change.token {
        Some(token) => {
            update.filter(job::Column::LeaseToken.eq(token)).filter(job::Column::Status.eq(JobStatus::Running))
        }
        None => update.filter(job::Column::Status.eq(JobStatus::Queued)),
    };
    if change.only_if_expired {
        update = update.filter(job::Column::LeaseExpiresAt.lt(now));
    }
    Ok(update.exec(conn).await?.rows_affected > 0)
}

/// RUNNING jobs whose lease expired before `now`, the longest expired first, at most `limit`.
pub async fn expired_leases<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<job::Model>, DbErr> {
    job::Entity::find()
        .filter(job::Column::Status.eq(JobStatus::Running))
        .filter(job::Column::LeaseExpiresAt.lt(now))
        .order_by_asc(job::Column::LeaseExpiresAt)
        .limit(limit)
        .all(conn)
        .await
}

/// Flag a RUNNING job for cancellation (its worker stops it); `false` when it is not RUNNING.
pub async fn request_cancel<C: ConnectionTrait>(conn: &C, job_id: Uuid, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let updated = job::Entity::update_many()
        .col_expr(job::Column::CancelRequested, Expr::value(true))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// A DEAD, FAILED or CANCELLED job is QUEUED again, attempts reset, runnable at
/// `now`; `false` when it is in no such state.
pub async fn requeue_finished<C: ConnectionTrait>(conn: &C, job_id: Uuid, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let updated = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Queued))
        .col_expr(job::Column::Attempts, Expr::value(0))
        .col_expr(job::Column::RunAfter, Expr::value(now))
        .col_expr(job::Column::CancelRequested, Expr::value(false))
        .col_expr(job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::Progress, Expr::value(Option::<serde_json::Value>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.is_in([JobStatus::Dead, JobStatus::Failed, JobStatus::Cancelled]))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Give a QUEUED or RUNNING job another priority; `false` when it is in neither state.
pub async fn set_priority<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    priority: i32,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let updated = job::Entity::update_many()
        .col_expr(job::Column::Priority, Expr::value(priority))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.is_in([JobStatus::Queued, JobStatus::Running]))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Store the latest progress on the job row, only while `token` holds the lease of
/// the RUNNING job; `false` when it does not.
pub async fn store_progress<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    token: Uuid,
    progress: serde_json::Value,
) -> Result<bool, DbErr> {
    update_leased(conn, job_id, token, job::Column::Progress, Expr::value(progress)).await
}

/// How many jobs there are of each of `statuses` (statuses without any are absent).
pub async fn count_by_status<C: ConnectionTrait>(
    conn: &C,
    statuses: &[JobStatus],
) -> Result<Vec<(JobStatus, i64)>, DbErr> {
    job::Entity::find()
        .select_only()
        .column(job::Column::Status)
        .column_as(Expr::col(job::Column::Id).count(), "n")
        .filter(job::Column::Status.is_in(statuses.iter().copied()))
        .group_by(job::Column::Status)
        .into_tuple()
        .all(conn)
        .await
}

/// The earliest `run_after` of the QUEUED jobs runnable at `now`, if any.
pub async fn oldest_runnable_queued<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    job::Entity::find()
        .select_only()
        .column(job::Column::RunAfter)
        .filter(job::Column::Status.eq(JobStatus::Queued))
        .filter(job::Column::RunAfter.lte(now))
        .order_by_asc(job::Column::RunAfter)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lane_leases_only_its_kinds() {
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let media = lease_sql(backend, Lane::Media);
            let mail = lease_sql(backend, Lane::Mail);
            assert!(media.contains("c.status = 'QUEUED' AND c.kind <> 'SEND_MAIL' AND"), "{media}");
            assert!(mail.contains("c.status = 'QUEUED' AND c.kind = 'SEND_MAIL' AND"), "{mail}");
        }
    }
}
