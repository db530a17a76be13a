//! Fan-out across instances through Redis pub/sub.
//!
//! Every process publishes its events to ONE Redis channel (`{redis.key_prefix}events`)
//! and keeps ONE subscriber connection to it (the relay below), which forwards the
//! other instances' events into the local bus; local subscribers read only the local
//! bus (through the [`Sequencer`], which orders them by cursor). No connection per
//! client, no per-job patterns.
//!
//! Redis pub/sub forgets what it could not deliver, so after its connection drops the
//! relay, once reconnected, has the sequencer read the outbox: stored events
//! published meanwhile are delivered from there, in order (the sequencer also reads
//! it every `events.tail_poll_ms`, for a publish lost without the relay noticing).
//! PROGRESS events are not stored and are not replayed; the next one supersedes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::sequencer::Sequencer;
use super::DomainEvent;
use crate::actors::Hub;
use crate::events::bus::EventBus;
use crate::redis_client::RedisHandle;

/// The pub/sub channel of a deployment.
pub fn channel(redis: &RedisHandle) -> String {
    format!("{}events", redis.key_prefix)
}

/// What travels on the channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The publishing instance; its own relay skips it (it was delivered locally).
    pub origin: String,
    /// Publish time, for the fan-out latency histogram.
    pub sent_at: DateTime<Utc>,
    pub event: DomainEvent,
}

/// Attempts at publishing a stored event. After Redis restarts, the first command on
/// the old connection fails (and makes the manager reconnect); the next goes through.
/// Without the retry, a relay that reconnected (and replayed) before this event was
/// stored would never see it.
const STORED_PUBLISH_ATTEMPTS: u32 = 5;

/// Publish one event to the channel. Stored events are retried for about 1.5 s;
/// should Redis stay down longer, every relay lost its connection too and has the
/// sequencer read them from the outbox when it is back. PROGRESS is tried once: the next one
/// supersedes it.
pub async fn publish(redis: &RedisHandle, origin: &str, event: &DomainEvent) {
    let envelope = Envelope { origin: origin.to_string(), sent_at: Utc::now(), event: event.clone() };
    let Ok(payload) = serde_json::to_string(&envelope) else { return };
    let attempts = if event.cursor.is_some() { STORED_PUBLISH_ATTEMPTS } else { 1 };
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=attempts {
        let channel = channel(redis);
        let payload = &payload;
        let result = redis
            .call(|mut conn| async move {
                let _: i64 = redis::cmd("PUBLISH").arg(channel).arg(payload).query_async(&mut conn).await?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => return,
            Err(err) if attempt < attempts => {
                tracing::debug!(error = %err, attempt, kind = event.kind.as_str(), "publishing to redis failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => {
                metrics::counter!("reelhouse_events_publish_failures_total").increment(1);
                tracing::warn!(error = %err, kind = event.kind.as_str(), "publishing an event to redis failed");
            }
        }
    }
}

/// Run the relay until the process ends: subscribe, forward, and after every lost
/// connection reconnect with backoff and have what may have been missed read from
/// the outbox. The same connection carries access changes (`access`) to
/// `access`, and job log notices to `bus`.
pub async fn run_relay(
    redis: Arc<RedisHandle>,
    bus: Hub<EventBus>,
    sequencer: Sequencer,
    instance: String,
    access: crate::access::AccessSignals,
) {
    let channel = channel(&redis);
    let access_channel = crate::access::channel(&redis);
    let job_log_channel = super::job_log::channel(&redis);
    let mut lost = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        // Behind the `redis` breaker: while it is open the relay waits for the
        // probe time instead of connecting; its connection attempt is the probe.
        let permit = match redis.breaker().map(|breaker| breaker.try_acquire()) {
            Some(Err(rejected)) => {
                lost = true;
                tokio::time::sleep(rejected.retry_after.clamp(Duration::from_millis(100), Duration::from_secs(5)))
                    .await;
                continue;
            }
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        let attempt = Instant::now();
        let connect = tokio::time::timeout(Duration::from_secs(5), redis.client().get_async_pubsub()).await;
        match connect.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out"))))
        {
            Ok(mut pubsub) => match pubsub.subscribe(&[&channel, &access_channel, &job_log_channel]).await {
                Ok(()) => {
                    if let Some(permit) = permit {
                        permit.success();
                    }
                    metrics::gauge!("reelhouse_event_relay_connected").set(1.0);
                    // From now on access changes of other instances arrive: the
                    // session cache may be trusted again (it starts empty).
                    access.set_stream_healthy(true);
                    // Not trusted once this connection ends, however it ends (also
                    // by a panic, when the supervisor restarts the relay).
                    let stream_guard = StreamHealth(&access);
                    tracing::info!(channel, "event relay subscribed");
                    if std::mem::take(&mut lost) {
                        sequencer.read_outbox();
                    }
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else { continue };
                        if message.get_channel_name() == access_channel {
                            access.forward_from_redis(&payload);
                        } else if message.get_channel_name() == job_log_channel {
                            super::job_log::forward(&bus, &instance, &payload);
                        } else {
                            forward(&sequencer, &instance, &payload, &access);
                        }
                    }
                    drop(stream_guard);
                    metrics::gauge!("reelhouse_event_relay_connected").set(0.0);
                    tracing::warn!("event relay lost its redis connection; reconnecting");
                    lost = true;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "event relay could not subscribe");
                    lost = true;
                }
            },
            Err(err) => {
                if let Some(permit) = permit {
                    permit.failure(if err.is_timeout() { "timed out" } else { "connection failed" });
                }
                tracing::debug!(error = %err, "event relay cannot reach redis");
                lost = true;
            }
        }
        // Do not spin when Redis refuses at once.
        if attempt.elapsed() < backoff {
            tokio::time::sleep(backoff).await;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Marks the access stream unhealthy when dropped (see `access::sessions`).
struct StreamHealth<'a>(&'a crate::access::AccessSignals);

impl Drop for StreamHealth<'_> {
    fn drop(&mut self) {
        self.0.set_stream_healthy(false);
    }
}

fn forward(sequencer: &Sequencer, instance: &str, payload: &str, access: &crate::access::AccessSignals) {
    let envelope: Envelope = match serde_json::from_str(payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::warn!(error = %err, "ignoring a malformed event on the redis channel");
            return;
        }
    };
    if envelope.origin == instance {
        return;
    }
    let latency = (Utc::now() - envelope.sent_at).to_std().unwrap_or_default();
    metrics::histogram!("reelhouse_event_fanout_seconds").record(latency.as_secs_f64());
    // Before any subscriber hears of it: a client reacting to the event reads the
    // video anew.
    access.videos().invalidate(envelope.event.video_id);
    sequencer.submit(Arc::new(envelope.event));
}
