//! Integration tests: one binary, real services (see scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_keys;
mod auth;
mod helpers;
mod http_basics;
mod media;
mod process;
mod rate_limit;
mod ready;
mod schema;
mod storage;
mod subscriptions;
mod tus;
mod uploads;
mod ws_session;
