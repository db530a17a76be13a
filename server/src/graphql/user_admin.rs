//! Device sessions and user administration in GraphQL: `User.sessions` and
//! `revokeSession` for everyone (their own sessions), and for admins `users(filter)`,
//! `enableUser`, `deleteUser` and `setUserQuota`. Data access lives in `repo::users`
//! and `repo::sessions`; every change is audited and, when it takes access away,
//! pushed to open sockets (`access`) after commit.

use async_graphql::connection::Connection;
use async_graphql::{Context, ErrorExtensions, InputObject, MaybeUndefined, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::{refresh_token_family, user};
use uuid::Uuid;

use super::accounts::{Role, User};
use super::jobs::Job;
use crate::access::AccessChange;
use crate::auth::principal::{ClientInfo, Principal};
use crate::auth::roles::{has_permission, require_principal, AuthenticatedGuard, Permission, PermissionGuard};
use crate::error::{AppError, GqlResultExt};
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::repo::sessions;
use crate::repo::users::{self as repo, Override};
use crate::state::AppState;

/// One sign-in: a refresh-token family, from the sign-in until it is revoked or expires.
#[derive(SimpleObject, Debug, Clone)]
pub struct Session {
    pub id: ID,
    pub created_at: DateTime<Utc>,
    /// The sign-in, or the last refresh of its tokens.
    pub last_used_at: DateTime<Utc>,
    /// The client's address at sign-in (`X-Forwarded-For` counts only from
    /// `server.trusted_proxies`).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session of the access token making this request.
    pub current: bool,
}

impl Session {
    fn of(family: refresh_token_family::Model, current: Option<Uuid>) -> Self {
        Self {
            id: ID(family.id.to_string()),
            created_at: family.created_at,
            last_used_at: family.last_used_at,
            ip: family.ip,
            user_agent: family.user_agent,
            current: current == Some(family.id),
        }
    }
}

/// Filters of `users`; all given ones must hold.
#[derive(InputObject, Default)]
pub struct UserFilter {
    /// Case-insensitive substring of the email or the display name.
    pub search: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

fn client_info(ctx: &Context<'_>) -> ClientInfo {
    ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default()
}

fn parse_id(id: &ID, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::not_found(what))
}

fn is_admin(principal: &Principal) -> bool {
    has_permission(principal.role, Permission::ManageUsers)
}

/// `User.sessions`: the user themself and admins only.
pub(super) async fn sessions_of(ctx: &Context<'_>, user_id: &ID) -> async_graphql::Result<Vec<Session>> {
    let state = ctx.data::<AppState>()?;
    let principal = require_principal(ctx).gql()?;
    let user_id = parse_id(user_id, "user").gql()?;
    if principal.user_id != user_id && !is_admin(principal) {
        return Err(AppError::forbidden("only the user themself and admins may see their sessions").extend());
    }
    let families = sessions::live_sessions(&state.db, user_id, &state.settings).await.gql()?;
    Ok(families.into_iter().map(|f| Session::of(f, principal.family_id)).collect())
}

#[derive(Default)]
pub struct UserAdminQuery;

#[Object]
impl UserAdminQuery {
    /// Every account, oldest first, optionally filtered. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<UserFilter>,
    ) -> async_graphql::Result<Connection<String, User>> {
        let state = ctx.data::<AppState>()?;
        let filter = filter.unwrap_or_default();
        let filter =
            repo::UserFilter { search: filter.search, role: filter.role.map(Into::into), disabled: filter.disabled };
        super::paging::by_uuid(
            &state.db,
            repo::listing(&filter),
            user::Column::Id,
            |u| u.id,
            User::from,
            super::paging::Page { first, after },
            false,
        )
        .await
        .gql()
    }
}

#[derive(Default)]
pub struct UserAdminMutation;

