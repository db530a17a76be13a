//! The worker processes that announced themselves (`workers`): local workers and
//! remote ones (a worker token's connection), their heartbeats, and forgetting
//! those not seen for a while.

use chrono::{DateTime, Utc};
use entities::worker;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

/// A worker's row as it announces itself.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: Uuid,
    pub host: String,
    pub pid: i32,
    pub capacity: i32,
    pub current_jobs: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// `LOCAL` or `REMOTE`.
    pub kind: String,
    pub name: Option<String>,
    pub tags: String,
    /// `IDLE`, `BUSY` or `DRAINING`.
    pub state: String,
    pub gstreamer_version: Option<String>,
    pub token_id: Option<Uuid>,
}

/// Insert a worker's row.
pub async fn insert<C: ConnectionTrait>(conn: &C, new: NewWorker) -> Result<worker::Model, DbErr> {
    worker::ActiveModel {
        id: Set(new.id),
        host: Set(new.host),
        pid: Set(new.pid),
        capacity: Set(new.capacity),
        current_jobs: Set(new.current_jobs),
        version: Set(new.version),
        started_at: Set(new.started_at),
        last_seen_at: Set(new.last_seen_at),
        kind: Set(new.kind),
        name: Set(new.name),
        tags: Set(new.tags),
        state: Set(new.state),
        gstreamer_version: Set(new.gstreamer_version),
        token_id: Set(new.token_id),
    }
    .insert(conn)
    .await
}

/// A heartbeat: the worker was seen at `now` running `current_jobs`, in `state`;
/// `false` when it has no row (the sweeper removed it).
pub async fn touch<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    now: DateTime<Utc>,
    current_jobs: i32,
    state: &str,
) -> Result<bool, DbErr> {
    let updated = worker::Entity::update_many()
        .col_expr(worker::Column::LastSeenAt, Expr::value(now))
        .col_expr(worker::Column::CurrentJobs, Expr::value(current_jobs))
        .col_expr(worker::Column::State, Expr::value(state))
        .filter(worker::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Remove a worker's row (it is going away).
pub async fn delete<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<(), DbErr> {
    worker::Entity::delete_by_id(id).exec(conn).await?;
    Ok(())
}

/// Forget the workers last seen before `before` (presumed gone).
pub async fn delete_unseen_since<C: ConnectionTrait>(conn: &C, before: DateTime<Utc>) -> Result<(), DbErr> {
    worker::Entity::delete_many().filter(worker::Column::LastSeenAt.lt(before)).exec(conn).await?;
    Ok(())
}

/// The worker processes that announced themselves, oldest first.
pub async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<worker::Model>, DbErr> {
    worker::Entity::find().order_by_asc(worker::Column::StartedAt).all(conn).await
}

/// When each worker was last seen (one value per row).
pub async fn last_seen<C: ConnectionTrait>(conn: &C) -> Result<Vec<DateTime<Utc>>, DbErr> {
    worker::Entity::find().select_only().column(worker::Column::LastSeenAt).into_tuple().all(conn).await
}
