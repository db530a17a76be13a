//! Two-factor sign-in in GraphQL: `enrollTotp`, `confirmTotp`, `disableTotp`, and
//! the second factor `login` asks for ([`second_factor`]). The domain code is
//! `auth::totp`.
//!
//! A wrong code in `confirmTotp`/`disableTotp` is `BAD_USER_INPUT`, not
//! `UNAUTHENTICATED`: the caller's session is fine, and clients treat
//! `UNAUTHENTICATED` as "sign in again". Every code presented (here and at sign-in)
//! is charged to the account's `mfa` rate-limit policy first.

use async_graphql::{Context, ErrorExtensions, Object, SimpleObject};
use entities::user;
use uuid::Uuid;

use crate::auth::principal::{AuthMethod, ClientInfo, Principal};
use crate::auth::roles::{require_principal, AuthenticatedGuard};
use crate::auth::totp::{self, SecondFactor};
use crate::error::{AppError, ErrorCode, GqlResultExt};
use crate::limits::Policy;
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::state::AppState;

/// A pending enrolment: put the secret in an authenticator app (or show the URI as
/// a QR code), then confirm with a code.
#[derive(SimpleObject, Debug, Clone)]
pub struct TotpEnrollment {
    /// Base32, as authenticator apps take it when typed in.
    pub secret: String,
    /// `otpauth://totp/{issuer}:{email}?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    pub otpauth_url: String,
}

fn client_info(ctx: &Context<'_>) -> ClientInfo {
    ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default()
}

/// The signed-in user, by access token: an API key cannot change how its owner signs in.
fn require_session<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, AppError> {
    let principal = require_principal(ctx)?;
    if principal.method == AuthMethod::ApiKey {
        return Err(AppError::forbidden("API keys cannot change two-factor sign-in; sign in"));
    }
    Ok(principal)
}

async fn load_user(state: &AppState, id: Uuid) -> Result<user::Model, AppError> {
    crate::repo::users::find_any(&state.db, id)
        .await?
        .ok_or_else(|| AppError::unauthenticated("account no longer exists"))
}

/// Charge one code to the account's `mfa` bucket; `RATE_LIMITED` when empty. Like
/// every refusal by a limit it is counted in metrics, not audited, so a flood
/// cannot grow the audit table faster than the limit allows.
async fn charge_code(state: &AppState, user_id: Uuid) -> Result<(), AppError> {
    state.limiter.enforce(Policy::Mfa, user_id.to_string(), 1).await.map(|_| ())
}

async fn audit_wrong_code(state: &AppState, client: &ClientInfo, user_id: Uuid, during: &str) {
    let entry = AuditEntry::new(AuditAction::MfaFailed, AuditOutcome::Failure)
        .target(user_id)
        .detail(serde_json::json!({ "during": during }));
    audit::record_or_log(&state.db, client, entry).await;
}

async fn audit_recovery_code_used(state: &AppState, client: &ClientInfo, user_id: Uuid, during: &str) {
    let entry = AuditEntry::new(AuditAction::RecoveryCodeUsed, AuditOutcome::Success)
        .actor(user_id)
        .target(user_id)
        .detail(serde_json::json!({ "during": during }));
    audit::record_or_log(&state.db, client, entry).await;
}

/// The second step of a sign-in whose password was right. Without two-factor
/// sign-in on, the user as is. With it: no code is `MFA_REQUIRED` (the caller
/// starts no session), a wrong, replayed or spent code `UNAUTHENTICATED`, and a
/// good one (TOTP or recovery code) the user. The password was checked under the
/// sign-in limits first, so `MFA_REQUIRED` tells nothing faster than a successful
/// sign-in would; codes are charged to the account's `mfa` policy.
pub async fn second_factor(
    state: &AppState,
    client: &ClientInfo,
    user: user::Model,
    code: Option<&str>,
) -> Result<user::Model, AppError> {
    if user.totp_enabled_at.is_none() {
        return Ok(user);
    }
    let Some(code) = code.map(str::trim).filter(|code| !code.is_empty()) else {
        return Err(AppError::new(
            ErrorCode::MfaRequired,
            "two-factor code required: sign in again with totpCode (an authenticator code or a recovery code)",
        ));
    };
    charge_code(state, user.id).await?;
    match totp::verify_second_factor(&state.db, &state.keys, &user, code).await? {
        Some(SecondFactor::Totp) => Ok(user),
        Some(SecondFactor::RecoveryCode) => {
            audit_recovery_code_used(state, client, user.id, "sign-in").await;
            Ok(user)
        }
        None => {
            audit_wrong_code(state, client, user.id, "sign-in").await;
            Err(AppError::unauthenticated("invalid two-factor code"))
        }
    }
}

