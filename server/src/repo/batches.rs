//! Batches (`transcodeBatch`): the row naming who asked and what for, the TRANSCODE
//! jobs it enqueued (`batch_jobs`), reading them back, cancelling. Enqueueing and
//! counting a batch's progress are `jobs::batches`'.

use chrono::Utc;
use entities::{batch, batch_job, job, JobStatus};
use sea_orm::sea_query::Query;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Select, Set};
use uuid::Uuid;

/// Insert a batch row of `total` videos.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    created_by: Uuid,
    preset: String,
    formats: serde_json::Value,
    total: i32,
) -> Result<batch::Model, DbErr> {
    batch::ActiveModel {
        id: Set(Uuid::now_v7()),
        created_by: Set(created_by),
        preset: Set(preset),
        formats: Set(formats),
        total: Set(total),
        created_at: Set(Utc::now()),
        cancelled_at: Set(None),
    }
    .insert(conn)
    .await
}

/// Count job `job_id` as one of batch `batch_id`'s.
pub async fn add_job<C: ConnectionTrait>(conn: &C, batch_id: Uuid, job_id: Uuid) -> Result<(), DbErr> {
    batch_job::ActiveModel { batch_id: Set(batch_id), job_id: Set(job_id) }.insert(conn).await?;
    Ok(())
}

/// The batch by id, whoever may see it (the caller checks).
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<batch::Model>, DbErr> {
    batch::Entity::find_by_id(id).one(conn).await
}

/// The batches listing: those `created_by` made (`None`: everyone's); unordered,
/// for paging by id.
pub fn listing(created_by: Option<Uuid>) -> Select<batch::Entity> {
    let query = batch::Entity::find();
    match created_by {
        Some(user_id) => query.filter(batch::Column::CreatedBy.eq(user_id)),
        None => query,
    }
}

/// The jobs of batch `id`.
pub async fn jobs_of<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Vec<job::Model>, DbErr> {
    job::Entity::find()
        .filter(
            job::Column::Id.in_subquery(
                Query::select()
                    .column(batch_job::Column::JobId)
                    .from(batch_job::Entity)
                    .and_where(batch_job::Column::BatchId.eq(id))
                    .to_owned(),
            ),
        )
        .all(conn)
        .await
}

/// Mark batch `id` cancelled (once) and return its unfinished jobs, which the caller
/// cancels through the queue (queued: CANCELLED at once; running: stopped within a
/// second, then CANCELLED).
pub async fn mark_cancelled<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Vec<job::Model>, DbErr> {
    batch::Entity::update_many()
        .col_expr(batch::Column::CancelledAt, sea_orm::sea_query::Expr::value(Utc::now()))
        .filter(batch::Column::Id.eq(id))
        .filter(batch::Column::CancelledAt.is_null())
        .exec(conn)
        .await?;
    Ok(jobs_of(conn, id)
        .await?
        .into_iter()
        .filter(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running))
        .collect())
}
