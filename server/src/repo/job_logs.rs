//! A job's log (`job_logs`): bounded lines appended by whichever process runs the
//! job, in `seq` order, read back by the API and the `jobLog` subscription.

use chrono::Utc;
use entities::{job, job_log, LogLevel};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

/// Append `message` (already bounded to one line) to a job's log inside `txn`, keeping its newest
/// `max_lines`; returns the stored line. Its `seq` is the job's next: writers of one
/// job are serialised by the job row's lock (PostgreSQL; SQLite has one writer), so
/// lines commit in `seq` order and a reader that has seen `seq` n has seen every
/// line before it.
pub async fn append(
    txn: &DatabaseTransaction,
    job_id: Uuid,
    level: LogLevel,
    message: String,
    max_lines: u64,
) -> Result<job_log::Model, DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        let _locked: Option<Uuid> = job::Entity::find_by_id(job_id)
            .select_only()
            .column(job::Column::Id)
            .lock_exclusive()
            .into_tuple()
            .one(txn)
            .await?;
    }
    // Trimming keeps the newest line, so the maximum is never lost.
    let last: Option<Option<i64>> = job_log::Entity::find()
        .select_only()
        .column_as(Expr::col(job_log::Column::Seq).max(), "seq")
        .filter(job_log::Column::JobId.eq(job_id))
        .into_tuple()
        .one(txn)
        .await?;
    let seq = last.flatten().unwrap_or(0) + 1;
    let line = job_log::ActiveModel {
        job_id: Set(job_id),
        seq: Set(seq),
        at: Set(Utc::now()),
        level: Set(level),
        message: Set(message),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    // Bounded so a chatty pipeline cannot fill the table: the oldest lines go (a
    // reader that had not seen them is told how many it missed, see [`page`]).
    let keep = i64::try_from(max_lines).unwrap_or(i64::MAX);
    if seq > keep {
        job_log::Entity::delete_many()
            .filter(job_log::Column::JobId.eq(job_id))
            .filter(job_log::Column::Seq.lte(seq - keep))
            .exec(txn)
            .await?;
    }
    Ok(line)
}

/// Stored lines of a job after `after_seq`, oldest first, at most `limit` (if any).
pub async fn page<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    after_seq: i64,
    limit: Option<u64>,
) -> Result<Vec<job_log::Model>, DbErr> {
    let mut query = job_log::Entity::find()
        .filter(job_log::Column::JobId.eq(job_id))
        .filter(job_log::Column::Seq.gt(after_seq))
        .order_by_asc(job_log::Column::Seq);
    if let Some(limit) = limit {
        query = query.limit(limit);
    }
    query.all(conn).await
}

/// A job's log, oldest first.
pub async fn lines<C: ConnectionTrait>(conn: &C, job_id: Uuid) -> Result<Vec<job_log::Model>, DbErr> {
    job_log::Entity::find().filter(job_log::Column::JobId.eq(job_id)).order_by_asc(job_log::Column::Seq).all(conn).await
}
