//! Sessions: refresh-token families and the access tokens they mint.
//!
//! A sign-in starts a family. A refresh token is 32 random bytes (base64url), stored
//! only as its SHA-256. `rotate_refresh_token` exchanges a token for a new one in the
//! same family; presenting a token that was already exchanged is treated as theft and
//! revokes the whole family, so the newest token and every access token of the
//! session stop working too.
//!
//! There is deliberately **no grace window**: a client that lost the response to a
//! refresh must sign in again. Two concurrent refreshes of one token are resolved by
//! a conditional `UPDATE ... WHERE rotated_at IS NULL`: exactly one wins, and the
//! loser counts as reuse (an attacker racing the real client must not keep the
//! session).

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use entities::user;
use rand::RngCore;
use sea_orm::ConnectionTrait;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::access::AccessChange;
use crate::auth::principal::ClientInfo;
use crate::auth::AuthDeps;
use crate::error::{AppError, AppResult};
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::repo::sessions::{self as repo, NewFamily};
use crate::repo::users;

const INVALID_REFRESH: &str = "invalid or expired refresh token";

/// What a sign-in or a refresh hands back.
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_secs: i64,
    pub user: user::Model,
}

fn new_refresh_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn capped_secs(secs: u64) -> Duration {
    Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 4).min(10 * 365 * 86_400))
}

fn refresh_ttl(state: &dyn AuthDeps) -> Duration {
    capped_secs(state.settings().auth.refresh_token_ttl_secs)
}

/// When a family started at `created_at` ends for good (`auth.session_max_lifetime_secs`).
fn family_deadline(state: &dyn AuthDeps, created_at: DateTime<Utc>) -> DateTime<Utc> {
    created_at + capped_secs(state.settings().auth.session_max_lifetime_secs)
}

async fn insert_refresh_token(
    db: &impl ConnectionTrait,
    state: &dyn AuthDeps,
    id: Uuid,
    family_id: Uuid,
    family_created_at: DateTime<Utc>,
) -> AppResult<String> {
    let secret = new_refresh_secret();
    let now = Utc::now();
    // Never past the family's absolute end.
    let expires_at = (now + refresh_ttl(state)).min(family_deadline(state, family_created_at));
    repo::insert_refresh_token(db, id, family_id, hash_refresh_token(&secret), now, expires_at).await?;
    Ok(secret)
}

/// Start a new session (family) for a user who just proved who they are; the
/// sign-in is audited (`LOGIN_SUCCEEDED`) in the same transaction.
#[tracing::instrument(skip_all, fields(user_id = %user.id), err(Debug))]
pub async fn start_session(state: &dyn AuthDeps, user: user::Model, client: &ClientInfo) -> AppResult<SessionTokens> {
    let now = Utc::now();
    let family_id = Uuid::now_v7();
    let txn = crate::db::begin_write(state.db()).await?;
    let family = NewFamily {
        id: family_id,
        user_id: user.id,
        created_at: now,
        user_agent: client.user_agent.as_ref().map(|ua| ua.chars().take(500).collect()),
        ip: client.ip.clone(),
    };
    repo::insert_family(&txn, family).await?;
    let refresh_token = insert_refresh_token(&txn, state, Uuid::now_v7(), family_id, now).await?;
    let entry = AuditEntry::new(AuditAction::LoginSucceeded, AuditOutcome::Success)
        .actor(user.id)
        .target(user.id)
        .detail(serde_json::json!({ "sessionId": family_id }));
    audit::record(&txn, client, entry).await?;
    txn.commit().await?;
    let access = state.tokens().issue_access_token(user.id, user.role, family_id)?;
    Ok(SessionTokens { access_token: access.token, refresh_token, expires_in_secs: access.expires_in_secs, user })
}

/// What `register` answers for an email that already has an account (and a password
/// that is not its own): the same shape as a real sign-up — a signed access token, a
/// refresh token, a fresh user id — none of which works, because no session or user
/// row stands behind them. The answer reveals nothing; using the tokens does (they
/// are refused), which is the documented trade-off until registration confirms by
/// email.
pub fn decoy_session(state: &dyn AuthDeps, email: &str, display_name: &str) -> AppResult<SessionTokens> {
    let now = Utc::now();
    let user = user::Model {
        id: Uuid::now_v7(),
        email: crate::auth::accounts::normalize_email(email)?,
        display_name: display_name.trim().to_string(),
        password_hash: String::new(),
        role: entities::Role::User,
        disabled: false,
        storage_quota_bytes: None,
        email_verified_at: None,
        processing_budget_secs_per_day: None,
        deleted_at: None,
        created_at: now,
        updated_at: now,
        totp_secret: None,
        totp_enabled_at: None,
        totp_last_step: None,
    };
    let access = state.tokens().issue_access_token(user.id, user.role, Uuid::now_v7())?;
    Ok(SessionTokens {
        access_token: access.token,
        refresh_token: new_refresh_secret(),
        expires_in_secs: access.expires_in_secs,
        user,
    })
}

