//! A subscription that many foreign callers share.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, Either};
use futures::lock::{Mutex, OwnedMutexGuard};

use crate::error::RequestError;
use crate::message::Message;
use crate::subscription::{Subscription, SubscriptionEvent};

/// A [`Subscription`] for callers that share it. Clones are handles to the
/// same subscription. Readers take turns (one `next_batch` at a time, in
/// the order they asked); `unsubscribe` and `detach` wake a reader that is
/// waiting, so neither ever waits for a message that may never come.
#[derive(Clone)]
pub struct SharedSubscription {
    shared: Arc<Shared>,
}

struct Shared {
    pattern: String,
    /// [`Subscription::dropped`], readable while a reader holds `slot`.
    dropped: Arc<AtomicU64>,
    /// The subscription and what readers took but never handed over; a
    /// reader holds it from its wait until its result is claimed.
    slot: Arc<Mutex<Slot>>,
    /// Closed to wake readers: the subscription is ending.
    stop: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Ending by `detach`: the reader holding the lock drops the
    /// subscription on its way out (an `unsubscribe` takes it instead, to
    /// tell the broker).
    detached: AtomicBool,
}

impl std::fmt::Debug for SharedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSubscription")
            .field("pattern", &self.shared.pattern)
            .field("ended", &self.is_ended())
            .finish()
    }
}

impl From<Subscription> for SharedSubscription {
    fn from(subscription: Subscription) -> SharedSubscription {
        SharedSubscription::new(subscription)
    }
}

