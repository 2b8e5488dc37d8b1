//! A subscription: its bounded queue, its overflow policy, and the outbox of
//! the connection that owns it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use blipmq_protocol::SharedDelivery;
use tokio::sync::Notify;

use crate::bounded_queue::{BoundedQueue, Weigh};
use crate::config::OverflowPolicy;
use crate::memory::Charge;
use crate::metrics::{inc, Metrics};
use crate::outbox::{Outbox, PendingWakes};

/// One published message as every subscriber queue holds it: encoded once,
/// shared by reference count.
#[derive(Debug)]
pub struct QueuedMessage {
    pub delivery: SharedDelivery,
    /// When the broker read it off the publisher's socket (or recovered it
    /// from the log): where delivery latency is measured from.
    pub published_at: Instant,
    /// `None` = never expires.
    pub expires_at: Option<Instant>,
    pub message_id: u64,
    /// From the message's `traceparent` header, for delivery log lines.
    pub trace_id: Option<Box<str>>,
    /// Its share of the broker's memory budget, returned when the last
    /// holder drops the message (see `memory.rs`).
    pub charge: Charge,
}

pub type MessageRef = Arc<QueuedMessage>;

/// One entry of a subscription's queue: the shared message and the route
/// fields that differ per subscriber.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message: MessageRef,
    /// 0 at QoS 0; the message's log position for a durable subscription.
    pub delivery_id: u64,
    pub delivery_count: u32,
    /// Messages `drop_new` discarded just before this one, for the notice
    /// that precedes it (QUEUE-6).
    pub dropped_before: u64,
}

/// What a queue holds per message besides the message itself: its entry
/// and the slot's state (the message is shared; the entry is the queue's).
const ENTRY_BYTES: usize = std::mem::size_of::<Queued>() + std::mem::size_of::<usize>();

impl Weigh for Queued {
    /// The encoded delivery's bytes and the queue's entry for it: what the
    /// queue's byte bound counts, so that it bounds a queue of tiny
    /// messages too (by memory rather than by count).
    fn weight(&self) -> usize {
        self.message.delivery.len() + ENTRY_BYTES
    }
}

impl Queued {
    /// A QoS 0 delivery: no ack wanted, first and only attempt.
    pub fn qos0(message: MessageRef) -> Queued {
        Queued {
            message,
            delivery_id: 0,
            delivery_count: 1,
            dropped_before: 0,
        }
    }
}

pub struct Subscription {
    /// Unique within the broker run, hence within the owning connection.
    pub id: u64,
    pub pattern: String,
    /// The durable subscription this is the live end of, if any. Its QoS 1
    /// messages arrive through the durable store (with delivery ids), never
    /// through fan-out; QoS 0 messages arrive as for any subscription.
    pub durable: Option<String>,
    /// The queue group this subscription shares messages with, if any.
    pub group: Option<String>,
    policy: OverflowPolicy,
    queue: BoundedQueue<Queued>,
    /// The owning connection's writer, woken when this queue gains a message.
    outbox: Arc<Outbox>,
    /// Wakes `block` publishers when the writer makes room.
    space: Notify,
    /// Publishers waiting on `space`; lets the writer skip the wake-up when
    /// nobody waits (the common case).
    blocked_publishers: AtomicUsize,
    /// Set once the subscription is removed; enqueues after that are discarded.
    closed: AtomicBool,
    /// The owning client asked for Dropped notices (QUEUE-6).
    drop_notices: bool,
    /// Messages discarded ahead of everything queued (evicted by
    /// `drop_oldest`) since the writer last reported them; only counted
    /// when `drop_notices`.
    unreported_drops: AtomicU64,
    /// Messages `drop_new` discarded behind everything queued: the next
    /// message queued carries them, or the writer reports them once the
    /// queue is empty.
    dropped_behind: AtomicU64,
    /// Messages for this subscription discarded by its overflow policy or
    /// the memory budget, in all (introspection; counted whether or not
    /// the client asked for notices).
    dropped: AtomicU64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .field("depth", &self.queue.len())
            .finish()
    }
}

