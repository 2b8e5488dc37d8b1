//! The broker's memory budget for messages (`queues.max_memory_bytes`).
//!
//! Every message the broker holds is charged once, when it is made, by its
//! encoded size: however many subscriber queues, stored QoS 1 queues or
//! confirm pipelines hold it, they hold one shared copy. The charge travels
//! inside the message ([`Charge`] is a field of `QueuedMessage`) and is
//! returned when the last holder lets go of it, so the count follows the
//! memory without any queue having to account for it.
//!
//! The budget is approximate by design: the check and the charge are two
//! steps, so publishers racing past the check can overshoot it by one
//! message each. What it bounds is growth: a subscriber that never reads
//! can make the broker hold at most the budget, not everything published.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
    /// Publishers waiting for room (`block`); a release wakes them only
    /// when there are some, so the common case pays no wake-up.
    waiters: AtomicUsize,
    freed: Notify,
}

impl MemoryBudget {
    /// A budget for one broker run, leaked so that a charge can point at it
    /// with a plain reference: an `Arc` in every message would add a
    /// shared reference count, bumped twice per message by every core.
    /// One small allocation per broker started, never reclaimed.
    pub fn leak(limit: usize) -> &'static MemoryBudget {
        Box::leak(Box::new(MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
            waiters: AtomicUsize::new(0),
            freed: Notify::new(),
        }))
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charge `bytes` if the budget has room for them.
    pub fn try_charge(&'static self, bytes: usize) -> Option<Charge> {
        if self.used.load(Ordering::Relaxed) + bytes > self.limit {
            return None;
        }
        Some(self.charge(bytes))
    }

    /// Charge `bytes` whether or not there is room: for what the broker
    /// must hold anyway (messages recovered from the log, dead letters of
    /// messages already charged).
    pub fn charge(&'static self, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            budget: Some(self),
            bytes,
        }
    }

    /// Charge `bytes`, waiting while the budget is full (the `block`
    /// policy: the publisher waits, as it does for a full queue).
    pub async fn charge_or_wait(&'static self, bytes: usize) -> Charge {
        loop {
            if let Some(charge) = self.try_charge(bytes) {
                return charge;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            self.waiters.fetch_add(1, Ordering::SeqCst);
            // Re-check after registering: a release in between is not missed.
            if let Some(charge) = self.try_charge(bytes) {
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                return charge;
            }
            freed.await;
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Count `bytes` without a [`Charge`] (a holder that keeps its own
    /// tally, such as a connection's control backlog); give them back with
    /// [`MemoryBudget::sub`].
    pub fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.release(bytes);
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// Bytes charged to a budget, returned when dropped. The default charges
/// nothing (messages made outside a broker: tests, benches).
#[derive(Default)]
pub struct Charge {
    budget: Option<&'static MemoryBudget>,
    bytes: usize,
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({})", self.bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charges_are_returned_when_dropped_and_refused_past_the_limit() {
        let budget = MemoryBudget::leak(100);
        let a = budget.try_charge(60).expect("room");
        assert!(budget.try_charge(50).is_none(), "60 + 50 > 100");
        let b = budget.try_charge(40).expect("exactly full");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        // Forced charges may go past the limit (recovered messages).
        let forced = budget.charge(500);
        assert_eq!(budget.used(), 540);
        drop((b, forced));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_waiting_charge_goes_through_once_room_is_freed() {
        let budget = MemoryBudget::leak(100);
        let held = budget.try_charge(90).unwrap();
        let waiter = tokio::spawn(budget.charge_or_wait(50));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room: it waits");
        drop(held);
        let charge = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the release")
            .unwrap();
        assert_eq!(budget.used(), 50);
        drop(charge);
        assert_eq!(budget.used(), 0);
    }
}
