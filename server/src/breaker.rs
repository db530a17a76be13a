//! Circuit breakers in front of the dependencies: the database, Redis, object
//! storage and each webhook host.
//!
//! A breaker is CLOSED while its dependency answers. After
//! `breakers.failure_threshold` consecutive failures it OPENS: calls fail at once
//! (`UNAVAILABLE` with `Retry-After`: the rest of the open time) instead of each
//! waiting for its own timeout. After `breakers.open_ms` it is HALF_OPEN and lets
//! `breakers.half_open_probes` calls through; the first that succeeds CLOSES it, one
//! that fails OPENS it again for another `open_ms`.
//!
//! Only the dependency's failures count (no connection, connection reset, timeouts,
//! 5xx): a caller's bad input (not found, a unique violation, a 4xx) is an answer,
//! and answers are successes. The callers classify; the breaker only counts.
//!
//! Time comes from a [`Clock`], so the state machine is tested without sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::BreakerSettings;

/// The breaker states; the number is the value of `reelhouse_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::HalfOpen => "HALF_OPEN",
            BreakerState::Open => "OPEN",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// Where a breaker reads the time. [`SystemClock`] in the server; tests move a
/// manual clock by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The thresholds of every breaker (`[breakers]`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_for: Duration,
    pub half_open_probes: u32,
}

impl From<&BreakerSettings> for BreakerConfig {
    fn from(s: &BreakerSettings) -> Self {
        Self {
            failure_threshold: s.failure_threshold.max(1),
            open_for: Duration::from_millis(s.open_ms.max(1)),
            half_open_probes: s.half_open_probes.max(1),
        }
    }
}

/// A call refused because the breaker is open (or its half-open probes are all out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Until the breaker lets a probe through: what `Retry-After` says.
    pub retry_after: Duration,
}

impl Rejected {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// What operators see of a breaker (`/ready`, `systemStatus`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    /// Consecutive failures counted so far (reset by a success).
    pub failures: u32,
    /// A short category of the last failure (`connection refused`, `timed out`, ...),
    /// never a host, a connection string or an error text.
    pub last_error: Option<&'static str>,
    pub changed_at: DateTime<Utc>,
}

struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
    probes_in_flight: u32,
    last_error: Option<&'static str>,
    changed_at: DateTime<Utc>,
}

/// One dependency's breaker.
pub struct Breaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// Admission of one call. Report how it went with [`Permit::success`] or
/// [`Permit::failure`]; dropped without either (the call never reached the
/// dependency), it counts as nothing and frees its half-open probe slot.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    pub fn success(mut self) {
        self.settled = true;
        self.breaker.record_success_inner(self.probe);
    }

    pub fn failure(mut self, category: &'static str) {
        self.settled = true;
        self.breaker.record_failure_inner(category, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            let mut inner = self.breaker.lock();
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }
}

