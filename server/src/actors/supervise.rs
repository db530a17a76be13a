//! The one way to run a long-lived background loop (sweepers, pruners, relays,
//! deliveries): [`Supervisor::supervise`]. A panic inside the loop is caught at the
//! loop's future, counted (`reelhouse_loop_restarts_total{loop}`), and the loop is
//! started again from its factory after an exponential backoff (capped); a loop
//! that returns has finished on purpose and is not restarted. Each loop's liveness
//! (running, restarts, last start, finished) is kept in [`LoopRegistry`] and
//! shown in `/ready`'s `loops` detail.
//!
//! Hub *actors* are restarted by the [`Supervisor`]'s death notices instead (see
//! `supervisor.rs`): an actor is not a future this helper could poll.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::Serialize;

use super::supervisor::Supervisor;

use crate::telemetry::LOOP_RESTARTS_METRIC;

/// Delay before restarting a loop that panicked: `initial`, doubled per panic in a
/// row, at most `max`. A loop that ran for `max` or longer before panicking starts
/// again from `initial`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The delay after `delay`, doubled and capped.
    fn next(&self, delay: Duration) -> Duration {
        (delay * 2).clamp(self.initial, self.max.max(self.initial))
    }
}

/// What `/ready` shows about one loop.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoopStatus {
    /// Running now (false while waiting to restart after a panic, or once finished).
    pub running: bool,
    /// Restarts after a panic since the process started.
    pub restarts: u64,
    /// When the current (or last) incarnation started.
    pub last_start: DateTime<Utc>,
    /// The last panic's message, if the loop ever panicked. Logged, and kept here
    /// for tests; not shown in `/ready`, whose reasons never carry error text.
    #[serde(skip)]
    pub last_panic: Option<String>,
    /// The loop returned on its own (e.g. nothing to do with these settings).
    pub finished: bool,
}

/// Liveness of every supervised loop, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct LoopRegistry(Arc<RwLock<BTreeMap<&'static str, LoopStatus>>>);

impl LoopRegistry {
    /// A copy of every loop's status, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, LoopStatus> {
        match self.0.read() {
            Ok(map) => map.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The status of loop `name`, if one was started under that name.
    pub fn status(&self, name: &str) -> Option<LoopStatus> {
        self.snapshot().get(name).cloned()
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut LoopStatus)) {
        let mut map = match self.0.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let status = map.entry(name).or_insert_with(|| LoopStatus {
            running: false,
            restarts: 0,
            last_start: Utc::now(),
            last_panic: None,
            finished: false,
        });
        change(status);
    }
}

/// The message a panic carried, when it is text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into())
}

impl Supervisor {
    /// Run the loop `factory` makes, on the current actix arbiter, for as long as
    /// the process runs: restarted from `factory` after a panic (with `backoff`),
    /// left alone once it returns or the supervisor shuts down. Call inside a
    /// running actix `System`.
    pub fn supervise<F, Fut>(&self, name: &'static str, backoff: Backoff, factory: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let registry = self.loops().clone();
        let supervisor = self.clone();
        registry.update(name, |status| {
            status.running = true;
            status.last_start = Utc::now();
        });
        actix_rt::spawn(async move {
            let mut delay = backoff.initial;
            loop {
                let started = tokio::time::Instant::now();
                registry.update(name, |status| {
                    status.running = true;
                    status.last_start = Utc::now();
                });
                let outcome = AssertUnwindSafe(factory()).catch_unwind().await;
                let Err(payload) = outcome else {
                    tracing::info!(task = name, "background loop finished");
                    registry.update(name, |status| {
                        status.running = false;
                        status.finished = true;
                    });
                    return;
                };
                let message = panic_message(payload.as_ref());
                tracing::error!(task = name, panic = %message, "background loop panicked; restarting");
                registry.update(name, |status| {
                    status.running = false;
                    status.last_panic = Some(message);
                });
                if supervisor.is_stopping() {
                    return;
                }
                if started.elapsed() >= backoff.max {
                    delay = backoff.initial;
                }
                actix_rt::time::sleep(delay).await;
                delay = backoff.next(delay);
                if supervisor.is_stopping() {
                    return;
                }
                registry.update(name, |status| status.restarts += 1);
                metrics::counter!(LOOP_RESTARTS_METRIC, "loop" => name).increment(1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(350) };
        let mut delay = backoff.initial;
        let mut seen = vec![delay];
        for _ in 0..4 {
            delay = backoff.next(delay);
            seen.push(delay);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 350, 350, 350]);
    }

    #[actix_rt::test]
    async fn a_panicking_loop_is_restarted_and_counted_until_it_runs() {
        let supervisor = Supervisor::start();
        let attempts = Arc::new(AtomicU32::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
        let backoff = Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(4) };
        let counter = attempts.clone();
        supervisor.supervise("flaky", backoff, move || {
            let counter = counter.clone();
            let done_tx = done_tx.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("flaky loop fails (test)");
                }
                if let Some(tx) = done_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                // A long-lived loop: keeps running.
                std::future::pending::<()>().await;
            }
        });
        done_rx.await.unwrap();
        let status = supervisor.loops().status("flaky").unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert_eq!(status.restarts, 2);
        assert!(status.running);
        assert!(!status.finished);
        assert_eq!(status.last_panic.as_deref(), Some("flaky loop fails (test)"));
    }

    #[actix_rt::test]
    async fn a_loop_that_returns_is_finished_not_restarted() {
        let supervisor = Supervisor::start();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        supervisor.supervise("once", Backoff::default(), move || {
            let tx = tx.clone();
            async move {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        });
        rx.await.unwrap();
        // The supervising task records the end right after the loop returns.
        let mut finished = false;
        for _ in 0..1000 {
            let status = supervisor.loops().status("once").unwrap();
            if status.finished {
                assert!(!status.running);
                assert_eq!(status.restarts, 0);
                finished = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(finished);
    }
}
