//! Accounts and access. Passwords now; tokens, API keys and roles build on this.

pub mod accounts;
pub mod password;
