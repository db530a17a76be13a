//! Who is calling: credentials from `Authorization: Bearer` or `X-Api-Key` turned
//! into a [`Principal`] once per request.
//!
//! Invalid credentials never fail the HTTP request; they become
//! [`RequestAuth::Invalid`], and guarded fields answer `UNAUTHENTICATED` while
//! public ones (`serverInfo`) still work.
//!
//! A database that cannot be reached while checking credentials is an outage, not
//! a verdict about the caller: [`RequestAuth::Unavailable`], answered `UNAVAILABLE`
//! (503 with `Retry-After`), so clients retry instead of signing their user out.

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use entities::Role;

use crate::access::sessions::{CachedSession, Lookup};
use crate::auth::api_keys;
use crate::auth::AuthDeps;
use crate::error::{AppError, ErrorCode};
pub use crate::identity::{lower_role, AuthMethod, ClientInfo, Principal};

pub const API_KEY_HEADER: &str = "x-api-key";

/// What the request's credentials amount to; added to every GraphQL request's data.
#[derive(Debug, Clone)]
pub enum RequestAuth {
    Anonymous,
    Authenticated(Principal),
    /// Credentials were presented and refused; the reason is safe to show.
    Invalid(&'static str),
    /// Credentials were presented but could not be checked: the database did not
    /// answer. Neither granted nor refused.
    Unavailable,
}

/// Seconds a client is told to wait when credentials could not be checked.
pub const AUTH_RETRY_AFTER_SECS: u64 = 2;

/// The error for [`RequestAuth::Unavailable`]: `UNAVAILABLE` with `Retry-After`.
pub fn auth_unavailable() -> AppError {
    AppError::new(
        ErrorCode::Unavailable,
        "credentials cannot be checked right now (the database is unavailable), try again later",
    )
    .with_retry_after(AUTH_RETRY_AFTER_SECS)
}

const INVALID_CREDENTIALS: &str = "invalid or expired credentials";

/// Authenticate the request's headers. Database failures are
/// [`RequestAuth::Unavailable`] (logged): a flaky database neither grants access
/// nor tells a valid caller its credentials are bad.
#[tracing::instrument(skip_all)]
pub async fn authenticate(state: &dyn AuthDeps, headers: &HeaderMap) -> RequestAuth {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) else {
            return RequestAuth::Invalid("the Authorization header must be `Bearer <access token>`");
        };
        return authenticate_access_token(state, token).await;
    }
    if let Some(value) = headers.get(API_KEY_HEADER) {
        let Ok(secret) = value.to_str() else {
            return RequestAuth::Invalid(INVALID_CREDENTIALS);
        };
        return match api_keys::authenticate_api_key(state.db(), secret.trim()).await {
            Ok(Some(principal)) => RequestAuth::Authenticated(principal),
            Ok(None) => RequestAuth::Invalid(INVALID_CREDENTIALS),
            Err(err) => {
                tracing::warn!(error = ?err, "checking an API key: the database did not answer");
                RequestAuth::Unavailable
            }
        };
    }
    RequestAuth::Anonymous
}

/// The principal an access token's signed claims name, without asking the
/// database whether its session was revoked or its user demoted since: used only
/// to let an admin read `systemStatus` while the database cannot be reached (a
/// read of this process's own view, for at most the token's short lifetime).
pub fn principal_from_claims(state: &dyn AuthDeps, headers: &HeaderMap) -> Option<Principal> {
    let token = headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
    let (claims, user_id) = state.tokens().verify_access_token(token).ok()?;
    Some(Principal {
        user_id,
        role: claims.role,
        method: AuthMethod::AccessToken,
        family_id: Some(claims.sid),
        api_key_id: None,
    })
}

/// A valid signature is not enough: the session must not be revoked and the user
/// must still be enabled, so revocation and demotion apply on the next request.
/// Both are read in one query (the session joined with its user) unless the
/// session cache ([`crate::access::sessions`]) knows the answer: it is emptied
/// of a session the moment an access change names it, here and on every instance.
pub async fn authenticate_access_token(state: &dyn AuthDeps, token: &str) -> RequestAuth {
    let (claims, user_id) = match state.tokens().verify_access_token(token) {
        Ok(verified) => verified,
        Err(err) => {
            tracing::debug!(error = %err, "access token refused");
            return RequestAuth::Invalid(INVALID_CREDENTIALS);
        }
    };
    let sessions = state.access_signals().sessions();
    let principal = |role: Role| Principal {
        user_id,
        role: lower_role(role, claims.role),
        method: AuthMethod::AccessToken,
        family_id: Some(claims.sid),
        api_key_id: None,
    };
    let ticket = match sessions.get(claims.sid) {
        Lookup::Hit(session) if session.user_id == user_id => {
            return RequestAuth::Authenticated(principal(session.role));
        }
        Lookup::Hit(_) => return RequestAuth::Invalid(INVALID_CREDENTIALS),
        Lookup::Miss | Lookup::Bypass => sessions.ticket(),
    };
    let found = crate::repo::sessions::find_family_with_user(state.db(), claims.sid).await;
    match found {
        Ok(Some((family, Some(user))))
            if family.revoked_at.is_none() && family.user_id == user_id && !user.disabled =>
        {
            if let Some(ticket) = ticket {
                sessions.insert(ticket, claims.sid, CachedSession { user_id, role: user.role });
            }
            RequestAuth::Authenticated(principal(user.role))
        }
        Ok(_) => RequestAuth::Invalid(INVALID_CREDENTIALS),
        Err(err) => {
            crate::breaker::note_database_error(&err);
            tracing::warn!(error = ?err, "checking a session: the database did not answer");
            RequestAuth::Unavailable
        }
    }
}
