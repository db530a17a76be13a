//! `reelhouse worker`: a process that runs workers only (no HTTP API) against the
//! shared database and storage, so encoding scales by adding processes.
//!
//! It announces itself in the `workers` table and heartbeats there so admins can
//! see it; leasing and running transcode jobs is the job engine's, which plugs in here.

use std::time::Duration;

use chrono::Utc;
use entities::worker;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, Set};
use uuid::Uuid;

use crate::config::Settings;

/// This process's row in the `workers` table.
pub struct WorkerRegistration {
    pub id: Uuid,
    db: DatabaseConnection,
}

impl WorkerRegistration {
    pub async fn register(db: DatabaseConnection, capacity: usize) -> anyhow::Result<Self> {
        let now = Utc::now();
        let id = Uuid::now_v7();
        let host = crate::startup::instance_id();
        worker::ActiveModel {
            id: Set(id),
            host: Set(host),
            pid: Set(i32::try_from(std::process::id()).unwrap_or(i32::MAX)),
            capacity: Set(i32::try_from(capacity).unwrap_or(i32::MAX)),
            current_jobs: Set(0),
            version: Set(env!("CARGO_PKG_VERSION").to_string()),
            started_at: Set(now),
            last_seen_at: Set(now),
        }
        .insert(&db)
        .await?;
        Ok(Self { id, db })
    }

    /// Record that this worker is alive (one step; the loop calls it periodically).
    pub async fn heartbeat(&self) -> anyhow::Result<()> {
        worker::ActiveModel { id: Set(self.id), last_seen_at: Set(Utc::now()), ..Default::default() }
            .update(&self.db)
            .await?;
        Ok(())
    }

    pub async fn deregister(self) -> anyhow::Result<()> {
        worker::Entity::delete_by_id(self.id).exec(&self.db).await?;
        Ok(())
    }
}

/// Run until SIGTERM/SIGINT, heartbeating; deregister on the way out.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crate::telemetry::init_gstreamer(&settings.telemetry.gstreamer_level)?;
    let db = crate::db::connect(&settings).await?;
    if settings.database.migrate_on_start {
        crate::db::migrate(&db).await?;
    }
    let mut signals = crate::startup::ShutdownSignals::install()?;
    let stop = async move {
        let received = signals.recv().await;
        tracing::info!(signal = received.unwrap_or("unknown"), "worker shutting down");
    };
    run_until(db, &settings, stop).await
}

/// The worker runtime, shared by `reelhouse worker` and embedded `serve`:
/// register, heartbeat until `stop` resolves, deregister.
pub async fn run_until(
    db: DatabaseConnection,
    settings: &Settings,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let capacity = settings.worker_concurrency();
    let registration = WorkerRegistration::register(db, capacity).await?;
    tracing::info!(worker = %registration.id, capacity, "worker registered");
    let every = Duration::from_secs(settings.workers.heartbeat_secs.max(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(every) => {
                // A missed heartbeat is not fatal: the database may be restarting.
                if let Err(err) = registration.heartbeat().await {
                    tracing::warn!(error = ?err, "worker heartbeat failed");
                }
            }
        }
    }
    registration.deregister().await?;
    Ok(())
}
