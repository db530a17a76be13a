//! Live events in GraphQL: `videoProgress(videoId)` and `videoEvents(videoId?, after?)`.
//!
//! Each subscription subscribes to the bus *before* it reads the database, so nothing
//! published in between is missed, then:
//! - starts with a snapshot of the video's current state (`snapshot: true`), or, with
//!   `after: cursor`, replays the stored events after that cursor from the outbox;
//! - forwards live events, dropping stored ones it has already sent (by per-video
//!   `seq`, so no duplicates) and filling a gap from the outbox when it sees one (so
//!   no losses);
//! - is fed through a bounded channel by its own task: a slow client never slows the
//!   bus. When the bus runs ahead of a client (`Lagged`), the stored events it missed
//!   are replayed from the outbox; only PROGRESS events (never stored) can be skipped,
//!   and the next PROGRESS supersedes them anyway.
//!
//! A stored event whose publish was lost entirely (Redis down at that moment) is
//! delivered by the periodic re-check below, which also looks in the outbox.
//!
//! Authorization: at subscribe time (a video the caller may not read is NOT_FOUND,
//! with zero events), and again every `graphql.ws_recheck_ms` and on every event
//! (the video made private, hidden or deleted ends the stream with an error). The
//! WebSocket session closes the socket on token expiry or revocation.

use std::collections::HashMap;
use std::time::Duration;

use async_graphql::{Context, ErrorExtensions, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use entities::{video, VideoStatus as DbVideoStatus, Visibility};
use futures::stream::BoxStream;
use futures::Stream;
use futures::StreamExt;
use sea_orm::DatabaseConnection;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::auth::principal::Principal;
use crate::auth::roles::{has_permission, Permission};
use crate::error::AppError;
use crate::error::GqlResultExt;
use crate::events::bus::{BusMessage, Subscribe};
use crate::events::{DomainEvent, EventKind, ProgressInfo};
use crate::graphql::progress::Progress;
use crate::graphql::shared_frames::{FrameSink, RenderOne, SharedDelivery, VisibilityClass};
use crate::graphql::videos::{viewer, VideoStatus};
use crate::repo::outbox::{self, ReplayScope};
use crate::repo::videos::{can_read_by_id, find_readable};
use crate::state::AppState;

/// Events buffered per subscriber before it counts as lagging.
pub(crate) const SUBSCRIBER_BUFFER: usize = 64;
/// Stored events replayed per outbox query.
const REPLAY_PAGE: u64 = 200;

#[derive(SimpleObject, Debug, Clone)]
pub struct VideoEventRendition {
    pub name: String,
}

/// One thing that happened to a video (or, with `snapshot: true`, where it stands).
#[derive(SimpleObject, Debug, Clone)]
pub struct VideoEvent {
    /// Resume point for `videoEvents(after:)`; null for PROGRESS (never stored).
    pub cursor: Option<String>,
    pub video_id: ID,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// Per-video sequence of stored events (PROGRESS carries the last one).
    pub seq: i64,
    /// The video's status after the event.
    pub status: VideoStatus,
    pub progress: Option<Progress>,
    pub rendition: Option<VideoEventRendition>,
    pub error: Option<String>,
    /// True for the first event of a subscription describing the current state.
    pub snapshot: bool,
}

impl VideoEvent {
    pub(crate) fn from_domain(event: &DomainEvent, snapshot: bool) -> Self {
        Self {
            cursor: event.cursor.map(|c| c.to_string()),
            video_id: ID(event.video_id.to_string()),
            kind: event.kind,
            at: event.at,
            seq: event.seq,
            status: event.status.into(),
            progress: event.progress.clone().map(Into::into),
            rendition: event.rendition.clone().map(|name| VideoEventRendition { name }),
            error: event.error.clone(),
            snapshot,
        }
    }
}

fn parse_id(id: &ID) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input("videoId is not a valid id"))
}

fn parse_cursor(cursor: &str) -> Result<i64, AppError> {
    cursor.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| AppError::bad_input("`after` is not a valid cursor"))
}

fn is_terminal(kind: EventKind) -> bool {
    matches!(kind, EventKind::Ready | EventKind::Failed | EventKind::Cancelled | EventKind::Deleted)
}

/// Is `viewer` the event's owner or a moderator?
fn owner_or_moderator(viewer: Option<&Principal>, event: &DomainEvent) -> bool {
    viewer.is_some_and(|p| p.user_id == event.owner_id || has_permission(p.role, Permission::ModerateVideos))
}

