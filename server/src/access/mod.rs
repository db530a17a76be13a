//! Access changes pushed to open sockets: a session revoked, an account disabled,
//! deleted or given another role. Each `/graphql/ws` session listens and, when a
//! change names its user (and its session, or every session), re-checks its
//! credential at once and closes with 4403 if it lost it. The signal is only a
//! hint: the database decides, so a spurious or duplicated signal costs one
//! re-check and nothing else. The periodic re-check (`graphql.ws_recheck_ms`)
//! remains the backstop for a signal lost on the way (Redis pub/sub forgets).
//!
//! With Redis, changes travel to every instance on `{redis.key_prefix}access`,
//! read by the same subscriber connection as the event relay (`fanout`).
//!
//! The same changes invalidate the process's session cache
//! ([`sessions`]) before any socket hears of them, synchronously,
//! so the next request on this instance reads the database again.
//!
//! The same channel carries video changes that are not domain events (metadata
//! and visibility, hiding, upload claims) for the video-row cache
//! ([`videos`]) and for the open subscriptions of the video, which re-check it at
//! once ([`rechecks`]): [`AccessSignals::video_changed`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

pub mod rechecks;
pub mod sessions;
pub mod videos;

use crate::redis_client::RedisHandle;
use sessions::SessionCache;
use videos::VideoCache;

/// Changes buffered per listening socket; a socket that falls behind re-checks.
const CAPACITY: usize = 256;

/// Whose access changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessChange {
    pub user_id: Uuid,
    /// The one session (refresh-token family) that ended; `None`: every session
    /// and API key of the user may be affected.
    pub session_id: Option<Uuid>,
}

impl AccessChange {
    /// One session of `user_id` ended.
    pub fn session(user_id: Uuid, session_id: Uuid) -> Self {
        Self { user_id, session_id: Some(session_id) }
    }

    /// Anything about `user_id` changed (disabled, deleted, role, all sessions).
    pub fn user(user_id: Uuid) -> Self {
        Self { user_id, session_id: None }
    }

    /// Does this change concern a socket of `user_id` opened with `session_id`?
    pub fn concerns(&self, user_id: Uuid, session_id: Option<Uuid>) -> bool {
        self.user_id == user_id && (self.session_id.is_none() || self.session_id == session_id)
    }
}

/// What travels on the Redis channel: an access change, a video that changed, or a
/// worker token that was revoked (its remote workers' sockets on every instance
/// close at once).
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<AccessChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    video: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worker_token_revoked: Option<Uuid>,
}

/// The process's access-change channel. Cheap to clone.
#[derive(Clone)]
pub struct AccessSignals {
    sender: broadcast::Sender<AccessChange>,
    worker_tokens: broadcast::Sender<Uuid>,
    redis: Option<(Arc<RedisHandle>, Arc<str>)>,
    sessions: Arc<SessionCache>,
    videos: Arc<VideoCache>,
    rechecks: rechecks::RecheckRows,
}

