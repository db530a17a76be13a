//! Rate limiting as a service: the typed [`Policy`] names, the one way to charge a
//! bucket ([`check`]/[`enforce`]), and how a client address becomes a subject.
//!
//! The buckets themselves live in the `RateLimiter` actor (`actors::rate_limit`);
//! the HTTP middleware that charges every request is `http::rate_limit`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::actors::rate_limit::{Check, Decision, RateLimiter};
use crate::error::AppError;
use crate::startup::AppState;

pub mod login;
pub mod ws;

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

/// The rate-limit subject for a client address. IPv6 clients are keyed by their
/// /64: one subscriber usually gets a whole /64 (or more), so keying by /128 would
/// let one client rotate through addresses for a fresh bucket each time.
/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry; anything that
/// is not an address (`"unknown"`) is its own subject.
pub fn ip_subject(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_string(),
    }
}

/// Ask the limiter; an unreachable limiter actor (restarting) lets the request through.
/// With rate limiting off the answer is known without asking: every request would
/// otherwise pay a round trip to the actor's thread and back for it.
pub async fn check(state: &AppState, policy: Policy, subject: String, cost: u32) -> Option<Decision> {
    if !state.settings.rate_limit.enabled {
        return Some(RateLimiter::unlimited(policy));
    }
    match state.hubs.rate_limiter.addr().send(Check { policy, subject, cost }).await {
        Ok(decision) => Some(decision),
        Err(err) => {
            tracing::warn!(error = %err, "rate limiter unavailable");
            None
        }
    }
}

/// Refuse with `RATE_LIMITED` when the policy's bucket for `subject` is empty.
pub async fn enforce(
    state: &AppState,
    policy: Policy,
    subject: String,
    cost: u32,
) -> Result<Option<Decision>, AppError> {
    match check(state, policy, subject, cost).await {
        Some(decision) if !decision.allowed => {
            metrics::counter!("reelhouse_rate_limited_total", "policy" => policy.as_str()).increment(1);
            Err(decision.into_error())
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(ip_subject("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(ip_subject("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(ip_subject("2001:db8:1:3::1"), ip_subject("2001:db8:1:2::1"));
        assert_eq!(ip_subject("203.0.113.9"), "203.0.113.9");
        assert_eq!(ip_subject("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(ip_subject("unknown"), "unknown");
    }

    #[test]
    fn policy_names_round_trip_and_unknown_ones_are_refused() {
        for policy in Policy::ALL {
            let json = serde_json::to_value(policy).unwrap();
            assert_eq!(json, serde_json::json!(policy.as_str()));
            assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), policy);
        }
        assert!(serde_json::from_value::<Policy>(serde_json::json!("apii")).is_err());
    }
}
