//! `serverInfo` and the `heartbeat` subscription: the smallest live features,
//! kept because they prove the wiring end to end.

use async_graphql::{Context, Enum, ErrorExtensions, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::config::Mode;
use crate::error::AppError;
use crate::events::bus::{BusMessage, Subscribe};
use crate::state::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ServerMode {
    /// SQLite, local disk, in-process bus and workers.
    Embedded,
    /// Shared services: PostgreSQL, Redis and/or S3.
    Distributed,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub mode: ServerMode,
    /// Identifies this server process among replicas.
    pub instance: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct ServerQuery;

#[Object]
impl ServerQuery {
    /// Version and deployment mode of the server answering.
    async fn server_info(&self, ctx: &Context<'_>) -> async_graphql::Result<ServerInfo> {
        let state = ctx.data::<AppState>()?;
        Ok(ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: match state.settings.mode() {
                Mode::Embedded => ServerMode::Embedded,
                Mode::Distributed => ServerMode::Distributed,
            },
            instance: state.instance_id.clone(),
            started_at: state.started_at,
        })
    }
}

/// One tick of the server's event bus.
#[derive(SimpleObject, Debug, Clone)]
pub struct Heartbeat {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub instance: String,
}

#[derive(Default)]
pub struct HeartbeatSubscription;

#[Subscription]
impl HeartbeatSubscription {
    /// A tick from the event bus every `server.heartbeat_interval_ms`.
    async fn heartbeat(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = Heartbeat>> {
        let state = ctx.data::<AppState>()?;
        let receiver = state
            .hubs
            .event_bus
            .addr()
            .send(Subscribe)
            .await
            .map_err(|e| AppError::unavailable("event bus", e).extend())?;
        // A lagging subscriber skips missed ticks rather than ending the stream.
        Ok(BroadcastStream::new(receiver).filter_map(|message| match message {
            Ok(BusMessage::Heartbeat(beat)) => Some(Heartbeat { seq: beat.seq, at: beat.at, instance: beat.instance }),
            Ok(BusMessage::Video(_) | BusMessage::JobLog(_)) | Err(_) => None,
        }))
    }
}
