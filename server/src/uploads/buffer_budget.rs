//! One process-wide budget for the memory tus PATCHes hold in part buffers.
//!
//! Each PATCH buffers up to one storage part (16 MiB by default) before writing it.
//! One PATCH per upload is in flight at a time, but one user may hold many open
//! uploads, so without a global bound enough concurrent PATCHes would exhaust the
//! server's memory. A PATCH reserves its buffer here first; when the budget is spent
//! it waits a moment for one to be returned and is otherwise refused with
//! `UNAVAILABLE` (503) and `Retry-After`, before a byte is read. Nothing is lost: the
//! upload's offset is unchanged and tus clients retry 503s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{AppError, ErrorCode};

/// Reservations are counted in units of this many bytes.
const UNIT: u64 = 64 * 1024;
/// How long a PATCH waits for buffer memory before it is refused.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);
/// What a refused PATCH is told to wait before retrying.
const RETRY_AFTER_SECS: u64 = 2;

#[derive(Debug, Clone)]
pub struct BufferBudget {
    permits: Arc<Semaphore>,
    units: u32,
    wait: Duration,
}

/// Memory reserved for one buffer; returned to the budget when dropped.
#[derive(Debug)]
pub struct Reservation(#[allow(dead_code)] OwnedSemaphorePermit);

impl BufferBudget {
    /// A budget of `total_bytes` (rounded up to whole units, at least one).
    pub fn new(total_bytes: u64, wait: Duration) -> Self {
        let units = u32::try_from(total_bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Self { permits: Arc::new(Semaphore::new(units as usize)), units, wait }
    }

    /// Reserve `bytes` of buffer memory, waiting up to the budget's wait for it. A
    /// reservation larger than the whole budget takes the whole budget, so a single
    /// request can always proceed once the others are done.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, AppError> {
        let wanted = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.units);
        let acquire = self.permits.clone().acquire_many_owned(wanted);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation(permit)),
            // Timed out, or the semaphore was closed (it never is).
            _ => {
                metrics::counter!("reelhouse_tus_buffer_refusals_total").increment(1);
                Err(AppError::new(
                    ErrorCode::Unavailable,
                    "the server is buffering as many uploads as it can right now; retry shortly (nothing was stored)",
                )
                .with_retry_after(RETRY_AFTER_SECS))
            }
        }
    }

    /// Bytes not reserved right now.
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn reservations_within_the_budget_are_granted_and_returned_on_drop() {
        let budget = BufferBudget::new(32 * MIB, Duration::from_millis(10));
        let a = budget.reserve(16 * MIB).await.expect("first half");
        let b = budget.reserve(16 * MIB).await.expect("second half");
        assert_eq!(budget.available_bytes(), 0);
        drop(a);
        assert_eq!(budget.available_bytes(), 16 * MIB);
        drop(b);
        assert_eq!(budget.available_bytes(), 32 * MIB);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_with_unavailable_and_retry_after() {
        let budget = BufferBudget::new(16 * MIB, Duration::from_millis(10));
        let held = budget.reserve(10 * MIB).await.expect("granted");
        let err = budget.reserve(10 * MIB).await.expect_err("over budget");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(err.retry_after_secs(), Some(RETRY_AFTER_SECS));
        // The refusal took nothing.
        assert_eq!(budget.available_bytes(), 16 * MIB - 10 * MIB);
        drop(held);
        budget.reserve(10 * MIB).await.expect("granted once the first is returned");
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_memory_returned_while_it_waits() {
        let budget = BufferBudget::new(16 * MIB, Duration::from_secs(30));
        let held = budget.reserve(16 * MIB).await.expect("granted");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(8 * MIB).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.expect("joined").expect("granted after the wait");
    }

    #[tokio::test]
    async fn a_reservation_larger_than_the_budget_takes_all_of_it() {
        let budget = BufferBudget::new(4 * MIB, Duration::from_millis(10));
        let all = budget.reserve(64 * MIB).await.expect("granted");
        assert_eq!(budget.available_bytes(), 0);
        drop(all);
        assert_eq!(budget.available_bytes(), 4 * MIB);
    }
}
