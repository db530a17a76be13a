//! Webhooks in GraphQL: `createWebhook`, `updateWebhook`, `deleteWebhook`,
//! `redeliverWebhook`, `replayWebhooks`, `webhooks`, `webhookDeliveries`.
//!
//! An endpoint is visible to its owner and to admins; global endpoints (no owner)
//! only to admins. To anybody else it does not exist (NOT_FOUND).

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::{webhook_attempt, webhook_delivery, webhook_endpoint, WebhookDeliveryStatus as DbStatus};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::auth::principal::{ClientInfo, Principal};
use crate::auth::roles::{has_permission, require_principal, AuthenticatedGuard, Permission};
use crate::error::GqlResultExt;
use crate::error::{AppError, ErrorCode};
use crate::events::EventKind;
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::repo::webhooks as endpoints;
use crate::state::AppState;
use crate::webhooks::target::{self, TargetError};

/// Attempts listed per delivery (newest).
const MAX_ATTEMPTS_LISTED: u64 = 50;

/// Endpoints listed by `webhooks`.
const MAX_WEBHOOKS_LISTED: u64 = 1000;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::WebhookDeliveryStatus")]
pub enum WebhookDeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A registered endpoint (the secret is never shown again after creation).
#[derive(Debug, Clone)]
pub struct Webhook(pub webhook_endpoint::Model);

#[Object]
impl Webhook {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn url(&self) -> &str {
        &self.0.url
    }

    /// The event kinds delivered.
    async fn events(&self) -> Vec<EventKind> {
        crate::domain::webhook::subscribed_kinds(&self.0)
    }

    /// Hears of every video (admins only).
    async fn global(&self) -> bool {
        self.0.owner_id.is_none()
    }

    async fn owner_id(&self) -> Option<ID> {
        self.0.owner_id.map(|id| ID(id.to_string()))
    }

    async fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// Why the server disabled the endpoint (repeated failures); null otherwise.
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }

    /// Deliveries that failed for good in a row.
    async fn consecutive_failures(&self) -> i32 {
        self.0.consecutive_failures
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(SimpleObject)]
pub struct CreateWebhookPayload {
    pub webhook: Webhook,
    /// The signing secret: shown here once, never again.
    pub secret: String,
}

/// One HTTP attempt of a delivery.
#[derive(SimpleObject, Debug, Clone)]
pub struct WebhookAttempt {
    pub at: DateTime<Utc>,
    /// Null when no response arrived.
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

impl From<webhook_attempt::Model> for WebhookAttempt {
    fn from(m: webhook_attempt::Model) -> Self {
        Self { at: m.at, status_code: m.status_code, latency_ms: m.latency_ms, error: m.error }
    }
}

/// One event for one endpoint. `id` is the idempotency id sent as `webhook-id`.
#[derive(Debug, Clone)]
pub struct WebhookDelivery(pub webhook_delivery::Model);

#[Object]
impl WebhookDelivery {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn webhook_id(&self) -> ID {
        ID(self.0.endpoint_id.to_string())
    }

    /// The event's cursor (as in `VideoEvent.cursor`).
    async fn event_cursor(&self) -> String {
        self.0.event_cursor.to_string()
    }

    async fn event_kind(&self) -> &str {
        &self.0.event_kind
    }

    /// The JSON body sent.
    async fn payload(&self) -> String {
        self.0.payload.to_string()
    }

    async fn status(&self) -> WebhookDeliveryStatus {
        self.0.status.into()
    }

    async fn attempt_count(&self) -> i32 {
        self.0.attempts
    }

    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        (self.0.status == DbStatus::Pending).then_some(self.0.next_attempt_at)
    }

    async fn last_status_code(&self) -> Option<i32> {
        self.0.last_status_code
    }

    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }

    /// The attempts, oldest first (the latest 50).
    async fn attempts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WebhookAttempt>> {
        let state = ctx.data::<AppState>()?;
        let rows = endpoints::latest_attempts(&state.db, self.0.id, MAX_ATTEMPTS_LISTED).await.gql()?;
        Ok(rows.into_iter().map(WebhookAttempt::from).collect())
    }
}

