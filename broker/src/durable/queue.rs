//! One stored queue: the messages it keeps for its consumers, which of them
//! wait and which are in flight, and the consumers attached to it.
//!
//! What a queue costs per message it keeps is the point of this layout
//! (issue 22, finding 7): the LSN alone (eight bytes in `ready`) while the
//! message waits, its state (`delivered`) only once it has been sent, and
//! the message itself once for all queues, in the [`MessageStore`]. A
//! queue's in-flight state is bounded by its consumers' credit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::admin::QueueStats;
use super::alarm::Alarm;
use super::limits::{DropReason, Dropped, QueueLimits};
use super::store::MessageStore;
use super::terms::ConsumerTerms;
use super::{DeadLetter, DeadLetterReason, DeliverySettings, QueueKind};
use crate::subscription::{MessageRef, Queued, Subscription};
use crate::wal::Lsn;

/// Where a message that has been sent at least once is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Back in line (in `ready`), for a consumer with credit.
    Waiting,
    /// Sent to consumer `consumer`; sent again if not acked by `deadline`.
    InFlight { consumer: u64, deadline: Instant },
    /// Handed to the dead-letter task.
    DeadLettering,
    /// Nak'd with a delay (QOS-20): back in line at `until`.
    Delayed { until: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Delivered {
    /// Times sent to a consumer since the broker started.
    deliveries: u32,
    holder: Holder,
}

pub(super) struct Consumer {
    pub live: Arc<Subscription>,
    pub terms: ConsumerTerms,
    pub in_flight: usize,
    /// Deliveries that were in flight to this consumer and are not any
    /// more (acked, taken back, dropped), newest last, at most as many as
    /// its credit: an ack of one of them is late, not unknown ([`StoredQueue::ack`]).
    settled: VecDeque<Lsn>,
    settled_max: usize,
}

impl Consumer {
    pub fn new(live: Arc<Subscription>, terms: ConsumerTerms, max_in_flight: usize) -> Consumer {
        Consumer {
            live,
            terms,
            in_flight: 0,
            settled: VecDeque::new(),
            settled_max: max_in_flight.max(1),
        }
    }

    fn settle(&mut self, lsn: Lsn) {
        if self.settled.len() == self.settled_max {
            self.settled.pop_front();
        }
        self.settled.push_back(lsn);
    }
}

/// What an ack of any kind (ack, nak, term, in progress) did (QOS-18,
/// QOS-20..QOS-23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It took effect. For an ack (and a term) the message was in flight
    /// to the acking consumer, or was taken back from it and waits to be
    /// sent again; a nak and an in-progress need it in flight.
    Acked,
    /// It was in flight to the acking consumer and is not any more (acked
    /// already, sent to another consumer after its ack timeout, dropped by
    /// a limit): nothing happens.
    Late,
    /// It was never in flight to the acking consumer, as far as the queue
    /// remembers: refused, and nothing happens.
    Unknown,
}

/// How long a queue has had no consumer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Detached {
    /// Measured on the monotonic clock from `at`, plus `age_at` (the age
    /// recovered from the manifest when the broker started).
    at: Instant,
    age_at: Duration,
    /// The detach time (ms since the Unix epoch) as the manifest has it,
    /// once it does.
    pub recorded_ms: Option<u64>,
}

/// The instant the detach clocks are keyed from (see [`Detached::key`]):
/// taken before any of them is started.
fn clock_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// `now` on the clock of [`Detached::key`].
pub(super) fn clock_key(now: Instant) -> i64 {
    now.saturating_duration_since(clock_base()).as_millis() as i64
}

impl Detached {
    pub fn now() -> Detached {
        clock_base();
        Detached {
            at: Instant::now(),
            age_at: Duration::ZERO,
            recorded_ms: None,
        }
    }

