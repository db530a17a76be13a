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
pub mod session_cache;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod worker_tokens;
