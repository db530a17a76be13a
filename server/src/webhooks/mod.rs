//! Webhooks: signed, retried HTTP deliveries of stored video events.
//!
//! **Fan-in (exactly one delivery per endpoint and event).** [`fan_in`] runs inside
//! [`crate::repo::outbox::record`], in the transaction that writes the outbox row: it
//! inserts one `webhook_deliveries` row per enabled endpoint that subscribes to the
//! event's kind and may see the video (the video owner's own endpoints, and global
//! endpoints). The delivery exists exactly when the event commits, whichever process
//! recorded it, and a unique index on (endpoint, event cursor) backs that up; there is
//! no cursor to keep or race for. PROGRESS is never stored, so never delivered.
//!
//! **Delivery.** Every `serve` process runs [`delivery::run`], which repeatedly calls
//! [`delivery::deliver_due`]: it claims due PENDING rows with a conditional UPDATE
//! (`next_attempt_at <= now` → `now + claim`), so two processes never attempt the same
//! delivery at once, and a process that dies mid-attempt leaves a row that becomes due
//! again when its claim runs out (deliveries are rows: they survive restarts). This is
//! a small loop of its own rather than a `JobKind` of the jobs table because its retry
//! policy (for a period, not a number of attempts), its per-endpoint failure counting
//! and its per-attempt log differ from the transcode queue's.
//!
//! **Wire format.** `POST` of JSON `{ id, type, createdAt, data: { videoId, status,
//! error, rendition, cursor, seq } }`, signed per [Standard Webhooks] (see
//! [`signing`]): `webhook-id` (the delivery id: the idempotency key, the same on
//! every retry, redelivery and replay), `webhook-timestamp` (unix seconds of this
//! attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, so the official verifier libraries work unchanged.
//! Receivers reject timestamps more than 5 minutes from their clock (the replay
//! window) and dedupe on the id within it. Delivery is at-least-once. The previous
//! release's `Reelhouse-Webhook-*` headers are sent beside them while
//! `webhooks.legacy_headers` is on (this release's default; gone in the next).
//!
//! **Replay.** [`replay`] re-enqueues, for one endpoint, the deliveries of the
//! stored events after a cursor, as fan-in would have made them.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/
//!
//! **Secrets** are shown once, on creation, and stored sealed with a key derived from
//! the server's master secret (the server has to sign with them, so they cannot be
//! hashed); see [`secrets`].
//!
//! **SSRF.** Targets are http(s) URLs without credentials; unless
//! `webhooks.allow_private_targets`, a target resolving to a loopback, private,
//! link-local or otherwise internal address is refused at creation and again at every
//! attempt, after resolution, and the request is pinned to the addresses checked (no
//! second lookup a rebinding DNS server could answer differently). Redirects are not
//! followed.

pub mod delivery;
pub mod endpoints;
pub mod replay;
pub mod secrets;
pub mod signing;
pub mod target;

use chrono::Utc;
use entities::{webhook_delivery, webhook_endpoint, WebhookDeliveryStatus};
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

use crate::events::{DomainEvent, EventKind};

pub use signing::{new_secret, REPLAY_WINDOW_SECS};

/// The kinds an endpoint subscribes to, as stored.
pub fn subscribed_kinds(endpoint: &webhook_endpoint::Model) -> Vec<EventKind> {
    serde_json::from_value(endpoint.event_kinds.clone()).unwrap_or_default()
}

/// The JSON body of a delivery.
pub fn delivery_payload(delivery_id: Uuid, event: &DomainEvent, cursor: i64) -> serde_json::Value {
    json!({
        "id": delivery_id.to_string(),
        "type": event.kind.as_str(),
        "createdAt": event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "videoId": event.video_id.to_string(),
            "status": event.status,
            "error": event.error,
            "rendition": event.rendition,
            "cursor": cursor.to_string(),
            "seq": event.seq,
        },
    })
}

/// Create the deliveries of a just-stored event. Call in the transaction that stores
/// it (`repo::outbox::record` does).
pub async fn fan_in<C: ConnectionTrait>(conn: &C, event: &DomainEvent) -> Result<(), DbErr> {
    let Some(cursor) = event.cursor else { return Ok(()) };
    if event.kind == EventKind::Progress {
        return Ok(());
    }
    let endpoints = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .filter(
            Condition::any()
                .add(webhook_endpoint::Column::OwnerId.eq(event.owner_id))
                .add(webhook_endpoint::Column::OwnerId.is_null()),
        )
        .all(conn)
        .await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    // Due on the database's clock: a worker whose own clock runs ahead (it records
    // RENDITION_READY and READY) would otherwise hold the deliveries back by its
    // skew (the clock-skew fault found them pending 10 minutes).
    let now = crate::db::now(conn).await?;
    for endpoint in endpoints {
        if !subscribed_kinds(&endpoint).contains(&event.kind) {
            continue;
        }
        new_delivery(endpoint.id, event, cursor, now).insert(conn).await?;
    }
    Ok(())
}

/// A PENDING delivery of `event` (stored at `cursor`) to `endpoint_id`, due now,
/// with a new id: the idempotency key of this (endpoint, event) from now on (made
/// by fan-in and by replay). It continues the current trace (the request, job or
/// replay that recorded or re-sent the event).
pub(crate) fn new_delivery(
    endpoint_id: Uuid,
    event: &DomainEvent,
    cursor: i64,
    now: chrono::DateTime<Utc>,
) -> webhook_delivery::ActiveModel {
    let id = Uuid::now_v7();
    webhook_delivery::ActiveModel {
        id: Set(id),
        endpoint_id: Set(endpoint_id),
        event_cursor: Set(cursor),
        event_kind: Set(event.kind.as_str().to_string()),
        payload: Set(delivery_payload(id, event, cursor)),
        status: Set(WebhookDeliveryStatus::Pending),
        attempts: Set(0),
        next_attempt_at: Set(now),
        window_started_at: Set(now),
        last_status_code: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        delivered_at: Set(None),
        trace_parent: Set(crate::telemetry::traces::current_traceparent()),
    }
}