    /// At start, from the manifest's detach time if it has one (a queue it
    /// has none for starts its clock now: it may live longer than
    /// `detached_expiry`, never shorter).
    pub fn recovered(recorded_ms: Option<u64>, now_ms: u64) -> Detached {
        clock_base();
        Detached {
            at: Instant::now(),
            age_at: Duration::from_millis(recorded_ms.map_or(0, |at| now_ms.saturating_sub(at))),
            recorded_ms,
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        self.age_at + now.saturating_duration_since(self.at)
    }

    /// When the clock started, in ms on the clock of [`clock_key`]
    /// (negative when the manifest dates it before this process): the
    /// older the detach, the smaller the key, so the sweep's index of
    /// detached queues is in the order they come due.
    pub fn key(&self) -> i64 {
        clock_key(self.at) - self.age_at.as_millis() as i64
    }
}

pub(super) struct StoredQueue {
    pub name: Arc<str>,
    pub pattern: String,
    pub kind: QueueKind,
    /// The first LSN this queue keeps: it was created just before it.
    pub since: Lsn,
    /// Kept messages waiting for a consumer, in log order (ascending LSN).
    ready: VecDeque<Lsn>,
    /// Kept messages sent at least once: how often, and where they are.
    delivered: BTreeMap<Lsn, Delivered>,
    /// Messages in flight by deadline, for the redelivery sweep.
    deadlines: BTreeSet<(Instant, Lsn)>,
    /// Nak'd messages by the time they go back in line.
    delayed: BTreeSet<(Instant, Lsn)>,
    pub consumers: Vec<Consumer>,
    next_consumer: usize,
    /// Messages kept: waiting, in flight or dead-lettering.
    kept: usize,
    /// Their frames' bytes, for `max_bytes`.
    bytes: u64,
    /// Since when nobody has been attached (`None` while someone is).
    pub detached: Option<Detached>,
    /// Deliveries sent again, and messages dead-lettered, since start
    /// (for [`StoredQueue::stats`]).
    redeliveries: u64,
    pub dead_letters: u64,
}

impl StoredQueue {
    pub fn new(name: &str, pattern: String, kind: QueueKind, since: Lsn) -> StoredQueue {
        StoredQueue {
            name: Arc::from(name),
            pattern,
            kind,
            since,
            ready: VecDeque::new(),
            delivered: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            delayed: BTreeSet::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            kept: 0,
            bytes: 0,
            detached: Some(Detached::now()),
            redeliveries: 0,
            dead_letters: 0,
        }
    }

    /// The queue as an operator sees it (`admin.rs`); `now_ms` and `now`
    /// are the same moment on the wall and monotonic clocks.
    pub fn stats(&self, store: &MessageStore, now_ms: u64, now: Instant) -> QueueStats {
        QueueStats {
            name: self.name.to_string(),
            pattern: self.pattern.clone(),
            kind: self.kind,
            consumers: self
                .consumers
                .iter()
                .filter(|c| !c.live.is_closed())
                .count(),
            pending: self.ready.len() as u64,
            // Every in-flight delivery has exactly one deadline.
            unacked: self.deadlines.len() as u64,
            kept: self.kept as u64,
            oldest_unacked_age: self
                .oldest()
                .map(|lsn| Duration::from_millis(now_ms.saturating_sub(store.stored_ms(lsn)))),
            redeliveries: self.redeliveries,
            dead_letters: self.dead_letters,
            bytes_pinned: self.bytes,
            detached_for: self.detached.map(|d| d.age(now)),
        }
    }

    /// A durable subscription or queue group (in the manifest), not an
    /// ephemeral queue.
    pub fn persistent(&self) -> bool {
        self.kind != QueueKind::Ephemeral
    }

    /// Messages this queue keeps (not acked yet).
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// The LSNs of the messages it keeps (for the model test).
    #[cfg(test)]
    pub fn kept_lsns(&self) -> Vec<Lsn> {
        let mut lsns: Vec<Lsn> = self.ready.iter().copied().collect();
        lsns.extend(self.delivered.keys());
        lsns.sort_unstable();
        lsns
    }

    /// Keep a message just stored (or replayed), never sent yet, stored at
    /// `stored_ms` (ms since the Unix epoch).
    pub fn keep(
        &mut self,
        lsn: Lsn,
        message: &MessageRef,
        stored_ms: u64,
        store: &mut MessageStore,
    ) {
        store.add_ref(lsn, message, stored_ms);
        insert_sorted(&mut self.ready, lsn);
        self.kept += 1;
        self.bytes += message.delivery.len() as u64;
    }

    /// The oldest message kept, whatever its state.
    fn oldest(&self) -> Option<Lsn> {
        let waiting = self.ready.front().copied();
        let sent = self.delivered.keys().next().copied();
        waiting.into_iter().chain(sent).min()
    }

    /// Drop the oldest messages while the queue is over `max_messages` or
    /// `max_bytes`, keeping at least the newest (a `max_bytes` below one
    /// message would otherwise drop every message as it came).
    pub fn enforce_size(
        &mut self,
        limits: &QueueLimits,
        store: &mut MessageStore,
        dropped: &mut Dropped,
    ) {
        while self.kept > 1 {
            let Some(reason) = limits.over(self.kept, self.bytes) else {
                return;
            };
            self.drop_oldest(reason, store, dropped);
        }
    }

