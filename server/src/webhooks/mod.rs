//! Webhooks: signed, retried HTTP deliveries of stored video events.
//!
//! **Fan-in (exactly one delivery per endpoint and event).** [`fan_in`] runs inside
//! [`crate::events::record`], in the transaction that writes the outbox row: it
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
//! error, rendition, cursor, seq } }` with headers `Reelhouse-Webhook-Id` (the delivery
//! id: the idempotency key, the same on every retry and redelivery),
//! `Reelhouse-Webhook-Timestamp` (unix seconds of this attempt) and
//! `Reelhouse-Webhook-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
//! Receivers recompute the signature over the raw body, compare in constant time, and
//! reject timestamps more than 5 minutes away from their clock (the replay window);
//! within it they dedupe on the id. Delivery is at-least-once.
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
pub mod secrets;
pub mod target;

use chrono::Utc;
use entities::{webhook_delivery, webhook_endpoint, WebhookDeliveryStatus};
use hmac::{Hmac, Mac};
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use crate::events::{DomainEvent, EventKind};

/// Header carrying the delivery (idempotency) id.
pub const ID_HEADER: &str = "Reelhouse-Webhook-Id";
/// Header carrying the unix time of the attempt, in seconds.
pub const TIMESTAMP_HEADER: &str = "Reelhouse-Webhook-Timestamp";
/// Header carrying `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub const SIGNATURE_HEADER: &str = "Reelhouse-Webhook-Signature";
/// Seconds a receiver should accept a timestamp for (documented replay window).
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A new endpoint secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

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
/// it (`events::record` does).
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
    let now = Utc::now();
    // The delivery continues the trace that recorded the event (an upload's, a job's).
    let trace_parent = crate::telemetry::traces::current_traceparent();
    for endpoint in endpoints {
        if !subscribed_kinds(&endpoint).contains(&event.kind) {
            continue;
        }
        let id = Uuid::now_v7();
        webhook_delivery::ActiveModel {
            id: Set(id),
            endpoint_id: Set(endpoint.id),
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
            trace_parent: Set(trace_parent.clone()),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'whsec_test', b'1700000000.{}', hashlib.sha256).hexdigest())"
        let sig = sign("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(sig, "v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91");
        assert_ne!(sig, sign("whsec_test", 1_700_000_001, b"{}"));
    }
}
