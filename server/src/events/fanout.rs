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

/// An [`Envelope`] serialised without copying its event.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    origin: &'a str,
    sent_at: DateTime<Utc>,
    event: &'a DomainEvent,
}

/// Attempts at publishing a stored event. After Redis restarts, the first command on
/// the old connection fails (and makes the manager reconnect); the next goes through.
/// Without the retry, a relay that reconnected (and replayed) before this event was
/// stored would never see it.
const STORED_PUBLISH_ATTEMPTS: u32 = 5;

/// Most events sent to Redis in one pipeline.
const BATCH: usize = 256;
/// Events waiting for Redis per process. Beyond it, PROGRESS is dropped (the next
/// supersedes it) and a stored event is published on its own.
pub const QUEUED: usize = 8192;

/// One event on its way to Redis, serialised when it was published.
struct Outgoing {
    payload: String,
    /// A stored event (retried; PROGRESS is tried once).
    stored: bool,
}

/// The process's publisher to the Redis channel: events are queued and sent by one
/// task in order, as pipelines of whatever waits (up to [`BATCH`] PUBLISH commands
/// in one round trip). The first event of a quiet period goes out at once (nothing
/// waits for a batch to fill); under a burst of progress from many encodes, the
/// events that arrive during one round trip share the next. Cheap to clone.
#[derive(Clone)]
pub struct RedisPublisher {
    queue: tokio::sync::mpsc::Sender<Outgoing>,
    redis: Arc<RedisHandle>,
    origin: Arc<str>,
}

impl RedisPublisher {
    /// Start the sending task (it ends once every clone is dropped and the queue is sent).
    pub fn start(redis: Arc<RedisHandle>, origin: &str) -> Self {
        let (queue, waiting) = tokio::sync::mpsc::channel(QUEUED);
        tokio::spawn(send_batches(redis.clone(), waiting));
        Self { queue, redis, origin: Arc::from(origin) }
    }

    pub fn handle(&self) -> &Arc<RedisHandle> {
        &self.redis
    }

    /// The instance the events are published as.
    pub fn origin(&self) -> &Arc<str> {
        &self.origin
    }

    /// Events waiting for Redis now.
    pub fn queued(&self) -> usize {
        QUEUED - self.queue.capacity()
    }

    /// Queue `event` for the channel; never waits.
    pub fn publish(&self, event: &DomainEvent) {
        let envelope = EnvelopeRef { origin: &self.origin, sent_at: Utc::now(), event };
        let Ok(payload) = serde_json::to_string(&envelope) else { return };
        let stored = event.cursor.is_some();
        match self.queue.try_send(Outgoing { payload, stored }) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) if !stored => {
                metrics::counter!("reelhouse_events_publish_dropped_total").increment(1);
            }
            Err(_) => {
                // Queue full (Redis slow or down) or the task gone: a stored event is
                // sent on its own, with its retries (and the outbox behind it).
                let (redis, origin, event) = (self.redis.clone(), self.origin.clone(), event.clone());
                tokio::spawn(async move { publish(&redis, &origin, &event).await });
            }
        }
    }
}

/// The sending task: whatever is queued, up to [`BATCH`] at a time, as one pipeline.
async fn send_batches(redis: Arc<RedisHandle>, mut waiting: tokio::sync::mpsc::Receiver<Outgoing>) {
    let channel = channel(&redis);
    let mut batch = Vec::with_capacity(BATCH);
    while waiting.recv_many(&mut batch, BATCH).await > 0 {
        send_batch(&redis, &channel, &mut batch).await;
        batch.clear();
    }
}

/// Send one batch. A failed pipeline is sent again with only its stored events, for
/// about 1.5 s as [`publish`] does (a PUBLISH that got through before the failure is
/// sent twice: the feeds drop duplicates by sequence number).
async fn send_batch(redis: &RedisHandle, channel: &str, batch: &mut Vec<Outgoing>) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=STORED_PUBLISH_ATTEMPTS {
        let mut pipe = redis::pipe();
        for item in batch.iter() {
            pipe.cmd("PUBLISH").arg(channel).arg(&item.payload).ignore();
        }
        let result = redis
            .call(|mut conn| async move {
                let () = pipe.query_async(&mut conn).await?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                metrics::counter!("reelhouse_redis_publish_batches_total").increment(1);
                metrics::counter!("reelhouse_redis_published_events_total").increment(batch.len() as u64);
                return;
            }
            Err(err) => {
                let before = batch.len();
                batch.retain(|item| item.stored);
                metrics::counter!("reelhouse_events_publish_failures_total").increment((before - batch.len()) as u64);
                if batch.is_empty() {
                    tracing::warn!(error = %err, "publishing progress to redis failed");
                    return;
                }
                if attempt == STORED_PUBLISH_ATTEMPTS {
                    metrics::counter!("reelhouse_events_publish_failures_total").increment(batch.len() as u64);
                    tracing::warn!(error = %err, events = batch.len(), "publishing stored events to redis failed");
                    return;
                }
                tracing::debug!(error = %err, attempt, "publishing to redis failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

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
    if envelope.event.cursor.is_some() {
        access.rechecks().forget(envelope.event.video_id);
    }
    sequencer.submit(Arc::new(envelope.event));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(i: usize) -> DomainEvent {
        DomainEvent {
            version: crate::domain::event::EVENT_VERSION,
            kind: crate::domain::event::EventKind::Progress,
            video_id: uuid::Uuid::now_v7(),
            owner_id: uuid::Uuid::now_v7(),
            visibility: entities::Visibility::Public,
            status: entities::VideoStatus::Processing,
            seq: 1,
            cursor: None,
            at: Utc::now(),
            error: None,
            rendition: None,
            job_id: None,
            progress: Some(crate::domain::event::ProgressInfo { percent: i as f64, ..Default::default() }),
        }
    }

    /// However fast events come and however slow Redis is, the publisher holds at
    /// most `QUEUED` of them: the sending task cannot run here (nothing yields), as
    /// if Redis had stalled, and the burst beyond the bound is dropped, not kept.
    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_against_a_stalled_redis_stays_within_the_queue() {
        let settings = crate::config::RedisSettings {
            url: Some(crate::config::SecretUrl::new("redis://127.0.0.1:1")),
            ..Default::default()
        };
        let redis = Arc::new(RedisHandle::new(&settings).unwrap().unwrap());
        let publisher = RedisPublisher::start(redis, "test");
        for i in 0..QUEUED + 500 {
            publisher.publish(&progress(i));
        }
        assert_eq!(publisher.queued(), QUEUED);
    }
}
