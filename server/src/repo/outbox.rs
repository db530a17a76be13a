//! Writing domain events into the outbox, in the transaction of the change they
//! describe, together with the webhook deliveries they cause; and reading them
//! back for the event subscriptions (snapshots, replays, gaps), the sequencer and
//! the pruner (`events` runs both).

use chrono::{DateTime, Utc};
use entities::{event_outbox, video, Visibility};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use uuid::Uuid;

use crate::domain::event::{DomainEvent, EventDetail, EventKind};

/// Write a state-changing event for `video` (its state *after* the change) into the
/// outbox. Call inside the transaction that makes the change, then publish the
/// returned event after commit.
#[tracing::instrument(name = "db event record", skip_all, fields(otel.kind = "client", event = kind.as_str(), video.id = %video.id))]
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    video: &video::Model,
    kind: EventKind,
    detail: EventDetail,
) -> Result<DomainEvent, DbErr> {
    // Serialise writers of one video's sequence: PostgreSQL row lock; SQLite has
    // one writer per database already. The sequence lives on the video row, so
    // pruning old outbox rows (see `prune`) never restarts it.
    let seq = super::videos::lock(conn, video.id).await?.map(|v| v.event_seq).unwrap_or(0) + 1;
    video::Entity::update_many()
        .col_expr(video::Column::EventSeq, Expr::value(seq))
        .filter(video::Column::Id.eq(video.id))
        .exec(conn)
        .await?;
    let mut event = DomainEvent::new(video, kind, detail, seq);
    let payload = serde_json::to_value(&event).map_err(|e| DbErr::Custom(format!("serialising event: {e}")))?;
    let row = event_outbox::ActiveModel {
        video_id: Set(event.video_id),
        owner_id: Set(event.owner_id),
        kind: Set(kind.as_str().to_string()),
        seq: Set(event.seq),
        visibility: Set(event.visibility),
        payload: Set(payload),
        created_at: Set(event.at),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    event.cursor = Some(row.id);
    // Webhook deliveries exist exactly when the event does.
    super::webhooks::fan_in(conn, &event).await?;
    Ok(event)
}

/// The newest stored event of `video_id` (by `seq`), optionally only among those
/// at or before the global cursor `at_or_before`.
pub async fn newest_of_video<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    at_or_before: Option<i64>,
) -> Result<Option<event_outbox::Model>, DbErr> {
    let mut query = event_outbox::Entity::find().filter(event_outbox::Column::VideoId.eq(video_id));
    if let Some(cursor) = at_or_before {
        query = query.filter(event_outbox::Column::Id.lte(cursor));
    }
    query.order_by_desc(event_outbox::Column::Seq).one(conn).await
}

/// Whose stored events a replay after a global cursor returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayScope {
    /// One video's (the caller checked that it may read the video).
    Video(Uuid),
    /// Every video's (a moderator).
    Everything,
    /// Those of `owner`'s videos (`None`: nobody's, an anonymous viewer), and other
    /// people's of videos that were public then and are still listed now (public,
    /// not hidden, not deleted).
    Listed { owner: Option<Uuid> },
}

/// Up to `limit` stored events after the global cursor `after` within `scope`,
/// oldest first.
pub async fn after_cursor<C: ConnectionTrait>(
    conn: &C,
    after: i64,
    scope: ReplayScope,
    limit: u64,
) -> Result<Vec<event_outbox::Model>, DbErr> {
    let mut query = event_outbox::Entity::find().filter(event_outbox::Column::Id.gt(after));
    match scope {
        ReplayScope::Video(id) => query = query.filter(event_outbox::Column::VideoId.eq(id)),
        ReplayScope::Everything => {}
        ReplayScope::Listed { owner } => {
            let listed_now = event_outbox::Column::VideoId.in_subquery(
                Query::select()
                    .column(video::Column::Id)
                    .from(video::Entity)
                    .and_where(video::Column::Visibility.eq(Visibility::Public))
                    .and_where(video::Column::HiddenAt.is_null())
                    .and_where(video::Column::DeletedAt.is_null())
                    .to_owned(),
            );
            let public = Condition::all().add(event_outbox::Column::Visibility.eq(Visibility::Public)).add(listed_now);
            query = match owner {
                Some(owner) => query.filter(Condition::any().add(event_outbox::Column::OwnerId.eq(owner)).add(public)),
                None => query.filter(public),
            };
        }
    }
    query.order_by_asc(event_outbox::Column::Id).limit(limit).all(conn).await
}

/// Stored events of one video with `seq` after `after_seq` (and before
/// `before_seq`, when given), oldest first.
pub async fn of_video_between<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    after_seq: i64,
    before_seq: Option<i64>,
) -> Result<Vec<event_outbox::Model>, DbErr> {
    let mut query = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .filter(event_outbox::Column::Seq.gt(after_seq));
    if let Some(before) = before_seq {
        query = query.filter(event_outbox::Column::Seq.lt(before));
    }
    query.order_by_asc(event_outbox::Column::Seq).all(conn).await
}

