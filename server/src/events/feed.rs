//! The engine behind the event subscriptions (`videoProgress`, `videoEvents`): one
//! feed task per subscription, sending every stored event it may see once, in order,
//! to a sink the transport provides (`graphql::events`).
//!
//! Each feed subscribes to the bus *before* it reads the database, so nothing
//! published in between is missed, then:
//! - starts with a snapshot of the video's current state (`snapshot: true`), or, with
//!   `after: cursor`, replays the stored events after that cursor from the outbox;
//! - forwards live events, dropping stored ones it has already sent (by per-video
//!   `seq`, so no duplicates) and filling a gap from the outbox when it sees one (so
//!   no losses);
//! - runs as its own task, so a slow client never slows the bus. When the bus runs
//!   ahead of a feed (`Lagged`), the stored events it missed are replayed from the
//!   outbox; only PROGRESS events (never stored) can be skipped, and the next
//!   PROGRESS supersedes them anyway;
//! - queues into a bounded [`SubscriberQueue`]: a subscriber that stops reading
//!   for `graphql.ws_slow_consumer_ms` while its queue is full gets what was queued,
//!   then a `SLOW_CONSUMER` error with `extensions.resumeAfter` (the cursor of the
//!   newest stored event it was given), and the feed ends. Never silent loss, never
//!   unbounded memory: the client resumes with `videoEvents(after:)`.
//!
//! A stored event whose publish was lost entirely (Redis down at that moment) is
//! delivered by the periodic re-check, which also looks in the outbox.
//!
//! Authorization: at subscribe time (a video the caller may not read is NOT_FOUND,
//! with zero events), on every event, at once when a change of the video is
//! announced (`access::rechecks`: made private, hidden; on any instance), and every
//! `graphql.ws_recheck_ms` as the backstop for an announcement lost on the way. The
//! video made private, hidden or deleted ends the stream with an error. The
//! WebSocket session closes the socket on token expiry, revocation or a new role.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use entities::{video, VideoStatus as DbVideoStatus, Visibility};
use futures::stream::BoxStream;
use futures::StreamExt;
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::access::rechecks::{RecheckRows, VideoChange};
use crate::actors::Hub;
use crate::domain::event::{DomainEvent, EventDetail, EventKind, ProgressInfo};
use crate::error::{AppError, ErrorCode};
use crate::events::bus::{BusMessage, EventBus, Subscribe};
use crate::identity::{has_permission, Permission, Principal};
use crate::repo::outbox::{self, ReplayScope};
use crate::repo::videos::{can_read_by_id, find_readable};

/// Stored events replayed per outbox query.
const REPLAY_PAGE: u64 = 200;

/// Who an event is rendered for: its owner or a moderator, or anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisibilityClass {
    OwnerOrModerator = 0,
    Everyone = 1,
}

/// Why a sink did not take an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The subscriber went away.
    Closed,
    /// Its queue stayed full for the whole patience (`graphql.ws_slow_consumer_ms`).
    Slow,
}

/// Where a feed's events go: the transport renders them for its subscriber.
pub trait FeedSink: Send + Sync + 'static {
    /// Queue one event (`snapshot`: the first, describing where the video stands),
    /// rendered for `class`; while the subscriber's queue is full, waits at most
    /// `patience` for room.
    fn send(
        &self,
        event: &DomainEvent,
        snapshot: bool,
        class: VisibilityClass,
        patience: Duration,
    ) -> impl Future<Output = Result<(), Undelivered>> + Send;
    /// End the stream with `error`, after everything already queued; never waits
    /// for room in the queue.
    fn fail(&self, error: AppError) -> impl Future<Output = ()> + Send;
    /// Resolves when the subscriber has gone away.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// A subscriber's bounded queue and its last word: the subscriber's stream yields
/// what was queued, then the last word (if one was said), then ends, once the feed
/// has dropped its end. So an error ending the stream never waits for room and never
/// overtakes an event queued before it, and memory per subscriber stays bounded.
pub struct SubscriberQueue<T> {
    items: mpsc::Sender<T>,
    last: std::sync::Mutex<Option<oneshot::Sender<T>>>,
}