/// May `viewer` receive this event in an all-videos feed?
fn may_receive(viewer: Option<&Principal>, event: &DomainEvent) -> bool {
    match viewer {
        Some(p) if p.user_id == event.owner_id || has_permission(p.role, Permission::ModerateVideos) => true,
        _ => event.visibility == Visibility::Public,
    }
}

/// The video's current state as an event: the last stored event's kind and seq, the
/// video's current status, and the running job's latest progress.
async fn snapshot(db: &DatabaseConnection, video: &video::Model) -> Result<DomainEvent, AppError> {
    let last = outbox::newest_of_video(db, video.id, None).await.map_err(AppError::internal)?;
    let active = crate::repo::jobs::active_of_video(db, video.id).await.map_err(AppError::internal)?;
    let progress: Option<ProgressInfo> =
        active.as_ref().and_then(|j| j.progress.clone()).and_then(|p| serde_json::from_value(p).ok());
    let (kind, seq, cursor) = match &last {
        Some(row) => (
            serde_json::from_value::<DomainEvent>(row.payload.clone()).map(|e| e.kind).unwrap_or(EventKind::Progress),
            row.seq,
            Some(row.id),
        ),
        None => (
            match video.status {
                DbVideoStatus::Ready => EventKind::Ready,
                DbVideoStatus::Failed => EventKind::Failed,
                DbVideoStatus::Processing => EventKind::Processing,
                DbVideoStatus::Draft | DbVideoStatus::Uploading => EventKind::Progress,
            },
            // Its events were pruned (or there were none): the sequence goes on.
            video.event_seq,
            None,
        ),
    };
    // While a job runs, the snapshot is a progress report; once the video is READY
    // (and nothing re-runs), it is the READY the client waits for.
    let kind = if active.is_some() && progress.is_some() { EventKind::Progress } else { kind };
    Ok(DomainEvent {
        version: crate::events::EVENT_VERSION,
        kind,
        video_id: video.id,
        owner_id: video.owner_id,
        visibility: video.visibility,
        status: video.status,
        seq,
        cursor,
        at: Utc::now(),
        error: video.error.clone(),
        rendition: None,
        job_id: active.as_ref().map(|j| j.id),
        progress,
    })
}

/// Stored events after `after` (a global cursor), optionally of one video, oldest first.
async fn replay_after(
    db: &DatabaseConnection,
    video_id: Option<Uuid>,
    viewer: Option<&Principal>,
    after: i64,
) -> Result<Vec<DomainEvent>, AppError> {
    let scope = match (video_id, viewer) {
        (Some(id), _) => ReplayScope::Video(id),
        (None, Some(p)) if has_permission(p.role, Permission::ModerateVideos) => ReplayScope::Everything,
        // Other people's events only of videos that were public then and are
        // still listed now.
        (None, viewer) => ReplayScope::Listed { owner: viewer.map(|p| p.user_id) },
    };
    let rows = outbox::after_cursor(db, after, scope, REPLAY_PAGE).await.map_err(AppError::internal)?;
    Ok(rows.iter().filter_map(|row| DomainEvent::from_outbox(row).ok()).collect())
}

/// Stored events of one video with `seq` in `(after_seq, up_to_seq)`, oldest first.
async fn replay_seq(
    db: &DatabaseConnection,
    video_id: Uuid,
    after_seq: i64,
    before_seq: Option<i64>,
) -> Result<Vec<DomainEvent>, AppError> {
    let rows = outbox::of_video_between(db, video_id, after_seq, before_seq).await.map_err(AppError::internal)?;
    Ok(rows.iter().filter_map(|row| DomainEvent::from_outbox(row).ok()).collect())
}

/// The `seq` of the newest stored event of `video_id` at or before the global cursor
/// `after` (0 if none): what a one-video feed resuming after that cursor has already sent.
async fn seq_at_cursor(db: &DatabaseConnection, video_id: Uuid, after: i64) -> Result<i64, AppError> {
    let row = outbox::newest_of_video(db, video_id, Some(after)).await.map_err(AppError::internal)?;
    Ok(row.map_or(0, |r| r.seq))
}

/// What a feed task remembers so it sends every stored event once, in order.
struct Feed {
    state: AppState,
    viewer: Option<Principal>,
    /// `Some` for a one-video feed.
    video_id: Option<Uuid>,
    /// Last stored seq sent, per video.
    sent_seq: HashMap<Uuid, i64>,
    /// Highest global cursor sent (all-videos feed resumes from here after a lag).
    last_cursor: i64,
    out: Out,
    /// End the stream after a READY/FAILED/CANCELLED/DELETED (videoProgress).
    end_on_terminal: bool,
}