    /// Drop the messages stored before `cutoff_ms`, oldest first. Log order
    /// is storage order (to within the confirm pipelines' overlap), so the
    /// first younger message ends the scan.
    pub fn enforce_age(&mut self, cutoff_ms: u64, store: &mut MessageStore, dropped: &mut Dropped) {
        while let Some(lsn) = self.oldest() {
            if store.stored_ms(lsn) >= cutoff_ms {
                return;
            }
            self.drop_oldest(DropReason::MaxAge, store, dropped);
        }
    }

    fn drop_oldest(&mut self, reason: DropReason, store: &mut MessageStore, dropped: &mut Dropped) {
        let Some(lsn) = self.oldest() else {
            return;
        };
        // An in-flight one too: its consumer's ack later is harmless, and
        // sparing it would let a consumer that never acks pin the log.
        self.forget(lsn, store);
        dropped.add(&self.name, self.persistent(), lsn, reason);
    }

    /// Forget a message (acked, expired or dead-lettered); returns whether
    /// the queue held it.
    pub fn forget(&mut self, lsn: Lsn, store: &mut MessageStore) -> bool {
        let held = match self.delivered.remove(&lsn) {
            Some(delivered) => {
                match delivered.holder {
                    Holder::Waiting => {
                        remove_sorted(&mut self.ready, lsn);
                    }
                    Holder::InFlight { consumer, deadline } => {
                        self.end_flight(lsn, consumer, deadline)
                    }
                    Holder::Delayed { until } => {
                        self.delayed.remove(&(until, lsn));
                    }
                    Holder::DeadLettering => {}
                }
                true
            }
            None => remove_sorted(&mut self.ready, lsn),
        };
        if held {
            self.kept -= 1;
            self.bytes -= store.message(lsn).delivery.len() as u64;
            store.unref(lsn);
            self.trim();
        }
        held
    }

    /// Let go of every message (the queue is being deleted).
    pub fn clear(&mut self, store: &mut MessageStore) {
        for &lsn in &self.ready {
            store.unref(lsn);
        }
        for (&lsn, delivered) in &self.delivered {
            // Waiting ones were in `ready`.
            if delivered.holder != Holder::Waiting {
                store.unref(lsn);
            }
        }
        self.ready = VecDeque::new();
        self.delivered.clear();
        self.deadlines.clear();
        self.delayed.clear();
        self.kept = 0;
        self.bytes = 0;
        for consumer in &mut self.consumers {
            consumer.in_flight = 0;
        }
    }

    /// A delivery is no longer in flight: off the redelivery schedule, and
    /// its consumer gets the credit back.
    fn end_flight(&mut self, lsn: Lsn, consumer: u64, deadline: Instant) {
        self.deadlines.remove(&(deadline, lsn));
        if let Some(c) = self.consumers.iter_mut().find(|c| c.live.id == consumer) {
            c.in_flight -= 1;
            c.settle(lsn);
        }
    }

    /// Consumer `consumer` acked delivery `lsn`. Only an ack from the
    /// consumer the message is in flight to releases it: delivery ids are
    /// log positions, easy to guess, and an ack of one never sent to the
    /// acking consumer used to drop a message another consumer was owed.
    /// An ack after the message was taken back from the acking consumer is
    /// honoured while it waits (nobody else has it, and the acking consumer
    /// did the work); once it is in flight to another, that one's ack
    /// counts, and the work may be done twice, as at-least-once allows.
    pub fn ack(&mut self, consumer: u64, lsn: Lsn, store: &mut MessageStore) -> AckOutcome {
        match self.standing(consumer, lsn) {
            Standing::InFlight { .. } | Standing::TakenBack => {
                self.forget(lsn, store);
                AckOutcome::Acked
            }
            Standing::Late => AckOutcome::Late,
            Standing::Unknown => AckOutcome::Unknown,
        }
    }