impl Breaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let breaker = Self {
            name: name.into(),
            config,
            clock,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: now,
                probes_in_flight: 0,
                last_error: None,
                changed_at: Utc::now(),
            }),
        };
        metrics::gauge!("reelhouse_breaker_state", "dependency" => breaker.name.clone())
            .set(BreakerState::Closed.gauge_value());
        breaker
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters half-updated in
        // a way that matters more than refusing every call would.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The open time is over: OPEN becomes HALF_OPEN (checked whenever the state is read).
    fn refresh(&self, inner: &mut Inner) {
        if inner.state == BreakerState::Open && self.clock.now() >= inner.opened_at + self.config.open_for {
            self.transition(inner, BreakerState::HalfOpen);
            inner.probes_in_flight = 0;
        }
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState) {
        if inner.state == to {
            return;
        }
        inner.state = to;
        inner.changed_at = Utc::now();
        if to == BreakerState::Open {
            inner.opened_at = self.clock.now();
        }
        metrics::gauge!("reelhouse_breaker_state", "dependency" => self.name.clone()).set(to.gauge_value());
        metrics::counter!(
            "reelhouse_breaker_transitions_total",
            "dependency" => self.name.clone(),
            "to" => to.as_str()
        )
        .increment(1);
        match to {
            BreakerState::Open => {
                tracing::warn!(dependency = %self.name, last_error = ?inner.last_error, "circuit breaker opened")
            }
            BreakerState::HalfOpen => tracing::info!(dependency = %self.name, "circuit breaker half-open: probing"),
            BreakerState::Closed => tracing::info!(dependency = %self.name, "circuit breaker closed"),
        }
    }

    /// Ask to make a call. While open (or while every half-open probe is out) the
    /// answer is [`Rejected`] at once, counted in `reelhouse_breaker_rejected_total`.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        let verdict = match inner.state {
            BreakerState::Closed => Ok(false),
            BreakerState::HalfOpen if inner.probes_in_flight < self.config.half_open_probes => {
                inner.probes_in_flight += 1;
                Ok(true)
            }
            // The probes are out; they decide within one call's time.
            BreakerState::HalfOpen => Err(Rejected { retry_after: Duration::from_secs(1) }),
            BreakerState::Open => {
                let reopens = inner.opened_at + self.config.open_for;
                Err(Rejected { retry_after: reopens.saturating_duration_since(self.clock.now()) })
            }
        };
        drop(inner);
        match verdict {
            Ok(probe) => Ok(Permit { breaker: self, probe, settled: false }),
            Err(rejected) => {
                metrics::counter!("reelhouse_breaker_rejected_total", "dependency" => self.name.clone()).increment(1);
                Err(rejected)
            }
        }
    }

    /// The dependency answered a call that did not go through [`Self::try_acquire`]
    /// (a background query): closes a half-open breaker, resets the count of a
    /// closed one. An open breaker waits for its probe.
    pub fn record_success(&self) {
        self.record_success_inner(false);
    }

    /// The dependency failed a call that did not go through [`Self::try_acquire`].
    pub fn record_failure(&self, category: &'static str) {
        self.record_failure_inner(category, false);
    }

    fn record_success_inner(&self, probe: bool) {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        match inner.state {
            BreakerState::Closed => inner.consecutive_failures = 0,
            BreakerState::HalfOpen => {
                inner.consecutive_failures = 0;
                inner.probes_in_flight = 0;
                self.transition(&mut inner, BreakerState::Closed);
            }
            BreakerState::Open => {
                if probe {
                    // Cannot happen (probes exist only half-open); be safe.
                    inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                }
            }
        }
    }

    fn record_failure_inner(&self, category: &'static str, probe: bool) {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        inner.last_error = Some(category);
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        match inner.state {
            BreakerState::Closed if inner.consecutive_failures >= self.config.failure_threshold => {
                self.transition(&mut inner, BreakerState::Open);
            }
            BreakerState::Closed => {}
            BreakerState::HalfOpen => {
                inner.probes_in_flight = 0;
                self.transition(&mut inner, BreakerState::Open);
            }
            BreakerState::Open => {
                if probe {
                    inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                }
            }
        }
    }

    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        inner.state
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        BreakerSnapshot {
            name: self.name.clone(),
            state: inner.state,
            failures: inner.consecutive_failures,
            last_error: inner.last_error,
            changed_at: inner.changed_at,
        }
    }
}

/// Most webhook hosts remembered; past it, closed breakers without failures are
/// forgotten (they hold nothing worth keeping).
const MAX_WEBHOOK_HOSTS: usize = 1024;

/// Every breaker of one process, built once in `Application::build`.
#[derive(Clone)]
pub struct Breakers {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    pub database: Arc<Breaker>,
    pub storage: Arc<Breaker>,
    /// Present when Redis is configured.
    pub redis: Option<Arc<Breaker>>,
    webhook_hosts: Arc<Mutex<HashMap<String, Arc<Breaker>>>>,
}

