//! Events on the move: publishing, the bus, the relay across replicas, cursor order,
//! the subscriptions' `Feed` engine, job logs and the outbox's pruning.
//!
//! The model itself ([`DomainEvent`], its kinds and progress) is plain data in
//! `domain::event`, re-exported here. State-changing events are written to the
//! `events_outbox` table in the same transaction as the change
//! (`repo::outbox::record`), then published on the bus after commit
//! ([`Publisher::publish`]). PROGRESS events are published without persistence; the
//! latest progress is kept on the job row.

pub mod bus;
pub mod fanout;
pub mod feed;
pub mod job_log;
pub mod sequencer;

use std::sync::Arc;

use chrono::Utc;

pub use crate::domain::event::{
    progress_event, DomainEvent, EventDetail, EventKind, ProgressInfo, RenditionProgressInfo, EVENT_VERSION,
};

use crate::actors::Hub;
use crate::events::bus::EventBus;
use crate::events::bus::{BusMessage, Publish};

/// Prune every `events.prune_interval_secs` (run by startup under `supervise`; every replica may
/// run it, deleting is idempotent).
pub async fn run_pruner(db: sea_orm::DatabaseConnection, settings: crate::config::events::EventSettings) {
    if settings.retention_days == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(settings.prune_interval_secs.max(1));
    loop {
        let cutoff = Utc::now() - chrono::TimeDelta::days(i64::from(settings.retention_days));
        match crate::repo::outbox::prune(&db, cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned stored events past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning stored events failed"),
        }
        actix_rt::time::sleep(every).await;
    }
}

/// Publishes events to this process's bus and, with Redis, to the other instances
/// (see [`fanout`]). Cheap to clone. A publisher with neither drops events, which is
/// right for a worker process nobody subscribes to (stored events stay in the outbox).
#[derive(Clone, Default)]
pub struct Publisher {
    bus: Option<Hub<EventBus>>,
    redis: Option<fanout::RedisPublisher>,
    videos: Option<Arc<crate::access::videos::VideoCache>>,
    /// Puts events on `bus` in cursor order (a `serve` process); without it they go
    /// straight to the bus.
    sequencer: Option<sequencer::Sequencer>,
    /// The rows the subscriptions' re-checks share (`access::rechecks`).
    rechecks: Option<crate::access::rechecks::RecheckRows>,
}

impl Publisher {
    pub fn new(bus: Option<Hub<EventBus>>) -> Self {
        Self { bus, redis: None, videos: None, sequencer: None, rechecks: None }
    }

    /// Forget the video's re-check row on each stored event, before anyone hears of it.
    pub fn with_rechecks(mut self, rechecks: crate::access::rechecks::RecheckRows) -> Self {
        self.rechecks = Some(rechecks);
        self
    }

    /// Events for this process's bus go through `sequencer` (see [`sequencer`]).
    pub fn with_sequencer(mut self, sequencer: sequencer::Sequencer) -> Self {
        self.sequencer = Some(sequencer);
        self
    }

    /// Forget each event's video in this process's video-row cache, synchronously,
    /// before anyone hears of the event (the relay does so on the other instances).
    pub fn with_video_cache(mut self, videos: Arc<crate::access::videos::VideoCache>) -> Self {
        self.videos = Some(videos);
        self
    }

    /// Also publish to Redis, through the process's batching publisher (as its
    /// instance, whose own relay skips them).
    pub fn with_redis(mut self, redis: Option<fanout::RedisPublisher>) -> Self {
        self.redis = redis;
        self
    }

    pub fn publish(&self, event: DomainEvent) {
        metrics::counter!("reelhouse_events_published_total", "kind" => event.kind.as_str()).increment(1);
        if let Some(videos) = &self.videos {
            videos.invalidate(event.video_id);
        }
        if let (Some(rechecks), Some(_)) = (&self.rechecks, event.cursor) {
            // The subscriptions' shared row predates this stored event.
            rechecks.forget(event.video_id);
        }
        if let Some(redis) = &self.redis {
            redis.publish(&event);
        }
        if let Some(sequencer) = &self.sequencer {
            sequencer.submit(Arc::new(event));
        } else if let Some(bus) = &self.bus {
            bus.addr().do_send(Publish(BusMessage::Video(Arc::new(event))));
        }
    }

    /// Tell `jobLog` subscribers here and on the other instances that a job's log grew.
    pub fn job_log_written(&self, notice: job_log::JobLogWritten) {
        if let Some(redis) = &self.redis {
            let (redis, origin) = (redis.handle().clone(), redis.origin().clone());
            tokio::spawn(async move { job_log::publish(&redis, &origin, notice).await });
        }
        if let Some(bus) = &self.bus {
            bus.addr().do_send(Publish(BusMessage::JobLog(Arc::new(notice))));
        }
    }

    pub fn publish_all(&self, events: impl IntoIterator<Item = DomainEvent>) {
        for event in events {
            self.publish(event);
        }
    }
}