/// Outbox rows deleted per statement while pruning.
const PRUNE_BATCH: u64 = 1000;

/// Delete the stored events written before `cutoff`: every row up to the newest id
/// among them, so what is kept is always a contiguous tail of ids (a cursor below
/// it has lost events: see [`cursor_expired`]). The newest row of all is kept, so
/// that tail is never empty. Per-video sequences live on the video rows and go on.
pub async fn prune(db: &sea_orm::DatabaseConnection, cutoff: DateTime<Utc>) -> Result<u64, DbErr> {
    let newest = outbox_id(db, Expr::col(event_outbox::Column::Id).max(), None).await?;
    let through = outbox_id(db, Expr::col(event_outbox::Column::Id).max(), Some(cutoff)).await?;
    let (Some(newest), Some(through)) = (newest, through) else { return Ok(0) };
    let through = through.min(newest - 1);
    let mut deleted = 0;
    loop {
        let ids: Vec<i64> = event_outbox::Entity::find()
            .select_only()
            .column(event_outbox::Column::Id)
            .filter(event_outbox::Column::Id.lte(through))
            .order_by_asc(event_outbox::Column::Id)
            .limit(PRUNE_BATCH)
            .into_tuple::<i64>()
            .all(db)
            .await?;
        if ids.is_empty() {
            break;
        }
        deleted += event_outbox::Entity::delete_many()
            .filter(event_outbox::Column::Id.is_in(ids))
            .exec(db)
            .await?
            .rows_affected;
    }
    metrics::counter!("reelhouse_events_pruned_total").increment(deleted);
    Ok(deleted)
}

/// Has the outbox lost events after `cursor` to pruning? Ids below the oldest kept
/// row are gone (or never existed): a cursor short of it cannot resume gap-free.
pub async fn cursor_expired<C: ConnectionTrait>(conn: &C, cursor: i64) -> Result<bool, DbErr> {
    let oldest = outbox_id(conn, Expr::col(event_outbox::Column::Id).min(), None).await?;
    Ok(oldest.is_some_and(|oldest| cursor < oldest - 1))
}

/// The cursor of the newest stored event (`None` before the first).
pub async fn newest_cursor<C: ConnectionTrait>(conn: &C) -> Result<Option<i64>, DbErr> {
    outbox_id(conn, Expr::col(event_outbox::Column::Id).max(), None).await
}

/// `MIN(id)` or `MAX(id)` of the outbox, optionally of rows written before `before`.
async fn outbox_id<C: ConnectionTrait>(
    conn: &C,
    aggregate: sea_orm::sea_query::SimpleExpr,
    before: Option<DateTime<Utc>>,
) -> Result<Option<i64>, DbErr> {
    let mut query = event_outbox::Entity::find().select_only().column_as(aggregate, "id");
    if let Some(before) = before {
        query = query.filter(event_outbox::Column::CreatedAt.lt(before));
    }
    Ok(query.into_tuple::<Option<i64>>().one(conn).await?.flatten())
}

/// Up to `limit` stored events after `after` of the given kinds, oldest first;
/// with `owner`, only of that owner's videos.
pub async fn of_kinds_after<C: ConnectionTrait>(
    conn: &C,
    after: i64,
    kinds: &[&str],
    owner: Option<Uuid>,
    limit: u64,
) -> Result<Vec<event_outbox::Model>, DbErr> {
    let mut query = event_outbox::Entity::find()
        .filter(event_outbox::Column::Id.gt(after))
        .filter(event_outbox::Column::Kind.is_in(kinds.iter().copied()));
    if let Some(owner) = owner {
        query = query.filter(event_outbox::Column::OwnerId.eq(owner));
    }
    query.order_by_asc(event_outbox::Column::Id).limit(limit).all(conn).await
}

/// Up to `limit` stored events after `position` (and before `upto`), oldest first:
/// the sequencer's read.
pub async fn after_position<C: ConnectionTrait>(
    conn: &C,
    position: i64,
    upto: Option<i64>,
    limit: u64,
) -> Result<Vec<event_outbox::Model>, DbErr> {
    let mut query = event_outbox::Entity::find().filter(event_outbox::Column::Id.gt(position));
    if let Some(upto) = upto {
        query = query.filter(event_outbox::Column::Id.lt(upto));
    }
    query.order_by_asc(event_outbox::Column::Id).limit(limit).all(conn).await
}

/// The stored events with these cursors (those that exist), in no particular order.
pub async fn by_cursors<C: ConnectionTrait>(conn: &C, cursors: Vec<i64>) -> Result<Vec<event_outbox::Model>, DbErr> {
    event_outbox::Entity::find().filter(event_outbox::Column::Id.is_in(cursors)).all(conn).await
}
