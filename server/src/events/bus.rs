//! The in-process event bus: one broadcast channel per process that subscriptions
//! (and later the webhook dispatcher) read from. It also emits the server heartbeat
//! that the `heartbeat` subscription streams, so the whole path — actor, bus,
//! subscription, WebSocket — is exercised by a live feature.
//!
//! The channel ([`BusChannel`]) is created once, outside the actor, and handed to
//! every incarnation the supervisor starts: a restarted bus publishes into the same
//! channel, so live subscriptions never notice the restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::actors::{DeathNotice, Hub, Supervisor};

/// Everything that travels on the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    Heartbeat(Heartbeat),
    /// A video's state change or progress (see `crate::events`).
    Video(std::sync::Arc<crate::events::DomainEvent>),
    /// A job's log grew (see `crate::events::job_log`).
    JobLog(std::sync::Arc<crate::events::job_log::JobLogWritten>),
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

/// The process's broadcast channel and heartbeat counter: outlive every incarnation
/// of the [`EventBus`] actor. Cheap to clone.
#[derive(Clone)]
pub struct BusChannel {
    sender: broadcast::Sender<BusMessage>,
    /// Carried across restarts, so heartbeat seqs keep increasing.
    heartbeat_seq: Arc<AtomicU64>,
}

impl BusChannel {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        Self { sender, heartbeat_seq: Arc::new(AtomicU64::new(0)) }
    }
}

impl Default for BusChannel {
    fn default() -> Self {
        Self::new()
    }
}

pub struct EventBus {
    channel: BusChannel,
    instance: String,
    heartbeat_every: Duration,
    _death: DeathNotice,
}

impl EventBus {
    /// One incarnation of the bus over `channel` (the same channel for every restart).
    pub fn new(channel: BusChannel, instance: String, heartbeat_every: Duration, death: DeathNotice) -> Self {
        Self { channel, instance, heartbeat_every, _death: death }
    }

    fn publish(&self, message: BusMessage) -> usize {
        // No receivers is not an error: nobody is listening right now.
        self.channel.sender.send(message).unwrap_or(0)
    }
}

impl Actor for EventBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.heartbeat_every, |bus, _| {
            let seq = bus.channel.heartbeat_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let beat = Heartbeat { seq, at: Utc::now(), instance: bus.instance.clone() };
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
        MessageResult(self.channel.sender.subscribe())
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
        self.channel.sender.receiver_count()
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::actors::Crash> for EventBus {
    type Result = ();

    #[allow(clippy::panic)]
    fn handle(&mut self, _: crate::actors::Crash, _: &mut Self::Context) {
        panic!("event bus asked to crash (fault injection)");
    }
}

/// Start the event bus under `supervisor`.
pub fn start(supervisor: &Supervisor, instance: &str, heartbeat_every: Duration) -> Hub<EventBus> {
    let instance = instance.to_string();
    // Created once: every incarnation of the bus publishes into it (see `event_bus`).
    let channel = BusChannel::new();
    supervisor.spawn("event_bus", move |death| EventBus::new(channel.clone(), instance.clone(), heartbeat_every, death))
}

crate::actors::stop_on_request!(EventBus);
