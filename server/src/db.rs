//! Database connection (SQLite or PostgreSQL) and migrations.

use std::time::Duration;

use chrono::{DateTime, Utc};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};

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
        .sqlx_logging(false)
        // sqlx pings every connection it hands out by default. A SQLite connection is a
        // file handle served by its own thread, so the ping is a round trip to that
        // thread per query for nothing; a broken one fails its query like any other.
        .test_before_acquire(!settings.uses_sqlite())
        // Every pooled SQLite connection (PRAGMAs are per connection): WAL, so readers
        // never block the one writer; writers wait up to 5 s for the lock.
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    let db = Database::connect(options).await.map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
    Ok(db)
}

/// Begin a transaction that will write. Use it for every write transaction.
///
/// On SQLite it takes the write lock first (waiting up to `busy_timeout` for it),
/// as `BEGIN IMMEDIATE` would: a plain deferred transaction that reads and then
/// writes fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT) when
/// another connection committed a write in between, and no timeout helps it. A
/// write statement that matches no row is enough to take the lock.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Sqlite {
        txn.execute_unprepared("UPDATE videos SET id = id WHERE 0").await?;
    }
    Ok(txn)
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

/// The database's clock: every lease expiry, `run_after` and liveness stamp is set
/// and compared on it, so a worker whose own clock is off (by minutes) neither
/// lets its leases expire early nor keeps them forever. PostgreSQL answers
/// `clock_timestamp()`; SQLite is a file owned by the server process on this
/// machine, so its clock is this process's.
pub async fn now<C: ConnectionTrait>(conn: &C) -> Result<DateTime<Utc>, DbErr> {
    match conn.get_database_backend() {
        DbBackend::Postgres => {
            let row = conn
                .query_one(Statement::from_string(DbBackend::Postgres, "SELECT clock_timestamp() AS now"))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("clock_timestamp()".into()))?;
            row.try_get::<DateTime<Utc>>("", "now")
        }
        _ => Ok(Utc::now()),
    }
}
