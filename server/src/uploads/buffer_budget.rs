//! One process-wide budget for the memory tus PATCHes hold in part buffers, with a
//! share per user.
//!
//! Each PATCH buffers up to one storage part (16 MiB by default) before writing it.
//! One PATCH per upload is in flight at a time, but one user may hold many open
//! uploads, so without a global bound enough concurrent PATCHes would exhaust the
//! server's memory. A PATCH reserves buffer memory here *as bytes arrive* (in units
//! of 64 KiB, never by its declared `Content-Length`) and gives it back when a part
//! is written, so a slow body holds only what it actually sent. One user's PATCHes
//! together hold at most `uploads.tus_buffer_per_user_bytes`.
//!
//! When the memory is not there, a PATCH waits a moment for some to be returned and
//! is otherwise refused: `UNAVAILABLE` (503) when the whole budget is spent,
//! `RATE_LIMITED` (429) when the user's share is, both with `Retry-After`. Nothing
//! is lost: what arrived before is kept (the offset moves) and tus clients resume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::error::{AppError, ErrorCode};

/// Reservations are counted in units of this many bytes.
const UNIT: u64 = 64 * 1024;
/// How long a PATCH waits for buffer memory before it is refused.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);
/// What a refused PATCH is told to wait before retrying.
const RETRY_AFTER_SECS: u64 = 2;

#[derive(Debug, Clone)]
pub struct BufferBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    per_user_units: u32,
    wait: Duration,
    /// Units held per user; entries at zero are removed.
    users: Mutex<HashMap<Uuid, u32>>,
    /// Woken whenever units are returned, for PATCHes waiting on a user's share.
    released: Notify,
}

impl Inner {
    fn users(&self) -> MutexGuard<'_, HashMap<Uuid, u32>> {
        self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release_user(&self, user: Uuid, units: u32) {
        if units == 0 {
            return;
        }
        let mut users = self.users();
        if let Some(held) = users.get_mut(&user) {
            *held = held.saturating_sub(units);
            if *held == 0 {
                users.remove(&user);
            }
        }
        drop(users);
        self.released.notify_waiters();
    }
}

/// Memory reserved for one PATCH's buffer; grows with [`Reservation::ensure`],
/// shrinks with [`Reservation::shrink_to`], returned to the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Inner>,
    user: Uuid,
    permit: Option<OwnedSemaphorePermit>,
    units: u32,
}

fn units_for(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BufferBudget {
    /// A budget of `total_bytes` with at most `per_user_bytes` per user (both
    /// rounded up to whole units, at least one).
    pub fn new(total_bytes: u64, per_user_bytes: u64, wait: Duration) -> Self {
        let units = units_for(total_bytes).max(1);
        let per_user_units = units_for(per_user_bytes).clamp(1, units);
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(units as usize)),
                per_user_units,
                wait,
                users: Mutex::new(HashMap::new()),
                released: Notify::new(),
            }),
        }
    }

    /// An empty reservation for `user`'s PATCH.
    pub fn reservation(&self, user: Uuid) -> Reservation {
        Reservation { budget: self.inner.clone(), user, permit: None, units: 0 }
    }

    /// Bytes not reserved right now.
    pub fn available_bytes(&self) -> u64 {
        self.inner.permits.available_permits() as u64 * UNIT
    }

    /// Bytes `user`'s PATCHes hold right now.
    pub fn user_bytes(&self, user: Uuid) -> u64 {
        u64::from(self.inner.users().get(&user).copied().unwrap_or(0)) * UNIT
    }
}

