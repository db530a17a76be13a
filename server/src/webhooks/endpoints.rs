//! Endpoints and their delivery log as the API manages them (`createWebhook`,
//! `updateWebhook`, `deleteWebhook`, `redeliverWebhook`, `webhooks`,
//! `webhookDeliveries`). Who may see which endpoint is the caller's business:
//! these functions take ids and values, checked already.

use chrono::Utc;
use entities::{webhook_attempt, webhook_delivery, webhook_endpoint, WebhookDeliveryStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select, Set,
};
use uuid::Uuid;

/// The endpoint by id, whoever owns it.
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<webhook_endpoint::Model>, DbErr> {
    webhook_endpoint::Entity::find_by_id(id).one(conn).await
}

/// Up to `limit` endpoints, newest first: `owner`'s (`None`: every endpoint,
/// global ones included).
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    owner: Option<Uuid>,
    limit: u64,
) -> Result<Vec<webhook_endpoint::Model>, DbErr> {
    let mut query = webhook_endpoint::Entity::find().order_by_desc(webhook_endpoint::Column::Id);
    if let Some(owner) = owner {
        query = query.filter(webhook_endpoint::Column::OwnerId.eq(owner));
    }
    query.limit(limit).all(conn).await
}

/// How many personal endpoints `owner` has.
pub async fn count_owned<C: ConnectionTrait>(conn: &C, owner: Uuid) -> Result<u64, DbErr> {
    webhook_endpoint::Entity::find().filter(webhook_endpoint::Column::OwnerId.eq(owner)).count(conn).await
}

/// A new endpoint, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub id: Uuid,
    /// `None`: a global endpoint (every video's events).
    pub owner_id: Option<Uuid>,
    pub url: String,
    /// The secret sealed for `id` (see [`super::secrets`]).
    pub sealed_secret: String,
    /// The event kinds, as stored (a JSON array of names).
    pub event_kinds: serde_json::Value,
}

/// Store a new, enabled endpoint.
pub async fn create<C: ConnectionTrait>(conn: &C, new: NewEndpoint) -> Result<webhook_endpoint::Model, DbErr> {
    let now = Utc::now();
    webhook_endpoint::ActiveModel {
        id: Set(new.id),
        owner_id: Set(new.owner_id),
        url: Set(new.url),
        secret: Set(new.sealed_secret),
        event_kinds: Set(new.event_kinds),
        enabled: Set(true),
        disabled_reason: Set(None),
        consecutive_failures: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await
}

/// What `updateWebhook` changes (validated by the caller); `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    /// As stored (a JSON array of names).
    pub event_kinds: Option<serde_json::Value>,
    /// Re-enabling clears the disabled reason and the failure count.
    pub enabled: Option<bool>,
}

/// Apply `changes` to `endpoint`; returns the endpoint after.
pub async fn update<C: ConnectionTrait>(
    conn: &C,
    endpoint: webhook_endpoint::Model,
    changes: EndpointChanges,
) -> Result<webhook_endpoint::Model, DbErr> {
    let mut row = endpoint.into_active_model();
    if let Some(url) = changes.url {
        row.url = Set(url);
    }
    if let Some(kinds) = changes.event_kinds {
        row.event_kinds = Set(kinds);
    }
    if let Some(enabled) = changes.enabled {
        row.enabled = Set(enabled);
        if enabled {
            row.disabled_reason = Set(None);
            row.consecutive_failures = Set(0);
        }
    }
    row.updated_at = Set(Utc::now());
    row.update(conn).await
}

/// Remove endpoint `id` (its deliveries and attempts go with it, by cascade).
pub async fn delete<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<(), DbErr> {
    webhook_endpoint::Entity::delete_by_id(id).exec(conn).await?;
    Ok(())
}

/// The deliveries of endpoint `endpoint_id`; unordered, for paging by id.
pub fn deliveries_of(endpoint_id: Uuid) -> Select<webhook_delivery::Entity> {
    webhook_delivery::Entity::find().filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
}

/// The delivery by id, whichever endpoint it is for.
pub async fn find_delivery<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<webhook_delivery::Model>, DbErr> {
    webhook_delivery::Entity::find_by_id(id).one(conn).await
}

/// Make `delivery` PENDING and due now, with a fresh retry period (same id, so
/// the same idempotency key); returns it after.
pub async fn redeliver<C: ConnectionTrait>(
    conn: &C,
    delivery: webhook_delivery::Model,
) -> Result<webhook_delivery::Model, DbErr> {
    let now = Utc::now();
    let mut row = delivery.into_active_model();
    row.status = Set(WebhookDeliveryStatus::Pending);
    row.next_attempt_at = Set(now);
    row.window_started_at = Set(now);
    row.update(conn).await
}

/// The latest `limit` attempts of delivery `delivery_id`, oldest first.
pub async fn latest_attempts<C: ConnectionTrait>(
    conn: &C,
    delivery_id: Uuid,
    limit: u64,
) -> Result<Vec<webhook_attempt::Model>, DbErr> {
    let mut rows = webhook_attempt::Entity::find()
        .filter(webhook_attempt::Column::DeliveryId.eq(delivery_id))
        .order_by_desc(webhook_attempt::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    rows.reverse();
    Ok(rows)
}
