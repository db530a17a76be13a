//! reelhouse: a self-hosted media server.
//!
//! `main.rs` is thin: it parses the CLI, loads [`config::Settings`], installs
//! telemetry and runs a command; `serve` is [`startup::Application`].

pub mod access;
pub mod actors;
pub mod auth;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod graphql;
pub mod hot_cache;
pub mod http;
pub mod identity;
pub mod jail;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod mail;
pub mod media;
pub mod memory;
pub mod playback;
pub mod redis_client;
pub mod repo;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod uploads;
pub mod webhooks;
pub mod worker;
