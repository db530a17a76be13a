//! Replaying an endpoint's deliveries from an event cursor (`replayWebhooks`).
//!
//! A replay looks at the stored events after the cursor that fan-in would deliver
//! to the endpoint today: its kinds, and for a personal endpoint only its owner's
//! videos (a global endpoint hears of every video). In cursor order, at most
//! `limit` of them, it makes each one's delivery PENDING and due now:
//!
//! - an event that already has a delivery to this endpoint keeps it: same row,
//!   **same id** (so same `webhook-id`), a fresh retry period. A receiver that has
//!   processed it dedupes it; one that lost it processes it. A delivery still
//!   PENDING is left as it is (it is on its way; touching it could race its sender).
//! - an event without one (the endpoint was created, disabled or not subscribed to
//!   that kind when it happened) gets a new delivery with a new id, exactly as
//!   fan-in makes them. The unique (endpoint, event) index keeps it one per event,
//!   whatever runs at the same time.
//!
//! So one event has at most one delivery id per endpoint, ever.

use chrono::Utc;
use entities::{webhook_endpoint, WebhookDeliveryStatus};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain::event::{DomainEvent, EventKind};
use crate::repo::webhooks as store;

/// The stored events a replay would deliver, in cursor order.
#[derive(Debug)]
pub struct ReplayBatch {
    events: Vec<DomainEvent>,
    /// The cursor of the last event looked at (parsed or not): where the next replay starts.
    end_cursor: Option<i64>,
    /// More matching events follow the last one.
    pub has_more: bool,
}

impl ReplayBatch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The cursor of the last event looked at: where the next replay starts.
    pub fn end_cursor(&self) -> Option<i64> {
        self.end_cursor
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// New deliveries (new ids): events the endpoint had no delivery of.
    pub created: u64,
    /// Existing deliveries (same ids) sent again.
    pub requeued: u64,
    /// Deliveries left as they were because they are still pending.
    pub pending: u64,
}

/// The kinds an endpoint hears, as stored in the outbox (never PROGRESS).
fn delivered_kinds(endpoint: &webhook_endpoint::Model) -> Vec<&'static str> {
    crate::domain::webhook::subscribed_kinds(endpoint)
        .into_iter()
        .filter(|k| *k != EventKind::Progress)
        .map(EventKind::as_str)
        .collect()
}

/// Up to `limit` stored events after `after` that fan-in would deliver to `endpoint`.
pub async fn select(
    db: &DatabaseConnection,
    endpoint: &webhook_endpoint::Model,
    after: i64,
    limit: u64,
) -> Result<ReplayBatch, DbErr> {
    let kinds = delivered_kinds(endpoint);
    if kinds.is_empty() || limit == 0 {
        return Ok(ReplayBatch { events: Vec::new(), end_cursor: None, has_more: false });
    }
    // Fan-in's rule: a personal endpoint hears of its owner's videos only.
    let mut rows =
        crate::repo::outbox::of_kinds_after(db, after, &kinds, endpoint.owner_id, limit.saturating_add(1)).await?;
    let has_more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        match DomainEvent::from_outbox(row) {
            Ok(event) => events.push(event),
            // A row no build of this server wrote; skipped rather than stopping every replay.
            Err(err) => tracing::warn!(cursor = row.id, error = %err, "stored event does not parse; not replayed"),
        }
    }
    Ok(ReplayBatch { events, end_cursor: rows.last().map(|row| row.id), has_more })
}

/// Make the batch's deliveries to `endpoint` PENDING and due now (see the module
/// docs for which keep their id), in one transaction.
pub async fn enqueue(
    db: &DatabaseConnection,
    endpoint: &webhook_endpoint::Model,
    batch: &ReplayBatch,
) -> Result<ReplayOutcome, DbErr> {
    let cursors: Vec<i64> = batch.events.iter().filter_map(|e| e.cursor).collect();
    if cursors.is_empty() {
        return Ok(ReplayOutcome::default());
    }
    let now = Utc::now();
    let txn = crate::db::begin_write(db).await?;
    let existing = store::delivery_states(&txn, endpoint.id, &cursors).await?;
    let pending = existing.iter().filter(|(_, status)| *status == WebhookDeliveryStatus::Pending).count() as u64;
    let requeued = store::requeue_settled(&txn, endpoint.id, &cursors, now).await?;
    let known: std::collections::HashSet<i64> = existing.iter().map(|(cursor, _)| *cursor).collect();
    let fresh: Vec<_> = batch
        .events
        .iter()
        .filter_map(|event| event.cursor.filter(|c| !known.contains(c)).map(|c| (event, c)))
        .map(|(event, cursor)| store::new_delivery(endpoint.id, event, cursor, now))
        .collect();
    let mut created = 0;
    for delivery in fresh {
        // One at a time: a delivery made meanwhile (by a concurrent replay) wins, and
        // this insert does nothing instead of failing the whole batch.
        created += store::insert_delivery_unless_exists(&txn, delivery).await?;
    }
    txn.commit().await?;
    metrics::counter!("reelhouse_webhook_replayed_total", "kind" => "created").increment(created);
    metrics::counter!("reelhouse_webhook_replayed_total", "kind" => "requeued").increment(requeued);
    Ok(ReplayOutcome { created, requeued, pending })
}
