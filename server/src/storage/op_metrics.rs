//! Every storage operation runs inside [`observe`]: one span, one duration sample
//! with its outcome, and one log line when it fails.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use super::StoreError;

/// Records duration and outcome on drop, so an operation whose future is dropped
/// half-way (client went away, timeout) is still counted, as `cancelled`.
struct OpGuard {
    backend: &'static str,
    op: &'static str,
    started: Instant,
    outcome: &'static str,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        metrics::histogram!(
            "reelhouse_storage_operation_duration_seconds",
            "backend" => self.backend,
            "op" => self.op,
            "outcome" => self.outcome,
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}

pub(crate) async fn observe<T, F>(backend: &'static str, op: &'static str, key: &str, fut: F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    let span = tracing::debug_span!("storage", backend, op, key);
    let mut guard = OpGuard { backend, op, started: Instant::now(), outcome: "cancelled" };
    let result = fut.instrument(span.clone()).await;
    let _entered = span.enter();
    guard.outcome = match &result {
        Ok(_) => "ok",
        Err(err) if err.is_client_error() => {
            tracing::debug!(error = %err, "storage operation refused");
            "client_error"
        }
        Err(err) => {
            tracing::warn!(error = ?err, "storage operation failed");
            "error"
        }
    };
    result
}