    /// Where `lsn` stands for consumer `consumer`, for its acks (QOS-18).
    fn standing(&self, consumer: u64, lsn: Lsn) -> Standing {
        let holder = self.delivered.get(&lsn).map(|d| d.holder);
        if let Some(Holder::InFlight {
            consumer: c,
            deadline,
        }) = holder
        {
            if c == consumer {
                return Standing::InFlight { deadline };
            }
        }
        let Some(acking) = self.consumers.iter().find(|c| c.live.id == consumer) else {
            // It left meanwhile: what it held is back in line already.
            return Standing::Late;
        };
        if !acking.settled.contains(&lsn) {
            return Standing::Unknown;
        }
        if holder == Some(Holder::Waiting) {
            return Standing::TakenBack;
        }
        Standing::Late
    }

    /// Consumer `consumer` nak'd delivery `lsn` (QOS-20): it goes back in
    /// line at once, or at `now + delay`, and the consumer gets its credit
    /// back. Only while it is in flight to that consumer: once taken back
    /// it is in line already.
    pub fn nak(&mut self, consumer: u64, lsn: Lsn, delay: Duration, now: Instant) -> AckOutcome {
        let deadline = match self.standing(consumer, lsn) {
            Standing::InFlight { deadline } => deadline,
            Standing::TakenBack | Standing::Late => return AckOutcome::Late,
            Standing::Unknown => return AckOutcome::Unknown,
        };
        if delay.is_zero() {
            self.make_ready(lsn);
            return AckOutcome::Acked;
        }
        self.end_flight(lsn, consumer, deadline);
        let until = now + delay;
        if let Some(delivered) = self.delivered.get_mut(&lsn) {
            delivered.holder = Holder::Delayed { until };
        }
        self.delayed.insert((until, lsn));
        AckOutcome::Acked
    }

    /// Consumer `consumer` is still working on delivery `lsn` (QOS-22):
    /// its ack deadline starts again from `now`, by the consumer's own ack
    /// timeout. Returns the new deadline when it took effect.
    pub fn in_progress(
        &mut self,
        consumer: u64,
        lsn: Lsn,
        now: Instant,
    ) -> (AckOutcome, Option<Instant>) {
        let deadline = match self.standing(consumer, lsn) {
            Standing::InFlight { deadline } => deadline,
            Standing::TakenBack | Standing::Late => return (AckOutcome::Late, None),
            Standing::Unknown => return (AckOutcome::Unknown, None),
        };
        let Some(terms) = self
            .consumers
            .iter()
            .find(|c| c.live.id == consumer)
            .map(|c| c.terms)
        else {
            return (AckOutcome::Late, None);
        };
        let next = now + terms.ack_timeout;
        self.deadlines.remove(&(deadline, lsn));
        self.deadlines.insert((next, lsn));
        if let Some(delivered) = self.delivered.get_mut(&lsn) {
            delivered.holder = Holder::InFlight {
                consumer,
                deadline: next,
            };
        }
        (AckOutcome::Acked, Some(next))
    }

    /// Consumer `consumer` gave up on delivery `lsn` for good (QOS-21): it
    /// is handed to `dead_letters` now, whatever its delivery count. Like
    /// an ack, honoured while in flight to that consumer or taken back from
    /// it and still waiting.
    pub fn term(
        &mut self,
        consumer: u64,
        lsn: Lsn,
        store: &MessageStore,
        dead_letters: &mpsc::UnboundedSender<DeadLetter>,
    ) -> AckOutcome {
        match self.standing(consumer, lsn) {
            Standing::InFlight { deadline } => self.end_flight(lsn, consumer, deadline),
            Standing::TakenBack => {
                remove_sorted(&mut self.ready, lsn);
            }
            Standing::Late => return AckOutcome::Late,
            Standing::Unknown => return AckOutcome::Unknown,
        }
        let Some(delivered) = self.delivered.get_mut(&lsn) else {
            return AckOutcome::Late;
        };
        delivered.holder = Holder::DeadLettering;
        let dead = DeadLetter {
            queue: self.name.to_string(),
            lsn,
            message: store.message(lsn).clone(),
            deliveries: delivered.deliveries,
            reason: DeadLetterReason::Terminated,
        };
        if dead_letters.send(dead).is_err() {
            // No dead-letter task (a broker shutting down): keep it.
            self.make_ready(lsn);
        }
        AckOutcome::Acked
    }

    /// The dead letter of `lsn` is stored (or will never be): let the
    /// original go, if it is still the one handed to the dead-letter task.
    pub fn forget_dead_letter(&mut self, lsn: Lsn, store: &mut MessageStore) -> bool {
        let holder = self.delivered.get(&lsn).map(|d| d.holder);
        holder == Some(Holder::DeadLettering) && self.forget(lsn, store)
    }

