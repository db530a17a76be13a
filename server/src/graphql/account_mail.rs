//! Account mutations that go through mail: email verification, password reset,
//! changing the password or the address. The work is in `auth::account_mail`.

use async_graphql::{Context, Object};

use super::accounts::User;
use crate::auth::account_mail;
use crate::auth::principal::ClientInfo;
use crate::auth::roles::{require_principal, AuthenticatedGuard};
use crate::error::GqlResultExt;
use crate::state::AppState;

fn client_info(ctx: &Context<'_>) -> ClientInfo {
    ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default()
}

#[derive(Default)]
pub struct AccountMailMutation;

#[Object]
impl AccountMailMutation {
    /// Use a link's token from a verification mail (sign-up, `resendVerification`,
    /// or `changeEmail`'s mail to the new address). Works once; no sign-in needed.
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> async_graphql::Result<User> {
        let state = ctx.data::<AppState>()?;
        let user = account_mail::verify_email(state, &token, &client_info(ctx)).await.gql()?;
        Ok(user.into())
    }

    /// Mail a new verification link to the caller's address (rate-limited).
    /// `false`: the address is verified already, nothing was sent.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn resend_verification(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        account_mail::resend_verification(state, principal, &client_info(ctx)).await.gql()
    }

    /// Mail a password-reset link if an account has this address. Always `true`:
    /// the answer does not tell whether the account exists (rate-limited).
    async fn request_password_reset(&self, ctx: &Context<'_>, email: String) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        account_mail::request_password_reset(state, &email, &client_info(ctx)).await.gql()
    }

    /// Set a new password with a reset link's token: every session of the account
    /// ends, and a notice is mailed.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        account_mail::reset_password(state, &token, &new_password, &client_info(ctx)).await.gql()
    }

    /// Change the caller's password. Every other session ends; this one stays.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        account_mail::change_password(state, principal, &current_password, &new_password, &client_info(ctx)).await.gql()
    }

    /// Move the caller's account to `newEmail`: a link goes to the new address (the
    /// change happens when `verifyEmail` takes it), a notice to the current one.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn change_email(
        &self,
        ctx: &Context<'_>,
        new_email: String,
        password: String,
    ) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        account_mail::change_email(state, principal, &new_email, &password, &client_info(ctx)).await.gql()
    }
}
