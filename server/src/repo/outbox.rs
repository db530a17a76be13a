//! Writing domain events into the outbox, in the transaction of the change they
//! describe, together with the webhook deliveries they cause. Reading, relaying and
//! pruning the outbox is `events`'.

use entities::{event_outbox, video};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};

use crate::events::{DomainEvent, EventDetail, EventKind};

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
    crate::webhooks::fan_in(conn, &event).await?;
    Ok(event)
}
