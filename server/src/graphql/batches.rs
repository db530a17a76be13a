//! Batches over GraphQL: `transcodeBatch`, `batch`, `batches`, `cancelBatch` and the
//! `batchProgress` subscription. A batch is seen by whoever created it and by
//! admins; anyone else gets NOT_FOUND (null from `batch`).

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ErrorExtensions, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use entities::batch;
use futures::Stream;
use sea_orm::DatabaseConnection;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::auth::principal::Principal;
use crate::auth::roles::{has_permission, require_principal, AuthenticatedGuard, Permission};
use crate::error::{AppError, ErrorCode, GqlResultExt};
use crate::events::bus::{BusMessage, Subscribe};
use crate::graphql::jobs::{requested_formats, sees_all, OutputFormat, TranscodePreset};
use crate::graphql::paging;
use crate::graphql::videos::{list_filter, VideoFilter};
use crate::jobs::batches::{self, BatchProgress, BatchState};
use crate::state::AppState;

/// RUNNING while any of its jobs is queued or running; COMPLETED when all ended;
/// CANCELLED once `cancelBatch` was called (its running jobs may still be stopping).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum BatchStatus {
    Running,
    Completed,
    Cancelled,
}

impl From<BatchState> for BatchStatus {
    fn from(state: BatchState) -> Self {
        match state {
            BatchState::Running => BatchStatus::Running,
            BatchState::Completed => BatchStatus::Completed,
            BatchState::Cancelled => BatchStatus::Cancelled,
        }
    }
}

/// Aggregate progress of a batch.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
pub struct BatchProgressInfo {
    /// 0..=100: ended jobs count whole, running ones by their own percent.
    pub percent: f64,
    /// Seconds left at the batch's rate so far; 0 when every job ended, null before
    /// any progress.
    pub eta_seconds: Option<f64>,
}

/// A `transcodeBatch` request and where it stands.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: ID,
    pub status: BatchStatus,
    /// Videos (jobs) in the batch.
    pub total: i32,
    /// Jobs that succeeded.
    pub done: i32,
    /// Jobs that failed for good (FAILED or DEAD).
    pub failed: i32,
    /// Jobs cancelled (by `cancelBatch` or one by one).
    pub cancelled: i32,
    pub progress: BatchProgressInfo,
    /// LOW | MEDIUM | HIGH
    pub preset: String,
    pub formats: Vec<OutputFormat>,
    pub created_at: DateTime<Utc>,
}

impl Batch {
    fn of(row: &batch::Model, p: &BatchProgress) -> Self {
        let formats = row
            .formats
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| match n.as_str() {
                        Some("HLS") => Some(OutputFormat::Hls),
                        Some("MP4") => Some(OutputFormat::Mp4),
                        Some("WEBM") => Some(OutputFormat::Webm),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Batch {
            id: ID(row.id.to_string()),
            status: p.state.into(),
            total: p.total,
            done: p.done,
            failed: p.failed,
            cancelled: p.cancelled,
            progress: BatchProgressInfo { percent: p.percent, eta_seconds: p.eta_seconds },
            preset: row.preset.clone(),
            formats,
            created_at: row.created_at,
        }
    }
}

async fn load(db: &DatabaseConnection, row: &batch::Model) -> Result<(Batch, bool), AppError> {
    let jobs = crate::repo::batches::jobs_of(db, row.id).await?;
    let progress = batches::progress_of(row, &jobs, Utc::now());
    Ok((Batch::of(row, &progress), progress.finished))
}

fn can_see(principal: &Principal, row: &batch::Model) -> bool {
    sees_all(principal) || row.created_by == principal.user_id
}

/// The batch if `principal` may see it; NOT_FOUND otherwise (also for a malformed id).
async fn find_visible(db: &DatabaseConnection, principal: &Principal, id: &ID) -> Result<batch::Model, AppError> {
    let Ok(id) = Uuid::parse_str(id.as_str()) else { return Err(AppError::not_found("batch")) };
    match crate::repo::batches::find(db, id).await? {
        Some(row) if can_see(principal, &row) => Ok(row),
        _ => Err(AppError::not_found("batch")),
    }
}

#[derive(Default)]
pub struct BatchesQuery;

#[Object]
impl BatchesQuery {
    /// A batch the caller created (any batch for admins); null otherwise.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn batch(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Batch>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        match find_visible(&state.db, principal, &id).await {
            Ok(row) => Ok(Some(load(&state.db, &row).await.gql()?.0)),
            Err(err) if err.code() == ErrorCode::NotFound => Ok(None),
            Err(err) => Err(err.extend()),
        }
    }

    /// Batches, newest first: the caller's own (all of them for admins).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn batches(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Batch>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let page = paging::Page { first, after };
        let (limit, after_id) = (page.limit(), page.after_id().gql()?);
        let listing = crate::repo::batches::listing((!sees_all(principal)).then_some(principal.user_id));
        let (rows, has_next) =
            crate::repo::paging::by_uuid(&state.db, listing, batch::Column::Id, after_id, limit, true).await.gql()?;
        let mut connection = Connection::new(page.after.is_some(), has_next);
        for row in rows {
            let (node, _) = load(&state.db, &row).await.gql()?;
            connection.edges.push(Edge::new(row.id.to_string(), node));
        }
        Ok(connection)
    }
}

