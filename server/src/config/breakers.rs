//! `[breakers]`: the circuit breakers in front of the database, Redis, object
//! storage and each webhook host (see `crate::breaker`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures of a dependency (no connection, reset, timeout, 5xx)
    /// that open its breaker.
    pub failure_threshold: u32,
    /// Milliseconds an open breaker refuses calls (answered `UNAVAILABLE` with
    /// `Retry-After`) before it lets probes through.
    pub open_ms: u64,
    /// Calls let through at once while half-open; the first success closes it.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failure_threshold: 5, open_ms: 10_000, half_open_probes: 1 }
    }
}

impl BreakerSettings {
    /// Each problem names its key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=1000).contains(&self.failure_threshold) {
            return Err(("breakers.failure_threshold", "must be between 1 and 1000"));
        }
        if !(100..=3_600_000).contains(&self.open_ms) {
            return Err(("breakers.open_ms", "must be between 100 (0.1 s) and 3600000 (1 h)"));
        }
        if !(1..=100).contains(&self.half_open_probes) {
            return Err(("breakers.half_open_probes", "must be between 1 and 100"));
        }
        Ok(())
    }
}
