//! Rate limiting as a service: the typed [`Policy`] names, the one way to charge a
//! bucket ([`check`]/[`enforce`]), and how a client address becomes a subject.
//!
//! The buckets themselves live in the `RateLimiter` actor (`actors::rate_limit`);
//! the HTTP middleware that charges every request is `http::rate_limit`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::actors::rate_limit::{Check, Decision, RateLimiter};
use crate::error::AppError;
use crate::startup::AppState;


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
    /// Webhook endpoint changes and redeliveries per user.
    Webhook,
    /// `recordView` per user or client address.
    Views,
}

impl Policy {
    pub const ALL: [Policy; 7] =
        [Policy::Auth, Policy::AuthIp, Policy::Api, Policy::Upload, Policy::Transcode, Policy::Webhook, Policy::Views];

    /// The settings and header name (`"api"`, `"auth_ip"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::Auth => "auth",
            Policy::AuthIp => "auth_ip",
            Policy::Api => "api",
            Policy::Upload => "upload",
            Policy::Transcode => "transcode",
            Policy::Webhook => "webhook",
            Policy::Views => "views",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
pub async fn enforce(state: &AppState, policy: Policy, subject: String, cost: u32) -> Result<Option<Decision>, AppError> {
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
    fn policy_names_round_trip_and_unknown_ones_are_refused() {
        for policy in Policy::ALL {
            let json = serde_json::to_value(policy).unwrap();
            assert_eq!(json, serde_json::json!(policy.as_str()));
            assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), policy);
        }
        assert!(serde_json::from_value::<Policy>(serde_json::json!("apii")).is_err());
    }
}
