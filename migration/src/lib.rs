//! The reelhouse schema, as an ordered chain of sea-orm migrations.
//!
//! Every migration is written with sea-query's schema builder so the same chain runs
//! on SQLite and PostgreSQL. Migrations describe the schema as it was when they were
//! written: they name tables and columns through their own `DeriveIden` enums and
//! never through `entities`, so later entity changes cannot rewrite history. Change
//! the schema by adding a migration, never by editing one that has shipped.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_users;
mod m20261122_000002_create_refresh_tokens;
mod m20261122_000003_create_api_keys;
mod m20261122_000004_create_videos;
mod m20261122_000005_create_uploads;
mod m20261122_000006_create_renditions;
mod m20261122_000007_create_jobs;
mod m20261122_000008_create_events_outbox;
mod m20261122_000009_create_workers;
mod m20261122_000010_create_views_and_moderation;
mod m20261122_000011_create_webhooks;
mod m20261122_000012_add_video_event_seq;
mod m20261206_000001_add_output_bytes_and_processing_usage;
mod m20261206_000002_add_upload_staging_swept_at;
mod m20261206_000003_widen_webhook_secrets;
mod m20261206_000004_create_audit_events;
mod m20261206_000005_add_trace_parent;
mod m20261206_000006_add_video_output_version;
mod m20261206_000007_account_mail;
mod m20261206_000008_totp;
mod m20261206_000009_user_admin;
mod m20261207_000001_worker_tokens;
mod m20261207_000003_job_log_stream;
mod m20261207_000010_downloads_and_batches;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_refresh_tokens::Migration),
            Box::new(m20261122_000003_create_api_keys::Migration),
            Box::new(m20261122_000004_create_videos::Migration),
            Box::new(m20261122_000005_create_uploads::Migration),
            Box::new(m20261122_000006_create_renditions::Migration),
            Box::new(m20261122_000007_create_jobs::Migration),
            Box::new(m20261122_000008_create_events_outbox::Migration),
            Box::new(m20261122_000009_create_workers::Migration),
            Box::new(m20261122_000010_create_views_and_moderation::Migration),
            Box::new(m20261122_000011_create_webhooks::Migration),
            Box::new(m20261122_000012_add_video_event_seq::Migration),
            Box::new(m20261206_000001_add_output_bytes_and_processing_usage::Migration),
            Box::new(m20261206_000002_add_upload_staging_swept_at::Migration),
            Box::new(m20261206_000003_widen_webhook_secrets::Migration),
            Box::new(m20261206_000004_create_audit_events::Migration),
            Box::new(m20261206_000005_add_trace_parent::Migration),
            Box::new(m20261206_000006_add_video_output_version::Migration),
            Box::new(m20261206_000007_account_mail::Migration),
            Box::new(m20261206_000008_totp::Migration),
            Box::new(m20261206_000009_user_admin::Migration),
            Box::new(m20261207_000001_worker_tokens::Migration),
            Box::new(m20261207_000003_job_log_stream::Migration),
            Box::new(m20261207_000010_downloads_and_batches::Migration),
        ]
    }
}