#[derive(Default)]
pub struct BatchesMutation;

#[Object]
impl BatchesMutation {
    /// Transcode every video matching `filter` that has a source and no transcode
    /// under way: the caller's own videos (any owner's for admins). More matches than
    /// `jobs.max_batch_videos`, or none that can be transcoded: BAD_USER_INPUT. The
    /// jobs run below uploads' priority (`jobs.batch_priority`).
    #[graphql(guard = "AuthenticatedGuard")]
    async fn transcode_batch(
        &self,
        ctx: &Context<'_>,
        filter: VideoFilter,
        preset: Option<TranscodePreset>,
        formats: Option<Vec<OutputFormat>>,
    ) -> async_graphql::Result<Batch> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        if !has_permission(principal.role, Permission::WriteOwnVideos) {
            return Err(AppError::forbidden("your role does not allow this").extend());
        }
        state.limiter.enforce(crate::limits::Policy::Transcode, principal.user_id.to_string(), 1).await.gql()?;
        let preset = preset.unwrap_or(TranscodePreset::Medium).as_str();
        let formats = requested_formats(state, formats).gql()?;
        let max = state.settings.jobs.max_batch_videos;
        let nothing = || AppError::bad_input("no video you may transcode matches the filter").extend();
        let Some(mut filter) = list_filter(filter, Some(principal)).gql()? else { return Err(nothing()) };
        if !sees_all(principal) {
            match filter.owner_id {
                Some(owner) if owner != principal.user_id => return Err(nothing()),
                _ => filter.owner_id = Some(principal.user_id),
            }
        }
        let txn = crate::db::begin_write(&state.db).await.gql()?;
        let matched =
            crate::repo::videos::list_visible(&txn, Some(principal), &filter, None, u64::from(max) + 1).await.gql()?;
        if matched.len() > max as usize {
            return Err(AppError::bad_input(format!(
                "the filter matches more than {max} videos (jobs.max_batch_videos): narrow it"
            ))
            .extend());
        }
        let mut videos = Vec::with_capacity(matched.len());
        for video in matched {
            if batches::transcodable(&txn, &video).await.gql()? {
                videos.push(video);
            }
        }
        if videos.is_empty() {
            return Err(nothing());
        }
        let new = batches::NewBatch {
            created_by: principal.user_id,
            preset: preset.to_string(),
            payload: crate::jobs::transcode_payload(preset, &formats),
            formats: serde_json::to_value(&formats).unwrap_or_default(),
            priority: state.settings.jobs.batch_priority,
            max_attempts: state.settings.jobs.max_attempts,
        };
        let (row, events) = batches::create(&txn, new, videos).await.gql()?;
        txn.commit().await.gql()?;
        state.publisher().publish_all(events);
        tracing::info!(batch = %row.id, total = row.total, "batch enqueued");
        Ok(load(&state.db, &row).await.gql()?.0)
    }

    /// Cancel a batch: its queued jobs are CANCELLED at once, its running ones stop
    /// within a second and are CANCELLED too (their videos keep the outputs they had).
    /// Jobs that already ended stay as they are. Idempotent.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn cancel_batch(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Batch> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let row = find_visible(&state.db, principal, &id).await.gql()?;
        let unfinished = crate::repo::batches::mark_cancelled(&state.db, row.id).await.gql()?;
        let publisher = state.publisher();
        for job in unfinished {
            match crate::jobs::queue::cancel(&state.db, &publisher, &state.settings.jobs, job.id).await {
                // Finished meanwhile: nothing to cancel.
                Ok(_) | Err(crate::jobs::queue::QueueError::Conflict(_)) => {}
                Err(err) => return Err(AppError::from(err).extend()),
            }
        }
        let row = crate::repo::batches::find(&state.db, row.id)
            .await
            .gql()?
            .ok_or_else(|| AppError::not_found("batch").extend())?;
        Ok(load(&state.db, &row).await.gql()?.0)
    }
}