/// Where a feed's events go.
enum Out {
    /// To async-graphql, which executes and serialises each for this subscriber.
    Values(mpsc::Sender<async_graphql::Result<VideoEvent>>),
    /// As frames rendered once per key and visibility class (`shared_frames`).
    Frames(FrameSink),
}

impl Out {
    async fn closed(&self) {
        match self {
            Out::Values(out) => out.closed().await,
            Out::Frames(sink) => sink.closed().await,
        }
    }
}

/// Why a feed stops.
enum Stop {
    /// The client went away or the stream ended normally.
    Done,
}

impl Feed {
    async fn send(&mut self, event: &DomainEvent, snapshot: bool) -> Result<(), Stop> {
        if let Some(cursor) = event.cursor {
            self.last_cursor = self.last_cursor.max(cursor);
        }
        if event.kind != EventKind::Progress || snapshot {
            let seq = self.sent_seq.entry(event.video_id).or_insert(0);
            *seq = (*seq).max(event.seq);
        }
        metrics::counter!("reelhouse_events_delivered_total", "kind" => event.kind.as_str()).increment(1);
        match &self.out {
            Out::Values(out) => {
                metrics::counter!("reelhouse_event_renders_total", "path" => "fallback").increment(1);
                out.send(Ok(VideoEvent::from_domain(event, snapshot))).await.map_err(|_| Stop::Done)?
            }
            Out::Frames(sink) => {
                let class = if owner_or_moderator(self.viewer.as_ref(), event) {
                    VisibilityClass::OwnerOrModerator
                } else {
                    VisibilityClass::Everyone
                };
                sink.send_event(event, snapshot, class).await.map_err(|_| Stop::Done)?
            }
        }
        if self.end_on_terminal && !snapshot && is_terminal(event.kind) {
            return Err(Stop::Done);
        }
        Ok(())
    }

    async fn fail(&mut self, error: AppError) -> Stop {
        let _ = match &self.out {
            Out::Values(out) => out.send(Err(error.extend())).await.is_ok(),
            Out::Frames(sink) => sink.send_error(error.extend()).await.is_ok(),
        };
        Stop::Done
    }

    /// Handle one live event: drop duplicates, fill gaps, check rights.
    async fn live(&mut self, event: &DomainEvent) -> Result<(), Stop> {
        if let Some(id) = self.video_id {
            if event.video_id != id {
                return Ok(());
            }
            if !self.still_allowed(event).await {
                return Err(self.fail(AppError::not_found("video")).await);
            }
        } else if !may_receive(self.viewer.as_ref(), event) || !self.still_listed(event).await {
            return Ok(());
        }
        let sent = self.sent_seq.get(&event.video_id).copied();
        if event.kind == EventKind::Progress {
            // Progress from before the last state change is stale.
            if sent.is_some_and(|s| event.seq < s) {
                return Ok(());
            }
            return self.send(event, false).await;
        }
        match sent {
            Some(s) if event.seq <= s => return Ok(()),
            Some(s) if event.seq > s + 1 => {
                // A gap (this feed lagged, or events committed out of order): fill it.
                let missed =
                    replay_seq(&self.state.db, event.video_id, s, Some(event.seq)).await.map_err(|_| Stop::Done)?;
                for missed in &missed {
                    self.send(missed, false).await?;
                }
            }
            _ => {}
        }
        self.send(event, false).await
    }

    /// For the all-videos feed: someone else's video must still be listed now (a
    /// video made private, hidden or deleted since stops reaching strangers).
    async fn still_listed(&self, event: &DomainEvent) -> bool {
        let owner_or_moderator = self
            .viewer
            .as_ref()
            .is_some_and(|p| p.user_id == event.owner_id || has_permission(p.role, Permission::ModerateVideos));
        if owner_or_moderator {
            return true;
        }
        match crate::repo::videos::find(&self.state.db, event.video_id).await {
            Ok(Some(video)) => crate::repo::videos::can_list(self.viewer.as_ref(), &video),
            // When in doubt, a stranger gets nothing.
            _ => false,
        }
    }

    /// The video (of a one-video feed) is still readable by the subscriber.
    async fn still_allowed(&self, event: &DomainEvent) -> bool {
        if event.kind == EventKind::Deleted {
            return true; // the DELETED event itself is delivered; the stream then ends
        }
        let owner_or_moderator = self
            .viewer
            .as_ref()
            .is_some_and(|p| p.user_id == event.owner_id || has_permission(p.role, Permission::ModerateVideos));
        owner_or_moderator || event.visibility != Visibility::Private
    }

