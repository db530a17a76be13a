//! The one event model: what happened to a video, in order.
//!
//! State-changing events are written to the `events_outbox` table in the same
//! transaction as the change ([`record`]), then published on the bus after commit
//! ([`Publisher::publish`]). PROGRESS events are published without persistence; the
//! latest progress is kept on the job row. Every persisted event has a per-video
//! `seq` (1, 2, 3, ...) and a global `cursor` (the outbox row id) that subscriptions
//! resume from.

pub mod bus;
pub mod fanout;
pub mod job_log;
pub mod recheck;
pub mod sequencer;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entities::{event_outbox, video, VideoStatus, Visibility};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::Hub;
use crate::events::bus::EventBus;
use crate::events::bus::{BusMessage, Publish};

/// Serialised into every stored event; bump when the payload changes shape.
pub const EVENT_VERSION: u16 = 1;

/// What happened. Spelled as in the public API (`VideoEvent.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "VideoEventKind")]
pub enum EventKind {
    Uploaded,
    Processing,
    Progress,
    RenditionReady,
    Ready,
    Failed,
    Cancelled,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Uploaded => "UPLOADED",
            EventKind::Processing => "PROCESSING",
            EventKind::Progress => "PROGRESS",
            EventKind::RenditionReady => "RENDITION_READY",
            EventKind::Ready => "READY",
            EventKind::Failed => "FAILED",
            EventKind::Cancelled => "CANCELLED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// Progress of a running job, as published and as kept on the job row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressInfo {
    /// 0..=100 over the whole job.
    pub percent: f64,
    /// probing | encoding | packaging | uploading
    pub stage: String,
    pub fps: Option<f64>,
    pub eta_seconds: Option<f64>,
    #[serde(default)]
    pub renditions: Vec<RenditionProgressInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenditionProgressInfo {
    pub name: String,
    pub percent: f64,
    pub fps: Option<f64>,
}

/// Optional details of an event.
#[derive(Debug, Clone, Default)]
pub struct EventDetail {
    pub error: Option<String>,
    pub rendition: Option<String>,
    pub job_id: Option<Uuid>,
    pub progress: Option<ProgressInfo>,
}

/// One event. `cursor` is `None` only for PROGRESS (never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub version: u16,
    pub kind: EventKind,
    pub video_id: Uuid,
    pub owner_id: Uuid,
    /// The video's visibility when the event happened.
    pub visibility: Visibility,
    /// The video's status after the event.
    pub status: VideoStatus,
    /// Per-video sequence of stored events; PROGRESS carries the last stored one.
    pub seq: i64,
    /// Global position in the outbox (resume point).
    pub cursor: Option<i64>,
    pub at: DateTime<Utc>,
    pub error: Option<String>,
    pub rendition: Option<String>,
    pub job_id: Option<Uuid>,
    pub progress: Option<ProgressInfo>,
}

impl DomainEvent {
    pub fn new(video: &video::Model, kind: EventKind, detail: EventDetail, seq: i64) -> Self {
        Self {
            version: EVENT_VERSION,
            kind,
            video_id: video.id,
            owner_id: video.owner_id,
            visibility: video.visibility,
            status: video.status,
            seq,
            cursor: None,
            at: Utc::now(),
            error: detail.error,
            rendition: detail.rendition,
            job_id: detail.job_id,
            progress: detail.progress,
        }
    }

    /// Rebuild an event from its outbox row.
    pub fn from_outbox(row: &event_outbox::Model) -> Result<Self, serde_json::Error> {
        let mut event: DomainEvent = serde_json::from_value(row.payload.clone())?;
        event.cursor = Some(row.id);
        Ok(event)
    }
}

/// Outbox rows deleted per statement while pruning.
const PRUNE_BATCH: u64 = 1000;

/// Delete the stored events written before `cutoff`: every row up to the newest id
/// among them, so what is kept is always a contiguous tail of ids (a cursor below
/// it has lost events: see [`cursor_expired`]). The newest row of all is kept, so
/// that tail is never empty. Per-video sequences live on the video rows and go on.
pub async fn prune(db: &sea_orm::DatabaseConnection, cutoff: DateTime<Utc>) -> Result<u64, DbErr> {
    let newest = outbox_id(db, Expr::col(event_outbox::Column::Id).max(), None).await?;
    let through = outbox_id(db, Expr::col(event_outbox::Column::Id).max(), Some(cutoff)).await?;
    let (Some(newest), Some(through)) = (newest, through) else { return Ok(0) };
    let through = through.min(newest - 1);
    let mut deleted = 0;
    loop {
        let ids: Vec<i64> = event_outbox::Entity::find()
            .select_only()
            .column(event_outbox::Column::Id)
            .filter(event_outbox::Column::Id.lte(through))
            .order_by_asc(event_outbox::Column::Id)
            .limit(PRUNE_BATCH)
            .into_tuple::<i64>()
            .all(db)
            .await?;
        if ids.is_empty() {
            break;
        }
        deleted += event_outbox::Entity::delete_many()
            .filter(event_outbox::Column::Id.is_in(ids))
            .exec(db)
            .await?
            .rows_affected;
    }
    metrics::counter!("reelhouse_events_pruned_total").increment(deleted);
    Ok(deleted)
}

