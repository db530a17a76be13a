//! The supervision every actor and background loop runs under. The actors themselves
//! live with what they own: the event bus in `events::bus`, the rate-limit buckets in
//! `limits::buckets`, the tus upload sessions in `uploads::session`.

pub mod supervise;
pub mod supervisor;

pub use supervise::{Backoff, LoopStatus};
pub use supervisor::{DeathNotice, Hub, Supervisor};

/// Fault injection for the supervision tests: the handler panics. Compiled only
/// into test builds (`cargo test`, or the `test-hooks` feature the integration
/// tests turn on); never reachable from a network interface.
#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Ask a hub to stop (shutdown).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Stop;

/// `impl Handler<Stop>` for each listed actor: it stops its context.
macro_rules! stop_on_request {
    ($($actor:ty),*) => {$(
        impl actix::Handler<$crate::actors::Stop> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::Stop, ctx: &mut Self::Context) {
                use actix::ActorContext;
                ctx.stop();
            }
        }
    )*};
}

pub(crate) use stop_on_request;
