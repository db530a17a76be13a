//! The `RateLimiter` actor: GCRA buckets keyed by (policy, subject).
//!
//! GCRA keeps one number per bucket, the theoretical arrival time (TAT): each
//! request pushes it `emission_interval × cost` into the future, and a request is
//! refused while the TAT would lie more than `burst × emission_interval` ahead of now.
//! In memory by default; with Redis the TAT lives in Redis and one Lua script
//! updates it atomically (using Redis' own clock), so every replica shares it.
//!
//! Redis unreachable: a policy with `fail_open` falls back to this process's own
//! buckets (limits keep applying, per replica); one without refuses with a short
//! `Retry-After` until Redis answers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::DeathNotice;
use crate::config::rate_limit::{PolicySettings, RateLimitSettings};
use crate::error::{AppError, ErrorCode};
pub use crate::limits::Policy;
use crate::redis_client::RedisHandle;

/// How long a fail-closed policy asks clients to wait while Redis is down.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);
/// Buckets above this count trigger an early sweep of idle ones.
const MAX_LOCAL_BUCKETS: usize = 200_000;

/// One policy's numbers, as GCRA uses them.
#[derive(Debug, Clone)]
struct Rule {
    name: Policy,
    limit: u32,
    period: Duration,
    emission: Duration,
    burst_window: Duration,
    fail_open: bool,
}

impl Rule {
    fn new(name: Policy, settings: &PolicySettings) -> Self {
        let period = Duration::from_secs(settings.period_secs.max(1));
        let emission = period / settings.limit.max(1);
        Self {
            name,
            limit: settings.limit.max(1),
            period,
            emission,
            burst_window: emission * settings.burst.max(1),
            fail_open: settings.fail_open,
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub policy: Policy,
    /// Requests per window, for the `RateLimit-Policy` header.
    pub limit: u32,
    pub window: Duration,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// When refused: how long until a retry can succeed.
    pub retry_after: Duration,
    /// Until the bucket is completely full again.
    pub reset_after: Duration,
}

impl Decision {
    /// `RateLimit-Policy` (IETF httpapi-ratelimit-headers): `"api";q=1200;w=60`.
    pub fn policy_header(&self) -> String {
        format!("\"{}\";q={};w={}", self.policy, self.limit, self.window.as_secs())
    }

    /// `RateLimit`: `"api";r=199;t=3`.
    pub fn limit_header(&self) -> String {
        format!("\"{}\";r={};t={}", self.policy, self.remaining, ceil_secs(self.reset_after))
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }

    /// The `RATE_LIMITED` error for a refused decision.
    pub fn into_error(self) -> AppError {
        let secs = self.retry_after_secs();
        AppError::new(ErrorCode::RateLimited, format!("too many requests, retry in {secs} s")).with_retry_after(secs)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// The pure GCRA step, shared by the in-memory path and the tests.
fn gcra(policy: &Rule, tat: Option<Duration>, now: Duration, cost: u32) -> (Decision, Option<Duration>) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + policy.emission * cost;
    let allow_at = new_tat.saturating_sub(policy.burst_window);
    let decision = |allowed: bool, retry_after: Duration, reset_after: Duration, basis: Duration| {
        let room = policy.burst_window.saturating_sub(basis.saturating_sub(now));
        Decision {
            allowed,
            policy: policy.name,
            limit: policy.limit,
            window: policy.period,
            remaining: (room.as_nanos() / policy.emission.as_nanos().max(1)) as u32,
            retry_after,
            reset_after,
        }
    };
    if now < allow_at {
        (decision(false, allow_at - now, tat - now, tat), None)
    } else {
        (decision(true, Duration::ZERO, new_tat - now, new_tat), Some(new_tat))
    }
}

/// Atomic GCRA in Redis, on Redis' clock. KEYS[1] = bucket; ARGV = emission µs,
/// burst window µs, cost. Returns {allowed, retry_after µs, reset_after µs, remaining}.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission * cost
local allow_at = new_tat - burst
if now < allow_at then
  return {0, allow_at - now, tat - now, math.floor((burst - (tat - now)) / emission)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, new_tat - now, math.floor((burst - (new_tat - now)) / emission)}
";

pub struct RateLimiter {
    enabled: bool,
    rules: HashMap<Policy, Rule>,
    /// TAT per (policy, subject), as an offset from `epoch`.
    buckets: HashMap<(Policy, String), Duration>,
    epoch: Instant,
    redis: Option<Arc<RedisHandle>>,
    script: redis::Script,
    _death: DeathNotice,
}

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings, redis: Option<Arc<RedisHandle>>, death: DeathNotice) -> Self {
        Self {
            enabled: settings.enabled,
            // Every policy has a rule: one missing from the settings keeps its default.
            rules: Policy::ALL.into_iter().map(|p| (p, Rule::new(p, &settings.policy(p)))).collect(),
            buckets: HashMap::new(),
            epoch: Instant::now(),
            redis,
            script: redis::Script::new(GCRA_LUA),
            _death: death,
        }
    }

    fn check_local(&mut self, policy: &Rule, subject: &str, cost: u32) -> Decision {
        let now = self.epoch.elapsed();
        let key = (policy.name, subject.to_string());
        let (decision, new_tat) = gcra(policy, self.buckets.get(&key).copied(), now, cost);
        if let Some(tat) = new_tat {
            self.buckets.insert(key, tat);
        }
        if self.buckets.len() > MAX_LOCAL_BUCKETS {
            self.sweep();
        }
        decision
    }

    /// Forget buckets that are full again (their TAT has passed): they hold no state.
    fn sweep(&mut self) {
        let now = self.epoch.elapsed();
        self.buckets.retain(|_, tat| *tat > now);
    }

    /// The answer when rate limiting is off.
    pub fn unlimited(policy: Policy) -> Decision {
        Decision {
            allowed: true,
            policy,
            limit: u32::MAX,
            window: Duration::from_secs(1),
            remaining: u32::MAX,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
        }
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(30), |limiter, _| limiter.sweep());
    }
}

