//! `webhook_deliveries`: one event for one endpoint. `id` is the idempotency id
//! receivers dedupe on; it stays the same across retries and redeliveries.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::enums::WebhookDeliveryStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The outbox id of the event.
    pub event_cursor: i64,
    pub event_kind: String,
    /// The JSON body sent, built once when the event was stored.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub status: WebhookDeliveryStatus,
    pub attempts: i32,
    /// Not attempted before this instant (back-off, or a claim by a sender).
    pub next_attempt_at: DateTimeUtc,
    /// Retries run for `webhooks.retry_for_secs` from this instant (the event, or
    /// the last redelivery); a retry due later makes the delivery FAILED instead.
    pub window_started_at: DateTimeUtc,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub delivered_at: Option<DateTimeUtc>,
    /// W3C `traceparent` of the span that recorded the event (NULL: not traced).
    pub trace_parent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
