//! Frames on their way to the connection's writer.
//!
//! Publishers encode straight into one shared buffer, and the writer takes
//! the whole buffer at once, handing back its own emptied one: no buffer
//! per frame, no queue operation per frame, no copy into a write batch (a
//! channel of encoded frames cost a sixth of a fast publisher's CPU).
//! Bounded in items (a frame, or a whole `PublishBatch`) and in bytes
//! ([`MAX_BYTES`]): a publisher waits for room, or is told the queue is
//! full, rather than memory growing.

use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

use crate::mailbox::register;

/// Why nothing was queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// No room now (only from the `try_` calls).
    Full,
    /// The client closed: nothing will be sent again.
    Closed,
}

/// Encoded bytes past which the outbox takes nothing more until the writer
/// has taken them (one item always fits, whatever its size): items can be
/// whole publish batches, and the item bound alone let a client far ahead of
/// a slow broker queue 8192 of them. 4 MiB is as much as Linux's largest
/// default socket send buffer (`tcp_wmem`), so the writer always has a full
/// socket's worth at hand; more only queues longer (memory, and latency
/// for whatever is published next). It was 64 MiB while the Node SDK fell
/// back to one call per message whenever the outbox was full (several times
/// slower); it now keeps batching while it waits for room. Interleaved runs
/// of the Node receive pipeline at 16 B and 1 KiB: throughput the same.
pub(crate) const MAX_BYTES: usize = 4 * 1024 * 1024;

/// The capacity a buffer keeps while the connection is idle. Busy, both
/// buffers keep what they grew to: released after every write and grown
/// again page by page, they cost a fast publisher a tenth of its time in
/// page faults and in copies by `realloc`. Not lower: a writer that keeps
/// up finds the outbox empty between most writes, and at 64 KiB it let its
/// buffers go and grew them again each time (three times the page faults
/// of a stream of 16 B publishes).
pub(crate) const IDLE_KEPT_BYTES: usize = 1024 * 1024;

pub(crate) struct Outbox {
    capacity: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

struct State {
    frames: BytesMut,
    /// Items in `frames`.
    items: usize,
    closed: bool,
    /// The writer, waiting for frames.
    writer: Option<Waker>,
    /// Publishers waiting for room.
    publishers: Vec<Waker>,
}

impl Outbox {
    /// An outbox of up to `capacity` items (at least one) and about
    /// [`MAX_BYTES`].
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                frames: BytesMut::new(),
                items: 0,
                closed: false,
                writer: None,
                publishers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Encoding is the only work done under the lock, and it does not
        // panic on valid frames; recover rather than poison every publisher.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Room for one more item: under both bounds, or empty.
    fn has_room(&self, state: &State) -> bool {
        state.items == 0 || (state.items < self.capacity && state.frames.len() < MAX_BYTES)
    }

    /// Queue, as one item, what `encode` appends, if there is room.
    pub fn try_push_with(&self, encode: impl FnOnce(&mut BytesMut)) -> Result<(), PushError> {
        let state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if !self.has_room(&state) {
            return Err(PushError::Full);
        }
        self.append(state, encode);
        Ok(())
    }

    /// Append one item under the lock held in `state` (room checked), then
    /// wake the writer.
    fn append(&self, mut state: MutexGuard<'_, State>, encode: impl FnOnce(&mut BytesMut)) {
        encode(&mut state.frames);
        state.items += 1;
        let writer = state.writer.take();
        drop(state);
        if let Some(waker) = writer {
            waker.wake();
        }
    }

    /// Queue one encoded frame (or several, as one item), if there is room.
    pub fn try_push(&self, frames: &[u8]) -> Result<(), PushError> {
        self.try_push_with(|out| out.extend_from_slice(frames))
    }

    /// Queue, as one item, what `encode` appends, waiting for room.
    pub async fn push_with(&self, encode: impl FnOnce(&mut BytesMut)) -> Result<(), PushError> {
        let mut encode = Some(encode);
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.closed {
                return Poll::Ready(Err(PushError::Closed));
            }
            if !self.has_room(&state) {
                if !state.publishers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.publishers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let encode = encode.take().expect("polled again after Ready");
            self.append(state, encode);
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Queue one encoded frame (or several, as one item), waiting for room.
    pub async fn push(&self, frames: &[u8]) -> Result<(), PushError> {
        self.push_with(|out| out.extend_from_slice(frames)).await
    }

    /// Swap everything queued into `into` (empty on entry). Pending while
    /// nothing is queued; `Ready(false)` once closed with nothing left.
    pub fn poll_take(&self, cx: &Context<'_>, into: &mut BytesMut) -> Poll<bool> {
        let mut state = self.lock();
        if state.items == 0 {
            if state.closed {
                return Poll::Ready(false);
            }
            // Idle: a buffer a burst grew goes (the writer's own likewise).
            if state.frames.capacity() > IDLE_KEPT_BYTES {
                state.frames = BytesMut::new();
            }
            register(&mut state.writer, cx);
            return Poll::Pending;
        }
        std::mem::swap(&mut state.frames, into);
        state.items = 0;
        let publishers = std::mem::take(&mut state.publishers);
        drop(state);
        for waker in publishers {
            waker.wake();
        }
        Poll::Ready(true)
    }

    /// [`Outbox::poll_take`] without waiting: `false` when nothing is queued.
    pub fn take_now(&self, into: &mut BytesMut) -> bool {
        let waker = futures::task::noop_waker();
        matches!(
            self.poll_take(&Context::from_waker(&waker), into),
            Poll::Ready(true)
        )
    }

    /// Nothing more is queued from now on; what is queued can still be taken.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let writer = state.writer.take();
        let publishers = std::mem::take(&mut state.publishers);
        drop(state);
        writer.into_iter().chain(publishers).for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::Arc;
    use std::time::Duration;

    /// A publisher waiting for room in `outbox`, on its own task.
    fn spawn_push(
        outbox: &Arc<Outbox>,
        frame: &'static [u8],
    ) -> tokio::task::JoinHandle<Result<(), PushError>> {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.push(frame).await })
    }

