//! What a connection's reader (and every publisher fanning out to it) hands
//! to that connection's writer: control frames, and the subscriptions whose
//! queues the writer drains.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::connections::Traffic;
use crate::memory::MemoryBudget;
use crate::subscription::{Subscription, SubscriptionSet};

/// Control frames (replies, errors, pongs) a connection may have waiting for
/// its writer. A client that sends requests but never reads its replies is
/// disconnected past this, instead of growing broker memory.
pub const MAX_PENDING_CONTROL_BYTES: usize = 8 * 1024 * 1024;

/// A backlog no larger than this is never refused for the broker-wide
/// bound (see [`Outbox::with_control_budget`]): a client that reads its
/// replies seldom has more than a few frames waiting.
pub const CONTROL_FLOOR_BYTES: usize = 16 * 1024;

#[derive(Default)]
pub struct Outbox {
    /// Wakes the writer. `notify_one` keeps a permit when the writer is busy,
    /// so a wake-up is never lost between its last check and its next wait.
    ready: Notify,
    control: Mutex<BytesMut>,
    /// Every connection's control backlog together (LIMIT-2): 8 MiB each
    /// would let ten thousand connections that never read hold 80 GB.
    control_budget: Option<&'static MemoryBudget>,
    /// Control bytes the writer has taken and not written yet: they stay
    /// counted against `control_budget` until written, so a writer stuck
    /// on a peer that does not read cannot hide its backlog there.
    control_in_writer: AtomicUsize,
    /// By id: an ack, an unsubscribe and the limit check cost the same
    /// however many subscriptions the connection holds.
    subscriptions: Mutex<SubscriptionSet>,
    /// Bumped on every change to `subscriptions`, so the writer refreshes its
    /// copy only when something changed.
    subscriptions_version: AtomicU64,
    /// What the connection's socket has carried (introspection).
    pub traffic: Traffic,
}

/// Writers a reader has queued messages for and not woken yet (see
/// [`crate::subscription::Subscription::try_enqueue_deferring_wake`]).
/// They are woken by [`PendingWakes::wake_all`], which the reader calls
/// before anything that may wait, when [`PendingWakes::MAX_DEFERRED`]
/// messages have piled up, and at the latest when this is dropped.
#[derive(Default)]
pub struct PendingWakes {
    outboxes: Vec<Arc<Outbox>>,
    deferred: usize,
}

impl PendingWakes {
    /// Writers kept apart at most; others are woken at once (a fan-out to
    /// many connections gains little from deferring, and the duplicate
    /// check stays a few pointer comparisons).
    const MAX_OUTBOXES: usize = 8;
    /// Messages queued before the writers are woken anyway, so that one
    /// large read does not hold back the first deliveries for long.
    const MAX_DEFERRED: usize = 1024;

    /// `outbox` gained a message and needs waking.
    pub fn add(&mut self, outbox: &Arc<Outbox>) {
        self.deferred += 1;
        if !self.outboxes.iter().any(|o| Arc::ptr_eq(o, outbox)) {
            if self.outboxes.len() < Self::MAX_OUTBOXES {
                self.outboxes.push(outbox.clone());
            } else {
                outbox.wake();
            }
        }
        if self.deferred >= Self::MAX_DEFERRED {
            self.wake_all();
        }
    }

    /// Wake every writer added since the last call.
    pub fn wake_all(&mut self) {
        self.deferred = 0;
        for outbox in self.outboxes.drain(..) {
            outbox.wake();
        }
    }
}

impl Drop for PendingWakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// The control backlog is over [`MAX_PENDING_CONTROL_BYTES`].
#[derive(Debug)]
pub struct ControlBacklogFull;

impl Outbox {
    pub fn new() -> Arc<Outbox> {
        Arc::new(Outbox::default())
    }

    /// An outbox whose control backlog also counts against `budget`, shared
    /// by every connection: while the budget is spent, a backlog past
    /// [`CONTROL_FLOOR_BYTES`] is refused (its connection is closed), so
    /// the peers that do not read go, and those that do are untouched.
    pub fn with_control_budget(budget: &'static MemoryBudget) -> Arc<Outbox> {
        let mut outbox = Outbox::default();
        outbox.control_budget = Some(budget);
        Arc::new(outbox)
    }

    #[inline]
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    pub async fn wait(&self) {
        self.ready.notified().await;
    }

    /// Queue an encoded control frame for the writer. `encode` appends to the
    /// pending buffer in place, so no intermediate allocation is made.
    pub fn push_control(
        &self,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ControlBacklogFull> {
        {
            let mut control = self.control.lock();
            if control.len() > MAX_PENDING_CONTROL_BYTES {
                return Err(ControlBacklogFull);
            }
            let before = control.len();
            if let Some(budget) = self.control_budget {
                if before > CONTROL_FLOOR_BYTES && budget.used() >= budget.limit() {
                    return Err(ControlBacklogFull);
                }
            }
            encode(&mut control);
            if let Some(budget) = self.control_budget {
                budget.add(control.len() - before);
            }
        }
        self.wake();
        Ok(())
    }

    /// Move all pending control frames into `into`.
    pub fn take_control(&self, into: &mut BytesMut) {
        let mut control = self.control.lock();
        if !control.is_empty() {
            into.extend_from_slice(&control);
            self.control_in_writer
                .fetch_add(control.len(), Ordering::Relaxed);
            control.clear();
        }
    }

    /// The writer has written `bytes` of the control frames it took.
    pub fn control_written(&self, bytes: usize) {
        self.control_in_writer.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(budget) = self.control_budget {
            budget.sub(bytes);
        }
    }

    pub fn add_subscription(&self, subscription: Arc<Subscription>) {
        let mut subs = self.subscriptions.lock();
        subs.insert(subscription);
        self.subscriptions_version.fetch_add(1, Ordering::Release);
    }

    pub fn remove_subscription(&self, id: u64) -> Option<Arc<Subscription>> {
        let mut subs = self.subscriptions.lock();
        let removed = subs.remove(id)?;
        self.subscriptions_version.fetch_add(1, Ordering::Release);
        Some(removed)
    }

    pub fn take_all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        let mut subs = self.subscriptions.lock();
        self.subscriptions_version.fetch_add(1, Ordering::Release);
        subs.take_all()
    }