/// Outstanding sends of one subscription.
const BUFFER: usize = 16;

#[derive(Default)]
pub struct BatchesSubscription;

#[Subscription]
impl BatchesSubscription {
    /// A batch's aggregate: first where it stands, then again whenever one of its
    /// videos reports (progress or a state change) or the bus ticks, when it changed;
    /// ends once every job of the batch has ended. NOT_FOUND for a batch the caller
    /// may not see.
    async fn batch_progress(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Batch>>> {
        let state = ctx.data::<AppState>()?.clone();
        let principal = require_principal(ctx).gql()?;
        let row = find_visible(&state.db, principal, &id).await.gql()?;
        // Subscribed before the first read, so nothing between them is missed.
        let bus = state
            .hubs
            .event_bus
            .addr()
            .send(Subscribe)
            .await
            .map_err(|e| AppError::unavailable("event bus", e).extend())?;
        let videos: std::collections::HashSet<Uuid> = crate::repo::batches::jobs_of(&state.db, row.id)
            .await
            .gql()?
            .into_iter()
            .filter_map(|j| j.video_id)
            .collect();
        let (out, receiver) = mpsc::channel(BUFFER);
        tokio::spawn(follow_batch(state, row, videos, bus, out));
        Ok(ReceiverStream::new(receiver))
    }
}

async fn follow_batch(
    state: AppState,
    row: batch::Model,
    videos: std::collections::HashSet<Uuid>,
    mut bus: broadcast::Receiver<BusMessage>,
    out: mpsc::Sender<async_graphql::Result<Batch>>,
) {
    let mut last: Option<Batch> = None;
    loop {
        let current = match crate::repo::batches::find(&state.db, row.id).await {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(err) => {
                let _ = out.send(Err(AppError::from(err).extend())).await;
                return;
            }
        };
        let (batch, finished) = match load(&state.db, &current).await {
            Ok(loaded) => loaded,
            Err(err) => {
                let _ = out.send(Err(err.extend())).await;
                return;
            }
        };
        // The ETA moves with the clock: only a change of the counts, percent or
        // status is news.
        let news = last.as_ref().is_none_or(|l| {
            (l.status, l.done, l.failed, l.cancelled) != (batch.status, batch.done, batch.failed, batch.cancelled)
                || l.progress.percent != batch.progress.percent
        });
        if news {
            if out.send(Ok(batch.clone())).await.is_err() {
                return;
            }
            last = Some(batch);
        }
        if finished {
            return;
        }
        // Wait for a video of this batch to report, or a heartbeat of the bus.
        loop {
            match bus.recv().await {
                Ok(BusMessage::Video(event)) if videos.contains(&event.video_id) => break,
                Ok(BusMessage::Heartbeat(_)) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
            if out.is_closed() {
                return;
            }
        }
    }
}