/// What `replayWebhooks` did.
#[derive(SimpleObject, Debug, Clone)]
pub struct WebhookReplay {
    /// New deliveries (new ids) of events the endpoint had none of.
    pub created: i32,
    /// Deliveries sent again with the id they already had (receivers dedupe on it).
    pub requeued: i32,
    /// Deliveries left alone because they are still pending (on their way).
    pub pending: i32,
    /// Cursor of the last event looked at: pass it as `after` to go on. Null when
    /// no event after `after` matched.
    pub end_cursor: Option<String>,
    /// More matching events follow `endCursor` (a call handles at most
    /// `webhooks.replay_max_events`).
    pub has_more: bool,
}

#[derive(InputObject)]
pub struct CreateWebhookInput {
    /// An http(s) URL without credentials, reachable on a public address.
    pub url: String,
    /// The kinds to deliver (PROGRESS is never delivered).
    pub events: Vec<EventKind>,
    /// Deliver every video's events (admins only).
    pub global: Option<bool>,
}

#[derive(InputObject)]
pub struct UpdateWebhookInput {
    pub url: Option<String>,
    pub events: Option<Vec<EventKind>>,
    /// Re-enabling clears `disabledReason` and the failure count.
    pub enabled: Option<bool>,
}

fn is_admin(principal: &Principal) -> bool {
    has_permission(principal.role, Permission::ManageUsers)
}

fn can_see(principal: &Principal, endpoint: &webhook_endpoint::Model) -> bool {
    is_admin(principal) || endpoint.owner_id == Some(principal.user_id)
}

/// Audit an endpoint change in its transaction. Only the URL's host is kept: a
/// path or query may carry a token, and the endpoint's secret never appears.
async fn audit_endpoint_change(
    ctx: &Context<'_>,
    txn: &impl sea_orm::ConnectionTrait,
    principal: &Principal,
    action: AuditAction,
    endpoint: &webhook_endpoint::Model,
    changed: Option<Vec<&str>>,
) -> Result<(), AppError> {
    let host = url::Url::parse(&endpoint.url).ok().and_then(|u| u.host_str().map(str::to_string));
    let mut detail = serde_json::json!({ "host": host, "global": endpoint.owner_id.is_none() });
    if let (Some(changed), Some(map)) = (changed, detail.as_object_mut()) {
        map.insert("changed".into(), serde_json::json!(changed));
    }
    let entry =
        AuditEntry::new(action, AuditOutcome::Success).actor(principal.user_id).target(endpoint.id).detail(detail);
    let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
    audit::record(txn, &client, entry).await
}

fn parse_uuid(id: &str, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id).map_err(|_| AppError::not_found(what))
}

