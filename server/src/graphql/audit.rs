//! The security audit log in GraphQL: `auditLog(first, after, filter)`, admins only.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::audit_event;
use uuid::Uuid;

use crate::auth::roles::{Permission, PermissionGuard};
use crate::error::AppError;
use crate::error::GqlResultExt;
use crate::repo::audit as repo;
use crate::state::AppState;

/// What happened; see the README's "Audit log" section.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::repo::audit::AuditAction")]
pub enum AuditAction {
    LoginSucceeded,
    LoginFailed,
    RefreshReuseDetected,
    SessionRevoked,
    ApiKeyCreated,
    ApiKeyRevoked,
    RoleChanged,
    PasswordChanged,
    UserDisabled,
    WebhookCreated,
    WebhookUpdated,
    WebhookDeleted,
    VideoHidden,
    VideoUnhidden,
    JobRetried,
    JobCancelled,
    JobPriorityChanged,
    EmailVerified,
    PasswordResetRequested,
    PasswordReset,
    EmailChangeRequested,
    EmailChanged,
    TotpEnabled,
    TotpDisabled,
    MfaFailed,
    RecoveryCodeUsed,
    UserEnabled,
    UserDeleted,
    QuotaChanged,
    WorkerTokenCreated,
    WorkerTokenRevoked,
}

/// Done, failed (bad credentials, a conflict), or refused by policy.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::repo::audit::AuditOutcome")]
pub enum AuditOutcome {
    Success,
    Failure,
    Denied,
}

/// Who acted.
#[derive(SimpleObject, Debug, Clone)]
pub struct AuditActor {
    pub id: ID,
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditEvent(audit_event::Model);

#[Object]
impl AuditEvent {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    async fn action(&self) -> async_graphql::Result<AuditAction> {
        repo::AuditAction::parse(&self.0.action)
            .map(Into::into)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("unknown audit action {}", self.0.action)).extend())
    }

    /// None for a failed sign-in or a reused refresh token (the presenter is unknown).
    async fn actor(&self) -> Option<AuditActor> {
        self.0.actor_id.map(|id| AuditActor { id: ID(id.to_string()) })
    }

    /// The user, session, API key, webhook, video or job acted on.
    async fn target_id(&self) -> Option<&str> {
        self.0.target_id.as_deref()
    }

    async fn ip(&self) -> Option<&str> {
        self.0.ip.as_deref()
    }

    async fn user_agent(&self) -> Option<&str> {
        self.0.user_agent.as_deref()
    }

    async fn outcome(&self) -> async_graphql::Result<AuditOutcome> {
        repo::AuditOutcome::parse(&self.0.outcome)
            .map(Into::into)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("unknown audit outcome {}", self.0.outcome)).extend())
    }

    /// The `x-request-id` of the request that did it.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// Non-secret context as JSON text (a role, a reason, a host), if any.
    async fn detail(&self) -> Option<String> {
        self.0.detail.as_ref().map(ToString::to_string)
    }
}

/// Narrow `auditLog`; every field is optional and they combine with AND.
#[derive(InputObject, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor_id: Option<ID>,
    pub target_id: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

impl TryFrom<AuditFilter> for repo::AuditFilter {
    type Error = AppError;

    fn try_from(filter: AuditFilter) -> Result<Self, AppError> {
        let actor_id = filter
            .actor_id
            .map(|id| Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input("actorId is not a user id")))
            .transpose()?;
        Ok(Self {
            action: filter.action.map(Into::into),
            actor_id,
            target_id: filter.target_id,
            outcome: filter.outcome.map(Into::into),
            from: filter.from,
            to: filter.to,
        })
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The security audit log, newest first. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<AuditFilter>,
    ) -> async_graphql::Result<Connection<String, AuditEvent>> {
        let state = ctx.data::<AppState>()?;
        let filter = repo::AuditFilter::try_from(filter.unwrap_or_default()).gql()?;
        super::paging::by_uuid(
            &state.db,
            repo::filtered(&filter),
            audit_event::Column::Id,
            |row| row.id,
            AuditEvent,
            super::paging::Page { first, after },
            true,
        )
        .await
        .gql()
    }
}