    pub fn subscription(&self, id: u64) -> Option<Arc<Subscription>> {
        self.subscriptions.lock().get(id).cloned()
    }

    /// Subscriptions the connection holds now.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.lock().len()
    }

    /// The subscriptions the connection holds now, copied out.
    pub fn subscriptions_snapshot(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions.lock().as_slice().to_vec()
    }

    /// Control frames (replies, errors) not yet written to the socket.
    pub fn control_backlog_bytes(&self) -> usize {
        self.control.lock().len() + self.control_in_writer.load(Ordering::Relaxed)
    }

    /// Refresh `cached` if the subscription set changed since `seen_version`.
    /// Every change bumps the version while holding the lock, so reading it
    /// under the lock pairs the copy with exactly the version it reflects.
    pub fn refresh_subscriptions(
        &self,
        seen_version: &mut u64,
        cached: &mut Vec<Arc<Subscription>>,
    ) {
        let version = self.subscriptions_version.load(Ordering::Acquire);
        if version != *seen_version {
            let subs = self.subscriptions.lock();
            cached.clear();
            cached.extend(subs.as_slice().iter().cloned());
            *seen_version = self.subscriptions_version.load(Ordering::Acquire);
            drop(subs);
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(budget) = self.control_budget {
            budget.sub(self.control.get_mut().len() + *self.control_in_writer.get_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backlogs_past_the_floor_are_refused_while_the_shared_budget_is_spent() {
        let budget = MemoryBudget::leak(3 * CONTROL_FLOOR_BYTES);
        let (reader, idle) = (
            Outbox::with_control_budget(budget),
            Outbox::with_control_budget(budget),
        );
        let chunk = |out: &mut BytesMut| out.resize(out.len() + CONTROL_FLOOR_BYTES, 0);
        // The idle peer takes the whole budget...
        for _ in 0..3 {
            idle.push_control(chunk).unwrap();
        }
        assert_eq!(budget.used(), 3 * CONTROL_FLOOR_BYTES);
        assert!(
            idle.push_control(chunk).is_err(),
            "past the floor, budget spent"
        );
        // ...a peer with a small backlog is still served...
        reader
            .push_control(|out| out.extend_from_slice(b"pong"))
            .unwrap();
        let mut written = BytesMut::new();
        reader.take_control(&mut written);
        assert_eq!(&written[..], b"pong");
        assert_eq!(
            budget.used(),
            3 * CONTROL_FLOOR_BYTES + 4,
            "taken, not yet written"
        );
        reader.control_written(4);
        // ...and what the idle one held is returned when it goes.
        drop(idle);
        assert_eq!(budget.used(), 0);
    }

    /// Whether `outbox` has a wake-up waiting (and takes it).
    async fn was_woken(outbox: &Outbox) -> bool {
        tokio::time::timeout(Duration::from_millis(20), outbox.wait())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn deferred_wakes_go_out_once_per_writer_on_wake_all() {
        let (a, b) = (Outbox::new(), Outbox::new());
        let mut wakes = PendingWakes::default();
        wakes.add(&a);
        wakes.add(&b);
        wakes.add(&a);
        assert!(!was_woken(&a).await, "woken before wake_all");
        assert!(!was_woken(&b).await, "woken before wake_all");
        wakes.wake_all();
        assert!(was_woken(&a).await);
        assert!(was_woken(&b).await);
        // One permit each: the duplicate add did not queue a second wake.
        assert!(!was_woken(&a).await);
        wakes.wake_all();
        assert!(!was_woken(&a).await, "wake_all emptied the set");
    }

    #[tokio::test]
    async fn too_many_deferred_messages_wake_the_writers() {
        let outbox = Outbox::new();
        let mut wakes = PendingWakes::default();
        for _ in 0..PendingWakes::MAX_DEFERRED - 1 {
            wakes.add(&outbox);
        }
        assert!(!was_woken(&outbox).await);
        wakes.add(&outbox);
        assert!(was_woken(&outbox).await);
    }

    #[tokio::test]
    async fn writers_past_the_set_limit_are_woken_at_once() {
        let outboxes: Vec<_> = (0..PendingWakes::MAX_OUTBOXES + 1)
            .map(|_| Outbox::new())
            .collect();
        let mut wakes = PendingWakes::default();
        for outbox in &outboxes {
            wakes.add(outbox);
        }
        let last = outboxes.last().unwrap();
        assert!(was_woken(last).await, "the ninth writer waits for nothing");
        assert!(!was_woken(&outboxes[0]).await);
    }

    #[tokio::test]
    async fn dropping_the_set_wakes_what_it_held() {
        let outbox = Outbox::new();
        let mut wakes = PendingWakes::default();
        wakes.add(&outbox);
        drop(wakes);
        assert!(was_woken(&outbox).await);
    }
}
