//! Webhook endpoints, deliveries and attempts: as the API manages them
//! (`createWebhook`, `updateWebhook`, `deleteWebhook`, `redeliverWebhook`,
//! `webhooks`, `webhookDeliveries`), as fan-in creates them in the transaction of
//! the event ([`fan_in`]), and as the delivery loop and replay move them on
//! (`webhooks::delivery`, `webhooks::replay`). Who may see which endpoint is the
//! caller's business: these functions take ids and values, checked already.

use chrono::{DateTime, Utc};
use entities::{webhook_attempt, webhook_delivery, webhook_endpoint, WebhookDeliveryStatus};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, Set,
};
use uuid::Uuid;

use crate::domain::event::{DomainEvent, EventKind};
use crate::domain::webhook::{delivery_payload, subscribed_kinds};

/// The endpoint by id, whoever owns it.
pub async fn find<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<webhook_endpoint::Model>, DbErr> {
    webhook_endpoint::Entity::find_by_id(id).one(conn).await
}

/// Every endpoint (the secrets' re-sealing pass reads them all).
pub async fn all<C: ConnectionTrait>(conn: &C) -> Result<Vec<webhook_endpoint::Model>, DbErr> {
    webhook_endpoint::Entity::find().all(conn).await
}

/// Store `sealed` as endpoint `id`'s secret if it is still `current` (conditional,
/// so concurrent passes leave one value); returns 1 if it changed, 0 if not.
pub async fn replace_secret<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    current: &str,
    sealed: String,
) -> Result<u64, DbErr> {
    Ok(webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::Secret, Expr::value(sealed))
        .filter(webhook_endpoint::Column::Id.eq(id))
        .filter(webhook_endpoint::Column::Secret.eq(current))
        .exec(conn)
        .await?
        .rows_affected)
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
    /// The secret sealed for `id` (see `webhooks::secrets`).
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
pub fn new_delivery(
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

/// Which of `cursors` already have a delivery to `endpoint_id`, and in what state.
pub async fn delivery_states<C: ConnectionTrait>(
    conn: &C,
    endpoint_id: Uuid,
    cursors: &[i64],
) -> Result<Vec<(i64, WebhookDeliveryStatus)>, DbErr> {
    webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::EventCursor)
        .column(webhook_delivery::Column::Status)
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .filter(webhook_delivery::Column::EventCursor.is_in(cursors.iter().copied()))
        .into_tuple()
        .all(conn)
        .await
}

/// Make the settled (not PENDING) deliveries of `cursors` to `endpoint_id` PENDING
/// and due at `now`, with a fresh retry period; returns how many.
pub async fn requeue_settled<C: ConnectionTrait>(
    conn: &C,
    endpoint_id: Uuid,
    cursors: &[i64],
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    Ok(webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Status, Expr::value(WebhookDeliveryStatus::Pending))
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(webhook_delivery::Column::WindowStartedAt, Expr::value(now))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .filter(webhook_delivery::Column::EventCursor.is_in(cursors.iter().copied()))
        .filter(webhook_delivery::Column::Status.ne(WebhookDeliveryStatus::Pending))
        .exec(conn)
        .await?
        .rows_affected)
}

/// Insert `delivery` unless its (endpoint, event) has one already; returns 1 if it
/// was inserted, 0 if not.
pub async fn insert_delivery_unless_exists<C: ConnectionTrait>(
    conn: &C,
    delivery: webhook_delivery::ActiveModel,
) -> Result<u64, DbErr> {
    webhook_delivery::Entity::insert(delivery)
        .on_conflict(
            OnConflict::columns([webhook_delivery::Column::EndpointId, webhook_delivery::Column::EventCursor])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
}

/// Up to `limit` PENDING deliveries due at `now`, the longest due first.
pub async fn due_deliveries<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<webhook_delivery::Model>, DbErr> {
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
        .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .limit(limit)
        .all(conn)
        .await
}

/// Claim a due delivery for one attempt: move its next attempt to `claim_until`,
/// unless another sender did first (then `false`).
pub async fn claim_delivery<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    now: DateTime<Utc>,
    claim_until: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(claim_until))
        .filter(webhook_delivery::Column::Id.eq(id))
        .filter(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
        .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Give a claimed, still PENDING delivery back, due at `next` (no attempt counted).
pub async fn put_off_delivery<C: ConnectionTrait>(conn: &C, id: Uuid, next: DateTime<Utc>) -> Result<(), DbErr> {
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next))
        .filter(webhook_delivery::Column::Id.eq(id))
        .filter(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
        .exec(conn)
        .await?;
    Ok(())
}

