//! Accounts and access: passwords, sessions (JWT access tokens and rotating refresh
//! tokens), API keys, TOTP two-factor sign-in, and the roles and permissions that
//! guard the schema.

pub mod account_mail;
pub mod account_tokens;
pub mod accounts;
pub mod api_keys;
pub mod password;
pub mod principal;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod worker_tokens;

/// What sign-in, sessions and account mail use of the process: their narrow
/// dependencies, provided by the composition root (`state::AppState`).
pub trait AuthDeps: Send + Sync {
    fn db(&self) -> &sea_orm::DatabaseConnection;
    fn settings(&self) -> &crate::config::Settings;
    fn tokens(&self) -> &tokens::TokenKeys;
    fn access_signals(&self) -> &crate::access::AccessSignals;
    fn mailer(&self) -> &crate::mail::Mailer;
    fn password_hashing(&self) -> &password::HashingPool;
    fn login_failures(&self) -> &crate::limits::login::LoginFailures;
    fn limiter(&self) -> &crate::limits::Limiter;
    /// The server's base URL, without a trailing `/`.
    fn public_url(&self) -> &str;
}