/// Longest wait for Redis to take a change before the caller's answer goes out.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl AccessSignals {
    /// Signals of this process, also published to Redis (as instance `origin`) when
    /// set. `sessions` is emptied of what each change names, `videos` of each video
    /// that changed; without Redis they are trusted from the start, with Redis once
    /// the relay has subscribed.
    pub fn new(
        redis: Option<Arc<RedisHandle>>,
        origin: &str,
        sessions: Arc<SessionCache>,
        videos: Arc<VideoCache>,
    ) -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        let (worker_tokens, _) = broadcast::channel(CAPACITY);
        sessions.set_stream_healthy(redis.is_none());
        videos.set_stream_healthy(redis.is_none());
        Self {
            sender,
            worker_tokens,
            redis: redis.map(|r| (r, Arc::from(origin))),
            sessions,
            videos,
            rechecks: rechecks::RecheckRows::default(),
        }
    }

    /// The session cache these signals keep current.
    pub fn sessions(&self) -> &SessionCache {
        &self.sessions
    }

    /// The video-row cache these signals (and the video's events) keep current.
    pub fn videos(&self) -> &Arc<VideoCache> {
        &self.videos
    }

    /// The video rows open subscriptions re-check against, forgotten (and their
    /// feeds told) when a video changes.
    pub fn rechecks(&self) -> &rechecks::RecheckRows {
        &self.rechecks
    }

    /// The relay's subscription to the access channel began (`true`) or ended.
    pub(crate) fn set_stream_healthy(&self, healthy: bool) {
        self.sessions.set_stream_healthy(healthy);
        self.videos.set_stream_healthy(healthy);
    }

    /// A video changed in a way that is not a domain event (metadata, visibility,
    /// hiding, an upload claim): forget it here at once, and wait (at most a
    /// second) until Redis handed the change to every instance's relay, so the
    /// caller's answer goes out only after the other instances were told. Call
    /// after the change committed.
    pub async fn video_changed(&self, video_id: Uuid) {
        self.videos.invalidate(video_id);
        self.rechecks.changed(video_id);
        if let Some((redis, origin)) = &self.redis {
            let envelope = Envelope {
                origin: origin.to_string(),
                change: None,
                video: Some(video_id),
                worker_token_revoked: None,
            };
            publish_within(redis, &envelope).await;
        }
    }

    /// [`AccessSignals::notify`], and wait (at most a second) until Redis has handed
    /// the change to every instance's relay, so the caller's answer goes out only
    /// after the other instances' session caches were told.
    pub async fn announce(&self, change: AccessChange) {
        metrics::counter!("reelhouse_access_changes_total").increment(1);
        self.deliver_locally(change);
        if let Some((redis, origin)) = &self.redis {
            let envelope =
                Envelope { origin: origin.to_string(), change: Some(change), video: None, worker_token_revoked: None };
            publish_within(redis, &envelope).await;
        }
    }

    /// A worker token was revoked: tell the other instances (at most a second's
    /// wait for Redis), whose connections of that token close at once. This
    /// instance closes its own itself (`RemoteWorkers::revoke_token`).
    pub async fn announce_worker_token_revoked(&self, token: Uuid) {
        if let Some((redis, origin)) = &self.redis {
            let envelope =
                Envelope { origin: origin.to_string(), change: None, video: None, worker_token_revoked: Some(token) };
            publish_within(redis, &envelope).await;
        }
    }

    /// Worker tokens revoked on other instances, from now on.
    pub fn subscribe_worker_tokens(&self) -> broadcast::Receiver<Uuid> {
        self.worker_tokens.subscribe()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AccessChange> {
        self.sender.subscribe()
    }

    /// Tell every socket, here and on the other instances. Call after the change
    /// committed (a re-check before the commit would still see the old state).
    pub fn notify(&self, change: AccessChange) {
        metrics::counter!("reelhouse_access_changes_total").increment(1);
        self.deliver_locally(change);
        if let Some((redis, origin)) = &self.redis {
            let envelope =
                Envelope { origin: origin.to_string(), change: Some(change), video: None, worker_token_revoked: None };
            let redis = redis.clone();
            tokio::spawn(async move {
                let Ok(payload) = serde_json::to_string(&envelope) else { return };
                let published = async {
                    let mut conn = redis.connection().await?;
                    let _: i64 =
                        redis::cmd("PUBLISH").arg(channel(&redis)).arg(&payload).query_async(&mut conn).await?;
                    anyhow::Ok(())
                }
                .await;
                if let Err(err) = published {
                    // The periodic re-check still closes the sockets, later.
                    tracing::warn!(error = %err, "publishing an access change to redis failed");
                }
            });
        }
    }

    fn deliver_locally(&self, change: AccessChange) {
        self.sessions.invalidate(&change);
        // No receivers is not an error: no socket is open.
        let _ = self.sender.send(change);
    }

    /// A change published by an instance on Redis (its own are skipped: they were
    /// delivered locally).
    pub(crate) fn forward_from_redis(&self, payload: &str) {
        match serde_json::from_str::<Envelope>(payload) {
            Ok(envelope) if self.redis.as_ref().is_some_and(|(_, origin)| **origin == *envelope.origin) => {}
            Ok(envelope) => {
                if let Some(video_id) = envelope.video {
                    self.videos.invalidate(video_id);
                    self.rechecks.changed(video_id);
                }
                if let Some(change) = envelope.change {
                    self.deliver_locally(change);
                }
                if let Some(token) = envelope.worker_token_revoked {
                    let _ = self.worker_tokens.send(token);
                }
            }
            Err(err) => tracing::warn!(error = %err, "ignoring a malformed access change on the redis channel"),
        }
    }
}

/// Publish `envelope`, waiting at most [`PUBLISH_TIMEOUT`] (failures are logged:
/// the caches' TTL and the sockets' periodic re-check are the backstop).
async fn publish_within(redis: &RedisHandle, envelope: &Envelope) {
    let Ok(payload) = serde_json::to_string(envelope) else { return };
    let published = tokio::time::timeout(PUBLISH_TIMEOUT, async {
        let mut conn = redis.connection().await?;
        let _: i64 = redis::cmd("PUBLISH").arg(channel(redis)).arg(&payload).query_async(&mut conn).await?;
        anyhow::Ok(())
    })
    .await;
    match published {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "publishing an access change to redis failed"),
        Err(_) => tracing::warn!("publishing an access change to redis timed out"),
    }
}

/// The pub/sub channel of a deployment's access changes.
pub fn channel(redis: &RedisHandle) -> String {
    format!("{}access", redis.key_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_concerns_its_session_or_every_session_of_its_user() {
        let (user, other, session) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let one = AccessChange::session(user, session);
        assert!(one.concerns(user, Some(session)));
        assert!(!one.concerns(user, Some(Uuid::now_v7())));
        assert!(!one.concerns(user, None), "an API key socket is not that session");
        assert!(!one.concerns(other, Some(session)));
        let all = AccessChange::user(user);
        assert!(all.concerns(user, Some(session)));
        assert!(all.concerns(user, None));
        assert!(!all.concerns(other, None));
    }
}
