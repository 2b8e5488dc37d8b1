//! A subscription: batches of messages, unsubscribe and detach.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::BlipMqError;
use crate::message::ReceivedMessage;
use crate::runtime::on_runtime;

/// Wraps `blipmq::Subscription`. The lock serializes readers; `stop` wakes
/// a reader waiting inside it, so that `unsubscribe` and `detach` never wait
/// for a message that may never come.
#[derive(uniffi::Object)]
pub struct NativeSubscription {
    pattern: String,
    inner: Mutex<Option<blipmq::Subscription>>,
    stop: CancellationToken,
}

impl NativeSubscription {
    pub fn new(subscription: blipmq::Subscription) -> NativeSubscription {
        NativeSubscription {
            pattern: subscription.pattern().to_owned(),
            inner: Mutex::new(Some(subscription)),
            stop: CancellationToken::new(),
        }
    }
}

#[uniffi::export]
impl NativeSubscription {
    /// The topic or pattern it was made with.
    pub fn pattern(&self) -> String {
        self.pattern.clone()
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
        on_runtime(async {
            let mut guard = self.inner.lock().await;
            if self.stop.is_cancelled() {
                // Detached while this call waited for the lock.
                guard.take();
                return None;
            }
            let subscription = guard.as_mut()?;
            let first = tokio::select! {
                biased;
                message = subscription.next_message() => message,
                () = self.stop.cancelled() => {
                    guard.take();
                    return None;
                }
                () = sleep_opt(timeout_ms) => return Some(Vec::new()),
            };
            // `None`: the client closed and the buffer is drained.
            let first = first?;
            let rest = subscription.try_next_batch(max.saturating_sub(1) as usize);
            Some(
                std::iter::once(first)
                    .chain(rest)
                    .map(ReceivedMessage::new)
                    .collect(),
            )
        })
        .await
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded and a durable subscription is deleted with
    /// every message it held. A second call does nothing.
    pub async fn unsubscribe(&self) -> Result<(), BlipMqError> {
        self.stop.cancel();
        on_runtime(async {
            let subscription = self.inner.lock().await.take();
            match subscription {
                Some(subscription) => Ok(subscription.unsubscribe().await?),
                None => Ok(()),
            }
        })
        .await
    }

    /// Stop receiving without deleting anything, without waiting: a plain
    /// subscription ends, a durable one keeps its unacked messages for the
    /// next subscribe with its name (what dropping the Rust `Subscription`
    /// does). A reader waiting in `next_batch` returns `None`.
    pub fn detach(&self) {
        self.stop.cancel();
        // When a reader holds the lock, it drops the subscription itself on
        // its way out (it sees `stop`).
        if let Ok(mut guard) = self.inner.try_lock() {
            guard.take();
        }
    }
}

async fn sleep_opt(timeout_ms: Option<u32>) {
    match timeout_ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
        None => std::future::pending().await,
    }
}
