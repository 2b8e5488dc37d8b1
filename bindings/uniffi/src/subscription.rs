//! A subscription: batches of messages with the discards reported among
//! them, unsubscribe and detach, over `blipmq::foreign::SharedSubscription`
//! (which holds the logic every binding shares).

use std::time::Duration;

use blipmq::foreign::{Received, SharedSubscription};

use crate::error::NativeError;
use crate::message::{PackedMessages, ReceivedMessage};
use crate::runtime::on_runtime;

/// What one `next_batch` hands over. Every discard the broker reports
/// reaches the reader once: in the `dropped_before` of the message after
/// it, or in `dropped_after` when no message has followed it yet.
#[derive(uniffi::Record)]
pub struct ReceivedBatch {
    /// Messages in order.
    pub messages: Vec<ReceivedMessage>,
    /// Messages discarded after the last of `messages` (after the previous
    /// call's last, when `messages` is empty), none following yet. A batch
    /// with no messages and a non-zero count came back before its timeout
    /// just to report the gap.
    pub dropped_after: u64,
}

impl From<Received> for ReceivedBatch {
    fn from(received: Received) -> ReceivedBatch {
        ReceivedBatch {
            messages: received
                .messages
                .into_iter()
                .map(ReceivedMessage::new)
                .collect(),
            dropped_after: received.dropped_after,
        }
    }
}

#[derive(uniffi::Object)]
pub struct NativeSubscription {
    inner: SharedSubscription,
}

impl NativeSubscription {
    pub fn new(subscription: blipmq::Subscription) -> NativeSubscription {
        NativeSubscription {
            inner: subscription.into(),
        }
    }
}

#[uniffi::export]
impl NativeSubscription {
    /// The topic or pattern it was made with.
    pub fn pattern(&self) -> String {
        self.inner.pattern().to_owned()
    }

    /// How many messages the broker has reported discarded for this
    /// subscription so far, counted as soon as each report arrives.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Wait for one message (at most `timeout_ms` when given), then take up
    /// to `max` in all from what is already buffered; or return at once,
    /// with no messages, to report discards that no message follows.
    /// Returns an empty batch (no messages, `dropped_after` 0) when the time
    /// passes, and `None` once the subscription has ended (unsubscribed,
    /// detached, or the client closed and the buffer is drained).
    /// Cancelling the call while it waits loses nothing.
    pub async fn next_batch(&self, max: u32, timeout_ms: Option<u32>) -> Option<ReceivedBatch> {
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let received = on_runtime(self.inner.next_batch(max as usize, timeout)).await?;
        Some(received.into())
    }

    /// `next_batch` with the messages packed into bytes (see
    /// `PackedMessages`), for a layer that reads them itself.
    pub async fn next_packed(&self, max: u32, timeout_ms: Option<u32>) -> Option<PackedMessages> {
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let received = on_runtime(self.inner.next_batch(max as usize, timeout)).await?;
        Some(PackedMessages::new(
            received.messages,
            received.dropped_after,
        ))
    }

    /// Up to `max` messages buffered now, packed, without waiting: none
    /// when nothing is buffered, another caller is reading, or the
    /// subscription has ended (`next_packed` tells which). A gap after the
    /// last of them is left for the next message or the next wait to
    /// report. One plain call while messages stream in, where an async
    /// one crosses into the library several times.
    pub fn try_next_packed(&self, max: u32) -> PackedMessages {
        PackedMessages::new(self.inner.try_next_batch(max as usize), 0)
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded and a durable subscription is deleted with
    /// every message it held. A second call does nothing.
    pub async fn unsubscribe(&self) -> Result<(), NativeError> {
        Ok(on_runtime(self.inner.unsubscribe()).await?)
    }

    /// Stop receiving without deleting anything, without waiting: a plain
    /// subscription ends, a durable one keeps its unacked messages for the
    /// next subscribe with its name (what dropping the Rust `Subscription`
    /// does). A reader waiting in `next_batch` returns `None`.
    pub fn detach(&self) {
        self.inner.detach();
    }
}
