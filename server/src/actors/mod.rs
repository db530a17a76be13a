//! Actors: each owns one piece of state that must have one owner at a time.

pub mod event_bus;
pub mod rate_limit;
pub mod supervise;
pub mod supervisor;
pub mod upload_session;

use std::sync::Arc;
use std::time::Duration;

use crate::config::rate_limit::RateLimitSettings;
use crate::redis_client::RedisHandle;

pub use event_bus::EventBus;
pub use rate_limit::RateLimiter;
pub use supervise::{Backoff, LoopStatus};
pub use supervisor::{DeathNotice, Hub, Supervisor};
pub use upload_session::UploadSessions;

/// The addresses of the hub actors, shared with every HTTP worker through `AppState`.
#[derive(Clone)]
pub struct Hubs {
    pub supervisor: Supervisor,
    pub event_bus: Hub<EventBus>,
    pub rate_limiter: Hub<RateLimiter>,
    pub upload_sessions: Hub<UploadSessions>,
}

impl Hubs {
    /// Start every hub once. Call inside the actix system, outside `HttpServer::new`.
    pub fn start(
        instance: &str,
        heartbeat_every: Duration,
        rate_limits: &RateLimitSettings,
        redis: Option<Arc<RedisHandle>>,
    ) -> Self {
        let supervisor = Supervisor::start();
        let event_bus = start_event_bus(&supervisor, instance, heartbeat_every);
        let rate_limits = rate_limits.clone();
        let rate_limiter =
            supervisor.spawn("rate_limiter", move |death| RateLimiter::new(&rate_limits, redis.clone(), death));
        let upload_sessions = supervisor.spawn("upload_sessions", UploadSessions::new);
        Self { supervisor, event_bus, rate_limiter, upload_sessions }
    }

    /// Stop the hubs for good (after the HTTP server has drained).
    pub fn stop(&self) {
        self.supervisor.begin_shutdown();
        self.event_bus.addr().do_send(Stop);
        self.rate_limiter.addr().do_send(Stop);
        self.upload_sessions.addr().do_send(Stop);
    }
}

fn start_event_bus(supervisor: &Supervisor, instance: &str, heartbeat_every: Duration) -> Hub<EventBus> {
    let instance = instance.to_string();
    // Created once: every incarnation of the bus publishes into it (see `event_bus`).
    let channel = event_bus::BusChannel::new();
    supervisor.spawn("event_bus", move |death| EventBus::new(channel.clone(), instance.clone(), heartbeat_every, death))
}

/// The hubs of a `reelhouse worker` process: the event bus its publisher writes to,
/// under a supervisor. It serves no requests, so no rate limiter and no upload
/// sessions.
pub struct WorkerHubs {
    pub supervisor: Supervisor,
    pub event_bus: Hub<EventBus>,
}

impl WorkerHubs {
    pub fn start(instance: &str, heartbeat_every: Duration) -> Self {
        let supervisor = Supervisor::start();
        let event_bus = start_event_bus(&supervisor, instance, heartbeat_every);
        Self { supervisor, event_bus }
    }

    pub fn stop(&self) {
        self.supervisor.begin_shutdown();
        self.event_bus.addr().do_send(Stop);
    }
}

/// Ask a hub to stop (shutdown).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Stop;

macro_rules! stop_on_request {
    ($($actor:ty),*) => {$(
        impl actix::Handler<Stop> for $actor {
            type Result = ();

            fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
                use actix::ActorContext;
                ctx.stop();
            }
        }
    )*};
}

stop_on_request!(EventBus, RateLimiter, UploadSessions);
