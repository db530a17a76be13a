//! The account life cycle that goes through mail: proving an address, recovering a
//! lost password, changing the password or the address.
//!
//! Every mail is enqueued (`mail::enqueue`) in the transaction of the change that
//! needs it, so it exists exactly when the change commits, and no request waits on
//! SMTP. Links are `{public_url}/verify-email?token=…` and
//! `{public_url}/reset-password?token=…`.
//!
//! Choices:
//! - `requestPasswordReset` answers `true` for any address, and both answers are held
//!   to the same floor ([`RESET_ANSWER_FLOOR`]) so the work done for a real account
//!   does not show in the timing.
//! - `resetPassword` revokes every session (refresh-token family) of the account;
//!   open subscriptions close on their next re-check, as on any revocation. API keys
//!   stay: they are revoked one by one by their owner.
//! - `changePassword` revokes every *other* session and keeps the caller's, so the
//!   device that changed the password stays signed in.
//! - `changeEmail` changes nothing until the link sent to the new address is used;
//!   the old address gets a notice at once.

use std::time::Duration;

use chrono::Utc;
use entities::{user, AccountTokenPurpose};
use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::auth::account_tokens;
use crate::auth::accounts::{insert_account, normalize_email, prepare_account, verify_credentials};
use crate::auth::password::{check_policy, hash_password};
use crate::auth::principal::{AuthMethod, ClientInfo, Principal};
use crate::auth::AuthDeps;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::limits::Policy;
use crate::mail::{self, templates};
use crate::repo::audit::{self, AuditAction, AuditEntry, AuditOutcome};
use crate::repo::sessions as repo_sessions;
use crate::repo::users;

/// The least time `requestPasswordReset` takes, whether or not the account exists.
pub const RESET_ANSWER_FLOOR: Duration = Duration::from_millis(300);

fn link(state: &dyn AuthDeps, page: &str, secret: &str) -> String {
    format!("{}/{page}?token={secret}", state.public_url().trim_end_matches('/'))
}

fn ip_subject(client: &ClientInfo) -> String {
    crate::limits::ip_subject(client.ip.as_deref().unwrap_or("unknown"))
}

/// Charge one account mail to the account (`account_mail`) and the client address
/// (`account_mail_ip`).
async fn limit_mail(state: &dyn AuthDeps, account: &str, client: &ClientInfo) -> AppResult<()> {
    state.limiter().enforce(Policy::AccountMailIp, ip_subject(client), 1).await?;
    state.limiter().enforce(Policy::AccountMail, account.to_string(), 1).await?;
    Ok(())
}

/// `EMAIL_NOT_VERIFIED` unless the user's address is verified.
pub async fn require_verified(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    let row = users::find_any(db, user_id).await?;
    match row {
        Some(user) if user.email_verified_at.is_some() => Ok(()),
        Some(_) => Err(AppError::new(
            ErrorCode::EmailNotVerified,
            "verify your email address first: follow the link we mailed you (or ask for a new one)",
        )),
        None => Err(AppError::unauthenticated("account no longer exists")),
    }
}

/// Issue a VERIFY_EMAIL token for the user's current address and enqueue its mail.
async fn queue_verification<C: ConnectionTrait>(conn: &C, state: &dyn AuthDeps, user: &user::Model) -> AppResult<()> {
    let ttl = state.settings().mail.verify_token_ttl_secs;
    let token =
        account_tokens::issue(conn, user.id, AccountTokenPurpose::VerifyEmail, &user.email, Duration::from_secs(ttl))
            .await?;
    let mail =
        templates::verify_email(&user.email, &user.display_name, &link(state, "verify-email", &token.secret), ttl);
    mail::enqueue(conn, state.mailer(), state.settings(), &mail).await?;
    Ok(())
}

/// Create an account (unverified) and enqueue its verification mail, in one transaction.
pub async fn register_account(
    state: &dyn AuthDeps,
    email: &str,
    password: &str,
    display_name: &str,
) -> AppResult<user::Model> {
    let account =
        prepare_account(state.db(), state.password_hashing(), email, password, display_name, entities::Role::User)
            .await?;
    let txn = crate::db::begin_write(state.db()).await?;
    let user = insert_account(&txn, account, false).await?;
    queue_verification(&txn, state, &user).await?;
    txn.commit().await?;
    Ok(user)
}