/// Fail `delivery` without an attempt, saying why.
pub async fn fail_delivery<C: ConnectionTrait>(
    conn: &C,
    delivery: webhook_delivery::Model,
    why: &str,
) -> Result<(), DbErr> {
    let mut row = delivery.into_active_model();
    row.status = Set(WebhookDeliveryStatus::Failed);
    row.last_error = Set(Some(why.into()));
    row.update(conn).await?;
    Ok(())
}

/// One attempt of a delivery, for its log.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub delivery_id: Uuid,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// Log one attempt of a delivery.
pub async fn insert_attempt<C: ConnectionTrait>(conn: &C, attempt: NewAttempt) -> Result<(), DbErr> {
    webhook_attempt::ActiveModel {
        delivery_id: Set(attempt.delivery_id),
        at: Set(attempt.at),
        status_code: Set(attempt.status_code),
        latency_ms: Set(attempt.latency_ms),
        error: Set(attempt.error),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// SUCCEEDED.
    Delivered,
    /// Still PENDING, due again then.
    RetryAt(DateTime<Utc>),
    /// FAILED for good: its retry period is over.
    Failed,
}

/// Count the attempt on `delivery` (its answer's status and error) and move it on
/// as `end` says, at `now`.
pub async fn settle_delivery<C: ConnectionTrait>(
    conn: &C,
    delivery: webhook_delivery::Model,
    status_code: Option<i32>,
    error: Option<String>,
    end: AttemptEnd,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let attempts = delivery.attempts.saturating_add(1);
    let mut row = delivery.into_active_model();
    row.attempts = Set(attempts);
    row.last_status_code = Set(status_code);
    row.last_error = Set(error);
    match end {
        AttemptEnd::Delivered => {
            row.status = Set(WebhookDeliveryStatus::Succeeded);
            row.delivered_at = Set(Some(now));
            row.next_attempt_at = Set(now);
        }
        AttemptEnd::RetryAt(next) => row.next_attempt_at = Set(next),
        AttemptEnd::Failed => {
            row.status = Set(WebhookDeliveryStatus::Failed);
            row.next_attempt_at = Set(now);
        }
    }
    row.update(conn).await?;
    Ok(())
}

/// The endpoint delivered: its count of consecutive failures starts again.
pub async fn reset_failures<C: ConnectionTrait>(conn: &C, endpoint_id: Uuid) -> Result<(), DbErr> {
    webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::ConsecutiveFailures, Expr::value(0))
        .filter(webhook_endpoint::Column::Id.eq(endpoint_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// One more consecutive failure of the endpoint; returns it after (`None`: gone).
pub async fn add_failure<C: ConnectionTrait>(
    conn: &C,
    endpoint_id: Uuid,
) -> Result<Option<webhook_endpoint::Model>, DbErr> {
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::ConsecutiveFailures,
            Expr::col(webhook_endpoint::Column::ConsecutiveFailures).add(1),
        )
        .filter(webhook_endpoint::Column::Id.eq(endpoint_id))
        .exec(conn)
        .await?;
    webhook_endpoint::Entity::find_by_id(endpoint_id).one(conn).await
}

/// Disable `endpoint`, saying why.
pub async fn disable<C: ConnectionTrait>(
    conn: &C,
    endpoint: webhook_endpoint::Model,
    reason: String,
) -> Result<(), DbErr> {
    let mut row = endpoint.into_active_model();
    row.enabled = Set(false);
    row.disabled_reason = Set(Some(reason));
    row.updated_at = Set(Utc::now());
    row.update(conn).await?;
    Ok(())
}