impl SharedSubscription {
    // On wasm32 a subscription is neither Send nor Sync, and there is one
    // thread: the Arc is only for sharing.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn new(subscription: Subscription) -> SharedSubscription {
        SharedSubscription {
            shared: Arc::new(Shared {
                pattern: subscription.pattern().to_owned(),
                dropped: subscription.dropped_counter(),
                slot: Arc::new(Mutex::new(Slot {
                    subscription: Some(subscription),
                    returned: VecDeque::new(),
                    returned_dropped_after: 0,
                })),
                stop: async_channel::bounded(1),
                detached: AtomicBool::new(false),
            }),
        }
    }

    /// The topic or pattern it was made with.
    pub fn pattern(&self) -> &str {
        &self.shared.pattern
    }

    /// How many messages the broker has reported discarded for this
    /// subscription so far (see [`Subscription::dropped`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Messages buffered in the subscription now (for tests).
    #[cfg(all(test, feature = "tokio"))]
    pub(crate) fn shared_len(&self) -> usize {
        self.shared
            .slot
            .try_lock()
            .and_then(|slot| slot.subscription.as_ref().map(Subscription::buffered))
            .unwrap_or(0)
    }

    /// Whether `unsubscribe` or `detach` was called.
    pub fn is_ended(&self) -> bool {
        self.shared.stop.0.is_closed()
    }

    /// Wait for one message (at most `timeout`, when given), then take up to
    /// `max` in all from what is already buffered; or, when the broker
    /// reports discards that no message follows, return at once with just
    /// their count (a binding tells its user before it waits on).
    ///
    /// `Some` of an empty [`Received`] when the time passed (or `max` is
    /// 0); `None` once the subscription has ended: unsubscribed, detached,
    /// or the client closed and its buffer drained. Cancel-safe: a call
    /// dropped while it waits has taken nothing.
    pub async fn next_batch(&self, max: usize, timeout: Option<Duration>) -> Option<Received> {
        Some(self.next_batch_claimable(max, timeout).await?.claim())
    }

    /// [`SharedSubscription::next_batch`] for a binding whose runtime may
    /// drop a finished result: Python cancels an `asyncio.Future` whose
    /// Rust side has already taken the messages and queued them for the
    /// event loop. What this returns holds the subscription (the next read
    /// waits) until it is claimed; dropped unclaimed, its messages go back
    /// in front, for the next read, in order.
    pub async fn next_batch_claimable(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Option<Claimable> {
        let shared = &self.shared;
        let mut guard = shared.slot.clone().lock_owned().await;
        if self.is_ended() {
            // Ended while this call waited for its turn.
            shared.finish(&mut guard);
            return None;
        }
        if guard.has_returned() {
            // Taken by a reader whose caller never claimed them: first.
            let received = guard.take_returned(max);
            return Some(Claimable::new(guard, received, shared.clone()));
        }
        let subscription = guard.subscription.as_mut()?;
        if max == 0 {
            return Some(Claimable::new(guard, Received::default(), shared.clone()));
        }
        let timer = timeout.map(|timeout| subscription.sleep(timeout));
        let woken = {
            let next = subscription.next_event();
            let stop = shared.stop.1.recv();
            let timer = match timer {
                Some(timer) => Either::Left(timer),
                None => Either::Right(future::pending()),
            };
            futures::pin_mut!(next, stop);
            // A message that is ready wins over the stop and the timeout.
            match future::select(next, future::select(stop, timer)).await {
                Either::Left((message, _)) => Woken::Message(message),
                Either::Right((Either::Left(_stopped), _)) => Woken::Stopped,
                Either::Right((Either::Right(((), _)), _)) => Woken::TimedOut,
            }
        };
        let first = match woken {
            Woken::Message(message) => message,
            Woken::Stopped => {
                shared.finish(&mut guard);
                return None;
            }
            Woken::TimedOut => {
                return Some(Claimable::new(guard, Received::default(), shared.clone()))
            }
        };
        // `None`: the client closed and the buffer is drained.
        let received = match first? {
            SubscriptionEvent::Message(first) => {
                let subscription = guard.subscription.as_mut()?;
                let mut messages = Vec::with_capacity(max.min(1024));
                messages.push(first);
                messages.extend(subscription.try_next_batch(max - 1));
                Received {
                    messages,
                    dropped_after: subscription.take_trailing_drops(),
                }
            }
            SubscriptionEvent::Dropped(count) => Received {
                messages: Vec::new(),
                dropped_after: count,
            },
        };
        Some(Claimable::new(guard, received, shared.clone()))
    }

    /// Up to `max` messages that are buffered now, without waiting. Empty
    /// when there are none, when another caller is reading, or when the
    /// subscription has ended (`next_batch` tells which). Saves a trip
    /// through a foreign runtime while messages stream in.
    pub fn try_next_batch(&self, max: usize) -> Vec<Message> {
        if self.is_ended() {
            return Vec::new();
        }
        match self.shared.slot.try_lock() {
            // What was handed back goes first; a gap after it is for
            // `next_batch` to report, before anything newer.
            Some(mut guard) if guard.has_returned() => {
                let returned = guard.returned.len().min(max);
                guard.returned.drain(..returned).collect()
            }
            Some(mut guard) => guard
                .subscription
                .as_mut()
                .map(|subscription| subscription.try_next_batch(max))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded and a durable subscription is deleted with
    /// every message it held. A waiting `next_batch` returns `None`. A
    /// second call (or one after `detach`) does nothing.
    pub async fn unsubscribe(&self) -> Result<(), RequestError> {
        self.shared.stop.0.close();
        let taken = self.shared.slot.lock().await.subscription.take();
        match taken {
            Some(subscription) => subscription.unsubscribe().await,
            None => Ok(()),
        }
    }

    /// Stop receiving without deleting anything, without waiting: a plain
    /// subscription ends, a durable one keeps its unacked messages for the
    /// next subscribe with its name (what dropping a [`Subscription`]
    /// does). A waiting `next_batch` returns `None`.
    pub fn detach(&self) {
        self.shared.detached.store(true, Ordering::Release);
        self.shared.stop.0.close();
        // A reader holding the lock drops the subscription itself on its
        // way out (it sees `stop` and `detached`).
        if let Some(mut guard) = self.shared.slot.try_lock() {
            guard.subscription.take();
        }
    }
}

/// What one [`SharedSubscription::next_batch`] hands over. Every discard
/// the broker reports reaches the reader once, where it happened: in the
/// `dropped_before` of the message after it, or here when nothing followed.
#[derive(Debug, Default)]
pub struct Received {
    /// Messages in order.
    pub messages: Vec<Message>,
    /// Messages the broker discarded after the last of `messages` (after
    /// the previous call's, when `messages` is empty), none following yet.
    pub dropped_after: u64,
}

impl Received {
    /// Nothing came: the wait timed out.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.dropped_after == 0
    }
}

/// What ended a reader's wait.
enum Woken {
    Message(Option<SubscriptionEvent>),
    Stopped,
    TimedOut,
}

impl Shared {
    /// A reader leaving because the subscription ended: after a `detach`
    /// the subscription goes now (no one else may come for it); after an
    /// `unsubscribe` it stays for that call to take.
    fn finish(&self, slot: &mut Slot) {
        if self.detached.load(Ordering::Acquire) {
            slot.subscription.take();
        }
    }
}

/// What [`Shared::slot`] guards.
struct Slot {
    /// `None` once unsubscribed or detached.
    subscription: Option<Subscription>,
    /// Messages a reader took whose caller never claimed them, oldest
    /// first: the next reads hand them out before anything newer.
    returned: VecDeque<Message>,
    /// Discards after the last of `returned`, nothing following them yet.
    returned_dropped_after: u64,
}

impl Slot {
    fn has_returned(&self) -> bool {
        !self.returned.is_empty() || self.returned_dropped_after > 0
    }

    /// Up to `max` of what was handed back, with the gap after it once the
    /// last of it goes.
    fn take_returned(&mut self, max: usize) -> Received {
        let taken = self.returned.len().min(max);
        let messages: Vec<Message> = self.returned.drain(..taken).collect();
        let dropped_after = if self.returned.is_empty() {
            std::mem::take(&mut self.returned_dropped_after)
        } else {
            0
        };
        Received {
            messages,
            dropped_after,
        }
    }

    /// Put back what a reader took and its caller never claimed: it is
    /// older than anything still here.
    fn put_back(&mut self, received: Received) {
        let Received {
            messages,
            dropped_after,
        } = received;
        match self.returned.front_mut() {
            // Something newer is still here: the gap stands before it.
            Some(next) => next.dropped_before += dropped_after,
            None => self.returned_dropped_after += dropped_after,
        }
        for message in messages.into_iter().rev() {
            self.returned.push_front(message);
        }
    }
}

/// A read's result that holds the subscription until it is claimed (see
/// [`SharedSubscription::next_batch_claimable`]).
pub struct Claimable {
    guard: Option<OwnedMutexGuard<Slot>>,
    received: Option<Received>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Claimable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimable")
            .field("received", &self.received)
            .finish()
    }
}

impl Claimable {
    fn new(guard: OwnedMutexGuard<Slot>, received: Received, shared: Arc<Shared>) -> Claimable {
        Claimable {
            guard: Some(guard),
            received: Some(received),
            shared,
        }
    }

    /// The result, handed over: the subscription is free for the next read.
    pub fn claim(mut self) -> Received {
        self.received.take().unwrap_or_default()
    }
}

impl Drop for Claimable {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        if let Some(unclaimed) = self.received.take() {
            guard.put_back(unclaimed);
        }
        // A detach while this held the subscription left it to us.
        self.shared.finish(&mut guard);
    }
}