    /// Put an in-flight, delayed or dead-lettering message back in line.
    pub fn make_ready(&mut self, lsn: Lsn) {
        let Some(delivered) = self.delivered.get_mut(&lsn) else {
            return;
        };
        match std::mem::replace(&mut delivered.holder, Holder::Waiting) {
            // Already in line: inserting it again would duplicate it.
            Holder::Waiting => return,
            Holder::InFlight { consumer, deadline } => self.end_flight(lsn, consumer, deadline),
            Holder::Delayed { until } => {
                self.delayed.remove(&(until, lsn));
            }
            Holder::DeadLettering => {}
        }
        insert_sorted(&mut self.ready, lsn);
    }

    /// Release everything consumer `id` holds, so others (or the next
    /// attach) get it again.
    pub fn release_consumer(&mut self, id: u64) -> usize {
        let held: Vec<Lsn> = self
            .deadlines
            .iter()
            .filter(|(_, lsn)| {
                matches!(self.delivered.get(lsn).map(|d| d.holder),
                    Some(Holder::InFlight { consumer, .. }) if consumer == id)
            })
            .map(|&(_, lsn)| lsn)
            .collect();
        for &lsn in &held {
            self.make_ready(lsn);
        }
        held.len()
    }

    /// Put every delivery whose deadline is at or before `now` back in
    /// line, and every nak'd one whose delay is over; returns how many.
    pub fn take_back_overdue(&mut self, now: Instant) -> usize {
        let due: Vec<Lsn> = [&self.deadlines, &self.delayed]
            .into_iter()
            .flat_map(|times| times.iter().take_while(|(at, _)| *at <= now))
            .map(|&(_, lsn)| lsn)
            .collect();
        for &lsn in &due {
            self.make_ready(lsn);
        }
        due.len()
    }

    /// The next time the sweep has work in this queue: an ack deadline or
    /// the end of a nak's delay.
    pub fn next_due(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|&(at, _)| at);
        let delayed = self.delayed.first().map(|&(at, _)| at);
        deadline.into_iter().chain(delayed).min()
    }

    /// Drop the waiting messages whose TTL has passed.
    pub fn expire(&mut self, now: Instant, store: &mut MessageStore, dropped: &mut Dropped) {
        let persistent = self.persistent();
        let StoredQueue {
            name,
            ready,
            delivered,
            kept,
            bytes,
            ..
        } = self;
        ready.retain(|&lsn| {
            let message = store.message(lsn);
            let expired = message.expires_at.is_some_and(|at| at <= now);
            if expired {
                *bytes -= message.delivery.len() as u64;
                delivered.remove(&lsn);
                *kept -= 1;
                store.unref(lsn);
                dropped.add(name, persistent, lsn, DropReason::Ttl);
            }
            !expired
        });
        self.trim();
    }

    /// A consumer with credit and room, round robin.
    fn pick_consumer(&mut self, max_in_flight: usize) -> Option<usize> {
        let count = self.consumers.len();
        for k in 0..count {
            let i = (self.next_consumer + k) % count;
            let c = &self.consumers[i];
            if c.in_flight < max_in_flight && c.live.has_room() && !c.live.is_closed() {
                self.next_consumer = (i + 1) % count;
                return Some(i);
            }
        }
        None
    }

