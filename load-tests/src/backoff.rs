//! Rate limits: a server that answers `429` (HTTP, or a refused WebSocket upgrade),
//! closes a socket with 4429, or refuses an operation with `RATE_LIMITED` is waited
//! for, never hammered. Each refusal waits at least its `Retry-After` (or an
//! exponential delay with jitter when it gives none), each wait is capped, and one
//! call gives up (an error) once it has waited `max_total` in all.
//!
//! Refusals are counted apart from errors (`Stats::rate_limited`), and the first one
//! prints, once, that the target is limiting the harness and how to turn that off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::stats::Stats;

/// How to turn the limits off on the server (the README's Rate limits and WebSocket
/// sessions sections); printed at start, on the first refusal and in the summary.
pub const HOW_TO_TURN_OFF: &str = "for load runs start the server with rate limits off \
(rate_limit.enabled = false, or REELHOUSE__RATE_LIMIT__ENABLED=false) and the per-process \
WebSocket caps raised (graphql.ws_max_sockets_per_ip, graphql.ws_max_sockets_per_user, \
graphql.ws_max_subscriptions_per_user, e.g. REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_IP=1000000): \
every simulated client shares the harness's address";

/// Waiting on refusals: delays and the bound on the total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First delay when the server gives no `Retry-After`; doubles per refusal.
    pub base: Duration,
    /// Longest single wait (a longer `Retry-After` is cut to this and asked again).
    pub cap: Duration,
    /// Longest one call waits in all before it gives up (counted as an error).
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base: Duration::from_millis(250), cap: Duration::from_secs(15), max_total: Duration::from_secs(90) }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after the `attempt`-th refusal (0-based):
    /// `base * 2^attempt` with equal jitter (half fixed, half random), and never less
    /// than the server's `Retry-After` (plus up to 20 % so clients refused together do
    /// not come back together); never more than `cap`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::thread_rng();
        let exp = self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap);
        let backoff = exp / 2 + exp.mul_f64(rng.gen_range(0.0..0.5));
        let floor = retry_after.map(|after| after + after.mul_f64(rng.gen_range(0.0..0.2))).unwrap_or_default();
        backoff.max(floor).min(self.cap)
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let left = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(left.to_std().unwrap_or(Duration::ZERO))
}

/// One call's refusals so far.
#[derive(Debug, Default)]
pub struct Attempts {
    refusals: u32,
    waited: Duration,
}

impl Attempts {
    /// Record a refusal of `what`: counts it, says so the first time in the run, and
    /// returns how long to wait before trying again, or `None` when the call has
    /// waited its `max_total` (the caller then fails it as an error).
    pub fn refused(
        &mut self,
        stats: &Stats,
        policy: &RetryPolicy,
        what: &str,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        stats.count_rate_limited(what, retry_after);
        let delay = policy.delay(self.refusals, retry_after);
        self.refusals = self.refusals.saturating_add(1);
        if self.waited + delay > policy.max_total {
            return None;
        }
        self.waited += delay;
        stats.add_rate_limit_wait(delay);
        Some(delay)
    }

    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The error message of a call that gave up.
    pub fn gave_up(&self, what: &str) -> String {
        format!(
            "{what}: still rate-limited (429) after {} refusals and {:.1} s of backing off; {HOW_TO_TURN_OFF}",
            self.refusals,
            self.waited.as_secs_f64()
        )
    }
}

/// Printed once per process: the first refusal, or the start-up probe's finding.
static NOTICE_PRINTED: AtomicBool = AtomicBool::new(false);

/// Tell the operator, once, that the target is limiting the harness.
pub fn notice(message: &str) {
    if !NOTICE_PRINTED.swap(true, Ordering::Relaxed) {
        eprintln!("reelhouse-load: {message}; {HOW_TO_TURN_OFF}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed > Duration::from_secs(25) && parsed <= Duration::from_secs(30), "{parsed:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn delays_honour_retry_after_grow_and_are_capped() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_total: Duration::from_secs(5),
        };
        for _ in 0..100 {
            let d = p.delay(0, Some(Duration::from_secs(1)));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_millis(1200), "{d:?}");
            let d = p.delay(0, None);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100), "{d:?}");
            let d = p.delay(3, None);
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800), "{d:?}");
            let d = p.delay(3, Some(Duration::ZERO));
            assert!(d >= Duration::from_millis(400), "Retry-After: 0 does not stop the backoff growing: {d:?}");
            assert!(p.delay(30, None) <= p.cap);
            assert_eq!(p.delay(0, Some(Duration::from_secs(600))), p.cap);
        }
    }

    #[test]
    fn a_call_gives_up_once_it_has_waited_its_total() {
        let stats = Stats::default();
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_total: Duration::from_secs(3),
        };
        let mut a = Attempts::default();
        let mut waits = 0;
        while a.refused(&stats, &p, "POST /graphql", Some(Duration::from_secs(1))).is_some() {
            waits += 1;
            assert!(waits < 10, "bounded");
        }
        assert!((2..=3).contains(&waits), "{waits}");
        assert!(a.waited() <= p.max_total);
        assert_eq!(Stats::get(&stats.rate_limited), waits + 1);
        assert_eq!(Stats::get(&stats.errors), 0, "refusals are not errors");
        assert!(a.gave_up("POST /graphql").contains("REELHOUSE__RATE_LIMIT__ENABLED=false"));
    }
}