/// Has the outbox lost events after `cursor` to pruning? Ids below the oldest kept
/// row are gone (or never existed): a cursor short of it cannot resume gap-free.
pub async fn cursor_expired<C: ConnectionTrait>(conn: &C, cursor: i64) -> Result<bool, DbErr> {
    let oldest = outbox_id(conn, Expr::col(event_outbox::Column::Id).min(), None).await?;
    Ok(oldest.is_some_and(|oldest| cursor < oldest - 1))
}

/// The cursor of the newest stored event (`None` before the first).
pub async fn newest_cursor<C: ConnectionTrait>(conn: &C) -> Result<Option<i64>, DbErr> {
    outbox_id(conn, Expr::col(event_outbox::Column::Id).max(), None).await
}

/// `MIN(id)` or `MAX(id)` of the outbox, optionally of rows written before `before`.
async fn outbox_id<C: ConnectionTrait>(
    conn: &C,
    aggregate: sea_orm::sea_query::SimpleExpr,
    before: Option<DateTime<Utc>>,
) -> Result<Option<i64>, DbErr> {
    let mut query = event_outbox::Entity::find().select_only().column_as(aggregate, "id");
    if let Some(before) = before {
        query = query.filter(event_outbox::Column::CreatedAt.lt(before));
    }
    Ok(query.into_tuple::<Option<i64>>().one(conn).await?.flatten())
}

/// Prune every `events.prune_interval_secs` (run by startup under `supervise`; every replica may
/// run it, deleting is idempotent).
pub async fn run_pruner(db: sea_orm::DatabaseConnection, settings: crate::config::events::EventSettings) {
    if settings.retention_days == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(settings.prune_interval_secs.max(1));
    loop {
        let cutoff = Utc::now() - chrono::TimeDelta::days(i64::from(settings.retention_days));
        match prune(&db, cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned stored events past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning stored events failed"),
        }
        actix_rt::time::sleep(every).await;
    }
}

/// A PROGRESS event (never stored).
pub fn progress_event(video: &video::Model, last_seq: i64, job_id: Uuid, progress: ProgressInfo) -> DomainEvent {
    DomainEvent::new(
        video,
        EventKind::Progress,
        EventDetail { job_id: Some(job_id), progress: Some(progress), ..Default::default() },
        last_seq,
    )
}

/// Publishes events to this process's bus and, with Redis, to the other instances
/// (see [`fanout`]). Cheap to clone. A publisher with neither drops events, which is
/// right for a worker process nobody subscribes to (stored events stay in the outbox).
#[derive(Clone, Default)]
pub struct Publisher {
    bus: Option<Hub<EventBus>>,
    redis: Option<(Arc<crate::redis_client::RedisHandle>, Arc<str>)>,
    videos: Option<Arc<crate::access::videos::VideoCache>>,
    /// Puts events on `bus` in cursor order (a `serve` process); without it they go
    /// straight to the bus.
    sequencer: Option<sequencer::Sequencer>,
}

impl Publisher {
    pub fn new(bus: Option<Hub<EventBus>>) -> Self {
        Self { bus, redis: None, videos: None, sequencer: None }
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

    /// Also publish to Redis as instance `origin` (whose own relay skips them).
    pub fn with_redis(mut self, redis: Option<Arc<crate::redis_client::RedisHandle>>, origin: &str) -> Self {
        self.redis = redis.map(|r| (r, Arc::from(origin)));
        self
    }

    pub fn publish(&self, event: DomainEvent) {
        metrics::counter!("reelhouse_events_published_total", "kind" => event.kind.as_str()).increment(1);
        if let Some(videos) = &self.videos {
            videos.invalidate(event.video_id);
        }
        if let Some((redis, origin)) = &self.redis {
            let (redis, origin, event) = (redis.clone(), origin.clone(), event.clone());
            tokio::spawn(async move { fanout::publish(&redis, &origin, &event).await });
        }
        if let Some(sequencer) = &self.sequencer {
            sequencer.submit(Arc::new(event));
        } else if let Some(bus) = &self.bus {
            bus.addr().do_send(Publish(BusMessage::Video(Arc::new(event))));
        }
    }

    /// Tell `jobLog` subscribers here and on the other instances that a job's log grew.
    pub fn job_log_written(&self, notice: job_log::JobLogWritten) {
        if let Some((redis, origin)) = &self.redis {
            let (redis, origin) = (redis.clone(), origin.clone());
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