async fn find_visible(
    db: &DatabaseConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<webhook_endpoint::Model, AppError> {
    match endpoints::find(db, id).await? {
        Some(endpoint) if can_see(principal, &endpoint) => Ok(endpoint),
        _ => Err(AppError::not_found("webhook")),
    }
}

/// Check the URL, resolve it and refuse internal targets (unless allowed).
async fn validate_url(state: &AppState, raw: &str) -> Result<String, AppError> {
    let url = target::parse(raw).map_err(|e| AppError::bad_input(e.to_string()))?;
    target::resolve(&url, state.settings.webhooks.allow_private_targets).await.map_err(|e| match e {
        TargetError::Invalid(m) | TargetError::Refused(m) | TargetError::Unresolvable(m) => AppError::bad_input(m),
    })?;
    Ok(url.to_string())
}

fn validate_events(events: &[EventKind]) -> Result<serde_json::Value, AppError> {
    if events.is_empty() {
        return Err(AppError::bad_input("choose at least one event kind"));
    }
    if events.contains(&EventKind::Progress) {
        return Err(AppError::bad_input("PROGRESS events are not delivered to webhooks"));
    }
    let mut kinds: Vec<&str> = events.iter().map(|k| k.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    Ok(serde_json::json!(kinds))
}

fn require_writer(principal: &Principal) -> Result<(), AppError> {
    if has_permission(principal.role, Permission::WriteOwnVideos) {
        Ok(())
    } else {
        Err(AppError::forbidden("your role does not allow this"))
    }
}

/// A writer whose `webhook` rate-limit policy (per user) has room: creating,
/// re-pointing and redelivering all make the server send requests somewhere.
async fn require_charged_writer(state: &AppState, principal: &Principal) -> Result<(), AppError> {
    require_writer(principal)?;
    state.limiter.enforce(crate::limits::Policy::Webhook, principal.user_id.to_string(), 1).await?;
    Ok(())
}

/// Refuse a new personal endpoint beyond `webhooks.max_endpoints_per_user` (0: no cap).
async fn check_endpoint_cap(state: &AppState, owner_id: Uuid) -> Result<(), AppError> {
    let cap = state.settings.webhooks.max_endpoints_per_user;
    if cap == 0 {
        return Ok(());
    }
    let owned = endpoints::count_owned(&state.db, owner_id).await?;
    if owned >= cap {
        return Err(AppError::new(
            ErrorCode::Conflict,
            format!("you already have {owned} webhooks, the most allowed; delete one first"),
        ));
    }
    Ok(())
}

/// A replay cursor: a stored event's cursor (`VideoEvent.cursor`,
/// `WebhookDelivery.eventCursor`) whose later events are all still kept.
async fn parse_replay_cursor(db: &DatabaseConnection, after: &str) -> Result<i64, AppError> {
    let after = after
        .parse::<i64>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or_else(|| AppError::bad_input("`after` is not a valid cursor"))?;
    let newest = crate::repo::outbox::newest_cursor(db).await?.unwrap_or(0);
    if after > newest {
        return Err(AppError::bad_input("`after` is not the cursor of a stored event"));
    }
    if crate::repo::outbox::cursor_expired(db, after).await? {
        return Err(AppError::new(
            ErrorCode::CursorExpired,
            "events after this cursor are no longer kept; replay without `after` to start from the oldest kept event",
        ));
    }
    Ok(after)
}

#[derive(Default)]
pub struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// The caller's endpoints (all of them, global ones included, for admins), newest first.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn webhooks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Webhook>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let owner = (!is_admin(principal)).then_some(principal.user_id);
        let rows = endpoints::list(&state.db, owner, MAX_WEBHOOKS_LISTED).await.gql()?;
        Ok(rows.into_iter().map(Webhook).collect())
    }

    /// Deliveries of one endpoint, newest first.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        webhook_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, WebhookDelivery>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_uuid(webhook_id.as_str(), "webhook").gql()?;
        let endpoint = find_visible(&state.db, principal, id).await.gql()?;
        super::paging::by_uuid(
            &state.db,
            endpoints::deliveries_of(endpoint.id),
            webhook_delivery::Column::Id,
            |d| d.id,
            WebhookDelivery,
            super::paging::Page { first, after },
            true,
        )
        .await
        .gql()
    }
}