/// Tell the owner of `email` that someone tried to sign up with it: `register` for an
/// existing (enabled) account that did not sign in. The mail links to the page that
/// asks for a reset link. Charged to the account-mail limits like every account mail
/// (per account and per address); over them nothing is sent, and the caller is told
/// nothing either way (a refusal would say the account exists).
pub async fn notify_signup_attempt(state: &dyn AuthDeps, email: &str, client: &ClientInfo) -> AppResult<()> {
    let Ok(account) = normalize_email(email) else { return Ok(()) };
    let found = users::find_by_email(state.db(), &account).await?;
    let Some(user) = found.filter(|u| !u.disabled) else { return Ok(()) };
    if let Err(err) = limit_mail(state, &user.id.to_string(), client).await {
        if err.code() == ErrorCode::RateLimited {
            tracing::info!(user_id = %user.id, "sign-up attempt on an existing account: notice not sent (rate limit)");
            return Ok(());
        }
        return Err(err);
    }
    let forgot = format!("{}/forgot-password", state.public_url().trim_end_matches('/'));
    let mail = templates::signup_attempt_notice(&user.email, &user.display_name, &forgot);
    let txn = crate::db::begin_write(state.db()).await?;
    mail::enqueue(&txn, state.mailer(), state.settings(), &mail).await?;
    txn.commit().await?;
    Ok(())
}

/// Use a VERIFY_EMAIL or CHANGE_EMAIL token: the address it names is the account's
/// and verified. A CHANGE_EMAIL whose address another account took meanwhile is a
/// `CONFLICT` (and the token stays usable, should that account go away).
pub async fn verify_email(state: &dyn AuthDeps, secret: &str, client: &ClientInfo) -> AppResult<user::Model> {
    let txn = crate::db::begin_write(state.db()).await?;
    let token =
        account_tokens::consume(&txn, secret, &[AccountTokenPurpose::VerifyEmail, AccountTokenPurpose::ChangeEmail])
            .await?;
    let user =
        users::find_any(&txn, token.user_id).await?.ok_or_else(|| AppError::bad_input("this link is not valid"))?;
    let address = token.new_email.clone().unwrap_or_else(|| user.email.clone());
    let now = Utc::now();
    let (user, action, detail) = match token.purpose {
        AccountTokenPurpose::ChangeEmail => {
            // The address is unique: another account has it when the one found is not this one.
            let taken = users::find_by_email(&txn, &address).await?.is_some_and(|other| other.id != user.id);
            if taken {
                return Err(AppError::new(ErrorCode::Conflict, "another account uses this address now"));
            }
            let from = user.email.clone();
            let user = users::set_verified_email(&txn, user, address.clone(), now).await.map_err(|err| {
                match err.sql_err() {
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                        AppError::new(ErrorCode::Conflict, "another account uses this address now")
                    }
                    _ => AppError::from(err),
                }
            })?;
            (user, AuditAction::EmailChanged, serde_json::json!({ "from": from, "to": address }))
        }
        _ => {
            // A link for an address the account has since left proves nothing now.
            if address != user.email {
                return Err(AppError::bad_input("this link was for an address the account no longer uses"));
            }
            let user = if user.email_verified_at.is_none() {
                users::mark_email_verified(&txn, user, now).await?
            } else {
                user
            };
            (user, AuditAction::EmailVerified, serde_json::json!({ "email": address }))
        }
    };
    let entry = AuditEntry::new(action, AuditOutcome::Success).actor(user.id).target(user.id).detail(detail);
    audit::record(&txn, client, entry).await?;
    txn.commit().await?;
    Ok(user)
}

/// Mail a fresh verification link to the caller. `false` when the address is
/// verified already (nothing sent).
pub async fn resend_verification(state: &dyn AuthDeps, principal: &Principal, client: &ClientInfo) -> AppResult<bool> {
    let user = users::find_any(state.db(), principal.user_id)
        .await?
        .ok_or_else(|| AppError::unauthenticated("account no longer exists"))?;
    if user.email_verified_at.is_some() {
        return Ok(false);
    }
    limit_mail(state, &user.id.to_string(), client).await?;
    let txn = crate::db::begin_write(state.db()).await?;
    queue_verification(&txn, state, &user).await?;
    txn.commit().await?;
    Ok(true)
}