impl Breakers {
    pub fn new(settings: &BreakerSettings, with_redis: bool) -> Self {
        Self::with_clock(settings.into(), with_redis, Arc::new(SystemClock))
    }

    pub fn with_clock(config: BreakerConfig, with_redis: bool, clock: Arc<dyn Clock>) -> Self {
        let make = |name: &str| Arc::new(Breaker::new(name, config, clock.clone()));
        Self {
            database: make("database"),
            storage: make("storage"),
            redis: with_redis.then(|| make("redis")),
            webhook_hosts: Arc::new(Mutex::new(HashMap::new())),
            config,
            clock,
        }
    }

    /// The breaker of one webhook host (`host:port`), named `webhook:host:port`.
    pub fn webhook_host(&self, authority: &str) -> Arc<Breaker> {
        let mut hosts = self.webhook_hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(breaker) = hosts.get(authority) {
            return breaker.clone();
        }
        if hosts.len() >= MAX_WEBHOOK_HOSTS {
            hosts.retain(|_, b| {
                let s = b.snapshot();
                s.state != BreakerState::Closed || s.failures > 0
            });
        }
        let breaker = Arc::new(Breaker::new(format!("webhook:{authority}"), self.config, self.clock.clone()));
        hosts.insert(authority.to_string(), breaker.clone());
        breaker
    }

    /// Every breaker: the database, Redis, storage, then webhook hosts by name.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let mut all = vec![self.database.snapshot()];
        if let Some(redis) = &self.redis {
            all.push(redis.snapshot());
        }
        all.push(self.storage.snapshot());
        let hosts: Vec<Arc<Breaker>> =
            self.webhook_hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        let mut hosts: Vec<BreakerSnapshot> = hosts.iter().map(|b| b.snapshot()).collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(hosts);
        all
    }
}

/// The short category of a database error that means the database did not answer
/// (`None` for any other error: those are answers).
pub fn database_failure_category(err: &sea_orm::DbErr) -> Option<&'static str> {
    use sea_orm::{sqlx, DbErr, RuntimeErr};
    if !is_database_unreachable(err) {
        return None;
    }
    Some(match err {
        DbErr::ConnectionAcquire(_) => "timed out",
        DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Io(io)))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Io(io))) => io_category(io.kind()),
        DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::PoolTimedOut))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::PoolTimedOut)) => "timed out",
        _ => "connection failed",
    })
}

/// A short category for an I/O error kind.
pub fn io_category(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => "connection reset",
        ErrorKind::TimedOut => "timed out",
        _ => "connection failed",
    }
}

tokio::task_local! {
    /// The first database outage met by the current request, if any.
    static DATABASE_OUTAGE: std::cell::Cell<Option<&'static str>>;
}

/// Run a request's work, noting whether it met a database outage (see
/// [`note_database_error`]); returns its output and the outage's category.
pub async fn observe_database<F: std::future::Future>(work: F) -> (F::Output, Option<&'static str>) {
    DATABASE_OUTAGE
        .scope(std::cell::Cell::new(None), async move {
            let output = work.await;
            let outage = DATABASE_OUTAGE.try_with(std::cell::Cell::get).ok().flatten();
            (output, outage)
        })
        .await
}

/// The database could not be reached (no connection, connection lost, pool timed
/// out): an outage, not a fault of this request.
pub fn is_database_unreachable(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{sqlx, DbErr, RuntimeErr};
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        ),
        _ => false,
    }
}

/// Called where a database error becomes an `AppError`: inside
/// [`observe_database`], an outage is remembered for the request's breaker call.
pub fn note_database_error(err: &sea_orm::DbErr) {
    if let Some(category) = database_failure_category(err) {
        let _ = DATABASE_OUTAGE.try_with(|cell| {
            if cell.get().is_none() {
                cell.set(Some(category));
            }
        });
    }
}

