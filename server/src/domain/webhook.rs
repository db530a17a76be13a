//! A webhook delivery's body and an endpoint's subscribed kinds: what fan-in
//! (`repo::webhooks`), replay and the API agree on.

use entities::webhook_endpoint;
use serde_json::json;
use uuid::Uuid;

use crate::domain::event::{DomainEvent, EventKind};

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
