//! A subscription: batches of messages, unsubscribe and detach, over
//! `blipmq::foreign::SharedSubscription` (which holds the logic every
//! binding shares).

use std::time::Duration;

use blipmq::foreign::SharedSubscription;

use crate::error::NativeError;
use crate::message::ReceivedMessage;
use crate::runtime::on_runtime;

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

    /// Wait for one message (at most `timeout_ms` when given), then take up
    /// to `max` in all from what is already buffered. Returns an empty list
    /// when the time passes, and `None` once the subscription has ended
    /// (unsubscribed, detached, or the client closed and the buffer is
    /// drained). Cancelling the call loses no message.
    pub async fn next_batch(
        &self,
        max: u32,
        timeout_ms: Option<u32>,
    ) -> Option<Vec<ReceivedMessage>> {
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let batch = on_runtime(self.inner.next_batch(max as usize, timeout)).await?;
        Some(
            batch
                .messages
                .into_iter()
                .map(ReceivedMessage::new)
                .collect(),
        )
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