/// Charge `cost` to the bucket of (`policy`, `subject`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Decision")]
pub struct Check {
    pub policy: Policy,
    pub subject: String,
    pub cost: u32,
}

impl Handler<Check> for RateLimiter {
    type Result = ResponseActFuture<Self, Decision>;

    fn handle(&mut self, msg: Check, _: &mut Self::Context) -> Self::Result {
        let policy = match self.rules.get(&msg.policy) {
            Some(rule) if self.enabled => rule.clone(),
            _ => return Box::pin(fut::ready(Self::unlimited(msg.policy))),
        };
        let cost = msg.cost.max(1);
        let Some(redis) = self.redis.clone() else {
            return Box::pin(fut::ready(self.check_local(&policy, &msg.subject, cost)));
        };
        let script = self.script.clone();
        let key = format!("{}ratelimit:{}:{}", redis.key_prefix, policy.name, msg.subject);
        let (emission, burst) = (policy.emission.as_micros() as u64, policy.burst_window.as_micros() as u64);
        let call = async move {
            // Behind the `redis` breaker: while it is open the check is decided at
            // once (locally, or refused, per policy) instead of waiting for Redis.
            let answer = redis
                .call(|mut conn| async move {
                    let mut invocation = script.key(key);
                    invocation.arg(emission).arg(burst).arg(cost);
                    invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn).await
                })
                .await?;
            anyhow::Ok(answer)
        };
        Box::pin(call.into_actor(self).map(move |answer, limiter, _| match answer {
            Ok((allowed, retry_us, reset_us, remaining)) => Decision {
                allowed: allowed == 1,
                policy: policy.name,
                limit: policy.limit,
                window: policy.period,
                remaining: remaining.max(0) as u32,
                retry_after: Duration::from_micros(retry_us.max(0) as u64),
                reset_after: Duration::from_micros(reset_us.max(0) as u64),
            },
            Err(err) => {
                metrics::counter!("reelhouse_rate_limit_backend_errors_total", "policy" => policy.name.as_str()).increment(1);
                tracing::warn!(policy = %policy.name, error = ?err, fail_open = policy.fail_open, "rate limiter cannot reach Redis");
                if policy.fail_open {
                    limiter.check_local(&policy, &msg.subject, cost)
                } else {
                    Decision { allowed: false, retry_after: UNAVAILABLE_RETRY, ..Self::unlimited(policy.name) }
                }
            }
        }))
    }
}

/// The fault-injection message of every hub, for the supervision tests.
#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::actors::Crash> for RateLimiter {
    type Result = ();

    #[allow(clippy::panic)]
    fn handle(&mut self, _: crate::actors::Crash, _: &mut Self::Context) {
        panic!("rate limiter asked to crash (fault injection)");
    }
}

crate::actors::stop_on_request!(RateLimiter);

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32, period: u64, burst: u32) -> Rule {
        Rule::new(Policy::Api, &PolicySettings::new(limit, period, burst, true))
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_retry_after() {
        let p = policy(60, 60, 3); // one per second, three at once
        let now = Duration::from_secs(100);
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let (d, next) = gcra(&p, tat, now, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = next;
        }
        let (d, next) = gcra(&p, tat, now, 1);
        assert!(!d.allowed);
        assert!(next.is_none(), "a refusal does not consume");
        assert_eq!(d.retry_after, Duration::from_secs(1));
        assert_eq!(d.retry_after_secs(), 1);
        // One emission interval later, exactly one more fits.
        let later = now + Duration::from_secs(1);
        let (d, next) = gcra(&p, tat, later, 1);
        assert!(d.allowed);
        let (d, _) = gcra(&p, next, later, 1);
        assert!(!d.allowed);
    }

    #[test]
    fn cost_is_charged_and_idle_buckets_refill() {
        let p = policy(10, 10, 5);
        let now = Duration::from_secs(5);
        let (d, tat) = gcra(&p, None, now, 5);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!gcra(&p, tat, now, 1).0.allowed);
        let (d, _) = gcra(&p, tat, now + Duration::from_secs(60), 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn headers_follow_the_ietf_draft_shape() {
        let p = policy(1200, 60, 200);
        let (d, _) = gcra(&p, None, Duration::from_secs(1), 1);
        assert_eq!(d.policy_header(), "\"api\";q=1200;w=60");
        assert!(d.limit_header().starts_with("\"api\";r=199;t="), "{}", d.limit_header());
    }
}
