//! Database connection (SQLite or PostgreSQL) and migrations.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::config::Settings;

/// Connect with the pool settings; creates the SQLite file and data dir when needed.
pub async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    if settings.uses_sqlite() && settings.database.url.is_none() {
        std::fs::create_dir_all(&settings.server.data_dir)
            .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", settings.server.data_dir.display()))?;
    }
    let mut options = ConnectOptions::new(settings.database_url());
    options
        .max_connections(settings.database.max_connections)
        .min_connections(settings.database.min_connections.min(settings.database.max_connections))
        .connect_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
        .sqlx_logging(false);
    let db = Database::connect(options).await.map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
    if settings.uses_sqlite() {
        // One writer at a time; readers do not block it.
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
            .await
            .map_err(|e| anyhow::anyhow!("configuring SQLite: {e}"))?;
    }
    Ok(db)
}

/// Apply every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await.map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
    Ok(())
}

/// The database backend's name, for logs and `/ready`.
pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "postgres",
        sea_orm::DatabaseBackend::Sqlite => "sqlite",
        sea_orm::DatabaseBackend::MySql => "mysql",
    }
}
