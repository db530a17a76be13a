//! The video rows behind the permission re-checks of open subscriptions, shared:
//! however many subscriptions watch one video, they share one read of its row, and
//! each decides from that row what its own viewer may see.
//!
//! A re-check asks for a row read no earlier than some instant: half a re-check
//! period ago for the periodic re-check (`graphql.ws_recheck_ms`) and for the
//! all-videos feeds' per-event "still listed?" question, or the moment a change was
//! announced for the re-check that change triggers. A read that started after that
//! instant (finished or still running) is shared, so a change announced to a
//! thousand subscriptions of one video costs one read, not a thousand.
//!
//! Changes are pushed, not only polled: a video changed in a way that is not a
//! domain event (visibility, metadata, hiding) is announced through `access`
//! ([`crate::access::AccessSignals::video_changed`], on every instance through
//! Redis); its row is forgotten here and every one-video feed of it re-checks at
//! once ([`RecheckRows::changes`]). Stored events of a video forget its row too
//! ([`RecheckRows::forget`]), before the event reaches any feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::future::Future;

use entities::video;
use sea_orm::DbErr;
use tokio::sync::{broadcast, OnceCell};
use uuid::Uuid;

/// Entries kept before old ones are dropped.
const PRUNE_ABOVE: usize = 4096;
/// Entries older than this are dropped when pruning (no re-check asks for rows older
/// than half its period, and periods are seconds).
const PRUNE_AGE: Duration = Duration::from_secs(60);
/// Change notices buffered per listening feed; one that falls behind re-checks.
const CHANGES: usize = 1024;

/// When the read began, and the row it read (`None`: no such video).
type Entry = (Instant, Arc<OnceCell<Option<video::Model>>>);

/// A video changed (its id), announced at this instant.
pub type VideoChange = (Uuid, Instant);

#[derive(Clone)]
pub struct RecheckRows {
    rows: Arc<Mutex<HashMap<Uuid, Entry>>>,
    changes: broadcast::Sender<VideoChange>,
}

impl Default for RecheckRows {
    fn default() -> Self {
        Self { rows: Arc::default(), changes: broadcast::channel(CHANGES).0 }
    }
}

impl RecheckRows {
    /// The video's row from a read (by `read`) that began at or after `not_before`,
    /// shared with every re-check asking for the same (`None`: no such video).
    pub async fn get<F, Fut>(&self, id: Uuid, not_before: Instant, read: F) -> Result<Option<video::Model>, DbErr>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<video::Model>, DbErr>>,
    {
        let cell = {
            let mut rows = self.lock();
            match rows.get(&id) {
                Some((began, cell)) if *began >= not_before => {
                    metrics::counter!("reelhouse_subscription_rechecks_total", "source" => "shared").increment(1);
                    cell.clone()
                }
                _ => {
                    if rows.len() > PRUNE_ABOVE {
                        rows.retain(|_, (began, cell)| began.elapsed() < PRUNE_AGE || !cell.initialized());
                    }
                    let cell = Arc::new(OnceCell::new());
                    rows.insert(id, (Instant::now(), cell.clone()));
                    cell
                }
            }
        };
        let row = cell
            .get_or_try_init(|| {
                metrics::counter!("reelhouse_subscription_rechecks_total", "source" => "database").increment(1);
                read()
            })
            .await?;
        Ok(row.clone())
    }

    /// Forget the video's row (a stored event of it is on its way).
    pub fn forget(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// The video changed in a way its feeds must re-check at once: forget its row and
    /// tell every feed listening ([`RecheckRows::changes`]).
    pub fn changed(&self, id: Uuid) {
        self.forget(id);
        metrics::counter!("reelhouse_subscription_pushed_rechecks_total").increment(1);
        // No receivers is not an error: no feed is open.
        let _ = self.changes.send((id, Instant::now()));
    }

    /// Videos changed from now on.
    pub fn changes(&self) -> broadcast::Receiver<VideoChange> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A read that counts itself and answers "no such video".
    async fn counted(reads: &AtomicUsize) -> Result<Option<video::Model>, DbErr> {
        reads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(None)
    }

    #[tokio::test]
    async fn concurrent_rechecks_share_one_read_and_a_change_forces_the_next() {
        let rows = RecheckRows::default();
        let reads = AtomicUsize::new(0);
        let id = Uuid::now_v7();
        let long_ago = Instant::now();
        // Many re-checks at once: one read.
        let all = futures::future::join_all((0..50).map(|_| rows.get(id, long_ago, || counted(&reads)))).await;
        assert!(all.iter().all(|row| matches!(row, Ok(None))));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Fresh enough: shared again.
        rows.get(id, long_ago, || counted(&reads)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // A change announced now: the feeds it wakes read once more, together.
        let mut changes = rows.changes();
        rows.changed(id);
        let (changed, at) = changes.recv().await.unwrap();
        assert_eq!(changed, id);
        futures::future::join_all((0..10).map(|_| rows.get(id, at, || counted(&reads)))).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A read that began before the instant asked for is not reused.
        tokio::time::sleep(Duration::from_millis(2)).await;
        rows.get(id, Instant::now(), || counted(&reads)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // A stored event forgets the row without waking anyone.
        rows.forget(id);
        rows.get(id, long_ago, || counted(&reads)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        assert!(changes.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_failed_read_is_not_remembered() {
        let rows = RecheckRows::default();
        let id = Uuid::now_v7();
        let since = Instant::now();
        let failed = rows.get(id, since, || async { Err(DbErr::Custom("down".into())) }).await;
        assert!(failed.is_err());
        let reads = AtomicUsize::new(0);
        rows.get(id, since, || counted(&reads)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1, "the next re-check reads again");
    }
}