impl<T: Send + 'static> SubscriberQueue<T> {
    /// A queue of `capacity` items and the subscriber's stream.
    pub fn bounded(capacity: usize) -> (Self, BoxStream<'static, T>) {
        let (items, queued) = mpsc::channel(capacity);
        let (last, last_word) = oneshot::channel();
        let stream = ReceiverStream::new(queued)
            .chain(futures::stream::once(last_word).filter_map(|word| async move { word.ok() }))
            .boxed();
        (Self { items, last: std::sync::Mutex::new(Some(last)) }, stream)
    }

    /// Queue `item`: at once when there is room, else waiting at most `patience`.
    pub async fn push(&self, item: T, patience: Duration) -> Result<(), Undelivered> {
        match self.items.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Undelivered::Closed),
            Err(TrySendError::Full(item)) => match self.items.send_timeout(item, patience).await {
                Ok(()) => Ok(()),
                Err(SendTimeoutError::Closed(_)) => Err(Undelivered::Closed),
                Err(SendTimeoutError::Timeout(_)) => Err(Undelivered::Slow),
            },
        }
    }

    /// The stream's last item, after everything queued (once; later words are dropped).
    pub fn last_word(&self, item: T) {
        if let Some(last) = self.last.lock().ok().and_then(|mut last| last.take()) {
            let _ = last.send(item);
        }
    }

    /// Resolves when the subscriber has gone away.
    pub async fn closed(&self) {
        self.items.closed().await
    }
}

/// What a feed needs from the process: the database, the bus, the shared
/// re-check rows, the re-check period (`graphql.ws_recheck_ms`) and how long a
/// subscriber's queue may stay full (`graphql.ws_slow_consumer_ms`).
#[derive(Clone)]
pub struct FeedContext {
    pub db: DatabaseConnection,
    pub bus: Hub<EventBus>,
    pub recheck_rows: RecheckRows,
    pub recheck_every: Duration,
    pub slow_consumer_after: Duration,
}

/// What a subscriber asks for.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    pub viewer: Option<Principal>,
    /// `Some`: one video's events; `None`: every event the viewer may see.
    pub video_id: Option<Uuid>,
    /// Resume after this cursor instead of starting with a snapshot.
    pub after: Option<i64>,
    /// End the stream after a READY/FAILED/CANCELLED/DELETED (`videoProgress`).
    pub end_on_terminal: bool,
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
    owner_or_moderator(viewer, event) || event.visibility == Visibility::Public
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
    let detail =
        EventDetail { error: video.error.clone(), rendition: None, job_id: active.as_ref().map(|j| j.id), progress };
    let mut event = DomainEvent::new(video, kind, detail, seq);
    event.cursor = cursor;
    Ok(event)
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
struct Feed<S> {
    cx: FeedContext,
    viewer: Option<Principal>,
    /// `Some` for a one-video feed.
    video_id: Option<Uuid>,
    /// Last stored seq sent, per video.
    sent_seq: HashMap<Uuid, i64>,
    /// Highest global cursor sent (all-videos feed resumes from here after a lag).
    last_cursor: i64,
    out: S,
    /// End the stream after a READY/FAILED/CANCELLED/DELETED (videoProgress).
    end_on_terminal: bool,
}

/// Why a feed stops.
enum Stop {
    /// The client went away or the stream ended normally.
    Done,
}

impl<S: FeedSink> Feed<S> {
    async fn send(&mut self, event: &DomainEvent, snapshot: bool) -> Result<(), Stop> {
        let class = if owner_or_moderator(self.viewer.as_ref(), event) {
            VisibilityClass::OwnerOrModerator
        } else {
            VisibilityClass::Everyone
        };
        match self.out.send(event, snapshot, class, self.cx.slow_consumer_after).await {
            Ok(()) => {}
            Err(Undelivered::Closed) => return Err(Stop::Done),
            Err(Undelivered::Slow) => return Err(self.slow_consumer().await),
        }
        // Only what is queued counts as sent: the resume cursor of a slow consumer
        // must not pass an event it never got.
        if let Some(cursor) = event.cursor {
            self.last_cursor = self.last_cursor.max(cursor);
        }
        if event.kind != EventKind::Progress || snapshot {
            let seq = self.sent_seq.entry(event.video_id).or_insert(0);
            *seq = (*seq).max(event.seq);
        }
        metrics::counter!("reelhouse_events_delivered_total", "kind" => event.kind.as_str()).increment(1);
        if self.end_on_terminal && !snapshot && is_terminal(event.kind) {
            return Err(Stop::Done);
        }
        Ok(())
    }

    async fn fail(&mut self, error: AppError) -> Stop {
        self.out.fail(error).await;
        Stop::Done
    }