/// Note a database outage met outside a `DbErr` conversion (credential checks).
pub fn note_database_outage(category: &'static str) {
    let _ = DATABASE_OUTAGE.try_with(|cell| {
        if cell.get().is_none() {
            cell.set(Some(category));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock moved by hand.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn breaker(threshold: u32, open_secs: u64, probes: u32) -> (Breaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        let config = BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_secs(open_secs),
            half_open_probes: probes,
        };
        (Breaker::new("test", config, clock.clone()), clock)
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_and_rejects_with_the_remaining_time() {
        let (b, clock) = breaker(3, 10, 1);
        b.try_acquire().unwrap().failure("connection refused");
        b.try_acquire().unwrap().failure("connection refused");
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().failure("timed out");
        assert_eq!(b.state(), BreakerState::Open);
        let snapshot = b.snapshot();
        assert_eq!((snapshot.failures, snapshot.last_error), (3, Some("timed out")));
        assert_eq!(b.try_acquire().err().unwrap().retry_after, Duration::from_secs(10));
        clock.advance(Duration::from_millis(6500));
        let rejected = b.try_acquire().err().unwrap();
        assert_eq!(rejected.retry_after, Duration::from_millis(3500));
        assert_eq!(rejected.retry_after_secs(), 4);
    }

    #[test]
    fn a_success_resets_the_count_so_only_consecutive_failures_open() {
        let (b, _) = breaker(3, 10, 1);
        for _ in 0..10 {
            b.try_acquire().unwrap().failure("timed out");
            b.try_acquire().unwrap().failure("timed out");
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_after_the_cool_down_lets_only_the_probes_through_and_a_success_closes() {
        let (b, clock) = breaker(1, 5, 2);
        b.try_acquire().unwrap().failure("connection reset");
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(5));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let first = b.try_acquire().unwrap();
        let second = b.try_acquire().unwrap();
        assert!(first.is_probe() && second.is_probe());
        assert!(b.try_acquire().is_err(), "only two probes at once");
        drop(second); // never reached the dependency: its slot is free again
        let third = b.try_acquire().unwrap();
        first.success();
        assert_eq!(b.state(), BreakerState::Closed);
        third.success();
        assert_eq!(b.snapshot().failures, 0);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_full_period() {
        let (b, clock) = breaker(2, 5, 1);
        b.record_failure("timed out");
        b.record_failure("timed out");
        clock.advance(Duration::from_secs(7));
        let probe = b.try_acquire().unwrap();
        probe.failure("connection refused");
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().err().unwrap().retry_after, Duration::from_secs(5));
        assert_eq!(b.snapshot().last_error, Some("connection refused"));
    }

    #[test]
    fn background_successes_do_not_close_an_open_breaker_before_its_probe() {
        let (b, clock) = breaker(1, 5, 1);
        b.record_failure("timed out");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(5));
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn webhook_hosts_each_get_their_own_breaker() {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        let config = BreakerConfig { failure_threshold: 1, open_for: Duration::from_secs(5), half_open_probes: 1 };
        let breakers = Breakers::with_clock(config, false, clock);
        breakers.webhook_host("dead.example:443").record_failure("connection refused");
        assert_eq!(breakers.webhook_host("dead.example:443").state(), BreakerState::Open);
        assert_eq!(breakers.webhook_host("alive.example:443").state(), BreakerState::Closed);
        let names: Vec<String> = breakers.snapshot().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["database", "storage", "webhook:alive.example:443", "webhook:dead.example:443"]);
    }

    #[test]
    fn database_errors_count_only_when_the_database_did_not_answer() {
        use sea_orm::{sqlx, ConnAcquireErr, DbErr, RuntimeErr};
        let refused =
            DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into())));
        assert_eq!(database_failure_category(&refused), Some("connection refused"));
        assert_eq!(database_failure_category(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)), Some("timed out"));
        assert_eq!(database_failure_category(&DbErr::RecordNotFound("x".into())), None);
        assert_eq!(database_failure_category(&DbErr::Query(RuntimeErr::Internal("unique violation".into()))), None);
    }
}
