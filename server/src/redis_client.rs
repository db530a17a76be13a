//! The shared Redis connection (event fan-out and shared rate limits).
//!
//! Connecting is lazy and retried: the server starts and serves while Redis is
//! down, `/ready` says so, and the connection manager reconnects on its own.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::config::RedisSettings;

pub struct RedisHandle {
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    pub key_prefix: String,
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
        }))
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
        let mut conn = self.connection().await?;
        let pong: String = tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
            .await
            .map_err(|_| anyhow::anyhow!("redis PING timed out"))??;
        anyhow::ensure!(pong == "PONG", "unexpected PING answer");
        Ok(())
    }
}
