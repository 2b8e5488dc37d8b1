//! The checker: reads a recorded history and reports every way it breaks
//! the QoS 1 promise. Pure: no I/O, no clock; the same history always gives
//! the same report, in the same order.
//!
//! The promise: a confirmed QoS 1 message reaches every durable queue whose
//! pattern matches its topic and that existed when it was published (one
//! member of a queue group), across any crash, until a consumer of that
//! queue acks it; nothing corrupt is ever delivered; a message id names one
//! message.
//!
//! What "until acked" can demand of a finite run: the runner ends every
//! history with a drain on a healthy broker that takes and acks everything
//! each queue still holds until it goes quiet. So a message owed to a queue
//! must either have been acked there (at any time; an ack that a crash
//! undid may bring it back, which is allowed, so it is never demanded again)
//! or be delivered there after [`Event::DrainStarted`]. Publishes without a
//! confirm are owed to nobody, and at-least-once makes repeats fine.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::event::{Content, Corruption, Event, Key, QueueKind, Record};
use crate::topic;

/// One way the history breaks the promise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Violation {
    /// A confirmed message owed to a durable subscription never reached it.
    NeverDelivered {
        queue: &'static str,
        key: Key,
        message_id: u64,
    },
    /// A confirmed message owed to a queue group reached none of its members.
    GroupNeverDelivered {
        group: &'static str,
        key: Key,
        message_id: u64,
    },
    /// A confirmed message reached the queue `deliveries` times but was never
    /// acked there and did not come back in the drain: the queue lost it
    /// while a consumer still held it (or before it was sent again).
    LostAfterDelivery {
        queue: &'static str,
        key: Key,
        message_id: u64,
        deliveries: u32,
    },
    /// A delivery whose payload, topic or headers are not what was published.
    Corrupt {
        consumer: &'static str,
        queue: &'static str,
        key: Option<Key>,
        message_id: u64,
        corruption: Corruption,
    },
    /// One message id given to two different messages.
    IdReused {
        message_id: u64,
        first: Key,
        second: Key,
    },
    /// One message seen under two different ids (confirm or delivery).
    IdChanged { key: Key, first: u64, second: u64 },
    /// An intact delivery of a message no publisher ever sent.
    NeverPublished {
        queue: &'static str,
        key: Key,
        message_id: u64,
    },
    /// A message the broker refused with an error code was delivered (QOS-1).
    DeliveredAfterRefusal {
        queue: &'static str,
        key: Key,
        code: u16,
    },
    /// A message delivered to a queue whose pattern does not match the topic
    /// it was published to.
    Misrouted {
        queue: &'static str,
        key: Key,
        topic: &'static str,
    },
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub published: u64,
    pub confirmed: u64,
    pub refused: u64,
    /// No confirm and no refusal (connection lost, timed out, or the run
    /// ended first).
    pub indeterminate: u64,
    pub deliveries: u64,
    /// Deliveries with a `delivery_count` above 1.
    pub redeliveries: u64,
    /// Deliveries of a message the same queue had already been sent (a
    /// redelivery, or one after a restart, which starts counting at 1 again).
    pub repeats: u64,
    pub drain_deliveries: u64,
    pub acks: u64,
    /// (queue, confirmed message) pairs the promise covers.
    pub owed: u64,
    pub kills: u64,
    pub terminations: u64,
    pub stops: u64,
    pub starts: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub stats: Stats,
    /// Sorted, each reported once.
    pub violations: Vec<Violation>,
}

struct Queue {
    pattern: &'static str,
    kind: QueueKind,
    /// Index of its `QueueCreated` in the history.
    created: usize,
}

#[derive(Clone, Copy)]
enum Outcome {
    Unanswered,
    Confirmed(u64),
    Refused(u16),
    Indeterminate,
}

struct Publish {
    topic: &'static str,
    /// Index of its `Publish` in the history.
    at: usize,
    outcome: Outcome,
}

/// What one queue saw of one message (intact deliveries only).
#[derive(Default)]
struct Seen {
    deliveries: u32,
    in_drain: bool,
    acked: bool,
    message_id: u64,
}

/// Check a history; see the module docs for the rules.
pub fn check(history: &[Record]) -> Report {
    let mut state = State::default();
    for (index, record) in history.iter().enumerate() {
        state.record(index, &record.event);
    }
    state.finish()
}

#[derive(Default)]
struct State {
    stats: Stats,
    violations: Vec<Violation>,
    queues: BTreeMap<&'static str, Queue>,
    publishes: HashMap<Key, Publish>,
    seen: HashMap<(&'static str, Key), Seen>,
    draining: bool,
    /// The first key seen with each message id, and the first id with each key.
    key_of_id: HashMap<u64, Key>,
    id_of_key: HashMap<Key, u64>,
    /// Violations already reported, so that a repeat adds nothing.
    reported: HashSet<Violation>,
}

impl State {
    fn record(&mut self, index: usize, event: &Event) {
        match *event {
            Event::QueueCreated {
                queue,
                pattern,
                kind,
            } => {
                self.queues.entry(queue).or_insert(Queue {
                    pattern,
                    kind,
                    created: index,
                });
            }
            Event::Publish { key, topic } => {
                self.stats.published += 1;
                self.publishes.insert(
                    key,
                    Publish {
                        topic,
                        at: index,
                        outcome: Outcome::Unanswered,
                    },
                );
            }
            Event::Confirmed { key, message_id } => {
                self.set_outcome(key, Outcome::Confirmed(message_id));
                self.note_id(key, message_id);
            }
            Event::PublishFailed { key, code } => self.set_outcome(key, Outcome::Refused(code)),
            Event::Indeterminate { key } => self.set_outcome(key, Outcome::Indeterminate),
            Event::Delivered {
                consumer,
                queue,
                key,
                message_id,
                delivery_count,
                ref content,
                ..
            } => self.delivered(consumer, queue, key, message_id, delivery_count, content),
            Event::Acked { queue, key, .. } => {
                self.stats.acks += 1;
                self.seen.entry((queue, key)).or_default().acked = true;
            }
            Event::BrokerStarted { .. } => self.stats.starts += 1,
            Event::BrokerKilled => self.stats.kills += 1,
            Event::BrokerTerminated => self.stats.terminations += 1,
            Event::BrokerStopped => self.stats.stops += 1,
            Event::DrainStarted => self.draining = true,
            Event::BrokerContinued
            | Event::ConsumerAttached { .. }
            | Event::ConsumerDetached { .. } => {}
        }
    }