    /// Periodic re-check of the video's rights (made private, hidden, deleted).
    async fn recheck(&mut self) -> Result<(), Stop> {
        let Some(id) = self.video_id else { return Ok(()) };
        // One row per video for every subscription re-checking it (see `RecheckRows`).
        let max_age = Duration::from_millis(self.state.settings.graphql.ws_recheck_ms.max(50) / 2);
        match self.state.recheck_rows.get(&self.state.db, id, max_age).await {
            Ok(Some(video)) if can_read_by_id(self.viewer.as_ref(), &video) => {
                // A publish lost on the way (e.g. Redis down) must not leave the
                // client waiting forever: deliver stored events it has not seen. The
                // video row carries its last sequence number, so the outbox is read
                // only when something was missed.
                let after = self.sent_seq.get(&id).copied().unwrap_or(0);
                if video.event_seq <= after {
                    return Ok(());
                }
                let missed = replay_seq(&self.state.db, id, after, None).await.map_err(|_| Stop::Done)?;
                for event in &missed {
                    self.send(event, false).await?;
                }
                Ok(())
            }
            Ok(Some(video)) if video.deleted_at.is_some() && self.sent_seq.contains_key(&id) => {
                // Deleted: deliver the DELETED event if it was missed, then end.
                let after = self.sent_seq.get(&id).copied().unwrap_or(0);
                let missed = replay_seq(&self.state.db, id, after, None).await.map_err(|_| Stop::Done)?;
                for event in &missed {
                    self.send(event, false).await?;
                }
                Err(Stop::Done)
            }
            Ok(_) => Err(self.fail(AppError::not_found("video")).await),
            Err(err) => {
                // A database hiccup is not a reason to drop the subscriber.
                tracing::warn!(error = %err, "subscription re-check failed");
                Ok(())
            }
        }
    }

    /// The bus ran ahead of this feed: replay the stored events it missed.
    async fn resync(&mut self) -> Result<(), Stop> {
        metrics::counter!("reelhouse_subscriber_resyncs_total").increment(1);
        match self.video_id {
            Some(id) => {
                let after = self.sent_seq.get(&id).copied().unwrap_or(0);
                let missed = replay_seq(&self.state.db, id, after, None).await.map_err(|_| Stop::Done)?;
                for event in &missed {
                    self.send(event, false).await?;
                }
            }
            None => loop {
                let page = replay_after(&self.state.db, None, self.viewer.as_ref(), self.last_cursor)
                    .await
                    .map_err(|_| Stop::Done)?;
                if page.is_empty() {
                    break;
                }
                for event in &page {
                    self.last_cursor = self.last_cursor.max(event.cursor.unwrap_or(0));
                    let sent = self.sent_seq.get(&event.video_id).copied().unwrap_or(0);
                    if event.seq > sent {
                        self.send(event, false).await?;
                    }
                }
            },
        }
        Ok(())
    }

    async fn run(mut self, mut bus: broadcast::Receiver<BusMessage>) {
        let every = Duration::from_millis(self.state.settings.graphql.ws_recheck_ms.max(50));
        let mut recheck = tokio::time::interval(every);
        recheck.tick().await;
        loop {
            // Biased: queued bus messages go first, so the outbox check never
            // overtakes an event already on its way.
            let step = tokio::select! {
                biased;
                _ = self.out.closed() => Err(Stop::Done),
                message = bus.recv() => match message {
                    Ok(BusMessage::Video(event)) => self.live(&event).await,
                    Ok(BusMessage::Heartbeat(_) | BusMessage::JobLog(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        metrics::counter!("reelhouse_events_dropped_total").increment(missed);
                        self.resync().await
                    }
                    // The bus actor restarted: the client resubscribes with its cursor.
                    Err(broadcast::error::RecvError::Closed) => {
                        Err(self.fail(AppError::new(crate::error::ErrorCode::Unavailable, "event stream restarted; resubscribe with your last cursor")).await)
                    }
                },
                _ = recheck.tick() => self.recheck().await,
            };
            if step.is_err() {
                return;
            }
        }
    }
}

/// Counts live subscriptions in `reelhouse_subscribers` while a feed task runs.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!("reelhouse_subscribers").increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!("reelhouse_subscribers").decrement(1.0);
    }
}

