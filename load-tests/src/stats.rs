//! Counters and latency histograms shared by every task of a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records (longer ones are clamped): one hour in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;
/// Error messages kept for the report (the count is exact; the samples explain it).
const MAX_ERROR_SAMPLES: usize = 20;

/// A latency histogram in microseconds, safe to record into from many tasks.
pub struct Latencies(Mutex<Option<Histogram<u64>>>);

impl Default for Latencies {
    fn default() -> Self {
        // 3 significant digits over 1 µs .. 1 h; these constant bounds are valid, so `None` never happens.
        Self(Mutex::new(Histogram::new_with_bounds(1, MAX_MICROS, 3).ok()))
    }
}

impl Latencies {
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
        if let Ok(mut guard) = self.0.lock() {
            if let Some(h) = guard.as_mut() {
                h.saturating_record(micros);
            }
        }
    }

    /// Record a latency that may be negative (clock skew between server and harness): clamped to 0.
    pub fn record_signed_millis(&self, millis: f64) {
        self.record(Duration::from_secs_f64((millis.max(0.0)) / 1000.0));
    }

    pub fn count(&self) -> u64 {
        self.0.lock().ok().and_then(|g| g.as_ref().map(|h| h.len())).unwrap_or(0)
    }

    pub fn summary(&self) -> Percentiles {
        match self.0.lock() {
            Ok(guard) => guard.as_ref().map(Percentiles::of).unwrap_or_default(),
            Err(_) => Percentiles::default(),
        }
    }
}

/// Milliseconds at the usual percentiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| (micros as f64) / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// Everything a run counts. One per run, shared by reference.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    pub api: Latencies,
    pub upload: Latencies,
    pub upload_bytes: AtomicU64,
    /// Sum over uploads of the microseconds spent sending bytes (throughput = bytes / time).
    pub upload_micros: AtomicU64,
    pub uploads: AtomicU64,
    pub time_to_ready: Latencies,
    pub videos_ready: AtomicU64,
    pub delivery: Latencies,
    pub events_received: AtomicU64,
    pub lost_events: AtomicU64,
    pub duplicate_events: AtomicU64,
    pub subscriptions: AtomicU64,
    /// Feeds resumed on a new connection after the server closed them for an expired token.
    pub reconnects: AtomicU64,
    /// Feeds the server ended with `SLOW_CONSUMER` (this harness read too slowly),
    /// resumed after the cursor the server named (`extensions.resumeAfter`).
    pub slow_consumer_resumes: AtomicU64,
    /// Answers refusing a call for a rate limit (HTTP 429, a WebSocket upgrade refused
    /// with 429, a socket closed with 4429, an operation refused with `RATE_LIMITED`),
    /// or asking to come back later (503 with `Retry-After`): waited for and retried,
    /// not errors (a call that gives up is one error).
    pub rate_limited: AtomicU64,
    /// Time spent waiting on those refusals, summed over calls, in microseconds.
    pub rate_limit_wait_micros: AtomicU64,
    /// Of `rate_limited`, the 503s with `Retry-After` (a busy server, not a limit).
    pub busy: AtomicU64,
    rate_limit_samples: Mutex<Vec<String>>,
}

impl Stats {
    pub fn count_request(&self, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.api.record(latency);
    }

    pub fn count_error(&self, what: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut samples) = self.error_samples.lock() {
            if samples.len() < MAX_ERROR_SAMPLES {
                samples.push(what.into());
            }
        }
    }

    /// `n` errors explained by one message.
    pub fn count_errors(&self, n: u64, what: impl Into<String>) {
        if n == 0 {
            return;
        }
        self.errors.fetch_add(n - 1, Ordering::Relaxed);
        self.count_error(what);
    }

    /// One refusal for a rate limit (see [`Stats::rate_limited`]); the first of the
    /// run tells the operator at once.
    pub fn count_rate_limited(&self, what: &str, retry_after: Option<Duration>) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        let after =
            retry_after.map_or_else(|| "no Retry-After".to_string(), |d| format!("Retry-After {}s", d.as_secs()));
        let sample = format!("{what}: refused, {after}");
        if let Ok(mut samples) = self.rate_limit_samples.lock() {
            if samples.len() < MAX_ERROR_SAMPLES / 4 {
                samples.push(sample.clone());
            }
        }
        // A 503 with Retry-After is a busy server, not a limit on this harness.
        if what.contains("HTTP 503") {
            self.busy.fetch_add(1, Ordering::Relaxed);
        } else {
            crate::backoff::notice(&format!("the target is rate-limiting this harness ({sample}); backing off"));
        }
    }

    pub fn add_rate_limit_wait(&self, wait: Duration) {
        self.rate_limit_wait_micros.fetch_add(u64::try_from(wait.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn rate_limit_samples(&self) -> Vec<String> {
        self.rate_limit_samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn error_samples(&self) -> Vec<String> {
        self.error_samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let l = Latencies::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let p = l.summary();
        assert_eq!(p.count, 100);
        assert!((p.p50 - 50.0).abs() < 0.5, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 0.5, "{p:?}");
        assert!((p.max - 100.0).abs() < 0.5, "{p:?}");
    }

    #[test]
    fn error_samples_are_bounded_but_counted() {
        let s = Stats::default();
        for i in 0..50 {
            s.count_error(format!("e{i}"));
        }
        assert_eq!(Stats::get(&s.errors), 50);
        assert_eq!(s.error_samples().len(), MAX_ERROR_SAMPLES);
    }
}
