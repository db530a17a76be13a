//! Live events in GraphQL: `videoProgress(videoId)` and `videoEvents(videoId?, after?)`.
//!
//! The feeds themselves (snapshot or replay, live events without duplicates or
//! gaps, permission re-checks) are `events::feed`'s; this module parses the
//! arguments and gives each feed a sink: async-graphql's stream of `VideoEvent`
//! values (executed and serialised per subscriber), or, for a subscription the
//! WebSocket session serves from shared frames, a `FrameSink` (`shared_frames`).

use async_graphql::{Context, ErrorExtensions, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::Stream;
use futures::StreamExt;
use uuid::Uuid;

use crate::error::AppError;
use crate::error::GqlResultExt;
use crate::events::feed::{self, FeedRequest, FeedSink, SubscriberQueue, Undelivered, VisibilityClass};
use crate::events::{DomainEvent, EventKind};
use crate::graphql::progress::Progress;
use crate::graphql::shared_frames::{FrameSink, RenderOne, SharedDelivery};
use crate::graphql::videos::{viewer, VideoStatus};
use crate::state::AppState;

/// Events buffered per subscriber before it counts as lagging.
pub(crate) const SUBSCRIBER_BUFFER: usize = 64;

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

/// Where a feed's events go.
enum Out {
    /// To async-graphql, which executes and serialises each for this subscriber.
    Values(SubscriberQueue<async_graphql::Result<VideoEvent>>),
    /// As frames rendered once per key and visibility class (`shared_frames`).
    Frames(FrameSink),
}

impl FeedSink for Out {
    async fn send(
        &self,
        event: &DomainEvent,
        snapshot: bool,
        class: VisibilityClass,
        patience: std::time::Duration,
    ) -> Result<(), Undelivered> {
        match self {
            Out::Values(out) => {
                metrics::counter!("reelhouse_event_renders_total", "path" => "fallback").increment(1);
                out.push(Ok(VideoEvent::from_domain(event, snapshot)), patience).await
            }
            Out::Frames(sink) => sink.send_event(event, snapshot, class, patience).await,
        }
    }

    async fn fail(&self, error: AppError) {
        match self {
            Out::Values(out) => out.last_word(Err(error.extend())),
            Out::Frames(sink) => sink.send_error(error.extend()).await,
        }
    }

    async fn closed(&self) {
        match self {
            Out::Values(out) => out.closed().await,
            Out::Frames(sink) => sink.closed().await,
        }
    }
}

/// The client's stream: async-graphql executes each event (fallback path), or, for a
/// shared subscription, nothing: its feed sends rendered frames to the session.
type EventStream = BoxStream<'static, async_graphql::Result<VideoEvent>>;

/// Start a feed for this subscription; returns the client's stream.
async fn start_feed(
    ctx: &Context<'_>,
    video_id: Option<Uuid>,
    after: Option<i64>,
    end_on_terminal: bool,
) -> Result<EventStream, AppError> {
    let state = ctx.data::<AppState>().map_err(|_| AppError::internal(anyhow::anyhow!("no app state")))?;
    let request = FeedRequest { viewer: viewer(ctx).cloned(), video_id, after, end_on_terminal };
    let mut values = None;
    feed::start(state.feed_context(), request, || {
        match ctx.data_opt::<SharedDelivery>().and_then(SharedDelivery::take) {
            Some(sink) => Out::Frames(sink),
            None => {
                let (out, stream) = SubscriberQueue::bounded(SUBSCRIBER_BUFFER);
                values = Some(stream);
                Out::Values(out)
            }
        }
    })
    .await?;
    Ok(values.unwrap_or_else(|| futures::stream::empty().boxed()))
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
    /// event) so a reconnecting client misses nothing and sees nothing twice. A
    /// subscriber that stops reading ends with SLOW_CONSUMER; its
    /// `extensions.resumeAfter` is the cursor to resume after.
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