/// Exchange a refresh token for a new pair; see the module docs for reuse, which
/// is audited (`REFRESH_REUSE_DETECTED`) with the revocation.
#[tracing::instrument(skip_all)]
pub async fn rotate_refresh_token(
    state: &dyn AuthDeps,
    presented: &str,
    client: &ClientInfo,
) -> AppResult<SessionTokens> {
    let hash = hash_refresh_token(presented);
    let now = Utc::now();
    let new_id = Uuid::now_v7();
    let txn = crate::db::begin_write(state.db()).await?;
    // The write comes first so SQLite takes its write lock before reading anything
    // (no snapshot upgrade failure), and PostgreSQL serializes racers on the row lock.
    // `replaced_by` is set once the new row exists (it is a foreign key).
    let claimed = repo::claim_refresh_token(&txn, &hash, now).await?;
    let Some(token) = repo::find_refresh_token(&txn, &hash).await? else {
        return Err(AppError::unauthenticated(INVALID_REFRESH));
    };
    let family =
        repo::find_family(&txn, token.family_id).await?.ok_or_else(|| AppError::unauthenticated(INVALID_REFRESH))?;
    if family.revoked_at.is_some() {
        return Err(AppError::unauthenticated(INVALID_REFRESH));
    }
    if family_deadline(state, family.created_at) <= now {
        // Past its absolute lifetime: however fresh the token, the session is over.
        repo::revoke_family(&txn, family.id, "session lifetime reached").await?;
        txn.commit().await?;
        state.access_signals().announce(AccessChange::session(family.user_id, family.id)).await;
        return Err(AppError::unauthenticated(INVALID_REFRESH));
    }
    if !claimed {
        if token.rotated_at.is_some() {
            repo::revoke_family(&txn, family.id, "refresh token reused").await?;
            // The presenter is unknown (the thief or the victim): no actor.
            let entry = AuditEntry::new(AuditAction::RefreshReuseDetected, AuditOutcome::Denied)
                .target(family.user_id)
                .detail(serde_json::json!({ "sessionId": family.id }));
            audit::record(&txn, client, entry).await?;
            txn.commit().await?;
            state.access_signals().announce(AccessChange::session(family.user_id, family.id)).await;
            tracing::warn!(family_id = %family.id, user_id = %family.user_id, "refresh token reuse: session revoked");
        }
        return Err(AppError::unauthenticated(INVALID_REFRESH));
    }
    let user = users::find_any(&txn, family.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| AppError::unauthenticated(INVALID_REFRESH))?;
    let refresh_token = insert_refresh_token(&txn, state, new_id, family.id, family.created_at).await?;
    repo::set_replaced_by(&txn, token.id, new_id).await?;
    repo::touch_family(&txn, family.id, now).await?;
    txn.commit().await?;
    let access = state.tokens().issue_access_token(user.id, user.role, family.id)?;
    Ok(SessionTokens { access_token: access.token, refresh_token, expires_in_secs: access.expires_in_secs, user })
}

/// Revoke the session a refresh token belongs to, audited (`SESSION_REVOKED`, the
/// session's user as actor) in the same transaction, and announced (the session
/// cache and open sockets). `false` when the token is unknown.
pub async fn logout(state: &dyn AuthDeps, presented: &str, client: &ClientInfo) -> AppResult<bool> {
    let txn = crate::db::begin_write(state.db()).await?;
    let token = repo::find_refresh_token_with_family(&txn, &hash_refresh_token(presented)).await?;
    let Some((token, Some(family))) = token else { return Ok(false) };
    let revoked = repo::revoke_family(&txn, token.family_id, "logout").await? > 0;
    if revoked {
        let entry = AuditEntry::new(AuditAction::SessionRevoked, AuditOutcome::Success)
            .actor(family.user_id)
            .target(family.id)
            .detail(serde_json::json!({ "reason": "logout" }));
        audit::record(&txn, client, entry).await?;
    }
    txn.commit().await?;
    if revoked {
        state.access_signals().announce(AccessChange::session(family.user_id, family.id)).await;
    }
    Ok(true)
}

pub use crate::repo::sessions::revoke_all_sessions;
