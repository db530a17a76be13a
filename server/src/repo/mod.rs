//! sea-orm queries per aggregate, and the access rules that go with them.

pub mod account_tokens;
pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod job_logs;
pub mod jobs;
pub mod moderation;
pub mod outbox;
pub mod paging;
pub mod sessions;
pub mod totp;
pub mod uploads;
pub mod usage;
pub mod users;
pub mod videos;
pub mod views;
pub mod webhooks;
pub mod worker_tokens;
pub mod workers;
