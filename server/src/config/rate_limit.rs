//! Rate-limit policies (`[rate_limit.policies.NAME]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Policies by name. The server uses `auth`, `auth_ip`, `api`, `upload`,
    /// `transcode`, `views` and `webhook`; each can be tuned or given more room here.
    pub policies: BTreeMap<String, PolicySettings>,
}

/// `limit` requests per `period_secs`, of which up to `burst` may come at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub limit: u32,
    pub period_secs: u64,
    pub burst: u32,
    /// With Redis unreachable: `true` falls back to this process's own buckets
    /// (limits still apply, per replica); `false` refuses requests until Redis is back.
    pub fail_open: bool,
}

impl PolicySettings {
    pub const fn new(limit: u32, period_secs: u64, burst: u32, fail_open: bool) -> Self {
        Self { limit, period_secs, burst, fail_open }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        let policies = [
            // Per account and IP: a guessing attacker slows down fast...
            ("auth", PolicySettings::new(10, 60, 5, false)),
            // ...and per IP, looser, so one address cannot spray many accounts.
            ("auth_ip", PolicySettings::new(60, 60, 20, false)),
            ("api", PolicySettings::new(1200, 60, 200, true)),
            ("upload", PolicySettings::new(120, 60, 30, true)),
            ("transcode", PolicySettings::new(60, 3600, 10, true)),
            ("webhook", PolicySettings::new(60, 60, 20, true)),
            // recordView, per signed-in user or client address: a player heartbeats
            // every few seconds; many viewers can share one address (NAT).
            ("views", PolicySettings::new(600, 60, 60, true)),
        ]
        .into_iter()
        .map(|(name, policy)| (name.to_string(), policy))
        .collect();
        Self { enabled: true, policies }
    }
}
