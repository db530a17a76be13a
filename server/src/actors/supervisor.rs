//! Starts the hub actors once, restarts them when they die, hands out their addresses.
//!
//! actix's own `Supervisor` restarts an actor that *stops*, but a panic inside a
//! handler unwinds through the actor's task and takes the mailbox with it. So every
//! hub carries a [`DeathNotice`]: when the actor value is dropped (a panic unwinds it,
//! or it stops) the notice tells the supervisor loop, which starts a fresh instance
//! from the hub's factory and swaps the address behind its [`Hub`] handle. Callers keep
//! the `Hub` and ask it for the current address on each use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::{Actor, Addr};
use tokio::sync::mpsc;

/// The address of a supervised actor; always the live instance after a restart.
pub struct Hub<A: Actor> {
    name: &'static str,
    addr: Arc<RwLock<Addr<A>>>,
}

impl<A: Actor> Clone for Hub<A> {
    fn clone(&self) -> Self {
        Self { name: self.name, addr: self.addr.clone() }
    }
}

impl<A: Actor> Hub<A> {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn addr(&self) -> Addr<A> {
        match self.addr.read() {
            Ok(guard) => guard.clone(),
            // A poisoned lock still holds a valid address: the writer only swaps it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, addr: Addr<A>) {
        match self.addr.write() {
            Ok(mut guard) => *guard = addr,
            Err(poisoned) => *poisoned.into_inner() = addr,
        }
    }
}

/// Held inside each hub actor; reports the actor's end to the supervisor on drop.
pub struct DeathNotice {
    name: &'static str,
    deaths: mpsc::UnboundedSender<&'static str>,
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(actor = self.name, "hub actor panicked");
        }
        // The receiver is gone only when the supervisor itself has shut down.
        let _ = self.deaths.send(self.name);
    }
}

type Restart = Box<dyn Fn(DeathNotice) + Send + Sync>;

struct Shared {
    restarts: HashMap<&'static str, Restart>,
    restart_counts: HashMap<&'static str, Arc<AtomicU64>>,
}

/// Owns the hub factories and the loop that restarts dead hubs.
#[derive(Clone)]
pub struct Supervisor {
    deaths_tx: mpsc::UnboundedSender<&'static str>,
    shared: Arc<RwLock<Shared>>,
    stopping: Arc<AtomicBool>,
    /// Liveness of the background loops run with [`Supervisor::supervise`].
    loops: super::supervise::LoopRegistry,
}

impl Supervisor {
    /// Create the supervisor and spawn its restart loop on the current actix arbiter.
    /// Must be called inside a running actix `System`, outside `HttpServer::new`.
    pub fn start() -> Self {
        let (deaths_tx, mut deaths_rx) = mpsc::unbounded_channel::<&'static str>();
        let supervisor = Self {
            deaths_tx,
            shared: Arc::new(RwLock::new(Shared { restarts: HashMap::new(), restart_counts: HashMap::new() })),
            stopping: Arc::new(AtomicBool::new(false)),
            loops: super::supervise::LoopRegistry::default(),
        };
        let this = supervisor.clone();
        actix_rt::spawn(async move {
            let mut backoff: HashMap<&'static str, Duration> = HashMap::new();
            while let Some(name) = deaths_rx.recv().await {
                if this.stopping.load(Ordering::SeqCst) {
                    continue;
                }
                // Back off a hub that keeps dying, so a crash loop does not spin.
                let delay = backoff.entry(name).or_insert(Duration::ZERO);
                if !delay.is_zero() {
                    actix_rt::time::sleep(*delay).await;
                }
                *delay = (*delay * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
                this.restart(name);
            }
        });
        supervisor
    }

    /// Start a hub actor from `factory` and keep restarting it from the same factory.
    pub fn spawn<A, F>(&self, name: &'static str, factory: F) -> Hub<A>
    where
        A: Actor<Context = actix::Context<A>>,
        F: Fn(DeathNotice) -> A + Send + Sync + 'static,
    {
        let first = factory(self.notice(name)).start();
        let hub = Hub { name, addr: Arc::new(RwLock::new(first)) };
        let handle = hub.clone();
        let restart: Restart = Box::new(move |notice| handle.replace(factory(notice).start()));
        if let Ok(mut shared) = self.shared.write() {
            shared.restarts.insert(name, restart);
            shared.restart_counts.insert(name, Arc::new(AtomicU64::new(0)));
        }
        hub
    }

    fn notice(&self, name: &'static str) -> DeathNotice {
        DeathNotice { name, deaths: self.deaths_tx.clone() }
    }

    fn restart(&self, name: &'static str) {
        let Ok(shared) = self.shared.read() else { return };
        let Some(restart) = shared.restarts.get(name) else { return };
        restart(self.notice(name));
        if let Some(count) = shared.restart_counts.get(name) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        metrics::counter!("reelhouse_actor_restarts_total", "actor" => name).increment(1);
        tracing::warn!(actor = name, "hub actor restarted");
    }

    /// How many times the named hub has been restarted.
    pub fn restart_count(&self, name: &str) -> u64 {
        self.shared
            .read()
            .ok()
            .and_then(|shared| shared.restart_counts.get(name).map(|c| c.load(Ordering::SeqCst)))
            .unwrap_or(0)
    }

    /// Stop restarting: hubs that end from now on stay down (shutdown).
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Liveness of every supervised background loop.
    pub fn loops(&self) -> &super::supervise::LoopRegistry {
        &self.loops
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}