/// Mail a reset link when `email` names an enabled account. The answer and its
/// timing are the same either way.
pub async fn request_password_reset(state: &dyn AuthDeps, email: &str, client: &ClientInfo) -> AppResult<bool> {
    let started = tokio::time::Instant::now();
    let result = request_password_reset_inner(state, email, client).await;
    // Rate limits answer at once (they say nothing about the account).
    if !matches!(&result, Err(err) if err.code() == ErrorCode::RateLimited) {
        tokio::time::sleep_until(started + RESET_ANSWER_FLOOR).await;
    }
    result
}

async fn request_password_reset_inner(state: &dyn AuthDeps, email: &str, client: &ClientInfo) -> AppResult<bool> {
    let account = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    // Charged for unknown addresses too, or the limit itself would tell them apart.
    limit_mail(state, &format!("reset|{account}"), client).await?;
    let found = users::find_by_email(state.db(), &account).await?;
    let Some(user) = found.filter(|u| !u.disabled) else {
        return Ok(true);
    };
    let ttl = state.settings().mail.reset_token_ttl_secs;
    let txn = crate::db::begin_write(state.db()).await?;
    let token =
        account_tokens::issue(&txn, user.id, AccountTokenPurpose::ResetPassword, &user.email, Duration::from_secs(ttl))
            .await?;
    let mail =
        templates::password_reset(&user.email, &user.display_name, &link(state, "reset-password", &token.secret), ttl);
    mail::enqueue(&txn, state.mailer(), state.settings(), &mail).await?;
    let entry = AuditEntry::new(AuditAction::PasswordResetRequested, AuditOutcome::Success).target(user.id);
    audit::record(&txn, client, entry).await?;
    txn.commit().await?;
    Ok(true)
}

/// Set a new password with a RESET_PASSWORD token: every session ends, a notice is mailed.
pub async fn reset_password(
    state: &dyn AuthDeps,
    secret: &str,
    new_password: &str,
    client: &ClientInfo,
) -> AppResult<bool> {
    state.limiter().enforce(Policy::AuthIp, ip_subject(client), 1).await?;
    // Checked before the token is used up: a weak password leaves the link working.
    let token = account_tokens::find_usable(state.db(), secret, &[AccountTokenPurpose::ResetPassword]).await?;
    let user = users::find_any(state.db(), token.user_id)
        .await?
        .ok_or_else(|| AppError::bad_input("this link is not valid"))?;
    check_policy(new_password, &user.email)?;
    let candidate = new_password.to_string();
    let password_hash = state.password_hashing().run(move || hash_password(&candidate)).await??;

    let txn = crate::db::begin_write(state.db()).await?;
    account_tokens::consume(&txn, secret, &[AccountTokenPurpose::ResetPassword]).await?;
    let user = users::set_password_hash(&txn, user, password_hash).await?;
    let revoked = repo_sessions::revoke_all_sessions(&txn, user.id, "password reset").await?;
    let notice = templates::password_changed_notice(
        &user.email,
        &user.display_name,
        "it was reset with a link mailed to this address, and every device was signed out.",
    );
    mail::enqueue(&txn, state.mailer(), state.settings(), &notice).await?;
    let entry = AuditEntry::new(AuditAction::PasswordReset, AuditOutcome::Success)
        .actor(user.id)
        .target(user.id)
        .detail(serde_json::json!({ "sessionsRevoked": revoked }));
    audit::record(&txn, client, entry).await?;
    txn.commit().await?;
    state.access_signals().announce(crate::access::AccessChange::user(user.id)).await;
    Ok(true)
}

