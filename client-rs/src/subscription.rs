//! A subscription: a `Stream` of messages that unsubscribes when dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use blipmq_protocol::{Frame, Unsubscribe};
use futures::channel::oneshot;
use futures::Stream;

use crate::error::{Failure, RequestError};
use crate::mailbox::{MailboxEvent, MailboxReceiver};
use crate::message::Message;
use crate::state::{encode_frame_into, Inner, Pending};

/// Messages matching a pattern, in order. Ends (`None`) when the client
/// closes. Survives reconnects: the client subscribes again on the new
/// connection. Dropping it unsubscribes (a durable subscription is only
/// detached: it keeps its unacked messages for the next subscribe with the
/// same name).
pub struct Subscription {
    inner: Arc<Inner>,
    local_id: u64,
    pattern: String,
    receiver: MailboxReceiver,
    unsubscribed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("buffered", &self.receiver.len())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        inner: Arc<Inner>,
        local_id: u64,
        pattern: String,
        receiver: MailboxReceiver,
    ) -> Subscription {
        Subscription {
            inner,
            local_id,
            pattern,
            receiver,
            unsubscribed: false,
        }
    }

    /// The topic or pattern this subscription was made with.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// How many messages the broker has reported discarded for this
    /// subscription so far (a full queue under a dropping overflow policy,
    /// or an expired TTL). Counted as soon as the broker reports it, even
    /// when no message follows; each message says how many came just
    /// before it ([`Message::dropped_before`](crate::Message::dropped_before)).
    pub fn dropped(&self) -> u64 {
        self.receiver.dropped()
    }

    /// Messages buffered now (for tests).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.receiver.len()
    }

    /// The next message; `None` once the client is closed and the buffered
    /// messages are drained.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// The next message, or a report of discards that no message has
    /// followed yet ([`SubscriptionEvent::Dropped`]); `None` once the client
    /// is closed and the buffered messages are drained. Every discard the
    /// broker reports is handed over exactly once, where it happened: as
    /// the next message's [`Message::dropped_before`], or as an event when
    /// the consumer asks before any message follows it. For a consumer
    /// that must hear of a gap without waiting for the next message (a
    /// stalled feed, a last batch that expired).
    pub async fn next_event(&mut self) -> Option<SubscriptionEvent> {
        Some(match self.receiver.recv_event().await? {
            MailboxEvent::Message(message) => SubscriptionEvent::Message(message),
            MailboxEvent::Dropped(count) => SubscriptionEvent::Dropped(count),
        })
    }

    /// Discards reported after every message taken so far, when no message
    /// is buffered: taken now (so the next message will not carry them).
    pub(crate) fn take_trailing_drops(&mut self) -> u64 {
        self.receiver.take_trailing_drops()
    }

    /// The count behind [`Subscription::dropped`], readable without the
    /// subscription (for a handle shared between callers).
    pub(crate) fn dropped_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.receiver.dropped_counter()
    }

    /// A timer on the client's runtime (tokio or the browser's), for
    /// callers that wait on a subscription with a time limit.
    pub(crate) fn sleep(
        &self,
        duration: std::time::Duration,
    ) -> crate::transport::BoxFuture<'static, ()> {
        self.inner.runtime.sleep(duration)
    }

    /// Take what is buffered now, up to `max` messages, without waiting.
    pub fn try_next_batch(&mut self, max: usize) -> Vec<Message> {
        self.receiver.try_recv_batch(max)
    }

    /// Stop the subscription and wait for the broker to confirm. Messages
    /// already buffered are discarded. A durable subscription is deleted,
    /// with every message it still held; to keep it for a later resume,
    /// drop the `Subscription` (or close the client) instead.
    pub async fn unsubscribe(mut self) -> Result<(), RequestError> {
        let Some(server_id) = self.forget() else {
            // Not subscribed on the current connection: nothing to undo.
            return Ok(());
        };
        if self.inner.is_closed() {
            return Err(Failure::Closed.error("the client is closed").into());
        }
        let request_id = self.inner.next_id();
        let frame = Frame::Unsubscribe(Unsubscribe {
            request_id,
            subscription_id: server_id,
            keep_durable: false,
        });
        let (tx, rx) = oneshot::channel();
        self.inner
            .request(request_id, Pending::Request(tx), &frame)
            .await?;
        self.inner.await_reply(request_id, rx).await?;
        Ok(())
    }
}

impl Subscription {
    /// Drop the subscription from the client's table (deliveries for it are
    /// discarded from now on) and return its id on the broker, if it has one.
    fn forget(&mut self) -> Option<u64> {
        self.unsubscribed = true;
        let entry = self
            .inner
            .subscriptions
            .lock()
            .unwrap()
            .remove(self.local_id);
        entry.and_then(|e| e.server_id)
    }
}

/// What [`Subscription::next_event`] hands over.
#[derive(Debug)]
pub enum SubscriptionEvent {
    /// The next message (its [`Message::dropped_before`] says how many were
    /// discarded just before it).
    Message(Message),
    /// The broker discarded this many messages after the last message
    /// handed over, and none has followed yet.
    Dropped(u64),
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.unsubscribed {
            return;
        }
        if let Some(server_id) = self.forget() {
            // Fire and forget: Drop cannot wait. The answer is ignored, and
            // deliveries that race with it are discarded by the reader.
            let frame = Frame::Unsubscribe(Unsubscribe {
                request_id: self.inner.next_id(),
                subscription_id: server_id,
                keep_durable: true,
            });
            let _ = self
                .inner
                .outgoing
                .try_push_with(|out| encode_frame_into(&frame, out));
        }
    }
}
