//! A subscription's buffer between the connection's read loop and the
//! subscription's consumer.
//!
//! The read loop hands over every delivery one read of the socket brought
//! for a subscription under one lock, and the consumer takes a batch under
//! one lock; a channel of single messages paid a queue operation and an
//! event notification per message on each side (a fifth of a subscriber's
//! CPU at small payloads). Bounded in messages: the read loop waits for
//! room, so a slow consumer stops the reading and the broker's overflow
//! policy applies, rather than client memory growing.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::message::Message;

/// A new mailbox holding up to `capacity` messages (at least one).
pub(crate) fn mailbox(capacity: usize) -> (MailboxSender, MailboxReceiver) {
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        refusing: AtomicBool::new(false),
        dropped: Arc::new(AtomicU64::new(0)),
        state: Mutex::new(State {
            messages: VecDeque::new(),
            dropped_carry: 0,
            consumer: None,
            producer: None,
            senders: 1,
            closed: false,
            receiver_alive: true,
        }),
    });
    (
        MailboxSender {
            shared: shared.clone(),
        },
        MailboxReceiver { shared },
    )
}

struct Shared {
    capacity: usize,
    /// `closed || !receiver_alive`, readable without the lock: the read
    /// loop asks before every delivery.
    refusing: AtomicBool,
    /// Messages the broker reported discarded for this subscription, in all
    /// (shared with whoever asked for [`MailboxReceiver::dropped_counter`]).
    dropped: Arc<AtomicU64>,
    state: Mutex<State>,
}

struct State {
    messages: VecDeque<Message>,
    /// Discards reported after the last message sent: the next message
    /// sent carries them as its `dropped_before`, unless the consumer
    /// takes them first as an event of their own (`poll_recv_event`).
    dropped_carry: u64,
    /// The consumer waiting for a message.
    consumer: Option<Waker>,
    /// The read loop waiting for room.
    producer: Option<Waker>,
    /// Live sender handles; the mailbox closes when the last one goes.
    senders: usize,
    /// No more messages will come: the consumer drains what is left, then
    /// sees the end.
    closed: bool,
    receiver_alive: bool,
}

impl Shared {
    /// The mailbox takes nothing more (set under the lock, with the state
    /// that says why).
    fn refuse(&self) {
        self.refusing.store(true, Ordering::Release);
    }

    /// No more messages will come: mark it under the lock held in `state`,
    /// then wake the consumer to drain what is left and see the end.
    fn close(&self, mut state: MutexGuard<'_, State>) {
        state.closed = true;
        self.refuse();
        let consumer = state.consumer.take();
        drop(state);
        if let Some(waker) = consumer {
            waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing runs user code under this lock, so it cannot be poisoned
        // half way through a change; recover rather than panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The producer to wake after the consumer took messages: once half the
    /// mailbox is free, not at every message (which would wake the read
    /// loop once per message while the consumer is behind).
    fn room_made(&self, state: &mut State) -> Option<Waker> {
        if state.messages.len() <= self.capacity / 2 {
            state.producer.take()
        } else {
            None
        }
    }
}

/// Keep `cx`'s waker in `slot` (unless the one there already wakes the
/// same task).
pub(crate) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

pub(crate) struct MailboxSender {
    shared: Arc<Shared>,
}

impl Clone for MailboxSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        MailboxSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for MailboxSender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            self.shared.close(state);
        }
    }
}

