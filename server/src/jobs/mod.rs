//! The durable job queue: a table, not a home-made broker.

pub mod batches;
mod delete_objects;
mod delete_user;
pub mod failure;
pub mod metrics;
pub mod queue;
pub mod remote;
pub mod reporter;
pub mod runner;
mod runner_storage;
pub mod scheduler;
mod send_mail;
mod transcode;

pub use failure::FailureCode;
pub use transcode::transcode_payload;

pub use crate::repo::jobs::{enqueue, enqueue_at, NewJob, DEFAULT_PRIORITY};
