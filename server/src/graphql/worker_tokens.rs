//! Worker tokens in GraphQL (admins): `createWorkerToken` (the secret is shown once),
//! `revokeWorkerToken` (its connections close at once and their leases go back to
//! the queue) and `workerTokens`. Every change is audited.

use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::worker_token;
use uuid::Uuid;

use crate::auth::principal::ClientInfo;
use crate::auth::roles::{require_principal, Permission, PermissionGuard};
use crate::auth::worker_tokens as service;
use crate::error::{AppError, GqlResultExt};
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::state::AppState;

/// A worker token (never its secret).
#[derive(SimpleObject, Debug, Clone)]
pub struct WorkerToken {
    pub id: ID,
    pub name: String,
    /// The visible start of the secret (`rhw_` and six characters).
    pub prefix: String,
    /// Jobs one worker with this token may run at once.
    pub capacity: i32,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<worker_token::Model> for WorkerToken {
    fn from(m: worker_token::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            name: m.name,
            prefix: m.prefix,
            capacity: m.capacity,
            tags: service::split_tags(&m.tags),
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A token just minted: `token` is the secret, shown only here.
#[derive(SimpleObject, Debug, Clone)]
pub struct WorkerTokenPayload {
    pub token: String,
    pub worker: WorkerToken,
}

fn client_info(ctx: &Context<'_>) -> ClientInfo {
    ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default()
}

#[derive(Default)]
pub struct WorkerTokensQuery;

#[Object]
impl WorkerTokensQuery {
    /// Every worker token, live ones first. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn worker_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WorkerToken>> {
        let state = ctx.data::<AppState>()?;
        Ok(service::list_worker_tokens(&state.db).await.gql()?.into_iter().map(WorkerToken::from).collect())
    }
}

#[derive(Default)]
pub struct WorkerTokensMutation;

#[Object]
impl WorkerTokensMutation {
    /// Mint a token for a remote worker (`reelhouse worker --server URL` with
    /// `REELHOUSE_WORKER_TOKEN`). `capacity` (default 1, at most 64) and `tags` (e.g.
    /// `gpu`) are what its workers may claim. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn create_worker_token(
        &self,
        ctx: &Context<'_>,
        name: String,
        capacity: Option<i32>,
        tags: Option<Vec<String>>,
    ) -> async_graphql::Result<WorkerTokenPayload> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let created =
            service::create_worker_token(&txn, Some(principal.user_id), &name, capacity, &tags.unwrap_or_default())
                .await
                .gql()?;
        let entry = AuditEntry::new(AuditAction::WorkerTokenCreated, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(created.model.id)
            .detail(serde_json::json!({
                "name": created.model.name,
                "prefix": created.model.prefix,
                "capacity": created.model.capacity,
                "tags": service::split_tags(&created.model.tags),
            }));
        audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(WorkerTokenPayload { token: created.secret, worker: created.model.into() })
    }

    /// Revoke a token: its workers' connections close at once (4403) and the jobs
    /// they held go back to the queue. `false` if it was revoked already. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn revoke_worker_token(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = Uuid::parse_str(id.as_str()).map_err(|_| AppError::not_found("worker token")).gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let revoked = service::revoke_worker_token(&txn, id).await.gql()?;
        if revoked {
            let entry = AuditEntry::new(AuditAction::WorkerTokenRevoked, AuditOutcome::Success)
                .actor(principal.user_id)
                .target(id);
            audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        }
        txn.commit().await.gql()?;
        // Connections on this process close now (their leases back in the queue);
        // those on other replicas as soon as Redis brings them the news (without
        // Redis, or if the news is lost: at their next heartbeat, which re-checks).
        state.remote_workers.revoke_token(id).await;
        if revoked {
            state.access_signals.announce_worker_token_revoked(id).await;
        }
        Ok(revoked)
    }
}
