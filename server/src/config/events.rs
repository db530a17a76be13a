//! `[events]`: how long the outbox keeps stored events.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Stored events older than this are pruned from the outbox; a `videoEvents`
    /// cursor older than what is kept gets `CURSOR_EXPIRED`. 0 keeps everything.
    pub retention_days: u32,
    /// How often each server prunes.
    pub prune_interval_secs: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self { retention_days: 30, prune_interval_secs: 3600 }
    }
}