    /// Send waiting messages, oldest first, while some consumer has credit.
    /// Expired messages are dropped here, and messages out of deliveries are
    /// handed to `dead_letters`.
    pub fn top_up(&mut self, rules: &Rules<'_>, store: &mut MessageStore, dropped: &mut Dropped) {
        if self.consumers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&lsn) = self.ready.front() {
            let message = store.message(lsn);
            if message.expires_at.is_some_and(|at| at <= now) {
                self.forget(lsn, store);
                dropped.add(&self.name, self.persistent(), lsn, DropReason::Ttl);
                continue;
            }
            let deliveries = self.delivered.get(&lsn).map_or(0, |d| d.deliveries);
            let Some(i) = self.pick_consumer(rules.settings.max_in_flight) else {
                return;
            };
            // The limit of the consumer it would go to (QOS-22): members of
            // a group may each have asked for their own.
            let max = self.consumers[i].terms.max_deliveries;
            if max > 0 && deliveries >= max {
                // That consumer did not get it: the next message is its turn.
                self.next_consumer = i;
                let dead = DeadLetter {
                    queue: self.name.to_string(),
                    lsn,
                    message: message.clone(),
                    deliveries,
                    reason: DeadLetterReason::MaxDeliveries,
                };
                if rules.dead_letters.send(dead).is_err() {
                    // No dead-letter task (a broker shutting down): keep it.
                    return;
                }
                self.ready.pop_front();
                if let Some(delivered) = self.delivered.get_mut(&lsn) {
                    delivered.holder = Holder::DeadLettering;
                }
                continue;
            }
            let consumer = &mut self.consumers[i];
            let queued = Queued {
                message: message.clone(),
                delivery_id: lsn,
                delivery_count: deliveries + 1,
                dropped_before: 0,
            };
            if consumer.live.try_enqueue_durable(queued).is_err() {
                return;
            }
            if deliveries > 0 {
                rules.redeliveries.fetch_add(1, Ordering::Relaxed);
                self.redeliveries += 1;
            }
            let deadline = now + consumer.terms.ack_timeout;
            rules.alarm.at(deadline);
            consumer.in_flight += 1;
            let holder = Holder::InFlight {
                consumer: consumer.live.id,
                deadline,
            };
            self.ready.pop_front();
            self.delivered.insert(
                lsn,
                Delivered {
                    deliveries: deliveries + 1,
                    holder,
                },
            );
            self.deadlines.insert((deadline, lsn));
        }
        self.trim();
    }

    /// Give memory back once most of `ready` has drained: a queue that held
    /// a backlog once should not keep its peak capacity for good.
    fn trim(&mut self) {
        const SMALL: usize = 64;
        let capacity = self.ready.capacity();
        if capacity > SMALL && self.ready.len() < capacity / 4 {
            self.ready.shrink_to((self.ready.len() * 2).max(SMALL));
        }
    }
}

/// Insert `lsn` in order. Records usually reach their queues in log order,
/// so this is a push at the back; a redelivery or a confirm pipeline that
/// overtook another connection's goes in by binary search.
fn insert_sorted(ready: &mut VecDeque<Lsn>, lsn: Lsn) {
    match ready.back() {
        Some(&last) if last > lsn => {
            let at = ready.partition_point(|&x| x < lsn);
            debug_assert!(ready.get(at) != Some(&lsn), "{lsn} is already waiting");
            ready.insert(at, lsn);
        }
        _ => ready.push_back(lsn),
    }
}

/// Remove `lsn` if present; usually the front (oldest first).
fn remove_sorted(ready: &mut VecDeque<Lsn>, lsn: Lsn) -> bool {
    if ready.front() == Some(&lsn) {
        ready.pop_front();
        return true;
    }
    match ready.binary_search(&lsn) {
        Ok(at) => {
            ready.remove(at);
            true
        }
        Err(_) => false,
    }
}

/// Where an ack of some kind leaves a delivery, for the consumer acking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// In flight to it, due back at `deadline`.
    InFlight { deadline: Instant },
    /// Taken back from it and waiting; nobody else has it.
    TakenBack,
    /// It had it, and does not any more.
    Late,
    /// Never sent to it, as far as the queue remembers.
    Unknown,
}

