//! `systemStatus` (admins): each dependency's circuit breaker, the job queue and
//! the workers, for operators to see at a glance which dependency is failing.

use async_graphql::{Context, Enum, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entities::{worker, JobStatus};
use sea_orm::{EntityTrait, QueryOrder};

use super::jobs::Worker;
use crate::auth::roles::{Permission, PermissionGuard};
use crate::error::GqlResultExt;
use crate::startup::AppState;

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
}

#[derive(SimpleObject, Debug, Clone)]
pub struct SystemStatus {
    /// This process's view of each dependency.
    pub dependencies: Vec<DependencyStatus>,
    pub queue: QueueStatus,
    pub workers: Vec<Worker>,
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
        let reading = crate::jobs::metrics::read(&state.db, std::time::Duration::from_secs(60)).await.gql()?;
        let count = |status: JobStatus| {
            reading.jobs.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
        };
        let queue = QueueStatus {
            queued: count(JobStatus::Queued),
            running: count(JobStatus::Running),
            dead: count(JobStatus::Dead),
        };
        let workers = worker::Entity::find()
            .order_by_asc(worker::Column::StartedAt)
            .all(&state.db)
            .await
            .gql()?
            .into_iter()
            .map(Worker::from)
            .collect();
        Ok(SystemStatus { dependencies, queue, workers })
    }
}