/// The signed-in caller's account, checked against `password` (charged like a
/// sign-in: per account and address, and the account's failure back-off). API keys
/// may not change credentials.
async fn confirm_password(
    state: &dyn AuthDeps,
    principal: &Principal,
    password: &str,
    client: &ClientInfo,
) -> AppResult<user::Model> {
    if principal.method == AuthMethod::ApiKey {
        return Err(AppError::forbidden("API keys cannot change the account's credentials; sign in"));
    }
    let user = users::find_any(state.db(), principal.user_id)
        .await?
        .ok_or_else(|| AppError::unauthenticated("account no longer exists"))?;
    state.limiter().enforce(Policy::Auth, format!("{}|{}", user.email, ip_subject(client)), 1).await?;
    state.login_failures().check(&user.email).await?;
    match verify_credentials(state.db(), state.password_hashing(), &user.email, password).await {
        Ok(user) => {
            state.login_failures().record_success(&user.email).await;
            Ok(user)
        }
        Err(err) if err.code() == ErrorCode::Unauthenticated => {
            state.login_failures().record_failure(&user.email).await;
            Err(AppError::unauthenticated("the current password is wrong"))
        }
        Err(err) => Err(err),
    }
}

/// Change the caller's password: every other session ends, this one stays; a
/// notice is mailed.
pub async fn change_password(
    state: &dyn AuthDeps,
    principal: &Principal,
    current_password: &str,
    new_password: &str,
    client: &ClientInfo,
) -> AppResult<bool> {
    let user = confirm_password(state, principal, current_password, client).await?;
    check_policy(new_password, &user.email)?;
    let candidate = new_password.to_string();
    let password_hash = state.password_hashing().run(move || hash_password(&candidate)).await??;
    let txn = crate::db::begin_write(state.db()).await?;
    let user = users::set_password_hash(&txn, user, password_hash).await?;
    let revoked = repo_sessions::revoke_other_sessions(&txn, user.id, principal.family_id, "password changed").await?;
    let notice =
        templates::password_changed_notice(&user.email, &user.display_name, "every other device was signed out.");
    mail::enqueue(&txn, state.mailer(), state.settings(), &notice).await?;
    let entry = AuditEntry::new(AuditAction::PasswordChanged, AuditOutcome::Success)
        .actor(user.id)
        .target(user.id)
        .detail(serde_json::json!({ "sessionsRevoked": revoked }));
    audit::record(&txn, client, entry).await?;
    txn.commit().await?;
    state.access_signals().announce(crate::access::AccessChange::user(user.id)).await;
    Ok(true)
}

/// Ask to move the caller's account to `new_email`: a confirmation link goes to the
/// new address, a notice to the old one; nothing changes until the link is used.
pub async fn change_email(
    state: &dyn AuthDeps,
    principal: &Principal,
    new_email: &str,
    password: &str,
    client: &ClientInfo,
) -> AppResult<bool> {
    let new_email = normalize_email(new_email)?;
    let user = confirm_password(state, principal, password, client).await?;
    if new_email == user.email {
        return Err(AppError::bad_input("this is the account's address already"));
    }
    limit_mail(state, &user.id.to_string(), client).await?;
    let taken = users::find_by_email(state.db(), &new_email).await?.is_some();
    if taken {
        return Err(AppError::new(ErrorCode::Conflict, "an account with this email already exists"));
    }
    let ttl = state.settings().mail.verify_token_ttl_secs;
    let txn = crate::db::begin_write(state.db()).await?;
    let token =
        account_tokens::issue(&txn, user.id, AccountTokenPurpose::ChangeEmail, &new_email, Duration::from_secs(ttl))
            .await?;
    let confirm =
        templates::confirm_new_email(&new_email, &user.display_name, &link(state, "verify-email", &token.secret), ttl);
    mail::enqueue(&txn, state.mailer(), state.settings(), &confirm).await?;
    let notice = templates::email_change_notice(&user.email, &user.display_name, &new_email);
    mail::enqueue(&txn, state.mailer(), state.settings(), &notice).await?;
    let entry = AuditEntry::new(AuditAction::EmailChangeRequested, AuditOutcome::Success)
        .actor(user.id)
        .target(user.id)
        .detail(serde_json::json!({ "to": new_email }));
    audit::record(&txn, client, entry).await?;
    txn.commit().await?;
    Ok(true)
}
