//! Failed sign-ins per account, whatever address they come from.
//!
//! The `auth` policy limits guesses per (account, address) and `auth_ip` per
//! address; an attacker with many addresses gets past both. This counts an
//! account's failures from everywhere: after `auth.login_backoff_after_failures`
//! of them the account backs off for `login_backoff_base_secs`, doubling with every
//! further failure up to `login_backoff_max_secs`. While it backs off every
//! sign-in to it is refused with `RATE_LIMITED` and `Retry-After` — the right
//! password too, or the lock would only hide which guess was right — and no
//! password is checked. A success, or `login_failure_window_secs` without a
//! failure, forgets the count.
//!
//! With Redis the counts are shared by every replica; if Redis does not answer,
//! this process's own counts apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::error::{AppError, ErrorCode};
use crate::redis_client::RedisHandle;

/// Above this many remembered accounts, forgotten ones are swept out early.
const MAX_LOCAL_ACCOUNTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Backoff {
    after_failures: u32,
    base: Duration,
    max: Duration,
    window: Duration,
}

impl Backoff {
    /// How long the account backs off after its `failures`-th failure.
    fn after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.after_failures.max(1))?;
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

#[derive(Clone)]
pub struct LoginFailures {
    backoff: Backoff,
    redis: Option<Arc<RedisHandle>>,
    local: Arc<Mutex<HashMap<String, Entry>>>,
}

impl LoginFailures {
    pub fn new(settings: &AuthSettings, redis: Option<Arc<RedisHandle>>) -> Self {
        Self {
            backoff: Backoff {
                after_failures: settings.login_backoff_after_failures,
                base: Duration::from_secs(settings.login_backoff_base_secs.max(1)),
                max: Duration::from_secs(settings.login_backoff_max_secs.max(1)),
                window: Duration::from_secs(settings.login_failure_window_secs.max(1)),
            },
            redis,
            local: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fixed-size keys whatever the caller typed as an email.
    fn key(account: &str) -> String {
        hex::encode(Sha256::digest(account.as_bytes()))
    }

    fn redis_keys(redis: &RedisHandle, key: &str) -> (String, String) {
        (format!("{}loginfail:{key}", redis.key_prefix), format!("{}loginlock:{key}", redis.key_prefix))
    }

    /// `RATE_LIMITED` with `Retry-After` while the account backs off.
    pub async fn check(&self, account: &str) -> Result<(), AppError> {
        let key = Self::key(account);
        let remaining = match &self.redis {
            Some(redis) => match Self::redis_remaining(redis, &key).await {
                Ok(remaining) => remaining,
                Err(err) => {
                    tracing::warn!(error = ?err, "login back-off: Redis unavailable, using local counts");
                    self.local_remaining(&key)
                }
            },
            None => self.local_remaining(&key),
        };
        match remaining {
            Some(wait) if !wait.is_zero() => {
                metrics::counter!("reelhouse_login_backoff_refusals_total").increment(1);
                let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
                Err(AppError::new(
                    ErrorCode::RateLimited,
                    format!("too many failed sign-ins to this account, retry in {secs} s"),
                )
                .with_retry_after(secs))
            }
            _ => Ok(()),
        }
    }

    fn local_remaining(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        self.local().get(key).and_then(|entry| entry.locked_until).map(|until| until.saturating_duration_since(now))
    }

    async fn redis_remaining(redis: &RedisHandle, key: &str) -> anyhow::Result<Option<Duration>> {
        let (_, lock) = Self::redis_keys(redis, key);
        let ttl: i64 =
            redis.call(|mut conn| async move { redis::cmd("PTTL").arg(&lock).query_async(&mut conn).await }).await?;
        Ok((ttl > 0).then(|| Duration::from_millis(ttl as u64)))
    }

    /// Count a wrong password (or unknown account) for `account`.
    pub async fn record_failure(&self, account: &str) {
        let key = Self::key(account);
        if let Some(redis) = &self.redis {
            match self.redis_record_failure(redis, &key).await {
                Ok(()) => return,
                Err(err) => tracing::warn!(error = ?err, "login back-off: Redis unavailable, using local counts"),
            }
        }
        self.local_record_failure(key);
    }

    fn local_record_failure(&self, key: String) {
        let now = Instant::now();
        let mut local = self.local();
        if local.len() > MAX_LOCAL_ACCOUNTS {
            let window = self.backoff.window;
            local.retain(|_, e| now.duration_since(e.last_failure) < window || e.locked_until.is_some_and(|u| u > now));
        }
        let entry = local.entry(key).or_insert(Entry { failures: 0, last_failure: now, locked_until: None });
        if now.duration_since(entry.last_failure) >= self.backoff.window {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if let Some(wait) = self.backoff.after(entry.failures) {
            entry.locked_until = Some(now + wait);
        }
    }

    async fn redis_record_failure(&self, redis: &RedisHandle, key: &str) -> anyhow::Result<()> {
        let (count_key, lock_key) = Self::redis_keys(redis, key);
        let window_ms = self.backoff.window.as_millis() as i64;
        let (failures,): (u32,) = redis
            .call(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .incr(&count_key, 1u32)
                    .pexpire(&count_key, window_ms)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if let Some(wait) = self.backoff.after(failures) {
            let lock_key = &lock_key;
            let _: () = redis
                .call(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(lock_key)
                        .arg(1)
                        .arg("PX")
                        .arg(wait.as_millis().max(1) as u64)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
        }
        Ok(())
    }

    /// A successful sign-in forgets the account's failures.
    pub async fn record_success(&self, account: &str) {
        let key = Self::key(account);
        self.local().remove(&key);
        if let Some(redis) = &self.redis {
            let (count_key, lock_key) = Self::redis_keys(redis, &key);
            let (count_key, lock_key) = (&count_key, &lock_key);
            let result = redis
                .call(|mut conn| async move {
                    redis::cmd("DEL").arg(count_key).arg(lock_key).query_async::<()>(&mut conn).await
                })
                .await;
            if let Err(err) = result {
                tracing::warn!(error = ?err, "login back-off: could not clear an account's failures in Redis");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_threshold_doubles_and_is_capped() {
        let backoff = Backoff {
            after_failures: 3,
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            window: Duration::from_secs(3600),
        };
        assert_eq!(backoff.after(2), None);
        assert_eq!(backoff.after(3), Some(Duration::from_secs(2)));
        assert_eq!(backoff.after(4), Some(Duration::from_secs(4)));
        assert_eq!(backoff.after(7), Some(Duration::from_secs(32)));
        assert_eq!(backoff.after(8), Some(Duration::from_secs(60)));
        assert_eq!(backoff.after(u32::MAX), Some(Duration::from_secs(60)));
    }
}
