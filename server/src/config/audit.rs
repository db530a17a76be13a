//! `[audit]`: how long the security audit log is kept.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Audit records older than this are pruned. 0 keeps everything.
    pub retention_days: u32,
    /// How often each server prunes.
    pub prune_interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { retention_days: 365, prune_interval_secs: 3600 }
    }
}
