//! The shared Redis connection (event fan-out and shared rate limits).
//!
//! Connecting is lazy and retried: the server starts and serves while Redis is
//! down, `/ready` says so, and the connection manager reconnects on its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::breaker::Breaker;
use crate::config::RedisSettings;

pub struct RedisHandle {
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    pub key_prefix: String,
    /// The `redis` circuit breaker: commands sent through [`Self::call`] fail at
    /// once while it is open.
    breaker: Option<Arc<Breaker>>,
}

/// Redis could not be used: its breaker is open, it did not answer, or the
/// command failed. Callers decide locally (rate limits, login back-off) or retry.
#[derive(Debug, thiserror::Error)]
pub enum RedisCallError {
    #[error("redis circuit breaker is open (retry in {retry_after:?})")]
    CircuitOpen { retry_after: Duration },
    #[error("redis did not answer: {0}")]
    Unreachable(anyhow::Error),
    #[error("redis refused the command: {0}")]
    Command(redis::RedisError),
}

/// The breaker category of a Redis error, `None` when Redis answered (a script or
/// type error is an answer, not an outage).
fn redis_failure_category(err: &redis::RedisError) -> Option<&'static str> {
    if err.is_timeout() {
        Some("timed out")
    } else if err.is_connection_refusal() {
        Some("connection refused")
    } else if err.is_connection_dropped() {
        Some("connection reset")
    } else if err.is_io_error() {
        Some("connection failed")
    } else {
        None
    }
}

impl RedisHandle {
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Option<Self>> {
        let Some(url) = &settings.url else { return Ok(None) };
        let client =
            redis::Client::open(url.expose()).map_err(|_| anyhow::anyhow!("invalid redis.url {}", url.redacted()))?;
        Ok(Some(Self {
            client,
            manager: Mutex::new(None),
            timeout: Duration::from_millis(settings.timeout_ms),
            key_prefix: settings.key_prefix.clone(),
            breaker: None,
        }))
    }

    /// Put commands sent through [`Self::call`] behind `breaker`.
    pub fn with_breaker(mut self, breaker: Arc<Breaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    /// Run one command (or pipeline) on the shared connection, behind the breaker
    /// and within the handle's timeout. Not retried here: a caller that may retry
    /// (publishing a stored event) does, with backoff; the others decide locally.
    pub async fn call<T, F, Fut>(&self, command: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let permit = match &self.breaker {
            Some(breaker) => Some(
                breaker
                    .try_acquire()
                    .map_err(|rejected| RedisCallError::CircuitOpen { retry_after: rejected.retry_after })?,
            ),
            None => None,
        };
        let outcome = match self.connection().await {
            Err(err) => Err((RedisCallError::Unreachable(err), "connection failed")),
            Ok(conn) => match tokio::time::timeout(self.timeout, command(conn)).await {
                Err(_) => Err((RedisCallError::Unreachable(anyhow::anyhow!("timed out")), "timed out")),
                Ok(Ok(value)) => Ok(value),
                Ok(Err(err)) => match redis_failure_category(&err) {
                    Some(category) => Err((RedisCallError::Unreachable(err.into()), category)),
                    None => Err((RedisCallError::Command(err), "")),
                },
            },
        };
        match outcome {
            Ok(value) => {
                if let Some(permit) = permit {
                    permit.success();
                }
                Ok(value)
            }
            Err((err @ RedisCallError::Command(_), _)) => {
                if let Some(permit) = permit {
                    permit.success();
                }
                Err(err)
            }
            Err((err, category)) => {
                if let Some(permit) = permit {
                    permit.failure(category);
                }
                Err(err)
            }
        }
    }

    /// The client, for connections that cannot be shared (pub/sub subscribers).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A multiplexed connection that reconnects by itself after failures.
    pub async fn connection(&self) -> anyhow::Result<ConnectionManager> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let manager =
            tokio::time::timeout(self.timeout * 2, ConnectionManager::new_with_config(self.client.clone(), config))
                .await
                .map_err(|_| anyhow::anyhow!("timed out connecting to redis"))??;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// PING with a timeout; used by `/ready`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let pong: String = self.call(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await }).await?;
        anyhow::ensure!(pong == "PONG", "unexpected PING answer");
        Ok(())
    }
}
