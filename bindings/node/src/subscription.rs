//! A subscription: batches of messages for `index.js`'s async iterator, and
//! unsubscribe.

use std::time::Duration;

use napi_derive::napi;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::to_napi;
use crate::message::NativeMessage;

/// Wraps `blipmq::Subscription`. The lock serializes readers; `stop` wakes
/// a reader waiting inside it so that `unsubscribe` never waits for a
/// message that may never come.
#[napi]
pub struct NativeSubscription {
    inner: Mutex<Option<blipmq::Subscription>>,
    stop: CancellationToken,
    pattern: String,
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

#[napi]
impl NativeSubscription {
    #[napi(getter)]
    pub fn pattern(&self) -> String {
        self.pattern.clone()
    }

    /// Wait for one message (at most `timeout_ms` when given), then take up
    /// to `max` in all from what is buffered. Resolves `[]` on timeout and
    /// `null` once the subscription has ended (unsubscribed, or the client
    /// closed and the buffer is drained).
    #[napi]
    pub async fn next_batch(
        &self,
        max: u32,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Option<Vec<NativeMessage>>> {
        let mut guard = self.inner.lock().await;
        let Some(subscription) = guard.as_mut() else {
            return Ok(None);
        };
        let first = tokio::select! {
            biased;
            message = subscription.next_message() => message,
            _ = self.stop.cancelled() => return Ok(None),
            _ = sleep_opt(timeout_ms) => return Ok(Some(Vec::new())),
        };
        let Some(first) = first else {
            return Ok(None);
        };
        let rest = subscription.try_next_batch(max.saturating_sub(1) as usize);
        Ok(Some(
            std::iter::once(first)
                .chain(rest)
                .map(NativeMessage::new)
                .collect(),
        ))
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded. A second call does nothing.
    #[napi]
    pub async fn unsubscribe(&self) -> napi::Result<()> {
        self.stop.cancel();
        let subscription = self.inner.lock().await.take();
        match subscription {
            Some(subscription) => subscription.unsubscribe().await.map_err(to_napi),
            None => Ok(()),
        }
    }

    /// Stop receiving without deleting anything: a plain subscription ends,
    /// a durable one keeps its unacked messages for the next subscribe with
    /// its name (what dropping the Rust `Subscription` does).
    #[napi]
    pub async fn detach(&self) -> napi::Result<()> {
        self.stop.cancel();
        drop(self.inner.lock().await.take());
        Ok(())
    }
}

async fn sleep_opt(timeout_ms: Option<u32>) {
    match timeout_ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
        None => std::future::pending().await,
    }
}
