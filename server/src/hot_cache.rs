//! The mechanism behind the process's read caches (sessions in
//! [`crate::access::sessions`], video rows in [`crate::access::videos`]):
//! a bounded map trusted only while the changes that invalidate it can reach this
//! process, and safe against a fill racing a change.
//!
//! - Trust: without Redis (one instance) always; with Redis only while the relay is
//!   subscribed ([`HotCache::set_stream_healthy`]). Each change of that health
//!   empties the cache, because changes may have been missed in between. An
//!   untrusted cache answers [`Lookup::Bypass`]: read the database, as without one.
//! - Races: a reader takes a [`HotCache::ticket`] before reading the database; a
//!   change committed and invalidated meanwhile advances an epoch, and the fill
//!   with the older ticket is not stored, so a stale read is never kept.
//! - Bounds: at most `capacity` entries (expired ones go first, then arbitrary
//!   ones, a tenth at a time), each trusted for `ttl` at most as a safety net.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// What a cache reports to its metrics.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A lookup: hit | miss | bypass.
    Lookup(&'static str),
    /// Entries held now.
    Entries(f64),
    /// Entries dropped to stay within the capacity.
    Evicted(u64),
}

/// How one cache records its [`Event`]s (each cache names its metrics, described in
/// `telemetry::METRICS`).
#[derive(Debug, Clone, Copy)]
pub struct CacheMetrics {
    pub record: fn(Event),
}

/// The answer of [`HotCache::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<V> {
    Hit(V),
    /// Not cached (or expired): read the database, then insert with a ticket.
    Miss,
    /// The cache may not be trusted now (off, or changes may not reach this process).
    Bypass,
}

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    stored_at: Instant,
}

pub struct HotCache<K, V> {
    entries: RwLock<HashMap<K, Entry<V>>>,
    /// Advanced (under the write lock) by every invalidation and health change.
    epoch: AtomicU64,
    healthy: AtomicBool,
    capacity: usize,
    ttl: Duration,
    metrics: CacheMetrics,
}

impl<K, V> std::fmt::Debug for HotCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCache")
            .field("len", &self.entries.read().map(|e| e.len()).unwrap_or(0))
            .field("capacity", &self.capacity)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Copy, V: Clone> HotCache<K, V> {
    /// A cache of at most `capacity` entries (0: off) trusted for `ttl` each.
    /// `healthy`: whether changes reach this process from the start (no Redis).
    pub fn new(capacity: usize, ttl: Duration, healthy: bool, metrics: CacheMetrics) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            healthy: AtomicBool::new(healthy),
            capacity,
            ttl,
            metrics,
        }
    }

    fn usable(&self) -> bool {
        self.capacity > 0 && self.healthy.load(Ordering::Acquire)
    }

    pub fn get(&self, key: K) -> Lookup<V> {
        if !self.usable() {
            (self.metrics.record)(Event::Lookup("bypass"));
            return Lookup::Bypass;
        }
        let found = self
            .entries
            .read()
            .ok()
            .and_then(|entries| entries.get(&key).filter(|entry| entry.stored_at.elapsed() < self.ttl).cloned());
        match found {
            Some(entry) => {
                (self.metrics.record)(Event::Lookup("hit"));
                Lookup::Hit(entry.value)
            }
            None => {
                (self.metrics.record)(Event::Lookup("miss"));
                Lookup::Miss
            }
        }
    }

    /// Taken before reading the database; [`HotCache::insert`] only stores if no
    /// change happened since. `None` when the cache may not be used now.
    pub fn ticket(&self) -> Option<u64> {
        self.usable().then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Store what the database said, unless anything changed since `ticket`.
    pub fn insert(&self, ticket: u64, key: K, value: V) {
        let Ok(mut entries) = self.entries.write() else { return };
        if self.epoch.load(Ordering::Acquire) != ticket || !self.usable() {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let before = entries.len();
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.stored_at.elapsed() < ttl);
            // Still full: make room for a tenth (arbitrary ones: they are read again).
            if entries.len() >= self.capacity {
                let drop: Vec<K> = entries.keys().take((self.capacity / 10).max(1)).copied().collect();
                for key in drop {
                    entries.remove(&key);
                }
            }
            (self.metrics.record)(Event::Evicted((before - entries.len()) as u64));
        }
        entries.insert(key, Entry { value, stored_at: Instant::now() });
        (self.metrics.record)(Event::Entries(entries.len() as f64));
    }

    /// Forget `key` (and fail every fill that started before).
    pub fn remove(&self, key: K) {
        let Ok(mut entries) = self.entries.write() else { return };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(&key);
        (self.metrics.record)(Event::Entries(entries.len() as f64));
    }

    /// Keep only the entries `keep` accepts (and fail every fill that started before).
    pub fn retain_where(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let Ok(mut entries) = self.entries.write() else { return };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.retain(|key, entry| keep(key, &entry.value));
        (self.metrics.record)(Event::Entries(entries.len() as f64));
    }

    /// Whether changes reach this process now (the Redis relay is subscribed).
    /// Every transition empties the cache: changes may have been missed meanwhile.
    pub fn set_stream_healthy(&self, healthy: bool) {
        let Ok(mut entries) = self.entries.write() else { return };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.healthy.store(healthy, Ordering::Release);
        (self.metrics.record)(Event::Entries(0.0));
    }

    /// Whether lookups may be answered from memory now (on, and changes arrive).
    pub fn is_trusted(&self) -> bool {
        self.usable()
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|entries| entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