    fn take(outbox: &Outbox) -> Option<Vec<u8>> {
        let mut into = BytesMut::new();
        outbox.take_now(&mut into).then(|| into.to_vec())
    }

    #[test]
    fn frames_are_taken_whole_in_order() {
        let outbox = Outbox::new(10);
        outbox.try_push(b"ab").unwrap();
        outbox
            .try_push_with(|out| out.extend_from_slice(b"cd"))
            .unwrap();
        outbox.push(b"e").now_or_never().unwrap().unwrap();
        assert_eq!(take(&outbox).as_deref(), Some(&b"abcde"[..]));
        assert_eq!(take(&outbox), None, "nothing left");
    }

    #[test]
    fn try_push_fails_when_full_and_keeps_what_was_queued() {
        let outbox = Outbox::new(2);
        outbox.try_push(b"1").unwrap();
        outbox.try_push(b"2").unwrap();
        assert_eq!(outbox.try_push(b"3"), Err(PushError::Full));
        assert!(outbox.push(b"3").now_or_never().is_none(), "push waits");
        assert_eq!(take(&outbox).as_deref(), Some(&b"12"[..]));
        outbox.try_push(b"3").unwrap();
        assert_eq!(take(&outbox).as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn it_is_full_past_max_bytes_but_always_takes_one_item() {
        let outbox = Outbox::new(100);
        let big = vec![7u8; MAX_BYTES + 10];
        outbox.try_push(&big).unwrap();
        assert_eq!(
            outbox.try_push(b"x"),
            Err(PushError::Full),
            "over the bytes"
        );
        assert_eq!(take(&outbox).map(|b| b.len()), Some(MAX_BYTES + 10));
        let half = vec![1u8; MAX_BYTES / 2];
        outbox.try_push(&half).unwrap();
        outbox.try_push(&half).unwrap();
        assert_eq!(outbox.try_push(b"x"), Err(PushError::Full), "at the bytes");
        assert!(outbox.push(b"x").now_or_never().is_none(), "push waits");
        assert_eq!(take(&outbox).map(|b| b.len()), Some(MAX_BYTES));
        outbox.try_push(b"x").unwrap();
    }

    #[test]
    fn an_idle_outbox_lets_a_grown_buffer_go() {
        let outbox = Outbox::new(100);
        let mut writer_buffer = BytesMut::new();
        outbox.try_push(&vec![0u8; 4 * IDLE_KEPT_BYTES]).unwrap();
        assert!(outbox.take_now(&mut writer_buffer));
        writer_buffer.clear();
        // The writer's emptied buffer (grown) goes in with the next take...
        outbox.try_push(b"x").unwrap();
        assert!(outbox.take_now(&mut writer_buffer));
        assert!(
            outbox.lock().frames.capacity() >= 4 * IDLE_KEPT_BYTES,
            "kept while busy"
        );
        // ...and is let go once a take finds nothing.
        assert!(!outbox.take_now(&mut BytesMut::new()));
        assert!(outbox.lock().frames.capacity() <= IDLE_KEPT_BYTES);
    }

    #[tokio::test]
    async fn a_waiting_publisher_is_woken_when_the_writer_takes() {
        let outbox = Arc::new(Outbox::new(1));
        outbox.try_push(b"1").unwrap();
        let publisher = spawn_push(&outbox, b"2");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!publisher.is_finished());
        assert_eq!(take(&outbox).as_deref(), Some(&b"1"[..]));
        tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
        assert_eq!(take(&outbox).as_deref(), Some(&b"2"[..]));
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_and_sees_the_close() {
        let outbox = Arc::new(Outbox::new(4));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut taken = Vec::new();
                let mut into = BytesMut::new();
                while poll_fn(|cx| outbox.poll_take(cx, &mut into)).await {
                    taken.extend_from_slice(&into);
                    into.clear();
                }
                taken
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        outbox.try_push(b"x").unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        outbox.try_push(b"y").unwrap();
        outbox.close();
        assert_eq!(outbox.try_push(b"z"), Err(PushError::Closed));
        let taken = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("ends on close")
            .unwrap();
        assert_eq!(taken, b"xy", "what was queued before the close is taken");
    }

    #[tokio::test]
    async fn closing_releases_waiting_publishers() {
        let outbox = Arc::new(Outbox::new(1));
        outbox.try_push(b"1").unwrap();
        let publisher = spawn_push(&outbox, b"2");
        tokio::time::sleep(Duration::from_millis(30)).await;
        outbox.close();
        let result = tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(result, Err(PushError::Closed));
    }
}
