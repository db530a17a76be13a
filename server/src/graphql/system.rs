//! `systemStatus` (admins): each dependency's circuit breaker, the job queue and
//! the workers, for operators to see at a glance which dependency is failing.

use async_graphql::{Context, Enum, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entities::{worker, JobStatus};

use super::jobs::Worker;
use crate::auth::roles::{Permission, PermissionGuard};
use crate::error::GqlResultExt;
use crate::state::AppState;

/// A circuit breaker's state.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once (`UNAVAILABLE` with `Retry-After`) until the open time ends.
    Open,
    /// A few probe calls go through; the first success closes the breaker.
    HalfOpen,
}

impl From<crate::breaker::BreakerState> for BreakerState {
    fn from(state: crate::breaker::BreakerState) -> Self {
        match state {
            crate::breaker::BreakerState::Closed => BreakerState::Closed,
            crate::breaker::BreakerState::Open => BreakerState::Open,
            crate::breaker::BreakerState::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// One dependency behind a circuit breaker: `database`, `redis`, `storage`, or a
/// webhook host as `webhook:host:port`.
#[derive(SimpleObject, Debug, Clone)]
pub struct DependencyStatus {
    pub name: String,
    pub state: BreakerState,
    /// Consecutive failures counted (a success resets it).
    pub failures: i32,
    /// A short category of the last failure (`connection refused`, `timed out`,
    /// `server error`, ...); never a host or an error text.
    pub last_error: Option<String>,
    /// When the breaker last changed state (its start, if never).
    pub changed_at: DateTime<Utc>,
}

/// Jobs waiting, running and dead (given up after their attempts).
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct QueueStatus {
    pub queued: i32,
    pub running: i32,
    pub dead: i32,
    /// When these counts were read from the database. Older than the request when
    /// the database cannot be reached now (the last successful read is shown);
    /// null when this process never read them.
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct SystemStatus {
    /// This process's view of each dependency.
    pub dependencies: Vec<DependencyStatus>,
    pub queue: QueueStatus,
    pub workers: Vec<Worker>,
    /// When `workers` was read from the database (as `queue.asOf`).
    pub workers_as_of: Option<DateTime<Utc>>,
}

/// The last queue counts and workers this process read, shown while the database
/// cannot be reached (`systemStatus` must answer during an outage).
#[derive(Clone, Default)]
pub struct LastStatus {
    inner: std::sync::Arc<std::sync::Mutex<LastReading>>,
}

/// What [`LastStatus`] holds.
#[derive(Default)]
struct LastReading {
    queue: Option<QueueStatus>,
    workers: Option<(Vec<worker::Model>, DateTime<Utc>)>,
}

impl LastStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, LastReading> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A read that may fall back on the last one: an unreachable database (or its
/// open breaker) is `None`, counted against the breaker; any other error is ours.
async fn read_or_outage<T, F>(open: bool, read: F) -> async_graphql::Result<Option<T>>
where
    F: std::future::Future<Output = Result<T, sea_orm::DbErr>>,
{
    if open {
        return Ok(None);
    }
    match read.await {
        Ok(value) => Ok(Some(value)),
        Err(err) if crate::breaker::is_database_unreachable(&err) => {
            crate::breaker::note_database_error(&err);
            tracing::warn!(error = %err, "systemStatus: the database did not answer; showing the last reading");
            Ok(None)
        }
        Err(err) => Err(err).gql(),
    }
}

#[derive(Default)]
pub struct SystemQuery;

#[Object]
impl SystemQuery {
    /// Dependencies (circuit breakers), the job queue and the workers. Admins only.
    #[graphql(guard = "PermissionGuard(Permission::ManageUsers)")]
    async fn system_status(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemStatus> {
        let state = ctx.data::<AppState>()?;
        let dependencies = state
            .breakers
            .snapshot()
            .into_iter()
            .map(|b| DependencyStatus {
                name: b.name,
                state: b.state.into(),
                failures: i32::try_from(b.failures).unwrap_or(i32::MAX),
                last_error: b.last_error.map(str::to_string),
                changed_at: b.changed_at,
            })
            .collect();
        // While the `database` breaker is open nothing is asked of it.
        let open = state.breakers.database.state() == crate::breaker::BreakerState::Open;
        let last = ctx.data_unchecked::<LastStatus>();
        let reading =
            read_or_outage(open, crate::jobs::metrics::read(&state.db, std::time::Duration::from_secs(60))).await?;
        let queue = match reading {
            Some(reading) => {
                let count = |status: JobStatus| {
                    reading
                        .jobs
                        .iter()
                        .find(|(s, _)| *s == status)
                        .map_or(0, |(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
                };
                let queue = QueueStatus {
                    queued: count(JobStatus::Queued),
                    running: count(JobStatus::Running),
                    dead: count(JobStatus::Dead),
                    as_of: Some(Utc::now()),
                };
                last.lock().queue = Some(queue.clone());
                queue
            }
            None => last.lock().queue.clone().unwrap_or_default(),
        };
        let read_workers = crate::repo::workers::list(&state.db);
        let (workers, workers_as_of) = match read_or_outage(open, read_workers).await? {
            Some(rows) => {
                let now = Utc::now();
                last.lock().workers = Some((rows.clone(), now));
                (rows, Some(now))
            }
            None => match last.lock().workers.clone() {
                Some((rows, at)) => (rows, Some(at)),
                None => (Vec::new(), None),
            },
        };
        let workers = workers.into_iter().map(Worker::from).collect();
        Ok(SystemStatus { dependencies, queue, workers, workers_as_of })
    }
}
