//! Integration tests: one binary, real services (see scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_keys;
mod auth;
mod helpers;
mod http_basics;
mod jobs;
mod media;
mod process;
mod rate_limit;
mod ready;
mod schema;
mod storage;
mod subscriptions;
mod worker_process;
mod ws_session;