impl MailboxSender {
    /// The consumer is gone: whatever is sent is dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.refusing.load(Ordering::Acquire)
    }

    /// End the stream for every sender: the consumer drains what is
    /// buffered, then sees the end.
    pub fn close(&self) {
        self.shared.close(self.shared.lock());
    }

    /// The broker reported `count` more messages discarded (QUEUE-6).
    pub fn count_dropped(&self, count: u64) {
        self.shared.dropped.fetch_add(count, Ordering::Relaxed);
    }

    /// Discards reported after every message sent so far: the next message
    /// sent carries them, and a consumer waiting for events hears of them
    /// now.
    pub fn carry_dropped(&self, count: u64) {
        let mut state = self.shared.lock();
        state.dropped_carry += count;
        let consumer = state.consumer.take();
        drop(state);
        if let Some(waker) = consumer {
            waker.wake();
        }
    }

    /// Move every message of `batch` into the mailbox, in order, waiting for
    /// room as needed; `batch` is empty afterwards. Messages for a consumer
    /// that is gone, or a mailbox that was closed, are dropped.
    pub async fn send_all(&self, batch: &mut Vec<Message>) {
        if batch.is_empty() {
            return;
        }
        poll_fn(|cx| self.poll_send_all(cx, batch)).await
    }

    fn poll_send_all(&self, cx: &Context<'_>, batch: &mut Vec<Message>) -> Poll<()> {
        let mut state = self.shared.lock();
        if !state.receiver_alive || state.closed {
            drop(state);
            batch.clear();
            return Poll::Ready(());
        }
        let room = self.shared.capacity.saturating_sub(state.messages.len());
        let taken = room.min(batch.len());
        if taken > 0 && state.dropped_carry > 0 {
            batch[0].dropped_before += std::mem::take(&mut state.dropped_carry);
        }
        state.messages.extend(batch.drain(..taken));
        let consumer = if taken > 0 {
            state.consumer.take()
        } else {
            None
        };
        let done = batch.is_empty();
        if !done {
            register(&mut state.producer, cx);
        }
        drop(state);
        if let Some(waker) = consumer {
            waker.wake();
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// What a consumer waiting for events is handed.
#[derive(Debug)]
pub(crate) enum MailboxEvent {
    Message(Message),
    /// Discards reported after the last message taken, with no message
    /// after them yet.
    Dropped(u64),
}

pub(crate) struct MailboxReceiver {
    shared: Arc<Shared>,
}

impl MailboxReceiver {
    /// The next message; `None` once the mailbox is closed and drained.
    pub fn poll_recv(&self, cx: &Context<'_>) -> Poll<Option<Message>> {
        self.pop_or_wait(self.shared.lock(), cx)
    }

    /// The oldest message, the end, or `cx` registered to be woken: under
    /// the lock the caller took.
    fn pop_or_wait(
        &self,
        mut state: MutexGuard<'_, State>,
        cx: &Context<'_>,
    ) -> Poll<Option<Message>> {
        if let Some(message) = state.messages.pop_front() {
            let producer = self.shared.room_made(&mut state);
            drop(state);
            if let Some(waker) = producer {
                waker.wake();
            }
            return Poll::Ready(Some(message));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        register(&mut state.consumer, cx);
        Poll::Pending
    }

    pub async fn recv(&self) -> Option<Message> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message, or the discards reported after the last message
    /// taken when no message has come since; `None` once the mailbox is
    /// closed and drained.
    pub fn poll_recv_event(&self, cx: &Context<'_>) -> Poll<Option<MailboxEvent>> {
        let mut state = self.shared.lock();
        if state.messages.is_empty() && state.dropped_carry > 0 {
            return Poll::Ready(Some(MailboxEvent::Dropped(std::mem::take(
                &mut state.dropped_carry,
            ))));
        }
        self.pop_or_wait(state, cx)
            .map(|message| message.map(MailboxEvent::Message))
    }

    pub async fn recv_event(&self) -> Option<MailboxEvent> {
        poll_fn(|cx| self.poll_recv_event(cx)).await
    }

    /// The discards reported after every buffered message, when nothing is
    /// buffered (0 otherwise: the next message carries them).
    pub fn take_trailing_drops(&self) -> u64 {
        let mut state = self.shared.lock();
        if state.messages.is_empty() {
            std::mem::take(&mut state.dropped_carry)
        } else {
            0
        }
    }

    /// The running count of discards, readable from anywhere.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.shared.dropped.clone()
    }

    /// Up to `max` buffered messages, oldest first, without waiting.
    pub fn try_recv_batch(&self, max: usize) -> Vec<Message> {
        let mut state = self.shared.lock();
        let taken = max.min(state.messages.len());
        if taken == 0 {
            return Vec::new();
        }
        let batch: Vec<Message> = state.messages.drain(..taken).collect();
        let producer = self.shared.room_made(&mut state);
        drop(state);
        if let Some(waker) = producer {
            waker.wake();
        }
        batch
    }

    /// Messages the broker reported discarded for this subscription so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Messages buffered now.
    pub fn len(&self) -> usize {
        self.shared.lock().messages.len()
    }
}

impl Drop for MailboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        self.shared.refuse();
        let dropped = std::mem::take(&mut state.messages);
        let producer = state.producer.take();
        drop(state);
        drop(dropped);
        if let Some(waker) = producer {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::FutureExt;

    fn message(id: u64) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::new(),
            headers: Default::default(),
            id,
            timestamp_ms: 0,
            delivery_count: 1,
            subscription_id: 1,
            delivery_id: 0,
            dropped_before: 0,
            acks: None,
        }
    }

    fn ids(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    #[test]
    fn batches_arrive_whole_and_in_order() {
        let (tx, rx) = mailbox(10);
        let mut batch: Vec<Message> = (0..4).map(message).collect();
        tx.send_all(&mut batch)
            .now_or_never()
            .expect("room for all");
        assert!(batch.is_empty());
        assert_eq!(rx.len(), 4);
        assert_eq!(rx.recv().now_or_never().flatten().map(|m| m.id), Some(0));
        assert_eq!(ids(&rx.try_recv_batch(2)), [1, 2]);
        assert_eq!(ids(&rx.try_recv_batch(100)), [3]);
        assert!(rx.try_recv_batch(100).is_empty());
        assert!(rx.recv().now_or_never().is_none(), "empty: it waits");
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_the_sender_wait_until_half_is_free() {
        let (tx, rx) = mailbox(4);
        let mut batch: Vec<Message> = (0..6).map(message).collect();
        let sending = tokio::spawn(async move {
            tx.send_all(&mut batch).await;
            tx
        });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(!sending.is_finished(), "two do not fit");
        assert_eq!(rx.len(), 4);
        assert_eq!(ids(&rx.try_recv_batch(1)), [0]);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(!sending.is_finished(), "3 of 4 still taken");
        assert_eq!(ids(&rx.try_recv_batch(1)), [1]);
        let _tx = tokio::time::timeout(std::time::Duration::from_secs(5), sending)
            .await
            .expect("woken at half free")
            .unwrap();
        assert_eq!(ids(&rx.try_recv_batch(10)), [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, rx) = mailbox(4);
        let receiving = tokio::spawn(async move { rx.recv().await.map(|m| m.id) });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        tx.send_all(&mut vec![message(7)]).await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), receiving)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, Some(7));
    }

    #[tokio::test]
    async fn the_stream_ends_after_the_buffer_once_closed_or_every_sender_is_gone() {
        let (tx, rx) = mailbox(4);
        let second = tx.clone();
        tx.send_all(&mut vec![message(1)]).await;
        drop(tx);
        assert_eq!(rx.recv().await.map(|m| m.id), Some(1));
        assert!(rx.recv().now_or_never().is_none(), "a sender remains");
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        drop(second);
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the last sender leaving")
            .unwrap();
        assert!(end.is_none());

        let (tx, rx) = mailbox(4);
        let _kept = tx.clone();
        tx.send_all(&mut vec![message(2)]).await;
        tx.close();
        assert!(tx.is_closed());
        tx.send_all(&mut vec![message(3)]).await;
        assert_eq!(rx.recv().await.map(|m| m.id), Some(2), "drained first");
        assert!(
            rx.recv().await.is_none(),
            "then the end; 3 came after close"
        );
    }

    /// Each discard is handed over once, where it happened: carried by the
    /// next message, or to an event consumer as an event of its own when
    /// nothing came after it.
    #[tokio::test]
    async fn discards_reach_the_consumer_once_in_line_with_the_messages() {
        let event = |rx: &MailboxReceiver| match rx.recv_event().now_or_never() {
            Some(Some(MailboxEvent::Message(m))) => format!("m{}+{}", m.id, m.dropped_before),
            Some(Some(MailboxEvent::Dropped(n))) => format!("d{n}"),
            Some(None) => "end".into(),
            None => "waits".into(),
        };
        let (tx, rx) = mailbox(8);
        tx.send_all(&mut vec![message(1)]).await;
        tx.carry_dropped(2);
        tx.count_dropped(2);
        tx.send_all(&mut vec![message(4)]).await;
        tx.carry_dropped(3);
        tx.count_dropped(3);
        assert_eq!(rx.dropped(), 5, "counted when reported");
        assert_eq!(rx.take_trailing_drops(), 0, "messages come first");
        assert_eq!(event(&rx), "m1+0");
        assert_eq!(event(&rx), "m4+2");
        assert_eq!(event(&rx), "d3", "nothing after them: an event");
        assert_eq!(event(&rx), "waits");
        tx.send_all(&mut vec![message(5)]).await;
        assert_eq!(event(&rx), "m5+0", "reported once");

        // A consumer already waiting is woken by a notice with nothing after it.
        let counter = rx.dropped_counter();
        let waiting = tokio::spawn(async move { event_of(rx.recv_event().await) });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        tx.count_dropped(7);
        tx.carry_dropped(7);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, "d7");
        assert_eq!(counter.load(Ordering::Relaxed), 12);

        // A plain receiver leaves them to the next message.
        let (tx, rx) = mailbox(8);
        tx.carry_dropped(4);
        assert!(rx.recv().now_or_never().is_none());
        tx.send_all(&mut vec![message(9)]).await;
        assert_eq!(rx.recv().await.map(|m| m.dropped_before), Some(4));
    }

    fn event_of(event: Option<MailboxEvent>) -> String {
        match event {
            Some(MailboxEvent::Message(m)) => format!("m{}", m.id),
            Some(MailboxEvent::Dropped(n)) => format!("d{n}"),
            None => "end".into(),
        }
    }

    #[tokio::test]
    async fn dropping_the_receiver_releases_a_waiting_sender() {
        let (tx, rx) = mailbox(1);
        let mut batch: Vec<Message> = (0..3).map(message).collect();
        let sending = tokio::spawn(async move {
            tx.send_all(&mut batch).await;
            (tx.is_closed(), batch.len())
        });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(!sending.is_finished());
        drop(rx);
        let (closed, left) = tokio::time::timeout(std::time::Duration::from_secs(5), sending)
            .await
            .expect("released")
            .unwrap();
        assert!(closed);
        assert_eq!(left, 0, "the rest is dropped, not kept");
    }
}
