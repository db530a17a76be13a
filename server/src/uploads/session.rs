//! One [`UploadSession`] actor per open upload that is being written to in this
//! process, created on demand by the [`UploadSessions`] registry hub and stopped
//! when idle: the upload's write lease. A tus PATCH takes the lease ([`Acquire`])
//! before it reads a single byte; a second PATCH for the same upload meanwhile is
//! refused (409) at once and changes nothing.
//!
//! What the upload *is* (its offset, declared size, expiry, the running checksum of
//! its parts) is owned by its database row, not by this actor: every append ends
//! with an update conditional on the offset it started from (`uploads::tus_store`),
//! so writers on different replicas, or a restarted server, can never both move an
//! upload forward; the loser of that race gets 409 too. The actor only spares a
//! second writer in the same process from streaming its body before it learns so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use uuid::Uuid;

use crate::actors::DeathNotice;

/// Idle sessions stop after this long without a write.
const IDLE_AFTER: Duration = Duration::from_secs(120);
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(30);

pub struct UploadSession {
    id: Uuid,
    registry: Addr<UploadSessions>,
    /// The lease number of the write in flight, if any.
    writing: Option<u64>,
    next_lease: u64,
    last_active: Instant,
}

impl Actor for UploadSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_CHECK_EVERY, |this, ctx| {
            if this.writing.is_none() && this.last_active.elapsed() >= IDLE_AFTER {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.registry.do_send(Gone { id: self.id, addr: ctx.address() });
    }
}

/// Take the write lease. `Err(())` when another write is in flight.
#[derive(Message)]
#[rtype(result = "Result<Lease, ()>")]
pub struct Acquire;

/// Held by the writing request; releasing happens on drop, also when the request
/// is cancelled half-way.
pub struct Lease {
    number: u64,
    addr: Addr<UploadSession>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.addr.do_send(Release { number: self.number });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Release {
    number: u64,
}

/// Stop the session (the upload finished or ended).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finish;

impl Handler<Acquire> for UploadSession {
    type Result = MessageResult<Acquire>;

    fn handle(&mut self, _: Acquire, ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        if self.writing.is_some() {
            return MessageResult(Err(()));
        }
        self.next_lease += 1;
        self.writing = Some(self.next_lease);
        MessageResult(Ok(Lease { number: self.next_lease, addr: ctx.address() }))
    }
}

impl Handler<Release> for UploadSession {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        if self.writing == Some(msg.number) {
            self.writing = None;
            self.last_active = Instant::now();
        }
    }
}

impl Handler<Finish> for UploadSession {
    type Result = ();

    fn handle(&mut self, _: Finish, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The registry hub: the one place that maps an upload id to its session actor.
pub struct UploadSessions {
    sessions: HashMap<Uuid, Addr<UploadSession>>,
    _death: DeathNotice,
}

impl UploadSessions {
    pub fn new(death: DeathNotice) -> Self {
        Self { sessions: HashMap::new(), _death: death }
    }
}

impl Actor for UploadSessions {
    type Context = Context<Self>;
}

/// The session actor of an upload, started if it is not running.
#[derive(Message)]
#[rtype(result = "Addr<UploadSession>")]
pub struct Session(pub Uuid);

impl Handler<Session> for UploadSessions {
    type Result = MessageResult<Session>;

    fn handle(&mut self, Session(id): Session, ctx: &mut Self::Context) -> Self::Result {
        if let Some(addr) = self.sessions.get(&id).filter(|a| a.connected()) {
            return MessageResult(addr.clone());
        }
        let registry = ctx.address();
        let addr = UploadSession { id, registry, writing: None, next_lease: 0, last_active: Instant::now() }.start();
        self.sessions.insert(id, addr.clone());
        metrics::gauge!("reelhouse_upload_sessions").set(self.sessions.len() as f64);
        MessageResult(addr)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Gone {
    id: Uuid,
    addr: Addr<UploadSession>,
}

impl Handler<Gone> for UploadSessions {
    type Result = ();

    fn handle(&mut self, msg: Gone, _: &mut Self::Context) {
        if self.sessions.get(&msg.id).is_some_and(|a| *a == msg.addr) {
            self.sessions.remove(&msg.id);
        }
        metrics::gauge!("reelhouse_upload_sessions").set(self.sessions.len() as f64);
    }
}

/// Stop the session of `id`, if one runs (after completion, abort or expiry).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FinishSession(pub Uuid);

impl Handler<FinishSession> for UploadSessions {
    type Result = ();

    fn handle(&mut self, FinishSession(id): FinishSession, _: &mut Self::Context) {
        if let Some(addr) = self.sessions.remove(&id) {
            addr.do_send(Finish);
        }
    }
}

/// Take the write lease of upload `id`: `Ok(None)` when another write holds it.
pub async fn acquire(registry: &Addr<UploadSessions>, id: Uuid) -> Result<Option<Lease>, MailboxError> {
    // A session that just stopped for idleness answers with a closed mailbox; the
    // registry then starts a fresh one.
    for _ in 0..3 {
        let session = registry.send(Session(id)).await?;
        match session.send(Acquire).await {
            Ok(Ok(lease)) => return Ok(Some(lease)),
            Ok(Err(())) => return Ok(None),
            Err(MailboxError::Closed) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(MailboxError::Closed)
}

crate::actors::stop_on_request!(UploadSessions);

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn one_writer_at_a_time_per_upload() {
        let supervisor = crate::actors::Supervisor::start();
        let registry = supervisor.spawn("upload_sessions_test", UploadSessions::new).addr();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = acquire(&registry, a).await.unwrap().expect("free");
        assert!(acquire(&registry, a).await.unwrap().is_none(), "a second writer is refused");
        let other = acquire(&registry, b).await.unwrap();
        assert!(other.is_some(), "another upload is independent");
        drop(first);
        let again = acquire(&registry, a).await.unwrap();
        assert!(again.is_some(), "released on drop");
        drop(again);
        // A finished session stops; the next writer gets a fresh one.
        registry.send(FinishSession(a)).await.unwrap();
        assert!(acquire(&registry, a).await.unwrap().is_some());
    }
}