impl Subscription {
    pub fn new(
        id: u64,
        pattern: String,
        capacity: usize,
        policy: OverflowPolicy,
        outbox: Arc<Outbox>,
        durable: Option<String>,
        group: Option<String>,
    ) -> Subscription {
        Subscription {
            id,
            pattern,
            durable,
            group,
            policy,
            queue: BoundedQueue::new(capacity, usize::MAX),
            outbox,
            space: Notify::new(),
            blocked_publishers: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            drop_notices: false,
            unreported_drops: AtomicU64::new(0),
            dropped_behind: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Report discarded messages to the subscriber (QUEUE-6): its client
    /// said it understands Dropped notices. Before it is shared.
    pub fn with_drop_notices(mut self, on: bool) -> Subscription {
        self.drop_notices = on;
        self
    }

    /// Whether discards are reported to the subscriber.
    pub fn reports_drops(&self) -> bool {
        self.drop_notices
    }

    /// Count `n` discarded messages into `count` for a notice, waking the
    /// writer when they are the first since the last one: a subscription
    /// with nothing left to deliver still hears of them without delay.
    fn note_drops(&self, count: &AtomicU64, n: u64) {
        if self.drop_notices && n > 0 && count.fetch_add(n, Ordering::AcqRel) == 0 {
            self.outbox.wake();
        }
    }

    /// One message for this subscription was discarded before it was
    /// queued (the memory budget was full, LIMIT-3): reported like a
    /// `drop_new` discard, behind everything queued.
    pub fn note_discarded(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.note_drops(&self.dropped_behind, 1);
    }

    /// The discards ahead of the queue not yet reported, now reported (the
    /// writer calls this before taking from the queue).
    pub fn take_unreported_drops(&self) -> u64 {
        take_count(self.drop_notices, &self.unreported_drops)
    }

    /// The discards behind the queue that no queued message carries, now
    /// reported (the writer calls this once the queue is empty).
    pub fn take_dropped_behind(&self) -> u64 {
        take_count(self.drop_notices, &self.dropped_behind)
    }

    /// Bound the queue by bytes as well as by count
    /// (`queues.subscriber_capacity_bytes`), and charge a deep queue's
    /// entries to the broker's memory budget (see `bounded_queue.rs`);
    /// before it is shared.
    pub fn with_capacity_bytes(
        mut self,
        max_bytes: usize,
        budget: &'static crate::memory::MemoryBudget,
    ) -> Subscription {
        self.queue = BoundedQueue::new(self.queue.capacity(), max_bytes).with_budget(budget);
        self
    }

    pub fn depth(&self) -> usize {
        self.queue.len()
    }

    /// Bytes queued for the connection's writer (the queue's byte bound
    /// counts them).
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Messages discarded for this subscription so far (see `dropped`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Enqueue under the subscription's policy: wait for room under
    /// `block`, drop as the policy says otherwise.
    pub async fn enqueue(&self, message: MessageRef, metrics: &Metrics) {
        if self.policy == OverflowPolicy::Block {
            self.enqueue_or_wait(message, metrics).await;
        } else {
            self.enqueue_now(message, metrics);
        }
    }

    /// Enqueue without waiting: under a dropping policy as the policy says;
    /// under `block` if the queue has room. A full `block` queue hands the
    /// message back, for [`Subscription::enqueue_or_wait`].
    pub fn try_enqueue(&self, message: MessageRef, metrics: &Metrics) -> Result<(), MessageRef> {
        if self.try_enqueue_unwoken(message, metrics)? {
            self.outbox.wake();
        }
        Ok(())
    }

    /// [`Subscription::try_enqueue`], leaving the writer's wake-up to
    /// `wakes`: a reader fanning out a whole read of publishes wakes each
    /// writer once at the end, instead of once per message while the writer
    /// is already draining the same queue (their pushes and pops then
    /// contended for the queue's length counter on every message).
    pub fn try_enqueue_deferring_wake(
        &self,
        message: MessageRef,
        metrics: &Metrics,
        wakes: &mut PendingWakes,
    ) -> Result<(), MessageRef> {
        if self.try_enqueue_unwoken(message, metrics)? {
            wakes.add(&self.outbox);
        }
        Ok(())
    }

    /// Queue or drop `message` without waking the writer; `Ok(true)` when
    /// it was queued (the writer needs a wake-up).
    fn try_enqueue_unwoken(
        &self,
        message: MessageRef,
        metrics: &Metrics,
    ) -> Result<bool, MessageRef> {
        if self.policy != OverflowPolicy::Block {
            return Ok(self.enqueue_now_unwoken(message, metrics));
        }
        if self.is_closed() {
            inc(&metrics.dropped_subscriber_gone);
            return Ok(false);
        }
        match self.queue.push(Queued::qos0(message)) {
            Ok(()) => {
                inc(&metrics.enqueued);
                Ok(true)
            }
            Err(back) => Err(back.message),
        }
    }

    /// Enqueue under a dropping policy; never waits. For `block`
    /// subscriptions use [`Subscription::enqueue_or_wait`].
    pub fn enqueue_now(&self, message: MessageRef, metrics: &Metrics) {
        if self.enqueue_now_unwoken(message, metrics) {
            self.outbox.wake();
        }
    }

    /// [`Subscription::enqueue_now`] without the wake-up; true when queued.
    fn enqueue_now_unwoken(&self, message: MessageRef, metrics: &Metrics) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut message = Queued::qos0(message);
        // Discards behind everything queued (drop_new's, or the memory
        // budget's) are reported just before this message.
        message.dropped_before = take_count(self.drop_notices, &self.dropped_behind);
        match self.policy {
            OverflowPolicy::DropOldest => {
                let (mut evicted, mut reported_with_them) = (0u64, 0u64);
                self.queue.force_push(message, |oldest| {
                    evicted += 1;
                    reported_with_them += oldest.dropped_before;
                });
                if evicted > 0 {
                    metrics
                        .dropped_full_drop_oldest
                        .fetch_add(evicted, Ordering::Relaxed);
                    self.dropped.fetch_add(evicted, Ordering::Relaxed);
                    // The discards an evicted message carried are now
                    // ahead of the queue too.
                    self.note_drops(&self.unreported_drops, evicted + reported_with_them);
                }
            }
            OverflowPolicy::DropNew | OverflowPolicy::Block => {
                if let Err(back) = self.queue.push(message) {
                    inc(metrics.dropped_queue_full(self.policy));
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    // Behind everything queued: carried by the next message
                    // queued, or reported once the queue empties.
                    self.note_drops(&self.dropped_behind, back.dropped_before + 1);
                    return false;
                }
            }
        }
        inc(&metrics.enqueued);
        true
    }

    /// Enqueue, waiting for room while the queue is full (the `block`
    /// policy). Returns when the message is queued or the subscription is gone.
    pub async fn enqueue_or_wait(&self, message: MessageRef, metrics: &Metrics) {
        // The common case, a queue with room, registers nothing: a waiter
        // registered per message cost two lock round trips on `space`.
        let mut message = match self.try_enqueue(message, metrics) {
            Ok(()) => return,
            Err(back) => Queued::qos0(back),
        };
        loop {
            if self.is_closed() {
                inc(&metrics.dropped_subscriber_gone);
                return;
            }
            // Register interest before retrying so that a pop between the
            // failed push and the await cannot be missed.
            let room = self.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.blocked_publishers.fetch_add(1, Ordering::SeqCst);
            let attempt = self.queue.push(message);
            match attempt {
                Ok(()) => {
                    self.blocked_publishers.fetch_sub(1, Ordering::SeqCst);
                    inc(&metrics.enqueued);
                    self.outbox.wake();
                    return;
                }
                Err(back) => {
                    message = back;
                    // The writer must run to make room.
                    self.outbox.wake();
                    room.await;
                    self.blocked_publishers.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Queue a durable delivery if there is room; never drops or waits (the
    /// durable store keeps what does not fit and offers it again on an ack).
    pub fn try_enqueue_durable(&self, entry: Queued) -> Result<(), Queued> {
        if self.is_closed() {
            return Err(entry);
        }
        self.queue.push(entry)?;
        self.outbox.wake();
        Ok(())
    }

    pub fn has_room(&self) -> bool {
        !self.queue.is_full()
    }

    /// Take the oldest message (the owning connection's writer calls this).
    ///
    /// Blocked publishers are woken once the queue has drained to
    /// [`Subscription::resume_depth`], not on every pop: woken at each free
    /// slot, a publisher faster than its subscriber would sleep and wake
    /// once per message, a task switch each way.
    pub fn pop(&self) -> Option<Queued> {
        let mut message = None;
        self.pop_some(1, |queued| {
            message = Some(queued);
            true
        });
        message
    }

    /// Take up to `max` of the oldest messages, handing each to `take`,
    /// which returns `false` to stop after the one it was given (the
    /// writer, when its batch is full). Cheaper than as many [`pop`]s: the
    /// queue's length and the blocked publishers are looked at once, and
    /// blocked publishers woken as [`pop`] says.
    ///
    /// [`pop`]: Subscription::pop
    pub fn pop_some(&self, max: usize, take: impl FnMut(Queued) -> bool) -> usize {
        let taken = self.queue.pop_some(max, take);
        if taken > 0
            && self.blocked_publishers.load(Ordering::SeqCst) > 0
            && self.queue.len() <= self.resume_depth()
        {
            self.space.notify_waiters();
        }
        taken
    }

    /// The depth at or below which blocked publishers are woken: a quarter
    /// of the queue free (the whole queue for a queue of one).
    fn resume_depth(&self) -> usize {
        let capacity = self.queue.capacity();
        capacity - capacity.div_ceil(4)
    }

    /// Remove the subscription: free its queue and release blocked publishers.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        while self.queue.pop().is_some() {}
        self.space.notify_waiters();
    }
}

/// Take what `count` holds, when notices are on. A plain load first: on the
/// paths that ask for every message the count is almost always 0, and a
/// swap would write the cache line each time.
fn take_count(notices: bool, count: &AtomicU64) -> u64 {
    if !notices || count.load(Ordering::Acquire) == 0 {
        return 0;
    }
    count.swap(0, Ordering::AcqRel)
}

/// Subscriptions by id: a dense list to iterate, and each one's place in it,
/// so that adding and removing one costs the same however many there are
/// (removal moves the last one into the gap; order is not kept).
#[derive(Debug, Default)]
pub struct SubscriptionSet {
    items: Vec<Arc<Subscription>>,
    at: HashMap<u64, usize>,
}

impl SubscriptionSet {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn as_slice(&self) -> &[Arc<Subscription>] {
        &self.items
    }

    pub fn get(&self, id: u64) -> Option<&Arc<Subscription>> {
        self.at.get(&id).map(|&i| &self.items[i])
    }

    /// Add `subscription`; one already there under its id is replaced.
    pub fn insert(&mut self, subscription: Arc<Subscription>) {
        match self.at.get(&subscription.id) {
            Some(&i) => self.items[i] = subscription,
            None => {
                self.at.insert(subscription.id, self.items.len());
                self.items.push(subscription);
            }
        }
    }

    pub fn remove(&mut self, id: u64) -> Option<Arc<Subscription>> {
        let i = self.at.remove(&id)?;
        let removed = self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            self.at.insert(moved.id, i);
        }
        Some(removed)
    }

    pub fn take_all(&mut self) -> Vec<Arc<Subscription>> {
        self.at.clear();
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message(id: u64) -> MessageRef {
        let delivery = blipmq_protocol::Encoder::new().shared_delivery("t", b"x", &[], id, 0);
        Arc::new(QueuedMessage {
            delivery,
            published_at: std::time::Instant::now(),
            expires_at: None,
            message_id: id,
            trace_id: None,
            charge: Default::default(),
        })
    }

    /// A publisher of message `id` that may have to wait, on its own task.
    fn spawn_publisher(
        sub: &Arc<Subscription>,
        metrics: &Arc<Metrics>,
        id: u64,
    ) -> tokio::task::JoinHandle<()> {
        let (sub, metrics) = (sub.clone(), metrics.clone());
        tokio::spawn(async move { sub.enqueue_or_wait(message(id), &metrics).await })
    }

    /// A `block` subscription of 8, full, with a publisher of message 8
    /// waiting for room.
    async fn full_with_a_waiting_publisher(
        metrics: &Arc<Metrics>,
    ) -> (Arc<Subscription>, tokio::task::JoinHandle<()>) {
        let sub = block_subscription(8);
        for id in 0..8 {
            sub.enqueue_or_wait(message(id), metrics).await;
        }
        assert_eq!(sub.blocked_publishers.load(Ordering::SeqCst), 0);
        let publisher = spawn_publisher(&sub, metrics, 8);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished(), "the queue is full: it waits");
        (sub, publisher)
    }

    fn block_subscription(capacity: usize) -> Arc<Subscription> {
        Arc::new(Subscription::new(
            1,
            "t".into(),
            capacity,
            OverflowPolicy::Block,
            Outbox::new(),
            None,
            None,
        ))
    }

    #[tokio::test]
    async fn a_blocked_publisher_resumes_once_a_quarter_of_the_queue_is_free() {
        let metrics = Arc::new(Metrics::default());
        let (sub, publisher) = full_with_a_waiting_publisher(&metrics).await;
        // One free slot is not enough to wake it (depth 7 > 6)...
        assert_eq!(sub.pop().unwrap().message.message_id, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished());
        // ...two are (depth 6 = 8 - 8/4).
        assert_eq!(sub.pop().unwrap().message.message_id, 1);
        tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("woken at the resume depth")
            .unwrap();
        let rest: Vec<u64> = std::iter::from_fn(|| sub.pop())
            .map(|q| q.message.message_id)
            .collect();
        assert_eq!(rest, (2..=8).collect::<Vec<_>>(), "nothing lost, in order");
        assert_eq!(metrics.enqueued.load(Ordering::Relaxed), 9);
    }

    #[tokio::test]
    async fn a_run_of_pops_wakes_a_blocked_publisher_once_past_the_resume_depth() {
        let metrics = Arc::new(Metrics::default());
        let (sub, publisher) = full_with_a_waiting_publisher(&metrics).await;
        let mut taken = Vec::new();
        // Told to stop after the first: depth 7, not enough to wake it.
        let stop_at_once = |queued: Queued| {
            taken.push(queued.message.message_id);
            false
        };
        assert_eq!(sub.pop_some(4, stop_at_once), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished());
        assert_eq!(
            sub.pop_some(3, |queued| {
                taken.push(queued.message.message_id);
                true
            }),
            3
        );
        tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("woken at depth 4")
            .unwrap();
        sub.pop_some(usize::MAX, |queued| {
            taken.push(queued.message.message_id);
            true
        });
        assert_eq!(taken, (0..=8).collect::<Vec<_>>(), "nothing lost, in order");
    }

    #[tokio::test]
    async fn a_queue_of_one_wakes_its_blocked_publisher_when_empty() {
        let metrics = Arc::new(Metrics::default());
        let sub = block_subscription(1);
        sub.enqueue_or_wait(message(0), &metrics).await;
        let publisher = spawn_publisher(&sub, &metrics, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished());
        assert_eq!(sub.pop().unwrap().message.message_id, 0);
        tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("woken once the queue is empty")
            .unwrap();
        assert_eq!(sub.pop().unwrap().message.message_id, 1);
    }

    #[tokio::test]
    async fn closing_releases_a_blocked_publisher() {
        let metrics = Arc::new(Metrics::default());
        let sub = block_subscription(1);
        sub.enqueue_or_wait(message(0), &metrics).await;
        let publisher = spawn_publisher(&sub, &metrics, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        sub.close();
        tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("released by close")
            .unwrap();
        assert_eq!(metrics.dropped_subscriber_gone.load(Ordering::Relaxed), 1);
    }
}
