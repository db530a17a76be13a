//! The one event model: what happened to a video, in order. Plain data, no I/O: the
//! outbox (`repo::outbox`) stores it, `events` publishes and relays it, subscriptions
//! and webhooks render it.
//!
//! Every persisted event has a per-video `seq` (1, 2, 3, ...) and a global `cursor`
//! (the outbox row id) that subscriptions resume from. PROGRESS events are never
//! stored; they carry the last stored `seq`.

use chrono::{DateTime, Utc};
use entities::{event_outbox, video, VideoStatus, Visibility};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// The lowest rendition can be played (its playlist grows until RENDITION_READY).
    Playable,
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
            EventKind::Playable => "PLAYABLE",
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

/// A PROGRESS event (never stored).
pub fn progress_event(video: &video::Model, last_seq: i64, job_id: Uuid, progress: ProgressInfo) -> DomainEvent {
    DomainEvent::new(
        video,
        EventKind::Progress,
        EventDetail { job_id: Some(job_id), progress: Some(progress), ..Default::default() },
        last_seq,
    )
}
