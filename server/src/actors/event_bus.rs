//! The in-process event bus: one broadcast channel per process that subscriptions
//! (and later the webhook dispatcher) read from. It also emits the server heartbeat
//! that the `heartbeat` subscription streams, so the whole path — actor, bus,
//! subscription, WebSocket — is exercised by a live feature.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::supervisor::DeathNotice;

/// Everything that travels on the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    Heartbeat(Heartbeat),
    /// A video's state change or progress (see `crate::events`).
    Video(std::sync::Arc<crate::events::DomainEvent>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// Increases by one per tick of this bus instance.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The server instance that emitted it.
    pub instance: String,
}

/// Buffered messages per subscriber before the slowest ones start missing some.
const BUS_CAPACITY: usize = 1024;

pub struct EventBus {
    sender: broadcast::Sender<BusMessage>,
    instance: String,
    heartbeat_every: Duration,
    heartbeat_seq: u64,
    _death: DeathNotice,
}

impl EventBus {
    pub fn new(instance: String, heartbeat_every: Duration, death: DeathNotice) -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        Self { sender, instance, heartbeat_every, heartbeat_seq: 0, _death: death }
    }

    fn publish(&self, message: BusMessage) -> usize {
        // No receivers is not an error: nobody is listening right now.
        self.sender.send(message).unwrap_or(0)
    }
}

impl Actor for EventBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.heartbeat_every, |bus, _| {
            bus.heartbeat_seq += 1;
            let beat = Heartbeat { seq: bus.heartbeat_seq, at: Utc::now(), instance: bus.instance.clone() };
            bus.publish(BusMessage::Heartbeat(beat));
        });
        tracing::debug!("event bus started");
    }
}

/// Subscribe to everything published from now on.
#[derive(Message)]
#[rtype(result = "broadcast::Receiver<BusMessage>")]
pub struct Subscribe;

impl Handler<Subscribe> for EventBus {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, _: Subscribe, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.sender.subscribe())
    }
}

/// Publish a message; answers how many subscribers received it.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Publish(pub BusMessage);

impl Handler<Publish> for EventBus {
    type Result = usize;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> usize {
        self.publish(msg.0)
    }
}

/// How many subscribers are attached right now.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SubscriberCount;

impl Handler<SubscriberCount> for EventBus {
    type Result = usize;

    fn handle(&mut self, _: SubscriberCount, _: &mut Self::Context) -> usize {
        self.sender.receiver_count()
    }
}

/// Fault injection for the supervision tests: the handler panics. Not reachable
/// from any network interface.
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for EventBus {
    type Result = ();

    #[allow(clippy::panic)]
    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("event bus asked to crash (fault injection)");
    }
}
