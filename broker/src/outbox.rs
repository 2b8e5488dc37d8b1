//! What a connection's reader (and every publisher fanning out to it) hands
//! to that connection's writer: control frames, and the subscriptions whose
//! queues the writer drains.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::subscription::Subscription;

/// Control frames (replies, errors, pongs) a connection may have waiting for
/// its writer. A client that sends requests but never reads its replies is
/// disconnected past this, instead of growing broker memory.
pub const MAX_PENDING_CONTROL_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
pub struct Outbox {
    /// Wakes the writer. `notify_one` keeps a permit when the writer is busy,
    /// so a wake-up is never lost between its last check and its next wait.
    ready: Notify,
    control: Mutex<BytesMut>,
    subscriptions: Mutex<Vec<Arc<Subscription>>>,
    /// Bumped on every change to `subscriptions`, so the writer refreshes its
    /// copy only when something changed.
    subscriptions_version: AtomicU64,
}

/// The control backlog is over [`MAX_PENDING_CONTROL_BYTES`].
#[derive(Debug)]
pub struct ControlBacklogFull;

impl Outbox {
    pub fn new() -> Arc<Outbox> {
        Arc::new(Outbox::default())
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
            encode(&mut control);
        }
        self.wake();
        Ok(())
    }

    /// Move all pending control frames into `into`.
    pub fn take_control(&self, into: &mut BytesMut) {
        let mut control = self.control.lock();
        if !control.is_empty() {
            into.extend_from_slice(&control);
            control.clear();
        }
    }

    pub fn add_subscription(&self, subscription: Arc<Subscription>) {
        let mut subs = self.subscriptions.lock();
        subs.push(subscription);
        self.subscriptions_version.fetch_add(1, Ordering::Release);
    }

    pub fn remove_subscription(&self, id: u64) -> Option<Arc<Subscription>> {
        let mut subs = self.subscriptions.lock();
        let index = subs.iter().position(|s| s.id == id)?;
        let removed = subs.swap_remove(index);
        self.subscriptions_version.fetch_add(1, Ordering::Release);
        Some(removed)
    }

    pub fn take_all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        let mut subs = self.subscriptions.lock();
        self.subscriptions_version.fetch_add(1, Ordering::Release);
        std::mem::take(&mut *subs)
    }

    pub fn subscription(&self, id: u64) -> Option<Arc<Subscription>> {
        self.subscriptions
            .lock()
            .iter()
            .find(|s| s.id == id)
            .cloned()
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
            cached.extend(subs.iter().cloned());
            *seen_version = self.subscriptions_version.load(Ordering::Acquire);
            drop(subs);
        }
    }
}
