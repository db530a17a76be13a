//! Rate limiting as a service: the typed [`Policy`] names, the one way to charge a
//! bucket ([`Limiter`]), and how a client address becomes a subject.
//!
//! The buckets themselves live in the `RateLimiter` actor ([`buckets`]);
//! the HTTP middleware that charges every request is `http::rate_limit`.

use std::net::IpAddr;

use crate::actors::Hub;
pub use crate::config::rate_limit::Policy;
use crate::error::AppError;
use buckets::{Check, Decision, RateLimiter};

pub mod buckets;
pub mod login;
pub mod ws;

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

/// The one way to charge a bucket: whether rate limiting is on, and the buckets'
/// actor. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    enabled: bool,
    buckets: Hub<RateLimiter>,
}

impl Limiter {
    pub fn new(enabled: bool, buckets: Hub<RateLimiter>) -> Self {
        Self { enabled, buckets }
    }

    /// Ask the buckets; an unreachable actor (restarting) lets the request through.
    /// With rate limiting off the answer is known without asking: every request would
    /// otherwise pay a round trip to the actor's thread and back for it.
    pub async fn check(&self, policy: Policy, subject: String, cost: u32) -> Option<Decision> {
        if !self.enabled {
            return Some(RateLimiter::unlimited(policy));
        }
        match self.buckets.addr().send(Check { policy, subject, cost }).await {
            Ok(decision) => Some(decision),
            Err(err) => {
                tracing::warn!(error = %err, "rate limiter unavailable");
                None
            }
        }
    }

    /// Refuse with `RATE_LIMITED` when the policy's bucket for `subject` is empty.
    pub async fn enforce(&self, policy: Policy, subject: String, cost: u32) -> Result<Option<Decision>, AppError> {
        match self.check(policy, subject, cost).await {
            Some(decision) if !decision.allowed => {
                metrics::counter!("reelhouse_rate_limited_total", "policy" => policy.as_str()).increment(1);
                Err(decision.into_error())
            }
            other => Ok(other),
        }
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
