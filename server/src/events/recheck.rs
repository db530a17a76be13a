//! The video rows behind the periodic permission re-checks of open subscriptions,
//! shared: however many subscriptions watch one video, the database is asked about
//! it at most once per `max_age` (half the re-check period), and each subscription
//! decides from that row what its own viewer may see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entities::video;
use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

/// Entries kept before expired ones are dropped.
const PRUNE_ABOVE: usize = 4096;

/// When a row was read, and the row (`None`: no such video).
type Entry = (Instant, Option<video::Model>);

#[derive(Clone, Default)]
pub struct RecheckRows {
    rows: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl RecheckRows {
    /// The video's row as of at most `max_age` ago (`None`: it does not exist).
    pub async fn get(
        &self,
        db: &DatabaseConnection,
        id: Uuid,
        max_age: Duration,
    ) -> Result<Option<video::Model>, DbErr> {
        if let Some((at, row)) = self.lock().get(&id) {
            if at.elapsed() < max_age {
                metrics::counter!("reelhouse_subscription_rechecks_total", "source" => "shared").increment(1);
                return Ok(row.clone());
            }
        }
        metrics::counter!("reelhouse_subscription_rechecks_total", "source" => "database").increment(1);
        let row = crate::repo::videos::find(db, id).await?;
        let mut rows = self.lock();
        if rows.len() > PRUNE_ABOVE {
            rows.retain(|_, (at, _)| at.elapsed() < max_age);
        }
        rows.insert(id, (Instant::now(), row.clone()));
        Ok(row)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}