    /// The subscriber's queue stayed full for `slow_consumer_after`: end the stream
    /// with `SLOW_CONSUMER` and the cursor of the newest stored event it was given,
    /// so it resumes with `videoEvents(after:)` with no gap (null: it had none yet,
    /// and subscribes again for a snapshot). The feed's memory goes with it.
    async fn slow_consumer(&mut self) -> Stop {
        metrics::counter!("reelhouse_slow_consumers_total").increment(1);
        let resume_after = (self.last_cursor > 0).then_some(self.last_cursor);
        let error = AppError::new(
            ErrorCode::SlowConsumer,
            format!(
                "events were not read for {} ms; resume with videoEvents(after: extensions.resumeAfter)",
                self.cx.slow_consumer_after.as_millis()
            ),
        )
        .with_resume_after(resume_after);
        self.fail(error).await
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
                    replay_seq(&self.cx.db, event.video_id, s, Some(event.seq)).await.map_err(|_| Stop::Done)?;
                for missed in &missed {
                    self.send(missed, false).await?;
                }
            }
            _ => {}
        }
        self.send(event, false).await
    }

    /// For the all-videos feed: someone else's video must still be listed now (a
    /// video made private, hidden or deleted since stops reaching strangers). The
    /// row is shared by every feed asking (`RecheckRows`): forgotten on each stored
    /// event and announced change of the video, else at most half a period old.
    async fn still_listed(&self, event: &DomainEvent) -> bool {
        if owner_or_moderator(self.viewer.as_ref(), event) {
            return true;
        }
        match self.row(event.video_id, self.half_period_ago()).await {
            Ok(Some(video)) => crate::repo::videos::can_list(self.viewer.as_ref(), &video),
            // When in doubt, a stranger gets nothing.
            _ => false,
        }
    }

    /// How fresh a row must be when no change forces a read: half a re-check period.
    fn half_period_ago(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.cx.recheck_every / 2).unwrap_or(now)
    }

    /// The video's row as read at or after `not_before`, shared (`RecheckRows`).
    async fn row(&self, id: Uuid, not_before: Instant) -> Result<Option<video::Model>, sea_orm::DbErr> {
        self.cx.recheck_rows.get(id, not_before, || crate::repo::videos::find(&self.cx.db, id)).await
    }

    /// The video (of a one-video feed) is still readable by the subscriber.
    async fn still_allowed(&self, event: &DomainEvent) -> bool {
        if event.kind == EventKind::Deleted {
            return true; // the DELETED event itself is delivered; the stream then ends
        }
        owner_or_moderator(self.viewer.as_ref(), event) || event.visibility != Visibility::Private
    }

    /// Re-check the video's rights (made private, hidden, deleted) against a row
    /// read at or after `not_before`: half a period ago for the periodic re-check,
    /// the moment of an announced change for the re-check it pushes.
    async fn recheck(&mut self, not_before: Instant) -> Result<(), Stop> {
        let Some(id) = self.video_id else { return Ok(()) };
        // One read per video for every subscription re-checking it (see `RecheckRows`).
        match self.row(id, not_before).await {
            Ok(Some(video)) if can_read_by_id(self.viewer.as_ref(), &video) => {
                // A publish lost on the way (e.g. Redis down) must not leave the
                // client waiting forever: deliver stored events it has not seen. The
                // video row carries its last sequence number, so the outbox is read
                // only when something was missed.
                let after = self.sent_seq.get(&id).copied().unwrap_or(0);
                if video.event_seq <= after {
                    return Ok(());
                }
                let missed = replay_seq(&self.cx.db, id, after, None).await.map_err(|_| Stop::Done)?;
                for event in &missed {
                    self.send(event, false).await?;
                }
                Ok(())
            }
            Ok(Some(video)) if video.deleted_at.is_some() && self.sent_seq.contains_key(&id) => {
                // Deleted: deliver the DELETED event if it was missed, then end.
                let after = self.sent_seq.get(&id).copied().unwrap_or(0);
                let missed = replay_seq(&self.cx.db, id, after, None).await.map_err(|_| Stop::Done)?;
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
                let missed = replay_seq(&self.cx.db, id, after, None).await.map_err(|_| Stop::Done)?;
                for event in &missed {
                    self.send(event, false).await?;
                }
            }
            None => loop {
                let page = replay_after(&self.cx.db, None, self.viewer.as_ref(), self.last_cursor)
                    .await
                    .map_err(|_| Stop::Done)?;
                if page.is_empty() {
                    break;
                }
                for event in &page {
                    let sent = self.sent_seq.get(&event.video_id).copied().unwrap_or(0);
                    if event.seq > sent {
                        // Moves `last_cursor` once the event is queued.
                        self.send(event, false).await?;
                    } else {
                        self.last_cursor = self.last_cursor.max(event.cursor.unwrap_or(0));
                    }
                }
            },
        }
        Ok(())
    }

    /// A change was announced for some video: re-check at once if it is this feed's.
    async fn changed(&mut self, change: Result<VideoChange, broadcast::error::RecvError>) -> Result<(), Stop> {
        match change {
            Ok((id, at)) if Some(id) == self.video_id => self.recheck(at).await,
            Ok(_) => Ok(()),
            // Some notices were missed: one of them may have been this video's.
            Err(broadcast::error::RecvError::Lagged(_)) => self.recheck(Instant::now()).await,
            Err(broadcast::error::RecvError::Closed) => Ok(()),
        }
    }

    async fn run(
        mut self,
        mut bus: broadcast::Receiver<BusMessage>,
        mut changes: Option<broadcast::Receiver<VideoChange>>,
    ) {
        let mut recheck = tokio::time::interval(self.cx.recheck_every);
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
                        Err(self.fail(AppError::new(ErrorCode::Unavailable, "event stream restarted; resubscribe with your last cursor")).await)
                    }
                },
                change = next_change(&mut changes) => {
                    if matches!(change, Err(broadcast::error::RecvError::Closed)) {
                        // Nobody can announce a change any more (the process is ending):
                        // stop listening rather than wake on every poll; the periodic
                        // re-check goes on.
                        changes = None;
                        Ok(())
                    } else {
                        self.changed(change).await
                    }
                }
                _ = recheck.tick() => self.recheck(self.half_period_ago()).await,
            };
            if step.is_err() {
                return;
            }
        }
    }
}

