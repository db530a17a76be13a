//! sea-orm entities for reelhouse: one module per table, nothing else.
//!
//! Enum-like columns are stored as short strings (so both SQLite and PostgreSQL
//! carry them without native enum types) and typed in Rust through the enums in
//! [`enums`], which are also re-exported here and from the entity modules that use them.

pub mod enums;
pub mod prelude;

pub mod account_token;
pub mod api_key;
pub mod audit_event;
pub mod batch;
pub mod batch_job;
pub mod event_outbox;
pub mod job;
pub mod job_log;
pub mod moderation_action;
pub mod processing_usage;
pub mod refresh_token;
pub mod refresh_token_family;
pub mod rendition;
pub mod totp_recovery_code;
pub mod upload;
pub mod user;
pub mod video;
pub mod video_daily_stat;
pub mod video_view;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_endpoint;
pub mod worker;
pub mod worker_token;

pub use enums::*;
