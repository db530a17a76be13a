//! Integration tests: one binary, real services (see scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_keys;
mod auth;
mod catalogue;
mod e2e;
mod fanout;
mod helpers;
mod http_basics;
mod jobs;
mod media;
mod playback;
mod process;
mod rate_limit;
mod ready;
mod redis_restart;
mod runner;
mod schema;
mod storage;
mod subscriptions;
mod tus;
mod uploads;
mod video_events;
mod views;
mod webhooks;
mod worker_process;
mod ws_session;