#[derive(Default)]
pub struct TotpMutation;

#[Object]
impl TotpMutation {
    /// Start two-factor enrolment: a new secret (replacing an unconfirmed one), not
    /// in force until `confirmTotp`. `CONFLICT` when two-factor sign-in is on.
    /// Signed-in users only (not API keys).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn enroll_totp(&self, ctx: &Context<'_>) -> async_graphql::Result<TotpEnrollment> {
        let state = ctx.data::<AppState>()?;
        let principal = require_session(ctx).gql()?;
        let user = load_user(state, principal.user_id).await.gql()?;
        let issuer = totp::issuer(state.settings.server.public_url.as_deref());
        let enrollment = totp::enroll(&state.db, &state.keys, &user, &issuer).await.gql()?;
        Ok(TotpEnrollment { secret: enrollment.secret, otpauth_url: enrollment.otpauth_url })
    }

    /// Confirm enrolment with a current code from the authenticator: two-factor
    /// sign-in is on from now, and the answer is 10 single-use recovery codes,
    /// shown this once. A code that does not match is `BAD_USER_INPUT`.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn confirm_totp(&self, ctx: &Context<'_>, code: String) -> async_graphql::Result<Vec<String>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_session(ctx).gql()?;
        let client = client_info(ctx);
        charge_code(state, principal.user_id).await.gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let user = crate::repo::users::find_any(&txn, principal.user_id)
            .await
            .gql()?
            .ok_or_else(|| AppError::unauthenticated("account no longer exists").extend())?;
        let Some(codes) = totp::confirm(&txn, &state.keys, &user, &code).await.gql()? else {
            drop(txn);
            audit_wrong_code(state, &client, user.id, "confirm").await;
            return Err(
                AppError::bad_input("the code does not match; enter the code the authenticator shows now").extend()
            );
        };
        let entry = AuditEntry::new(AuditAction::TotpEnabled, AuditOutcome::Success).actor(user.id).target(user.id);
        audit::record(&txn, &client, entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(codes)
    }

    /// Switch two-factor sign-in off. Needs a current authenticator code or an
    /// unused recovery code (for a lost device); a wrong one is `BAD_USER_INPUT`.
    /// The secret and every recovery code are deleted.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn disable_totp(&self, ctx: &Context<'_>, code: String) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_session(ctx).gql()?;
        let client = client_info(ctx);
        let user = load_user(state, principal.user_id).await.gql()?;
        if user.totp_enabled_at.is_none() {
            return Err(AppError::new(ErrorCode::Conflict, "two-factor sign-in is not on").extend());
        }
        charge_code(state, user.id).await.gql()?;
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let Some(factor) = totp::verify_second_factor(&txn, &state.keys, &user, &code).await.gql()? else {
            drop(txn);
            audit_wrong_code(state, &client, user.id, "disable").await;
            return Err(AppError::bad_input("the code is not valid (or was used already)").extend());
        };
        totp::disable(&txn, user.id).await.gql()?;
        if factor == SecondFactor::RecoveryCode {
            let entry = AuditEntry::new(AuditAction::RecoveryCodeUsed, AuditOutcome::Success)
                .actor(user.id)
                .target(user.id)
                .detail(serde_json::json!({ "during": "disable" }));
            audit::record(&txn, &client, entry).await.gql()?;
        }
        let entry = AuditEntry::new(AuditAction::TotpDisabled, AuditOutcome::Success)
            .actor(user.id)
            .target(user.id)
            .detail(serde_json::json!({ "with": factor.as_str() }));
        audit::record(&txn, &client, entry).await.gql()?;
        txn.commit().await.gql()?;
        Ok(true)
    }
}
