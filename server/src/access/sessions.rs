//! Access-token checks without the database: what a session (refresh-token family)
//! amounts to — its user and that user's role, given the session is live and the
//! user enabled — kept in memory, keyed by session id.
//!
//! Entries are dropped the moment an access change names them
//! ([`crate::access::AccessChange`]: a session revoked, a user disabled,
//! deleted, re-roled or signed out everywhere), delivered in-process synchronously
//! and from the other instances through Redis. So the cache is only trusted while
//! those changes can reach this process: always without Redis (one instance), and
//! with Redis only while the relay is subscribed ([`SessionCache::set_stream_healthy`]);
//! each change of that health empties the cache, because changes may have been
//! missed in between. Otherwise every check reads the database, as without a cache.
//!
//! A fill races with a change: the check reads the database, a change commits and
//! invalidates, then the check would store what it read before the change. Every
//! invalidation advances an epoch, and a fill only stores if the epoch it saw before
//! reading is still current ([`SessionCache::ticket`]), so a stale read is never kept.
//!
//! Bounded: at most `auth.session_cache_capacity` entries (expired ones go first,
//! then arbitrary ones), each trusted for `auth.session_cache_ttl_secs` at most.
//! The mechanism is shared with the video-row cache: [`crate::hot_cache`].

use std::time::Duration;

use entities::Role;
use uuid::Uuid;

use crate::access::AccessChange;
use crate::hot_cache::{CacheMetrics, Event, HotCache};

/// What a live session of an enabled user amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedSession {
    pub user_id: Uuid,
    /// The user's current role (the token's role is capped by it).
    pub role: Role,
}

/// The answer of [`SessionCache::get`]: read the database on `Miss` (then
/// [`SessionCache::insert`]) and on `Bypass`.
pub type Lookup = crate::hot_cache::Lookup<CachedSession>;

const METRICS: CacheMetrics = CacheMetrics { record };

fn record(event: Event) {
    match event {
        Event::Lookup(outcome) => {
            metrics::counter!("reelhouse_session_cache_lookups_total", "outcome" => outcome).increment(1)
        }
        Event::Entries(len) => metrics::gauge!("reelhouse_session_cache_entries").set(len),
        Event::Evicted(n) => metrics::counter!("reelhouse_session_cache_evictions_total").increment(n),
    }
}

/// Sessions by id; the mechanism (trust, races, bounds) is [`HotCache`]'s.
#[derive(Debug)]
pub struct SessionCache(HotCache<Uuid, CachedSession>);

impl SessionCache {
    /// A cache of at most `capacity` sessions (0: off) trusted for `ttl` each.
    /// `healthy`: whether access changes reach this process from the start (no Redis).
    pub fn new(capacity: usize, ttl: Duration, healthy: bool) -> Self {
        Self(HotCache::new(capacity, ttl, healthy, METRICS))
    }

    pub fn get(&self, session_id: Uuid) -> Lookup {
        self.0.get(session_id)
    }

    /// Taken before reading the database; [`SessionCache::insert`] only stores if no
    /// change happened since. `None` when the cache may not be used now.
    pub fn ticket(&self) -> Option<u64> {
        self.0.ticket()
    }

    /// Store what the database said about a live session, unless anything changed
    /// since `ticket` was taken.
    pub fn insert(&self, ticket: u64, session_id: Uuid, session: CachedSession) {
        self.0.insert(ticket, session_id, session);
    }

    /// Forget what `change` names: one session, or every session of its user.
    pub fn invalidate(&self, change: &AccessChange) {
        match change.session_id {
            Some(session_id) => self.0.remove(session_id),
            None => self.0.retain_where(|_, session| session.user_id != change.user_id),
        }
    }

    /// Whether access changes reach this process now (the Redis relay is subscribed).
    /// Every transition empties the cache: changes may have been missed meanwhile.
    pub fn set_stream_healthy(&self, healthy: bool) {
        self.0.set_stream_healthy(healthy);
    }

    /// Whether lookups may be answered from memory now (on, and changes arrive).
    pub fn is_trusted(&self) -> bool {
        self.0.is_trusted()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user_id: Uuid) -> CachedSession {
        CachedSession { user_id, role: Role::User }
    }

    #[test]
    fn hits_after_a_fill_and_forgets_what_a_change_names() {
        let cache = SessionCache::new(100, Duration::from_secs(60), true);
        let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(cache.get(a), Lookup::Miss);
        for (sid, owner) in [(a, user), (b, user), (c, other)] {
            let ticket = cache.ticket().unwrap();
            cache.insert(ticket, sid, session(owner));
        }
        assert_eq!(cache.get(a), Lookup::Hit(session(user)));
        cache.invalidate(&AccessChange::session(user, a));
        assert_eq!(cache.get(a), Lookup::Miss);
        assert_eq!(cache.get(b), Lookup::Hit(session(user)));
        cache.invalidate(&AccessChange::user(user));
        assert_eq!(cache.get(b), Lookup::Miss);
        assert_eq!(cache.get(c), Lookup::Hit(session(other)), "another user's session stays");
    }

    #[test]
    fn a_fill_that_raced_a_change_is_not_kept() {
        let cache = SessionCache::new(100, Duration::from_secs(60), true);
        let (user, sid) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.ticket().unwrap();
        // The database was read here; then the session is revoked.
        cache.invalidate(&AccessChange::session(user, sid));
        cache.insert(ticket, sid, session(user));
        assert_eq!(cache.get(sid), Lookup::Miss);
    }

    #[test]
    fn bounded_and_expiring() {
        let cache = SessionCache::new(50, Duration::from_secs(60), true);
        let user = Uuid::now_v7();
        for _ in 0..1_000 {
            let ticket = cache.ticket().unwrap();
            cache.insert(ticket, Uuid::now_v7(), session(user));
            assert!(cache.len() <= 50);
        }
        let short = SessionCache::new(50, Duration::from_millis(1), true);
        let sid = Uuid::now_v7();
        short.insert(short.ticket().unwrap(), sid, session(user));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(sid), Lookup::Miss, "an expired entry is read again");
    }

    #[test]
    fn not_trusted_while_changes_may_not_arrive() {
        let cache = SessionCache::new(100, Duration::from_secs(60), false);
        let sid = Uuid::now_v7();
        assert_eq!(cache.get(sid), Lookup::Bypass);
        assert!(cache.ticket().is_none());
        cache.set_stream_healthy(true);
        let ticket = cache.ticket().unwrap();
        cache.insert(ticket, sid, session(Uuid::now_v7()));
        assert!(matches!(cache.get(sid), Lookup::Hit(_)));
        cache.set_stream_healthy(false);
        assert_eq!(cache.get(sid), Lookup::Bypass);
        cache.set_stream_healthy(true);
        assert_eq!(cache.get(sid), Lookup::Miss, "reconnecting starts empty");
        let off = SessionCache::new(0, Duration::from_secs(60), true);
        assert_eq!(off.get(sid), Lookup::Bypass);
    }
}