impl Reservation {
    /// Make sure at least `bytes` are reserved, waiting up to the budget's wait. A
    /// reservation never needs more than the user's share (or the whole budget):
    /// once it holds that, it may buffer more, so a single request always proceeds
    /// once the others are done.
    pub async fn ensure(&mut self, bytes: u64) -> Result<(), AppError> {
        let inner = self.budget.clone();
        let wanted = units_for(bytes).min(inner.per_user_units);
        if wanted <= self.units {
            return Ok(());
        }
        let more = wanted - self.units;
        let deadline = tokio::time::Instant::now() + inner.wait;
        // The user's share first: it decides who waits, before any global unit is taken.
        loop {
            let notified = inner.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut users = inner.users();
                let held = users.entry(self.user).or_insert(0);
                if held.saturating_add(more) <= inner.per_user_units {
                    *held += more;
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                metrics::counter!("reelhouse_tus_buffer_user_refusals_total").increment(1);
                return Err(AppError::new(
                    ErrorCode::RateLimited,
                    "your uploads are buffering as much as one user may right now; retry shortly \
                     (what arrived before is kept: resume at the Upload-Offset)",
                )
                .with_retry_after(RETRY_AFTER_SECS));
            }
        }
        match tokio::time::timeout_at(deadline, inner.permits.clone().acquire_many_owned(more)).await {
            Ok(Ok(permit)) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.units += more;
                Ok(())
            }
            // Timed out, or the semaphore was closed (it never is).
            _ => {
                inner.release_user(self.user, more);
                metrics::counter!("reelhouse_tus_buffer_refusals_total").increment(1);
                Err(AppError::new(
                    ErrorCode::Unavailable,
                    "the server is buffering as many uploads as it can right now; retry shortly \
                     (what arrived before is kept: resume at the Upload-Offset)",
                )
                .with_retry_after(RETRY_AFTER_SECS))
            }
        }
    }

    /// Give back everything above `bytes` (a part was written out).
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = units_for(bytes).min(self.units);
        let give = self.units - keep;
        if give == 0 {
            return;
        }
        if keep == 0 {
            self.permit = None;
        } else if let Some(permit) = &mut self.permit {
            drop(permit.split(give as usize));
        }
        self.units = keep;
        self.budget.release_user(self.user, give);
    }

    /// Bytes reserved now.
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.permit = None;
        let units = std::mem::take(&mut self.units);
        self.budget.release_user(self.user, units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    async fn reserve(budget: &BufferBudget, user: Uuid, bytes: u64) -> Result<Reservation, AppError> {
        let mut reservation = budget.reservation(user);
        reservation.ensure(bytes).await?;
        Ok(reservation)
    }

    #[tokio::test]
    async fn reservations_within_the_budget_are_granted_and_returned_on_drop() {
        let budget = BufferBudget::new(32 * MIB, 32 * MIB, Duration::from_millis(10));
        let a = reserve(&budget, Uuid::now_v7(), 16 * MIB).await.expect("first half");
        let b = reserve(&budget, Uuid::now_v7(), 16 * MIB).await.expect("second half");
        assert_eq!(budget.available_bytes(), 0);
        drop(a);
        assert_eq!(budget.available_bytes(), 16 * MIB);
        drop(b);
        assert_eq!(budget.available_bytes(), 32 * MIB);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_with_unavailable_and_retry_after() {
        let budget = BufferBudget::new(16 * MIB, 16 * MIB, Duration::from_millis(10));
        let held = reserve(&budget, Uuid::now_v7(), 10 * MIB).await.expect("granted");
        let other = Uuid::now_v7();
        let err = reserve(&budget, other, 10 * MIB).await.expect_err("over budget");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(err.retry_after_secs(), Some(RETRY_AFTER_SECS));
        // The refusal took nothing, also not from the user's share.
        assert_eq!(budget.available_bytes(), 16 * MIB - 10 * MIB);
        assert_eq!(budget.user_bytes(other), 0);
        drop(held);
        reserve(&budget, other, 10 * MIB).await.expect("granted once the first is returned");
    }

    #[tokio::test]
    async fn reservations_grow_as_bytes_arrive_and_shrink_when_written() {
        let budget = BufferBudget::new(16 * MIB, 16 * MIB, Duration::from_millis(10));
        let user = Uuid::now_v7();
        let mut reservation = budget.reservation(user);
        assert_eq!(budget.available_bytes(), 16 * MIB, "an empty reservation holds nothing");
        reservation.ensure(1).await.expect("one byte");
        assert_eq!(reservation.bytes(), UNIT);
        reservation.ensure(3 * MIB).await.expect("more");
        assert_eq!(budget.available_bytes(), 13 * MIB);
        assert_eq!(budget.user_bytes(user), 3 * MIB);
        reservation.ensure(2 * MIB).await.expect("already held");
        assert_eq!(budget.available_bytes(), 13 * MIB);
        reservation.shrink_to(MIB);
        assert_eq!(budget.available_bytes(), 15 * MIB);
        assert_eq!(budget.user_bytes(user), MIB);
        reservation.shrink_to(0);
        assert_eq!(budget.available_bytes(), 16 * MIB);
        assert_eq!(budget.user_bytes(user), 0);
        reservation.ensure(2 * MIB).await.expect("again");
        drop(reservation);
        assert_eq!(budget.available_bytes(), 16 * MIB);
        assert_eq!(budget.user_bytes(user), 0);
    }

    #[tokio::test]
    async fn one_user_is_held_to_its_share_while_others_proceed() {
        let budget = BufferBudget::new(64 * MIB, 8 * MIB, Duration::from_millis(10));
        let greedy = Uuid::now_v7();
        let first = reserve(&budget, greedy, 6 * MIB).await.expect("within the share");
        let err = reserve(&budget, greedy, 4 * MIB).await.expect_err("past the share");
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert_eq!(err.retry_after_secs(), Some(RETRY_AFTER_SECS));
        assert_eq!(budget.user_bytes(greedy), 6 * MIB);
        reserve(&budget, Uuid::now_v7(), 8 * MIB).await.expect("another user is not affected");
        drop(first);
        reserve(&budget, greedy, 8 * MIB).await.expect("the share is back");
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_memory_returned_while_it_waits() {
        let budget = BufferBudget::new(16 * MIB, 16 * MIB, Duration::from_secs(30));
        let user = Uuid::now_v7();
        let held = reserve(&budget, user, 16 * MIB).await.expect("granted");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { reserve(&budget, user, 8 * MIB).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.expect("joined").expect("granted after the wait");
    }

    #[tokio::test]
    async fn a_reservation_larger_than_the_budget_takes_all_of_it() {
        let budget = BufferBudget::new(4 * MIB, 64 * MIB, Duration::from_millis(10));
        let all = reserve(&budget, Uuid::now_v7(), 64 * MIB).await.expect("granted");
        assert_eq!(budget.available_bytes(), 0);
        drop(all);
        assert_eq!(budget.available_bytes(), 4 * MIB);
    }
}