/// What `top_up` needs besides the queue.
pub(super) struct Rules<'a> {
    pub settings: &'a DeliverySettings,
    pub dead_letters: &'a mpsc::UnboundedSender<DeadLetter>,
    pub redeliveries: &'a AtomicU64,
    /// Told of every new ack deadline, so the sweep wakes in time for it.
    pub alarm: &'a Alarm,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::OverflowPolicy;
    use crate::outbox::Outbox;
    use crate::subscription::{MessageRef, QueuedMessage};

    fn message(id: u64) -> MessageRef {
        let mut encoder = blipmq_protocol::Encoder::new();
        Arc::new(QueuedMessage {
            delivery: encoder.shared_delivery("t", b"x", &[], id, 0),
            published_at: std::time::Instant::now(),
            expires_at: None,
            message_id: id,
            trace_id: None,
            charge: Default::default(),
        })
    }

    fn consumer(id: u64) -> Consumer {
        let live = Arc::new(Subscription::new(
            id,
            "t".into(),
            64,
            OverflowPolicy::DropNew,
            Outbox::new(),
            Some("q".into()),
            None,
        ));
        Consumer::new(live, ConsumerTerms::defaults(&settings(0, 16)), 16)
    }

    fn settings(max_deliveries: u32, max_in_flight: usize) -> DeliverySettings {
        DeliverySettings {
            ack_timeout: Duration::ZERO,
            max_deliveries,
            max_in_flight,
            max_queues: 1,
            limits: QueueLimits::default(),
        }
    }

    /// (delivery id, delivery count) of everything queued for `c`.
    fn sent(c: &Consumer) -> Vec<(Lsn, u32)> {
        std::iter::from_fn(|| c.live.pop())
            .map(|q| (q.delivery_id, q.delivery_count))
            .collect()
    }

    #[test]
    fn messages_go_out_in_log_order_whatever_order_they_came_in() {
        let (dead_letters, _dead) = mpsc::unbounded_channel();
        let redeliveries = AtomicU64::new(0);
        let alarm = Alarm::default();
        let settings = DeliverySettings {
            ack_timeout: Duration::ZERO,
            max_deliveries: 0,
            max_in_flight: 16,
            max_queues: 1,
            limits: QueueLimits::default(),
        };
        let rules = Rules {
            settings: &settings,
            dead_letters: &dead_letters,
            redeliveries: &redeliveries,
            alarm: &alarm,
        };
        let mut store = MessageStore::default();
        let mut dropped = Dropped::default();
        let mut queue = StoredQueue::new("q", "t".into(), QueueKind::Durable, 1);
        // Confirm pipelines of two connections may hand over 5 before 3.
        for lsn in [5, 3, 4, 9, 7] {
            queue.keep(lsn, &message(lsn), 0, &mut store);
        }
        queue.consumers.push(consumer(1));
        queue.top_up(&rules, &mut store, &mut dropped);
        let first: Vec<_> = [3, 4, 5, 7, 9].iter().map(|&l| (l, 1)).collect();
        assert_eq!(sent(&queue.consumers[0]), first);
        // The ack timeout is zero: everything is overdue, and comes back
        // in log order, counted, once the consumer acked one.
        assert!(queue.forget(4, &mut store));
        assert_eq!(queue.take_back_overdue(Instant::now()), 4);
        queue.top_up(&rules, &mut store, &mut dropped);
        let again: Vec<_> = [3, 5, 7, 9].iter().map(|&l| (l, 2)).collect();
        assert_eq!(sent(&queue.consumers[0]), again);
        assert_eq!(redeliveries.load(Ordering::Relaxed), 4);
        assert_eq!(queue.kept(), 4);
        // A second take-back of the same message does not duplicate it.
        queue.make_ready(3);
        queue.make_ready(3);
        assert_eq!(queue.ready, [3]);
        queue.clear(&mut store);
        assert_eq!(store.len(), 0, "every reference was let go");
        assert!(dropped.is_empty());
    }

    #[test]
    fn only_an_ack_from_the_consumer_a_message_is_in_flight_to_releases_it() {
        let (dead_letters, _dead) = mpsc::unbounded_channel();
        let redeliveries = AtomicU64::new(0);
        let alarm = Alarm::default();
        let settings = DeliverySettings {
            ack_timeout: Duration::ZERO,
            max_deliveries: 0,
            max_in_flight: 1,
            max_queues: 1,
            limits: QueueLimits::default(),
        };
        let rules = Rules {
            settings: &settings,
            dead_letters: &dead_letters,
            redeliveries: &redeliveries,
            alarm: &alarm,
        };
        let (mut store, mut dropped) = (MessageStore::default(), Dropped::default());
        let mut queue = StoredQueue::new("g", "t".into(), QueueKind::Group, 1);
        for lsn in [10, 11, 12] {
            queue.keep(lsn, &message(lsn), 0, &mut store);
        }
        queue.consumers.push(consumer(1));
        queue.consumers.push(consumer(2));
        queue.top_up(&rules, &mut store, &mut dropped);
        assert_eq!(sent(&queue.consumers[0]), [(10, 1)]);
        assert_eq!(sent(&queue.consumers[1]), [(11, 1)]);
        // Another member's delivery, one nobody has been sent yet, one that
        // does not exist: refused, and all three still kept.
        assert_eq!(queue.ack(1, 11, &mut store), AckOutcome::Unknown);
        assert_eq!(queue.ack(1, 12, &mut store), AckOutcome::Unknown);
        assert_eq!(queue.ack(1, 99, &mut store), AckOutcome::Unknown);
        assert_eq!(queue.kept(), 3);
        // Its own: released; again: late, harmless.
        assert_eq!(queue.ack(1, 10, &mut store), AckOutcome::Acked);
        assert_eq!(queue.ack(1, 10, &mut store), AckOutcome::Late);
        // 11 is overdue (the timeout is zero): taken back from consumer 2,
        // it waits; consumer 2's late ack is honoured while it does.
        queue.take_back_overdue(Instant::now());
        assert_eq!(queue.ack(2, 11, &mut store), AckOutcome::Acked);
        assert_eq!(queue.kept(), 1);
        // 12 goes to consumer 1, is taken back, and sent to consumer 2:
        // consumer 1's late ack changes nothing, consumer 2's counts.
        queue.top_up(&rules, &mut store, &mut dropped);
        assert_eq!(sent(&queue.consumers[0]), [(12, 1)]);
        queue.take_back_overdue(Instant::now());
        // Round robin: consumer 2's turn.
        queue.top_up(&rules, &mut store, &mut dropped);
        assert_eq!(sent(&queue.consumers[1]), [(12, 2)]);
        assert_eq!(queue.ack(1, 12, &mut store), AckOutcome::Late);
        assert_eq!(queue.kept(), 1);
        assert_eq!(queue.ack(2, 12, &mut store), AckOutcome::Acked);
        assert_eq!(queue.kept(), 0);
    }

    #[test]
    fn nak_in_progress_and_term_act_only_on_what_is_in_flight_to_the_consumer() {
        let (dead_letters, mut dead) = mpsc::unbounded_channel();
        let redeliveries = AtomicU64::new(0);
        let alarm = Alarm::default();
        let settings = settings(0, 16);
        let rules = Rules {
            settings: &settings,
            dead_letters: &dead_letters,
            redeliveries: &redeliveries,
            alarm: &alarm,
        };
        let (mut store, mut dropped) = (MessageStore::default(), Dropped::default());
        let mut queue = StoredQueue::new("g", "t".into(), QueueKind::Group, 1);
        for lsn in [1, 2, 3] {
            queue.keep(lsn, &message(lsn), 0, &mut store);
        }
        let mut slow = consumer(1);
        slow.terms.ack_timeout = Duration::from_secs(60);
        queue.consumers.push(slow);
        queue.top_up(&rules, &mut store, &mut dropped);
        assert_eq!(sent(&queue.consumers[0]), [(1, 1), (2, 1), (3, 1)]);
        let now = Instant::now();
        // Another consumer's nak, term or in-progress: unknown, no effect.
        queue.consumers.push(consumer(2));
        assert_eq!(queue.nak(2, 1, Duration::ZERO, now), AckOutcome::Unknown);
        assert_eq!(queue.in_progress(2, 1, now).0, AckOutcome::Unknown);
        assert_eq!(queue.term(2, 1, &store, &dead_letters), AckOutcome::Unknown);
        // A delayed nak: not in line until the delay is over, nor overdue.
        let delay = Duration::from_millis(500);
        assert_eq!(queue.nak(1, 1, delay, now), AckOutcome::Acked);
        assert_eq!(queue.nak(1, 1, delay, now), AckOutcome::Late, "once");
        assert_eq!(queue.consumers[0].in_flight, 2, "its credit is back");
        assert_eq!(queue.next_due(), Some(now + delay));
        assert_eq!(queue.take_back_overdue(now + delay / 2), 0);
        // In progress moves 2's deadline from a minute after it was sent
        // to a minute after `later`.
        let later = now + Duration::from_secs(30);
        let (outcome, deadline) = queue.in_progress(1, 2, later);
        assert_eq!(
            (outcome, deadline),
            (AckOutcome::Acked, Some(later + Duration::from_secs(60)))
        );
        assert_eq!(
            queue.take_back_overdue(now + Duration::from_secs(61)),
            2,
            "1 and 3, not 2"
        );
        // A term hands 2 to the dead-letter task, counted as it was sent.
        assert_eq!(queue.term(1, 2, &store, &dead_letters), AckOutcome::Acked);
        let letter = dead.try_recv().expect("a dead letter");
        assert_eq!(
            (letter.lsn, letter.deliveries, letter.reason),
            (2, 1, DeadLetterReason::Terminated)
        );
        assert_eq!(queue.kept(), 3, "kept until the dead letter is stored");
        assert!(queue.forget_dead_letter(2, &mut store));
        // 1 and 3 go out again, counted.
        queue.top_up(&rules, &mut store, &mut dropped);
        let mut again = sent(&queue.consumers[0]);
        again.extend(sent(&queue.consumers[1]));
        again.sort_unstable();
        assert_eq!(again, [(1, 2), (3, 2)]);
        queue.clear(&mut store);
        assert_eq!(store.len(), 0);
    }
}
