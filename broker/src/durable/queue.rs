//! One stored queue: the messages it keeps for its consumers, which of them
//! wait and which are in flight, and the consumers attached to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use blipmq_protocol::topic;
use tokio::sync::mpsc;

use super::{DeadLetter, DeliverySettings, QueueKind};
use crate::subscription::{MessageRef, Queued, Subscription};
use crate::wal::Lsn;

/// Where a stored message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Waiting for a consumer with credit.
    Ready,
    /// Sent to consumer `consumer`; sent again if not acked by `deadline`.
    InFlight { consumer: u64, deadline: Instant },
    /// Handed to the dead-letter task.
    DeadLettering,
}

pub(super) struct Entry {
    pub message: MessageRef,
    /// Times sent to a consumer since the broker started.
    deliveries: u32,
    holder: Holder,
}

pub(super) struct Consumer {
    pub live: Arc<Subscription>,
    pub in_flight: usize,
}

pub(super) struct StoredQueue {
    pub pattern: String,
    pub kind: QueueKind,
    /// The first LSN this queue keeps: it was created just before it.
    pub since: Lsn,
    pub entries: BTreeMap<Lsn, Entry>,
    /// Entries that are `Ready`, in log order.
    pub ready: BTreeSet<Lsn>,
    /// Entries in flight by deadline, for the redelivery sweep.
    pub deadlines: BTreeSet<(Instant, Lsn)>,
    pub consumers: Vec<Consumer>,
    pub next_consumer: usize,
}

impl StoredQueue {
    pub fn new(pattern: String, kind: QueueKind, since: Lsn) -> StoredQueue {
        StoredQueue {
            pattern,
            kind,
            since,
            entries: BTreeMap::new(),
            ready: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            consumers: Vec::new(),
            next_consumer: 0,
        }
    }

    /// Keep a message just stored (or replayed), never sent yet.
    pub fn keep(&mut self, lsn: Lsn, message: MessageRef) {
        self.entries.insert(
            lsn,
            Entry {
                message,
                deliveries: 0,
                holder: Holder::Ready,
            },
        );
        self.ready.insert(lsn);
    }

    /// Forget a message (acked, expired or dead-lettered); returns whether
    /// the queue held it.
    pub fn forget(&mut self, lsn: Lsn) -> bool {
        let Some(entry) = self.entries.remove(&lsn) else {
            return false;
        };
        match entry.holder {
            Holder::Ready => {
                self.ready.remove(&lsn);
            }
            Holder::InFlight { consumer, deadline } => self.end_flight(lsn, consumer, deadline),
            Holder::DeadLettering => {}
        }
        true
    }

    /// A delivery is no longer in flight: off the redelivery schedule, and
    /// its consumer gets the credit back.
    pub fn end_flight(&mut self, lsn: Lsn, consumer: u64, deadline: Instant) {
        self.deadlines.remove(&(deadline, lsn));
        if let Some(c) = self.consumers.iter_mut().find(|c| c.live.id == consumer) {
            c.in_flight -= 1;
        }
    }

    /// Whether this queue keeps a message stored at `lsn` on `topic`.
    pub fn keeps(&self, lsn: Lsn, topic: &str) -> bool {
        lsn >= self.since && topic::matches(&self.pattern, topic)
    }

    /// Put an in-flight or dead-lettering entry back in line.
    pub fn make_ready(&mut self, lsn: Lsn) {
        let Some(entry) = self.entries.get_mut(&lsn) else {
            return;
        };
        let holder = std::mem::replace(&mut entry.holder, Holder::Ready);
        if let Holder::InFlight { consumer, deadline } = holder {
            self.end_flight(lsn, consumer, deadline);
        }
        self.ready.insert(lsn);
    }

    /// Release everything consumer `id` holds, so others (or the next
    /// attach) get it again.
    pub fn release_consumer(&mut self, id: u64) -> usize {
        let held: Vec<Lsn> = self
            .deadlines
            .iter()
            .filter(|(_, lsn)| {
                matches!(self.entries.get(lsn).map(|e| e.holder),
                    Some(Holder::InFlight { consumer, .. }) if consumer == id)
            })
            .map(|&(_, lsn)| lsn)
            .collect();
        for &lsn in &held {
            self.make_ready(lsn);
        }
        held.len()
    }

    /// A consumer with credit and room, round robin.
    pub fn pick_consumer(&mut self, max_in_flight: usize) -> Option<usize> {
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

    /// Send ready messages, oldest first, while some consumer has credit.
    /// Expired messages are dropped here, and messages out of deliveries are
    /// handed to `dead_letters`.
    pub fn top_up(&mut self, name: &str, rules: &Rules<'_>) {
        if self.consumers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&lsn) = self.ready.first() {
            let entry = &self.entries[&lsn];
            if entry.message.expires_at.is_some_and(|at| at <= now) {
                self.forget(lsn);
                continue;
            }
            let max = rules.settings.max_deliveries;
            if max > 0 && entry.deliveries >= max {
                let dead = DeadLetter {
                    queue: name.to_string(),
                    lsn,
                    message: entry.message.clone(),
                    deliveries: entry.deliveries,
                };
                if rules.dead_letters.send(dead).is_err() {
                    // No dead-letter task (a broker shutting down): keep it.
                    return;
                }
                self.ready.remove(&lsn);
                if let Some(entry) = self.entries.get_mut(&lsn) {
                    entry.holder = Holder::DeadLettering;
                }
                continue;
            }
            let Some(i) = self.pick_consumer(rules.settings.max_in_flight) else {
                return;
            };
            let consumer = &mut self.consumers[i];
            let entry = self.entries.get_mut(&lsn).expect("ready entries exist");
            let queued = Queued {
                message: entry.message.clone(),
                delivery_id: lsn,
                delivery_count: entry.deliveries + 1,
            };
            if consumer.live.try_enqueue_durable(queued).is_err() {
                return;
            }
            if entry.deliveries > 0 {
                rules.redeliveries.fetch_add(1, Ordering::Relaxed);
            }
            entry.deliveries += 1;
            let deadline = now + rules.settings.ack_timeout;
            entry.holder = Holder::InFlight {
                consumer: consumer.live.id,
                deadline,
            };
            consumer.in_flight += 1;
            self.ready.remove(&lsn);
            self.deadlines.insert((deadline, lsn));
        }
    }
}

/// What `top_up` needs besides the queue.
pub(super) struct Rules<'a> {
    pub settings: &'a DeliverySettings,
    pub dead_letters: &'a mpsc::UnboundedSender<DeadLetter>,
    pub redeliveries: &'a AtomicU64,
}
