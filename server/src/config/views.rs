//! `[views]`: how views are deduplicated and how much watch time a heartbeat may add.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewSettings {
    /// A viewer counts at most one view of a video per window of this many seconds
    /// (windows are aligned to the Unix epoch, so every replica agrees on them).
    pub dedupe_window_secs: u64,
    /// Seconds a heartbeat may report beyond the wall-clock time since the viewer's
    /// previous accepted heartbeat (network jitter, a player's buffered start).
    pub heartbeat_slack_secs: u64,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self { dedupe_window_secs: 30 * 60, heartbeat_slack_secs: 15 }
    }
}
