//! Notices that a job's log grew, for live `jobLog` subscribers on any instance.
//!
//! The lines themselves live in the `job_logs` table, numbered per job (`seq`); a
//! notice carries only the job and the new line's `seq`, and a subscriber that hears
//! one reads what it has not sent from the table. So a notice lost on the way (Redis
//! pub/sub forgets) or duplicated costs latency, never a line: subscribers also look
//! in the table every `jobs.log_poll_ms`.
//!
//! With Redis, notices travel on `{redis.key_prefix}job-logs`, read by the same
//! subscriber connection as the event relay (`fanout`), into the local bus.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::Hub;
use crate::events::bus::EventBus;
use crate::events::bus::{BusMessage, Publish};
use crate::redis_client::RedisHandle;

/// Line `seq` of job `job_id` was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogWritten {
    pub job_id: Uuid,
    pub seq: i64,
}

/// What travels on the Redis channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    origin: String,
    notice: JobLogWritten,
}

/// The pub/sub channel of a deployment's job-log notices.
pub fn channel(redis: &RedisHandle) -> String {
    format!("{}job-logs", redis.key_prefix)
}

/// Publish a notice to Redis as instance `origin` (tried once: the subscribers' poll
/// is the backstop).
pub async fn publish(redis: &RedisHandle, origin: &str, notice: JobLogWritten) {
    let envelope = Envelope { origin: origin.to_string(), notice };
    let Ok(payload) = serde_json::to_string(&envelope) else { return };
    let channel = channel(redis);
    let payload = &payload;
    let result = redis
        .call(|mut conn| async move {
            let _: i64 = redis::cmd("PUBLISH").arg(channel).arg(payload).query_async(&mut conn).await?;
            Ok(())
        })
        .await;
    if let Err(err) = result {
        tracing::debug!(error = %err, "publishing a job log notice to redis failed");
    }
}

/// A notice from another instance, onto the local bus (this instance's own were
/// delivered locally already).
pub(crate) fn forward(bus: &Hub<EventBus>, instance: &str, payload: &str) {
    match serde_json::from_str::<Envelope>(payload) {
        Ok(envelope) if envelope.origin == instance => {}
        Ok(envelope) => {
            bus.addr().do_send(Publish(BusMessage::JobLog(Arc::new(envelope.notice))));
        }
        Err(err) => tracing::warn!(error = %err, "ignoring a malformed job log notice on the redis channel"),
    }
}