#[Object]
impl UserAdminMutation {
    /// End one sign-in session: its refresh token stops working and its open
    /// sockets close (4403) at once. Your own sessions; admins may end anyone's.
    /// `NOT_FOUND` for a session that is not yours; `false` if it had already ended.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id, "session").gql()?;
        let owner = (!is_admin(principal)).then_some(principal.user_id);
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let (family, revoked) = sessions::revoke_session(&txn, id, owner, "revoked").await.gql()?;
        if revoked {
            let entry = AuditEntry::new(AuditAction::SessionRevoked, AuditOutcome::Success)
                .actor(principal.user_id)
                .target(family.id)
                .detail(serde_json::json!({ "reason": "revoked", "userId": family.user_id }));
            audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        }
        txn.commit().await.gql()?;
        if revoked {
            state.access_signals.announce(AccessChange::session(family.user_id, family.id)).await;
        }
        Ok(revoked)
    }

    /// Enable a disabled account: it may sign in again. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn enable_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<User> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id, "user").gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let (user, _) = repo::set_disabled(&txn, id, false).await.gql()?;
        let entry =
            AuditEntry::new(AuditAction::UserEnabled, AuditOutcome::Success).actor(principal.user_id).target(id);
        audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(user.into())
    }

    /// Delete an account. At once: it can no longer sign in, its sessions, sockets
    /// and API keys stop working, and its email is free again. The returned
    /// DELETE_USER job then deletes its videos (subscribers get DELETED) and every
    /// stored object, retried until done. `CONFLICT` for your own account and for
    /// the last admin. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Job> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id, "user").gql()?;
        let client = client_info(ctx);
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let retired = match repo::retire(&txn, principal.user_id, id).await {
            Ok(retired) => retired,
            Err(err) => {
                drop(txn);
                if err.code() == crate::error::ErrorCode::Conflict {
                    let entry = AuditEntry::new(AuditAction::UserDeleted, AuditOutcome::Denied)
                        .actor(principal.user_id)
                        .target(id)
                        .detail(serde_json::json!({ "reason": err.message() }));
                    audit::record_or_log(&state.db, &client, entry).await;
                }
                return Err(err.extend());
            }
        };
        let entry = AuditEntry::new(AuditAction::UserDeleted, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(id)
            .detail(serde_json::json!({
                "sessionsRevoked": retired.sessions_revoked,
                "apiKeysRevoked": retired.api_keys_revoked,
                "jobId": retired.job.id,
            }));
        audit::record(&txn, &client, entry).await.gql()?;
        txn.commit().await.gql()?;
        state.access_signals.announce(AccessChange::user(id)).await;
        Ok(Job(retired.job))
    }

    /// Per-user limits: the storage quota in bytes and the daily processing budget
    /// in seconds. An argument left out keeps its value; `null` returns to the
    /// server default (`uploads.quota_bytes_per_user`, `jobs.processing_budget_secs_per_day`);
    /// 0 means no limit; negative values are `BAD_USER_INPUT`. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn set_user_quota(
        &self,
        ctx: &Context<'_>,
        id: ID,
        storage_quota_bytes: MaybeUndefined<i64>,
        processing_budget_seconds_per_day: MaybeUndefined<i64>,
    ) -> async_graphql::Result<User> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id, "user").gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let (before, after) =
            repo::set_quota(&txn, id, to_override(storage_quota_bytes), to_override(processing_budget_seconds_per_day))
                .await
                .gql()?;
        let entry = AuditEntry::new(AuditAction::QuotaChanged, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(id)
            .detail(serde_json::json!({
                "storageQuotaBytes": { "from": before.storage_quota_bytes, "to": after.storage_quota_bytes },
                "processingBudgetSecondsPerDay": {
                    "from": before.processing_budget_secs_per_day,
                    "to": after.processing_budget_secs_per_day,
                },
            }));
        audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(after.into())
    }
}

fn to_override(value: MaybeUndefined<i64>) -> Override {
    match value {
        MaybeUndefined::Undefined => Override::Keep,
        MaybeUndefined::Null => Override::Set(None),
        MaybeUndefined::Value(v) => Override::Set(Some(v)),
    }
}
