//! Admission for `/graphql/ws`: how many sockets one client address (IPv6: one
//! /64) and one user may hold open, and how many operations one user may have
//! running over all of their sockets. Counted per process; a [`Slot`] gives its
//! place back when dropped, so a socket that ends for any reason frees its room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

/// What one slot counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Counted {
    /// An open socket from this rate-limit subject (`limits::ip_subject`).
    SocketFrom(String),
    /// An authenticated socket of this user.
    SocketOf(Uuid),
    /// A running operation (subscription, query or mutation) of this user.
    OperationOf(Uuid),
}

#[derive(Clone, Default)]
pub struct WsAdmission {
    counts: Arc<Mutex<HashMap<Counted, usize>>>,
}

impl WsAdmission {
    fn counts(&self) -> MutexGuard<'_, HashMap<Counted, usize>> {
        // A panic while holding this lock leaves plain counters behind: still usable.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `what`, unless `cap` of them are taken already.
    pub fn admit(&self, what: Counted, cap: usize) -> Option<Slot> {
        let mut counts = self.counts();
        let count = counts.entry(what.clone()).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                counts.remove(&what);
            }
            return None;
        }
        *count += 1;
        Some(Slot { admission: self.clone(), what })
    }

    /// How many slots for `what` are taken (for tests and metrics).
    pub fn taken(&self, what: &Counted) -> usize {
        self.counts().get(what).copied().unwrap_or(0)
    }
}

/// One admitted socket or operation; dropping it gives the room back.
pub struct Slot {
    admission: WsAdmission,
    what: Counted,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot").field(&self.what).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        if let Some(count) = counts.get_mut(&self.what) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back_on_drop() {
        let admission = WsAdmission::default();
        let user = Uuid::now_v7();
        let a = admission.admit(Counted::SocketOf(user), 2).unwrap();
        let _b = admission.admit(Counted::SocketOf(user), 2).unwrap();
        assert!(admission.admit(Counted::SocketOf(user), 2).is_none());
        assert!(admission.admit(Counted::OperationOf(user), 2).is_some(), "kinds are counted apart");
        drop(a);
        assert_eq!(admission.taken(&Counted::SocketOf(user)), 1);
        assert!(admission.admit(Counted::SocketOf(user), 2).is_some());
        assert!(admission.admit(Counted::SocketFrom("x".into()), 0).is_none());
        assert!(admission.counts().get(&Counted::SocketFrom("x".into())).is_none(), "no empty entries linger");
    }
}