/// The next change notice, or never (an all-videos feed checks per event instead).
async fn next_change(
    changes: &mut Option<broadcast::Receiver<VideoChange>>,
) -> Result<VideoChange, broadcast::error::RecvError> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
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

/// Subscribe to the bus, then start the feed task: its events go to the sink
/// `sink` makes (called once the request is known to be allowed and the bus
/// subscription is in place).
pub async fn start<S: FeedSink>(
    cx: FeedContext,
    request: FeedRequest,
    sink: impl FnOnce() -> S,
) -> Result<(), AppError> {
    let FeedRequest { viewer, video_id, after, end_on_terminal } = request;
    let video = match video_id {
        Some(id) => Some(find_readable(&cx.db, viewer.as_ref(), id).await?),
        None => None,
    };
    if let Some(after) = after {
        if outbox::cursor_expired(&cx.db, after).await.map_err(AppError::internal)? {
            return Err(AppError::new(
                ErrorCode::CursorExpired,
                "events after this cursor are no longer kept; subscribe without `after` to start from a snapshot",
            ));
        }
    }
    let bus = cx.bus.addr().send(Subscribe).await.map_err(|e| AppError::unavailable("event bus", e))?;
    // Like the bus, before anything is read: a change announced from here on is heard.
    let changes = video_id.map(|_| cx.recheck_rows.changes());
    let out = sink();
    // A one-video feed resuming after a cursor has had everything up to it: without
    // this, the first live event (or a resync) would look like a gap back to seq 0
    // and replay the video's whole history.
    let mut sent_seq = HashMap::new();
    if let (Some(id), Some(after)) = (video_id, after) {
        sent_seq.insert(id, seq_at_cursor(&cx.db, id, after).await?);
    }
    let mut feed = Feed { cx, viewer, video_id, sent_seq, last_cursor: after.unwrap_or(0), out, end_on_terminal };
    // First what is stored (after the cursor) or the snapshot; all read after the
    // bus subscription above, so the live part can only overlap, never gap.
    let mut first: Vec<(DomainEvent, bool)> = Vec::new();
    match (after, &video) {
        (Some(after), _) => {
            for event in replay_after(&feed.cx.db, video_id, feed.viewer.as_ref(), after).await? {
                first.push((event, false));
            }
        }
        (None, Some(video)) => first.push((snapshot(&feed.cx.db, video).await?, true)),
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
            feed.run(bus, changes).await;
        }
    });
    Ok(())
}