    fn set_outcome(&mut self, key: Key, outcome: Outcome) {
        if let Some(publish) = self.publishes.get_mut(&key) {
            publish.outcome = outcome;
        }
    }

    fn delivered(
        &mut self,
        consumer: &'static str,
        queue: &'static str,
        key: Option<Key>,
        message_id: u64,
        delivery_count: u32,
        content: &Content,
    ) {
        self.stats.deliveries += 1;
        if delivery_count > 1 {
            self.stats.redeliveries += 1;
        }
        if self.draining {
            self.stats.drain_deliveries += 1;
        }
        let key = match (key, content) {
            (Some(key), Content::Intact) => key,
            (key, Content::Corrupt(corruption)) => {
                // A corrupt delivery is reported as such and counts for
                // nothing else: its key and id cannot be trusted.
                self.report(Violation::Corrupt {
                    consumer,
                    queue,
                    key,
                    message_id,
                    corruption: corruption.clone(),
                });
                return;
            }
            (None, Content::Intact) => {
                self.report(Violation::Corrupt {
                    consumer,
                    queue,
                    key: None,
                    message_id,
                    corruption: Corruption::Unreadable,
                });
                return;
            }
        };
        self.note_id(key, message_id);
        let seen = self.seen.entry((queue, key)).or_default();
        if seen.deliveries > 0 {
            self.stats.repeats += 1;
        } else {
            seen.message_id = message_id;
        }
        seen.deliveries += 1;
        seen.in_drain |= self.draining;
    }

    /// Message ids and keys must correspond one to one.
    fn note_id(&mut self, key: Key, message_id: u64) {
        let first_key = *self.key_of_id.entry(message_id).or_insert(key);
        if first_key != key {
            self.report(Violation::IdReused {
                message_id,
                first: first_key,
                second: key,
            });
        }
        let first_id = *self.id_of_key.entry(key).or_insert(message_id);
        if first_id != message_id {
            self.report(Violation::IdChanged {
                key,
                first: first_id,
                second: message_id,
            });
        }
    }

    fn report(&mut self, violation: Violation) {
        if self.reported.insert(violation.clone()) {
            self.violations.push(violation);
        }
    }

    fn finish(mut self) -> Report {
        self.check_deliveries();
        self.check_owed();
        let mut violations = self.violations;
        violations.sort();
        Report {
            stats: self.stats,
            violations,
        }
    }

    /// Every intact delivery: of a message that was published, not refused,
    /// to a queue that wants its topic.
    fn check_deliveries(&mut self) {
        let mut found = Vec::new();
        for (&(queue, key), seen) in &self.seen {
            if seen.deliveries == 0 {
                continue; // only an ack: its delivery was corrupt
            }
            let Some(publish) = self.publishes.get(&key) else {
                found.push(Violation::NeverPublished {
                    queue,
                    key,
                    message_id: seen.message_id,
                });
                continue;
            };
            if let Outcome::Refused(code) = publish.outcome {
                found.push(Violation::DeliveredAfterRefusal { queue, key, code });
            }
            let wanted = self
                .queues
                .get(queue)
                .is_some_and(|q| topic::matches(q.pattern, publish.topic));
            if !wanted {
                found.push(Violation::Misrouted {
                    queue,
                    key,
                    topic: publish.topic,
                });
            }
        }
        for violation in found {
            self.report(violation);
        }
    }

    /// Every confirmed message reached, and stayed in, each queue it is owed to.
    fn check_owed(&mut self) {
        let mut found = Vec::new();
        for (&key, publish) in &self.publishes {
            match publish.outcome {
                Outcome::Confirmed(_) => self.stats.confirmed += 1,
                Outcome::Refused(_) => self.stats.refused += 1,
                Outcome::Unanswered | Outcome::Indeterminate => self.stats.indeterminate += 1,
            }
            let Outcome::Confirmed(message_id) = publish.outcome else {
                continue;
            };
            let owed_to = self.queues.iter().filter(|(_, q)| {
                q.created < publish.at && topic::matches(q.pattern, publish.topic)
            });
            for (&queue, q) in owed_to {
                self.stats.owed += 1;
                let seen = self.seen.get(&(queue, key));
                let (deliveries, kept) =
                    seen.map_or((0, false), |s| (s.deliveries, s.acked || s.in_drain));
                if kept {
                    continue;
                }
                found.push(match (deliveries, q.kind) {
                    (0, QueueKind::Durable) => Violation::NeverDelivered {
                        queue,
                        key,
                        message_id,
                    },
                    (0, QueueKind::Group) => Violation::GroupNeverDelivered {
                        group: queue,
                        key,
                        message_id,
                    },
                    (deliveries, _) => Violation::LostAfterDelivery {
                        queue,
                        key,
                        message_id,
                        deliveries,
                    },
                });
            }
        }
        for violation in found {
            self.report(violation);
        }
    }
}

#[cfg(test)]
mod tests;
