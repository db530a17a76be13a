//! Actors: each owns one piece of state that must have one owner at a time.

pub mod event_bus;
pub mod supervisor;

use std::time::Duration;

pub use event_bus::EventBus;
pub use supervisor::{DeathNotice, Hub, Supervisor};

/// The addresses of the hub actors, shared with every HTTP worker through `AppState`.
#[derive(Clone)]
pub struct Hubs {
    pub supervisor: Supervisor,
    pub event_bus: Hub<EventBus>,
}

impl Hubs {
    /// Start every hub once. Call inside the actix system, outside `HttpServer::new`.
    pub fn start(instance: &str, heartbeat_every: Duration) -> Self {
        let supervisor = Supervisor::start();
        let instance = instance.to_string();
        let event_bus = supervisor.spawn("event_bus", move |death| EventBus::new(instance.clone(), heartbeat_every, death));
        Self { supervisor, event_bus }
    }

    /// Stop the hubs for good (after the HTTP server has drained).
    pub fn stop(&self) {
        self.supervisor.begin_shutdown();
        self.event_bus.addr().do_send(Stop);
    }
}

/// Ask a hub to stop (shutdown).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Stop;

impl actix::Handler<Stop> for EventBus {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        use actix::ActorContext;
        ctx.stop();
    }
}
