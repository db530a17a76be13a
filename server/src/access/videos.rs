//! Hot video rows without the database: a video's row with its READY renditions,
//! kept in memory by id, so `video(id)` (and the `renditions` of any listed video
//! that is cached) reads nothing. Progress is not kept: workers write it to the job
//! row between their PROGRESS events, so `progress` still reads the job row.
//!
//! What the cache holds is the row, not a verdict: who may read it is decided per
//! request ([`crate::repo::videos::can_read_by_id`]) from the cached row and the caller.
//!
//! Entries are dropped the moment the video changes:
//! - every domain event of the video ([`crate::events::Publisher::publish`] here,
//!   the relay's forwarding of other instances' events), stored or PROGRESS;
//! - changes that are not events (metadata and visibility, hiding, upload claims),
//!   announced by their writer ([`crate::access::AccessSignals::video_changed`]),
//!   which waits until Redis handed the change to every instance before answering.
//!
//! Trust, fill races and bounds are the session cache's ([`crate::hot_cache`]):
//! trusted only while changes reach this process, `graphql.video_cache_capacity`
//! entries at most, each trusted for `graphql.video_cache_ttl_secs` at most.

use std::sync::Arc;
use std::time::Duration;

use entities::{rendition, video};
use uuid::Uuid;

use crate::hot_cache::{CacheMetrics, Event, HotCache, Lookup};

/// A video as `video(id)` shows it.
#[derive(Debug, Clone)]
pub struct CachedVideo {
    pub row: video::Model,
    /// READY renditions, tallest first (as [`crate::repo::videos::ready_renditions_of`]).
    pub renditions: Vec<rendition::Model>,
}

const METRICS: CacheMetrics = CacheMetrics { record };

fn record(event: Event) {
    match event {
        Event::Lookup(outcome) => {
            metrics::counter!("reelhouse_video_cache_lookups_total", "outcome" => outcome).increment(1)
        }
        Event::Entries(len) => metrics::gauge!("reelhouse_video_cache_entries").set(len),
        Event::Evicted(n) => metrics::counter!("reelhouse_video_cache_evictions_total").increment(n),
    }
}

#[derive(Debug)]
pub struct VideoCache(HotCache<Uuid, Arc<CachedVideo>>);

impl VideoCache {
    /// At most `capacity` videos (0: off), each trusted for `ttl`. `healthy`:
    /// whether changes reach this process from the start (no Redis).
    pub fn new(capacity: usize, ttl: Duration, healthy: bool) -> Self {
        Self(HotCache::new(capacity, ttl, healthy, METRICS))
    }

    /// The cached video, if any (no database read).
    pub fn cached(&self, id: Uuid) -> Option<Arc<CachedVideo>> {
        match self.0.get(id) {
            Lookup::Hit(video) => Some(video),
            Lookup::Miss | Lookup::Bypass => None,
        }
    }

    /// The cache's answer for `id`, without the database (see [`HotCache::get`]).
    pub fn lookup(&self, id: Uuid) -> Lookup<Arc<CachedVideo>> {
        self.0.get(id)
    }

    /// Taken before reading the database; see [`HotCache::ticket`].
    pub fn ticket(&self) -> Option<u64> {
        self.0.ticket()
    }

    /// Remember what was read with `ticket`, unless a change came in between.
    pub fn insert(&self, ticket: u64, id: Uuid, video: Arc<CachedVideo>) {
        self.0.insert(ticket, id, video);
    }

    /// Forget the video (it changed).
    pub fn invalidate(&self, id: Uuid) {
        self.0.remove(id);
    }

    /// See [`HotCache::set_stream_healthy`].
    pub fn set_stream_healthy(&self, healthy: bool) {
        self.0.set_stream_healthy(healthy);
    }

    pub fn is_trusted(&self) -> bool {
        self.0.is_trusted()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
