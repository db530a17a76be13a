//! Accounts and access in GraphQL: sign-up and sign-in, sessions, API keys, and
//! user administration.

use async_graphql::{Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::{api_key, user};
use uuid::Uuid;

use crate::auth::accounts::verify_credentials;
use crate::auth::principal::ClientInfo;
use crate::auth::roles::{rank, require_principal, AuthenticatedGuard, Permission, PermissionGuard};
use crate::auth::{api_keys, sessions};
use crate::error::GqlResultExt;
use crate::error::{AppError, ErrorCode};
use crate::limits::Policy;
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::state::AppState;

/// What a user (or an API key) may do; see the roles table in the README.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::Role")]
pub enum Role {
    Admin,
    Moderator,
    User,
    Viewer,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)] // storage fields: graphql/videos.rs
pub struct User {
    pub id: ID,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// The owner proved the address (followed the mailed link).
    pub email_verified: bool,
    /// Two-factor sign-in (TOTP) is on: `login` needs a `totpCode`.
    pub totp_enabled: bool,
}

impl From<user::Model> for User {
    fn from(model: user::Model) -> Self {
        Self {
            id: ID(model.id.to_string()),
            email: model.email,
            display_name: model.display_name,
            role: model.role.into(),
            disabled: model.disabled,
            created_at: model.created_at,
            email_verified: model.email_verified_at.is_some(),
            totp_enabled: model.totp_enabled_at.is_some(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct AuthPayload {
    pub access_token: String,
    /// Opaque; exchange it with `refreshToken`. Each one works once.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: User,
}

impl From<sessions::SessionTokens> for AuthPayload {
    fn from(tokens: sessions::SessionTokens) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_in: tokens.expires_in_secs,
            user: tokens.user.into(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct ApiKey {
    pub id: ID,
    pub name: String,
    pub role: Role,
    /// The visible start of the secret, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<api_key::Model> for ApiKey {
    fn from(model: api_key::Model) -> Self {
        Self {
            id: ID(model.id.to_string()),
            name: model.name,
            role: model.role.into(),
            prefix: model.prefix,
            created_at: model.created_at,
            last_used_at: model.last_used_at,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct ApiKeyPayload {
    pub api_key: ApiKey,
    /// Shown once: only a hash is kept.
    pub secret: String,
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
    /// With two-factor sign-in on: a code from the authenticator app, or one of the
    /// recovery codes (each works once). Without it such a sign-in is `MFA_REQUIRED`.
    pub totp_code: Option<String>,
}

fn parse_id(id: &ID, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::not_found(what))
}

/// Sign-in attempts are charged per IP (`auth_ip`, IPv6 per /64) and, for a
/// login, per account and IP (`auth`): guessing one account slows down fast, yet
/// an attacker locked out of a victim's account from their address does not lock
/// out the victim, who signs in from another. Failures across every address back
/// the account off (`limits::login`), once there are more of them than one
/// address alone is allowed.
async fn limit_sign_in(state: &AppState, ctx: &Context<'_>, email: Option<&str>) -> Result<(), crate::error::AppError> {
    let ip = crate::limits::ip_subject(&client_info(ctx).ip.unwrap_or_else(|| "unknown".into()));
    state.limiter.enforce(Policy::AuthIp, ip.clone(), 1).await?;
    if let Some(email) = email {
        limit_account(state, email, &ip).await?;
    }
    Ok(())
}

/// The account a sign-in names, spelled one way.
fn account_key(email: &str) -> String {
    crate::auth::accounts::normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase())
}

/// The per-account part of [`limit_sign_in`]: per account and IP (`auth`), and the
/// account's back-off after failures from every address.
async fn limit_account(state: &AppState, email: &str, ip: &str) -> Result<(), crate::error::AppError> {
    let account = account_key(email);
    state.limiter.enforce(Policy::Auth, format!("{account}|{ip}"), 1).await?;
    state.login_failures.check(&account).await?;
    Ok(())
}

fn client_info(ctx: &Context<'_>) -> ClientInfo {
    ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default()
}

#[derive(Default)]
pub struct AccountsQuery;

#[Object]
impl AccountsQuery {
    /// The caller's own account.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let user = crate::repo::users::find_any(&state.db, principal.user_id)
            .await
            .gql()?
            .ok_or_else(|| AppError::unauthenticated("account no longer exists").extend())?;
        Ok(user.into())
    }

    /// The caller's live API keys (never their secrets).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKey>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let keys = api_keys::list_api_keys(&state.db, principal.user_id).await.gql()?;
        Ok(keys.into_iter().map(ApiKey::from).collect())
    }
    // `users(first, after, filter)`: graphql/user_admin.rs.
}

#[derive(Default)]
pub struct AccountsMutation;

#[Object]
impl AccountsMutation {
    /// Create an account (role USER) and sign in. An email that already has an
    /// account gets the same answer (see the README on account discovery): with
    /// that account's password it signs in, otherwise its tokens do not work.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> async_graphql::Result<AuthPayload> {
        let state = ctx.data::<AppState>()?;
        limit_sign_in(state, ctx, None).await.gql()?;
        let client = client_info(ctx);
        // The account and its verification mail commit together.
        let created =
            crate::auth::account_mail::register_account(state, &input.email, &input.password, &input.display_name)
                .await;
        let tokens = match created {
            Ok(user) => sessions::start_session(state, user, &client).await,
            Err(err) if err.code() == ErrorCode::Conflict => {
                // For a known email this is a password check: charged like a login
                // (per account and IP, and the account's failure back-off).
                let ip = crate::limits::ip_subject(&client.ip.clone().unwrap_or_else(|| "unknown".into()));
                limit_account(state, &input.email, &ip).await.gql()?;
                let account = account_key(&input.email);
                match verify_credentials(&state.db, &state.password_hashing, &input.email, &input.password).await {
                    // With two-factor sign-in on, `login` (with a code) is the way in.
                    Ok(user) => match super::totp::second_factor(state, &client, user, None).await {
                        Ok(user) => {
                            state.login_failures.record_success(&account).await;
                            sessions::start_session(state, user, &client).await
                        }
                        Err(err) => Err(err),
                    },
                    Err(err) if matches!(err.code(), ErrorCode::Unauthenticated | ErrorCode::Forbidden) => {
                        state.login_failures.record_failure(&account).await;
                        // The owner hears of it by mail; the caller gets the decoy
                        // whatever happens to the notice (its failure would tell).
                        if let Err(err) =
                            crate::auth::account_mail::notify_signup_attempt(state, &input.email, &client).await
                        {
                            err.log();
                        }
                        sessions::decoy_session(state, &input.email, &input.display_name)
                    }
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        Ok(tokens.gql()?.into())
    }

    /// Sign in with email and password (and, with two-factor sign-in on, `totpCode`);
    /// starts a new session.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> async_graphql::Result<AuthPayload> {
        let state = ctx.data::<AppState>()?;
        limit_sign_in(state, ctx, Some(&input.email)).await.gql()?;
        let account = account_key(&input.email);
        let client = client_info(ctx);
        let verified = verify_credentials(&state.db, &state.password_hashing, &input.email, &input.password).await;
        match &verified {
            Ok(_) => {}
            Err(err) if err.code() == crate::error::ErrorCode::Unauthenticated => {
                state.login_failures.record_failure(&account).await;
                audit_failed_login(state, &client, &account, AuditOutcome::Failure, "bad credentials").await;
            }
            Err(err) if err.code() == crate::error::ErrorCode::Forbidden => {
                audit_failed_login(state, &client, &account, AuditOutcome::Denied, "account disabled").await;
            }
            Err(_) => {}
        }
        let user = verified.gql()?;
        // The password was right; the account is cleared only once the second
        // factor (when on) is too, and no session starts before.
        let user = super::totp::second_factor(state, &client, user, input.totp_code.as_deref()).await.gql()?;
        state.login_failures.record_success(&account).await;
        let tokens = sessions::start_session(state, user, &client).await.gql()?;
        Ok(tokens.into())
    }

    /// Exchange a refresh token for a new pair. Each refresh token works once;
    /// presenting a used one ends the whole session.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> async_graphql::Result<AuthPayload> {
        let state = ctx.data::<AppState>()?;
        let tokens = sessions::rotate_refresh_token(state, &refresh_token, &client_info(ctx)).await.gql()?;
        Ok(tokens.into())
    }

    /// End the session the refresh token belongs to. `false` if the token is unknown.
    async fn logout(&self, ctx: &Context<'_>, refresh_token: String) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        sessions::logout(state, &refresh_token, &client_info(ctx)).await.gql()
    }

    /// End every session of the caller, this one included.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn revoke_all_sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let revoked = sessions::revoke_all_sessions(&txn, principal.user_id, "revoke all sessions").await.gql()?;
        let entry = AuditEntry::new(AuditAction::SessionRevoked, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(principal.user_id)
            .detail(serde_json::json!({ "reason": "revoke all sessions", "sessions": revoked }));
        audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        txn.commit().await.gql()?;
        state.access_signals.announce(crate::access::AccessChange::user(principal.user_id)).await;
        Ok(true)
    }

    /// Create an API key; its role defaults to, and may not exceed, the caller's.
    #[graphql(guard = "PermissionGuard(Permission::ManageApiKeys)")]
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        name: String,
        role: Option<Role>,
    ) -> async_graphql::Result<ApiKeyPayload> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        // A leaked key must not be able to mint keys that outlive its revocation.
        let client = client_info(ctx);
        if principal.method == crate::auth::principal::AuthMethod::ApiKey {
            let entry = AuditEntry::new(AuditAction::ApiKeyCreated, AuditOutcome::Denied)
                .actor(principal.user_id)
                .detail(serde_json::json!({ "reason": "an API key cannot create API keys" }));
            audit::record_or_log(&state.db, &client, entry).await;
            return Err(crate::error::AppError::forbidden("API keys cannot create API keys; sign in").extend());
        }
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let created = api_keys::create_api_key(&txn, principal.user_id, principal.role, &name, role.map(Into::into))
            .await
            .gql()?;
        let entry = AuditEntry::new(AuditAction::ApiKeyCreated, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(created.model.id)
            .detail(serde_json::json!({ "role": created.model.role }));
        audit::record(&txn, &client, entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(ApiKeyPayload { api_key: created.model.into(), secret: created.secret })
    }

    /// Revoke one of the caller's API keys; it stops working on the next request.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_id(&id, "API key").gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let revoked = api_keys::revoke_api_key(&txn, principal.user_id, id).await.gql()?;
        let entry =
            AuditEntry::new(AuditAction::ApiKeyRevoked, AuditOutcome::Success).actor(principal.user_id).target(id);
        audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(revoked)
    }

    /// Change a user's role. Admins only; takes effect on the user's next request.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn set_user_role(&self, ctx: &Context<'_>, id: ID, role: Role) -> async_graphql::Result<User> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let client = client_info(ctx);
        let role: entities::Role = role.into();
        if rank(role) > rank(principal.role) {
            let entry = AuditEntry::new(AuditAction::RoleChanged, AuditOutcome::Denied)
                .actor(principal.user_id)
                .target(id.as_str())
                .detail(serde_json::json!({ "to": role, "reason": "above the caller's role" }));
            audit::record_or_log(&state.db, &client, entry).await;
            return Err(AppError::forbidden("cannot grant a role above your own").extend());
        }
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let id = parse_id(&id, "user").gql()?;
        let (from, user) = crate::repo::users::set_role(&txn, id, role).await.gql()?;
        let entry = AuditEntry::new(AuditAction::RoleChanged, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(user.id)
            .detail(serde_json::json!({ "from": from, "to": role }));
        audit::record(&txn, &client, entry).await.gql()?;
        txn.commit().await.gql()?;
        state.access_signals.announce(crate::access::AccessChange::user(user.id)).await;
        Ok(user.into())
    }

    /// Disable an account: its sessions end and its open sockets close at once;
    /// its API keys stop working while it stays disabled. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn disable_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<User> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let id = parse_id(&id, "user").gql()?;
        let (user, revoked) = crate::repo::users::set_disabled(&txn, id, true).await.gql()?;
        let user_id = user.id;
        let entry = AuditEntry::new(AuditAction::UserDisabled, AuditOutcome::Success)
            .actor(principal.user_id)
            .target(user_id)
            .detail(serde_json::json!({ "sessionsRevoked": revoked }));
        audit::record(&txn, &client_info(ctx), entry).await.gql()?;
        txn.commit().await.gql()?;
        // Open sockets of the account close now, not at their next periodic re-check.
        state.access_signals.announce(crate::access::AccessChange::user(user_id)).await;
        Ok(user.into())
    }
}

/// A failed sign-in, audited best effort: the client gets the sign-in's own error,
/// never a 500 for a record that could not be written. The target is the account,
/// when it exists; the typed email is not stored (people type passwords into it).
async fn audit_failed_login(state: &AppState, client: &ClientInfo, account: &str, outcome: AuditOutcome, reason: &str) {
    let target = match crate::repo::users::find_by_email(&state.db, account).await {
        Ok(found) => found.map(|u| u.id),
        Err(err) => {
            tracing::warn!(error = ?err, "looking up the account of a failed sign-in");
            None
        }
    };
    let mut entry = AuditEntry::new(AuditAction::LoginFailed, outcome).detail(serde_json::json!({ "reason": reason }));
    if let Some(target) = target {
        entry = entry.target(target);
    }
    audit::record_or_log(&state.db, client, entry).await;
}