#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Register an endpoint. The secret is in the answer, and nowhere else ever again.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookInput,
    ) -> async_graphql::Result<CreateWebhookPayload> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        require_charged_writer(state, principal).await.gql()?;
        let global = input.global.unwrap_or(false);
        if global && !is_admin(principal) {
            return Err(AppError::forbidden("only admins can create global webhooks").extend());
        }
        if !global {
            check_endpoint_cap(state, principal.user_id).await.gql()?;
        }
        let kinds = validate_events(&input.events).gql()?;
        let url = validate_url(state, &input.url).await.gql()?;
        let secret = crate::webhooks::new_secret();
        let id = Uuid::now_v7();
        let sealed = crate::webhooks::secrets::SecretBox::from_keys(&state.keys)
            .and_then(|secrets| secrets.seal(id, &secret))
            .map_err(|e| AppError::internal(e).extend())?;
        let new = endpoints::NewEndpoint {
            id,
            owner_id: (!global).then_some(principal.user_id),
            url,
            sealed_secret: sealed,
            event_kinds: kinds,
        };
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let endpoint = endpoints::create(&txn, new).await.gql()?;
        audit_endpoint_change(ctx, &txn, principal, AuditAction::WebhookCreated, &endpoint, None).await.gql()?;
        txn.commit().await.gql()?;
        Ok(CreateWebhookPayload { webhook: Webhook(endpoint), secret })
    }

    /// Change the URL, the kinds, or enable/disable an endpoint.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWebhookInput,
    ) -> async_graphql::Result<Webhook> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        require_charged_writer(state, principal).await.gql()?;
        let id = parse_uuid(id.as_str(), "webhook").gql()?;
        let endpoint = find_visible(&state.db, principal, id).await.gql()?;
        let mut changes = endpoints::EndpointChanges { enabled: input.enabled, ..Default::default() };
        if let Some(url) = &input.url {
            changes.url = Some(validate_url(state, url).await.gql()?);
        }
        if let Some(events) = &input.events {
            changes.event_kinds = Some(validate_events(events).gql()?);
        }
        let changed: Vec<&str> = [
            input.url.as_ref().map(|_| "url"),
            input.events.as_ref().map(|_| "events"),
            input.enabled.map(|_| "enabled"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let endpoint = endpoints::update(&txn, endpoint, changes).await.gql()?;
        audit_endpoint_change(ctx, &txn, principal, AuditAction::WebhookUpdated, &endpoint, Some(changed))
            .await
            .gql()?;
        txn.commit().await.gql()?;
        Ok(Webhook(endpoint))
    }

    /// Remove an endpoint and its delivery log.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        require_writer(principal).gql()?;
        let id = parse_uuid(id.as_str(), "webhook").gql()?;
        let endpoint = find_visible(&state.db, principal, id).await.gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        endpoints::delete(&txn, endpoint.id).await.gql()?;
        audit_endpoint_change(ctx, &txn, principal, AuditAction::WebhookDeleted, &endpoint, None).await.gql()?;
        txn.commit().await.gql()?;
        Ok(true)
    }

    /// Send a delivery again: a new attempt soon, with the same idempotency id and a
    /// fresh retry period. CONFLICT while the endpoint is disabled.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn redeliver_webhook(&self, ctx: &Context<'_>, delivery_id: ID) -> async_graphql::Result<WebhookDelivery> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        require_charged_writer(state, principal).await.gql()?;
        let id = parse_uuid(delivery_id.as_str(), "delivery").gql()?;
        let delivery = endpoints::find_delivery(&state.db, id)
            .await
            .gql()?
            .ok_or_else(|| AppError::not_found("delivery").extend())?;
        let endpoint = find_visible(&state.db, principal, delivery.endpoint_id)
            .await
            .map_err(|_| AppError::not_found("delivery").extend())?;
        if !endpoint.enabled {
            return Err(AppError::new(ErrorCode::Conflict, "the webhook is disabled; enable it first").extend());
        }
        let delivery = endpoints::redeliver(&state.db, delivery).await.gql()?;
        Ok(WebhookDelivery(delivery))
    }

    /// Send an endpoint the deliveries of the stored events after `after` again
    /// (without `after`: from the oldest event kept), oldest first, as fan-in
    /// makes them (its kinds; a personal endpoint only its owner's videos). An
    /// event already delivered keeps its delivery id (so its `webhook-id`):
    /// receivers dedupe it. At most `webhooks.replay_max_events` per call; go on
    /// from `endCursor` while `hasMore`. Charged one `webhook` token per call and
    /// one `webhook_replay` token per event replayed. NOT_FOUND for an endpoint the
    /// caller cannot see, BAD_USER_INPUT / CURSOR_EXPIRED for a bad cursor,
    /// CONFLICT while the endpoint is disabled.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn replay_webhooks(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<WebhookReplay> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        replay(state, principal, endpoint_id.as_str(), after.as_deref()).await.gql()
    }
}

async fn replay(
    state: &AppState,
    principal: &Principal,
    endpoint_id: &str,
    after: Option<&str>,
) -> Result<WebhookReplay, AppError> {
    use crate::limits::Policy;
    require_charged_writer(state, principal).await?;
    let id = parse_uuid(endpoint_id, "webhook")?;
    let endpoint = find_visible(&state.db, principal, id).await?;
    let after = match after {
        Some(after) => parse_replay_cursor(&state.db, after).await?,
        // Everything kept, knowingly: no cursor to have expired.
        None => 0,
    };
    if !endpoint.enabled {
        return Err(AppError::new(ErrorCode::Conflict, "the webhook is disabled; enable it first"));
    }
    let mut limit = state.settings.webhooks.replay_max_events;
    if state.settings.rate_limit.enabled {
        // A batch bigger than the bucket could never be charged.
        limit = limit.min(u64::from(state.settings.rate_limit.policy(Policy::WebhookReplay).burst.max(1)));
    }
    let batch = crate::webhooks::replay::select(&state.db, &endpoint, after, limit).await?;
    if !batch.is_empty() {
        let cost = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        state.limiter.enforce(Policy::WebhookReplay, principal.user_id.to_string(), cost).await?;
    }
    let outcome = crate::webhooks::replay::enqueue(&state.db, &endpoint, &batch).await?;
    tracing::info!(
        endpoint_id = %endpoint.id,
        after,
        created = outcome.created,
        requeued = outcome.requeued,
        pending = outcome.pending,
        "webhook deliveries replayed"
    );
    let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(WebhookReplay {
        created: count(outcome.created),
        requeued: count(outcome.requeued),
        pending: count(outcome.pending),
        end_cursor: batch.end_cursor().map(|c| c.to_string()),
        has_more: batch.has_more,
    })
}