/// The client's stream: async-graphql executes each event (fallback path), or, for a
/// shared subscription, nothing: its feed sends rendered frames to the session.
type EventStream = BoxStream<'static, async_graphql::Result<VideoEvent>>;

/// Subscribe to the bus, then start a feed task; returns the client's stream.
async fn start_feed(
    ctx: &Context<'_>,
    video_id: Option<Uuid>,
    after: Option<i64>,
    end_on_terminal: bool,
) -> Result<EventStream, AppError> {
    let state = ctx.data::<AppState>().map_err(|_| AppError::internal(anyhow::anyhow!("no app state")))?.clone();
    let viewer = viewer(ctx).cloned();
    let video = match video_id {
        Some(id) => Some(find_readable(&state.db, viewer.as_ref(), id).await?),
        None => None,
    };
    if let Some(after) = after {
        if crate::events::cursor_expired(&state.db, after).await.map_err(AppError::internal)? {
            return Err(AppError::new(
                crate::error::ErrorCode::CursorExpired,
                "events after this cursor are no longer kept; subscribe without `after` to start from a snapshot",
            ));
        }
    }
    let bus = state.hubs.event_bus.addr().send(Subscribe).await.map_err(|e| AppError::unavailable("event bus", e))?;
    let (out, stream): (Out, EventStream) = match ctx.data_opt::<SharedDelivery>().and_then(SharedDelivery::take) {
        Some(sink) => (Out::Frames(sink), futures::stream::empty().boxed()),
        None => {
            let (out, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
            (Out::Values(out), ReceiverStream::new(receiver).boxed())
        }
    };
    // A one-video feed resuming after a cursor has had everything up to it: without
    // this, the first live event (or a resync) would look like a gap back to seq 0
    // and replay the video's whole history.
    let mut sent_seq = HashMap::new();
    if let (Some(id), Some(after)) = (video_id, after) {
        sent_seq.insert(id, seq_at_cursor(&state.db, id, after).await?);
    }
    let mut feed = Feed {
        state: state.clone(),
        viewer,
        video_id,
        sent_seq,
        last_cursor: after.unwrap_or(0),
        out,
        end_on_terminal,
    };
    // First what is stored (after the cursor) or the snapshot; all read after the
    // bus subscription above, so the live part can only overlap, never gap.
    let mut first: Vec<(DomainEvent, bool)> = Vec::new();
    match (after, &video) {
        (Some(after), _) => {
            for event in replay_after(&state.db, video_id, feed.viewer.as_ref(), after).await? {
                first.push((event, false));
            }
        }
        (None, Some(video)) => first.push((snapshot(&state.db, video).await?, true)),
        (None, None) => {}
    }
    tokio::spawn(async move {
        let _connected = SubscriberGauge::new();
        let mut done = false;
        for (event, is_snapshot) in &first {
            if feed.send(event, *is_snapshot).await.is_err() {
                done = true;
                break;
            }
            // Already finished and nothing re-runs: the snapshot is the last word.
            if *is_snapshot && feed.end_on_terminal && is_terminal(event.kind) && event.job_id.is_none() {
                done = true;
                break;
            }
        }
        if !done {
            if after.is_some() {
                // More than one page may be stored after the cursor.
                if feed.resync().await.is_err() {
                    return;
                }
            }
            feed.run(bus).await;
        }
    });
    Ok(stream)
}

#[derive(Default)]
pub struct EventsSubscription;

#[Subscription]
impl EventsSubscription {
    /// Progress and state changes of one video, starting with a snapshot of where it
    /// stands; ends after READY, FAILED, CANCELLED or DELETED.
    async fn video_progress(
        &self,
        ctx: &Context<'_>,
        video_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<VideoEvent>>> {
        if let Some(one) = ctx.data_opt::<RenderOne>() {
            return Ok(one.stream());
        }
        let id = parse_id(&video_id).gql()?;
        start_feed(ctx, Some(id), None, true).await.gql()
    }

    /// Every event the caller may see (one video's with `videoId`), starting with a
    /// snapshot, or with the stored events after `after` (a cursor from an earlier
    /// event) so a reconnecting client misses nothing and sees nothing twice.
    async fn video_events(
        &self,
        ctx: &Context<'_>,
        video_id: Option<ID>,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<VideoEvent>>> {
        if let Some(one) = ctx.data_opt::<RenderOne>() {
            return Ok(one.stream());
        }
        let id = video_id.as_ref().map(parse_id).transpose().gql()?;
        let after = after.as_deref().map(parse_cursor).transpose().gql()?;
        start_feed(ctx, id, after, false).await.gql()
    }
}
