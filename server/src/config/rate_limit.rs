//! Rate-limit policies (`[rate_limit.policies.NAME]`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Policies by name: `auth`, `auth_ip`, `api`, `upload`, `transcode`, `views`,
    /// `webhook`, `webhook_replay`, `account_mail`, `account_mail_ip`, `mfa` and `worker_channel` (see [`Policy`]). Any other name is refused when the settings
    /// load; a policy left out keeps its default.
    pub policies: BTreeMap<Policy, PolicySettings>,
}

impl RateLimitSettings {
    /// The settings of `policy`: the configured ones, else the default.
    pub fn policy(&self, policy: Policy) -> PolicySettings {
        self.policies.get(&policy).cloned().unwrap_or_else(|| default_policy(policy))
    }
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

fn default_policy(policy: Policy) -> PolicySettings {
    match policy {
        // Per account and IP: a guessing attacker slows down fast...
        Policy::Auth => PolicySettings::new(10, 60, 5, false),
        // ...and per IP, looser, so one address cannot spray many accounts.
        Policy::AuthIp => PolicySettings::new(60, 60, 20, false),
        Policy::Api => PolicySettings::new(1200, 60, 200, true),
        Policy::Upload => PolicySettings::new(120, 60, 30, true),
        Policy::Transcode => PolicySettings::new(60, 3600, 10, true),
        Policy::Webhook => PolicySettings::new(60, 60, 20, true),
        // Replayed deliveries: each is a POST to a URL of the user's choosing, so a
        // replay is charged per delivery, not per call.
        Policy::WebhookReplay => PolicySettings::new(1000, 3600, 200, true),
        // recordView, per signed-in user or client address: a player heartbeats
        // every few seconds; many viewers can share one address (NAT).
        Policy::Views => PolicySettings::new(600, 60, 60, true),
        // Mail an account can be sent: a few at once, then about one per 12 minutes,
        // so nobody can flood an inbox through reset or resend.
        Policy::AccountMail => PolicySettings::new(5, 3600, 3, false),
        // Per address: enough for a household or an office behind one NAT.
        Policy::AccountMailIp => PolicySettings::new(30, 3600, 10, false),
        // Two-factor codes per account, from every address: 5 at once, then one
        // every 5 minutes. A guesser who has the password gets ~300 tries a day
        // against ~3 valid codes in a million: about one chance in a thousand.
        Policy::Mfa => PolicySettings::new(12, 3600, 5, false),
        // Worker channel sockets and failed hellos per address: a worker reconnects
        // with backoff (at most one socket a second, then one per 30 s); a prober
        // is slowed to one try every 2 s after 30 at once.
        Policy::WorkerChannel => PolicySettings::new(30, 60, 30, true),
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        let policies = Policy::ALL.into_iter().map(|policy| (policy, default_policy(policy))).collect();
        Self { enabled: true, policies }
    }
}

/// Every rate-limit policy the server enforces. Settings name them in
/// `[rate_limit.policies.NAME]`; a name that is not one of these is refused when
/// the settings load, so a typo can never mean "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Sign-in attempts per account and client address.
    Auth,
    /// Sign-in and sign-up attempts per client address.
    AuthIp,
    /// Every HTTP request and every WebSocket operation, per client address.
    Api,
    /// `createUpload` per user.
    Upload,
    /// `transcode` per user.
    Transcode,
    /// Webhook endpoint changes, redeliveries and replays per user.
    Webhook,
    /// Deliveries re-enqueued by `replayWebhooks`, per user (one per delivery).
    WebhookReplay,
    /// `recordView` per user or client address.
    Views,
    /// Account mails one account may cause (`resendVerification`, `requestPasswordReset`,
    /// `changeEmail`), per account.
    AccountMail,
    /// The same mutations, per client address (IPv6 per /64).
    AccountMailIp,
    /// Two-factor codes (TOTP or recovery) presented, per account, from any
    /// address: sign-in, `confirmTotp`, `disableTotp`.
    Mfa,
    /// `/workers/ws` per client address: every socket opened, and every socket
    /// closed before its `hello` was accepted (no, bad or revoked token, wrong
    /// version, silence) once more.
    WorkerChannel,
}

impl Policy {
    pub const ALL: [Policy; 12] = [
        Policy::Auth,
        Policy::AuthIp,
        Policy::Api,
        Policy::Upload,
        Policy::Transcode,
        Policy::Webhook,
        Policy::WebhookReplay,
        Policy::Views,
        Policy::AccountMail,
        Policy::AccountMailIp,
        Policy::Mfa,
        Policy::WorkerChannel,
    ];

    /// The settings and header name (`"api"`, `"auth_ip"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::Auth => "auth",
            Policy::AuthIp => "auth_ip",
            Policy::Api => "api",
            Policy::Upload => "upload",
            Policy::Transcode => "transcode",
            Policy::Webhook => "webhook",
            Policy::WebhookReplay => "webhook_replay",
            Policy::Views => "views",
            Policy::AccountMail => "account_mail",
            Policy::AccountMailIp => "account_mail_ip",
            Policy::Mfa => "mfa",
            Policy::WorkerChannel => "worker_channel",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Settings};

    fn load(toml: &str) -> Result<Settings, crate::config::SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reelhouse.toml");
        std::fs::write(&path, toml).unwrap();
        Settings::load(Some(&path), &Overrides::default())
    }

    #[test]
    fn a_misspelt_policy_name_is_refused_at_load() {
        let err = load("[rate_limit.policies.apii]\nlimit = 1\nperiod_secs = 60\nburst = 1\nfail_open = true\n")
            .expect_err("an unknown policy name must not load");
        assert!(err.key.starts_with("rate_limit.policies"), "{err}");
        assert!(err.to_string().contains("apii"), "{err}");
        let settings =
            load("[rate_limit.policies.auth_ip]\nlimit = 3\nperiod_secs = 60\nburst = 3\nfail_open = false\n").unwrap();
        assert_eq!(settings.rate_limit.policy(Policy::AuthIp), PolicySettings::new(3, 60, 3, false));
        assert_eq!(settings.rate_limit.policy(Policy::Api), RateLimitSettings::default().policy(Policy::Api));
    }
}
