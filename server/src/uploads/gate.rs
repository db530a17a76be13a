//! The [`UploadGate`] of the local store's signed `PUT` route: a session-bound URL
//! writes only while its upload is OPEN, unexpired, and still collecting bytes at
//! the URL's key (a presigned `PUT`'s staging key is moved away at completion).

use async_trait::async_trait;
use chrono::Utc;
use entities::UploadStatus;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::storage::{StoreError, UploadGate};

/// Reads the `uploads` row; nothing else.
pub struct DbUploadGate {
    db: DatabaseConnection,
}

impl DbUploadGate {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl UploadGate for DbUploadGate {
    async fn check(&self, session: Uuid, key: &str) -> Result<(), StoreError> {
        let row = crate::repo::uploads::find(&self.db, session).await.map_err(|err| {
            // The database's outage, counted against its breaker (not storage's).
            crate::breaker::note_database_error(&err);
            StoreError::Unavailable { op: "check upload", source: Box::new(err) }
        })?;
        match row {
            Some(row) if row.status == UploadStatus::Open && row.expires_at > Utc::now() && row.object_key == key => {
                Ok(())
            }
            _ => {
                metrics::counter!("reelhouse_upload_url_refusals_total").increment(1);
                Err(StoreError::UploadClosed)
            }
        }
    }
}
