//! Hand-made histories: one that keeps the promise through kills,
//! redeliveries and repeats, and then that history with one thing broken at
//! a time, each of which must be reported as exactly that one violation.

use super::*;
use crate::event::Detach;

const ALL: &str = "all";
const ORDERS: &str = "orders";
const JOBS: &str = "jobs";

/// k1 goes to `all` and `orders`, k2 to `all` and the `jobs` group, k3 was
/// never confirmed, k4 was refused.
const K1: Key = Key::new(1, 1);
const K2: Key = Key::new(1, 2);
const K3: Key = Key::new(2, 1);
const K4: Key = Key::new(2, 2);
const K9: Key = Key::new(9, 9);

const ORDER_TOPIC: &str = "t.orders.eu";
const JOB_TOPIC: &str = "t.jobs";

struct History(Vec<Record>);

impl History {
    fn push(&mut self, event: Event) {
        let at_us = self.0.len() as u64 * 10;
        self.0.push(Record::new(at_us, event));
    }

    fn deliver(
        &mut self,
        consumer: &'static str,
        queue: &'static str,
        key: Key,
        id: u64,
        count: u32,
    ) {
        self.push(delivered(
            consumer,
            queue,
            Some(key),
            id,
            count,
            Content::Intact,
        ));
    }

    fn ack(&mut self, consumer: &'static str, queue: &'static str, key: Key, id: u64) {
        self.push(Event::Acked {
            consumer,
            queue,
            key,
            delivery_id: id * 100,
        });
    }

    /// Remove every event matching `unwanted`; panics if there is none, so
    /// a test cannot pass by removing nothing.
    fn without(mut self, unwanted: impl Fn(&Event) -> bool) -> History {
        let before = self.0.len();
        self.0.retain(|r| !unwanted(&r.event));
        assert!(self.0.len() < before, "the test removed nothing");
        self
    }

    fn with(mut self, event: Event) -> History {
        self.push(event);
        self
    }

    fn violations(&self) -> Vec<Violation> {
        check(&self.0).violations
    }
}

fn delivered(
    consumer: &'static str,
    queue: &'static str,
    key: Option<Key>,
    message_id: u64,
    delivery_count: u32,
    content: Content,
) -> Event {
    Event::Delivered {
        consumer,
        queue,
        key,
        message_id,
        delivery_id: message_id * 100,
        delivery_count,
        content,
    }
}

fn is_delivery(queue: &str, key: Key) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Delivered { queue: q, key: Some(k), .. } if *q == queue && *k == key)
}

fn is_ack(queue: &str, key: Key) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Acked { queue: q, key: k, .. } if *q == queue && *k == key)
}

fn is_drain(e: &Event) -> bool {
    matches!(e, Event::DrainStarted)
}

/// A run that keeps every promise, though not in the simplest way.
fn clean() -> History {
    let mut h = History(Vec::new());
    h.push(Event::BrokerStarted { pid: 1 });
    for (queue, pattern, kind) in [
        (ALL, "t.>", QueueKind::Durable),
        (ORDERS, "t.orders.*", QueueKind::Durable),
        (JOBS, "t.jobs", QueueKind::Group),
    ] {
        h.push(Event::QueueCreated {
            queue,
            pattern,
            kind,
        });
    }
    h.push(Event::Publish {
        key: K1,
        topic: ORDER_TOPIC,
    });
    h.push(Event::Publish {
        key: K2,
        topic: JOB_TOPIC,
    });
    h.push(Event::Publish {
        key: K3,
        topic: ORDER_TOPIC,
    });
    h.push(Event::Publish {
        key: K4,
        topic: JOB_TOPIC,
    });
    h.push(Event::PublishFailed { key: K4, code: 405 });
    // A delivery may be recorded before its confirm: different threads.
    h.deliver("c-all", ALL, K1, 11, 1);
    h.push(Event::Confirmed {
        key: K1,
        message_id: 11,
    });
    h.ack("c-all", ALL, K1, 11);
    h.push(Event::Confirmed {
        key: K2,
        message_id: 12,
    });
    // k3 got stored but its confirm was lost: delivering it is fine.
    h.push(Event::Indeterminate { key: K3 });
    h.deliver("c-all", ALL, K3, 13, 1);
    h.deliver("c-orders", ORDERS, K1, 11, 1);
    h.deliver("w1", JOBS, K2, 12, 1);
    h.push(Event::BrokerStopped);
    h.push(Event::BrokerContinued);
    // w1 never acked; the group gives it to w2.
    h.push(Event::ConsumerDetached {
        consumer: "w1",
        queue: JOBS,
        why: Detach::ConnectionLost,
    });
    h.deliver("w2", JOBS, K2, 12, 2);
    h.ack("w2", JOBS, K2, 12);
    h.push(Event::BrokerKilled);
    h.push(Event::BrokerStarted { pid: 2 });
    // The ack of k1 on `all` was lost to the kill: it comes back (allowed).
    h.deliver("c-all", ALL, K1, 11, 1);
    h.push(Event::BrokerTerminated);
    h.push(Event::BrokerStarted { pid: 3 });
    h.push(Event::DrainStarted);
    // Unacked before the drain: k1 on orders, k2 and k3 on all.
    h.deliver("d-orders", ORDERS, K1, 11, 1);
    h.ack("d-orders", ORDERS, K1, 11);
    h.deliver("d-all", ALL, K2, 12, 1);
    h.ack("d-all", ALL, K2, 12);
    h.deliver("d-all", ALL, K3, 13, 1);
    h.ack("d-all", ALL, K3, 13);
    h
}

#[test]
fn a_history_that_keeps_the_promise_reports_nothing() {
    let report = check(&clean().0);
    assert_eq!(report.violations, vec![]);
    let s = report.stats;
    assert_eq!(
        (s.published, s.confirmed, s.refused, s.indeterminate),
        (4, 2, 1, 1)
    );
    assert_eq!((s.deliveries, s.redeliveries, s.repeats), (9, 1, 4));
    assert_eq!((s.drain_deliveries, s.acks, s.owed), (3, 5, 4));
    assert_eq!((s.kills, s.terminations, s.stops, s.starts), (1, 1, 1, 3));
}

#[test]
fn an_empty_history_reports_nothing() {
    assert_eq!(check(&[]), Report::default());
}

#[test]
fn a_confirmed_message_a_durable_queue_never_got() {
    let h = clean()
        .without(is_delivery(ORDERS, K1))
        .without(is_ack(ORDERS, K1));
    assert_eq!(
        h.violations(),
        vec![Violation::NeverDelivered {
            queue: ORDERS,
            key: K1,
            message_id: 11
        }]
    );
}

#[test]
fn a_confirmed_message_no_group_member_got() {
    let h = clean()
        .without(is_delivery(JOBS, K2))
        .without(is_ack(JOBS, K2));
    assert_eq!(
        h.violations(),
        vec![Violation::GroupNeverDelivered {
            group: JOBS,
            key: K2,
            message_id: 12
        }]
    );
}

#[test]
fn a_message_delivered_then_lost_before_its_ack() {
    // k1 reached `orders` before the drain but, unacked, not again in it.
    let h = clean().without(|e| {
        matches!(
            e,
            Event::Delivered {
                consumer: "d-orders",
                ..
            } | Event::Acked {
                consumer: "d-orders",
                ..
            }
        )
    });
    assert_eq!(
        h.violations(),
        vec![Violation::LostAfterDelivery {
            queue: ORDERS,
            key: K1,
            message_id: 11,
            deliveries: 1
        }]
    );
}

#[test]
fn a_delivery_in_the_drain_keeps_the_promise_even_unacked() {
    let h = clean().without(|e| {
        matches!(
            e,
            Event::Acked {
                consumer: "d-orders",
                ..
            }
        )
    });
    assert_eq!(h.violations(), vec![]);
    // Before the drain, only an ack shows that a queue need not keep it.
    let h = h.without(is_drain);
    assert_eq!(
        h.violations(),
        vec![Violation::LostAfterDelivery {
            queue: ORDERS,
            key: K1,
            message_id: 11,
            deliveries: 2
        }]
    );
}

#[test]
fn a_corrupt_payload() {
    let h = clean().with(delivered(
        "c-all",
        ALL,
        Some(K1),
        11,
        1,
        Content::Corrupt(Corruption::Altered),
    ));
    assert_eq!(
        h.violations(),
        vec![Violation::Corrupt {
            consumer: "c-all",
            queue: ALL,
            key: Some(K1),
            message_id: 11,
            corruption: Corruption::Altered
        }]
    );
}

#[test]
fn an_unreadable_payload_reported_once_however_often_it_comes() {
    let bad = delivered(
        "c-all",
        ALL,
        None,
        77,
        1,
        Content::Corrupt(Corruption::Unreadable),
    );
    let h = clean().with(bad.clone()).with(bad);
    assert_eq!(
        h.violations(),
        vec![Violation::Corrupt {
            consumer: "c-all",
            queue: ALL,
            key: None,
            message_id: 77,
            corruption: Corruption::Unreadable
        }]
    );
}

#[test]
fn a_corrupt_delivery_does_not_count_as_the_message_arriving() {
    // The only delivery of k1 to `orders` (before the drain) was corrupt.
    let h = clean()
        .without(|e| {
            matches!(
                e,
                Event::Delivered {
                    consumer: "c-orders",
                    ..
                }
            )
        })
        .without(|e| {
            matches!(
                e,
                Event::Delivered {
                    consumer: "d-orders",
                    ..
                } | Event::Acked {
                    consumer: "d-orders",
                    ..
                }
            )
        })
        .with(delivered(
            "c-orders",
            ORDERS,
            Some(K1),
            11,
            1,
            Content::Corrupt(Corruption::WrongHeader),
        ));
    assert_eq!(
        h.violations(),
        vec![
            Violation::NeverDelivered {
                queue: ORDERS,
                key: K1,
                message_id: 11
            },
            Violation::Corrupt {
                consumer: "c-orders",
                queue: ORDERS,
                key: Some(K1),
                message_id: 11,
                corruption: Corruption::WrongHeader
            },
        ]
    );
}

#[test]
fn one_message_id_for_two_messages() {
    // k3 (indeterminate, never given an id before) arrives with k1's id.
    let h = clean().with(delivered("c-all", ALL, Some(K3), 11, 1, Content::Intact));
    let h = History(
        h.0.into_iter()
            .filter(|r| {
                !matches!(
                    r.event,
                    Event::Delivered {
                        key: Some(K3),
                        message_id: 13,
                        ..
                    } | Event::Acked { key: K3, .. }
                )
            })
            .collect(),
    );
    assert_eq!(
        h.violations(),
        vec![Violation::IdReused {
            message_id: 11,
            first: K1,
            second: K3
        }]
    );
}

#[test]
fn one_message_under_two_ids() {
    let h = clean().with(delivered(
        "c-orders",
        ORDERS,
        Some(K1),
        99,
        2,
        Content::Intact,
    ));
    assert_eq!(
        h.violations(),
        vec![Violation::IdChanged {
            key: K1,
            first: 11,
            second: 99
        }]
    );
}

#[test]
fn a_delivery_of_a_message_never_published() {
    let h = clean().with(delivered("c-all", ALL, Some(K9), 50, 1, Content::Intact));
    assert_eq!(
        h.violations(),
        vec![Violation::NeverPublished {
            queue: ALL,
            key: K9,
            message_id: 50
        }]
    );
}

#[test]
fn a_delivery_of_a_refused_message() {
    let h = clean().with(delivered("c-all", ALL, Some(K4), 14, 1, Content::Intact));
    assert_eq!(
        h.violations(),
        vec![Violation::DeliveredAfterRefusal {
            queue: ALL,
            key: K4,
            code: 405
        }]
    );
}

#[test]
fn a_delivery_to_a_queue_that_does_not_match() {
    let h = clean().with(delivered(
        "c-orders",
        ORDERS,
        Some(K2),
        12,
        1,
        Content::Intact,
    ));
    assert_eq!(
        h.violations(),
        vec![Violation::Misrouted {
            queue: ORDERS,
            key: K2,
            topic: JOB_TOPIC
        }]
    );
}

#[test]
fn messages_published_before_a_queue_existed_are_not_owed_to_it() {
    let mut h = History(Vec::new());
    h.push(Event::Publish {
        key: K1,
        topic: ORDER_TOPIC,
    });
    h.push(Event::Confirmed {
        key: K1,
        message_id: 1,
    });
    h.push(Event::QueueCreated {
        queue: ORDERS,
        pattern: "t.orders.*",
        kind: QueueKind::Durable,
    });
    h.push(Event::DrainStarted);
    let report = check(&h.0);
    assert_eq!(report.violations, vec![]);
    assert_eq!(report.stats.owed, 0);
}

#[test]
fn violations_come_sorted() {
    let h = clean()
        .with(delivered("c-all", ALL, Some(K9), 50, 1, Content::Intact))
        .with(delivered(
            "c-all",
            ALL,
            None,
            51,
            1,
            Content::Corrupt(Corruption::Unreadable),
        ))
        .without(is_delivery(JOBS, K2))
        .without(is_ack(JOBS, K2));
    let violations = h.violations();
    let mut sorted = violations.clone();
    sorted.sort();
    assert_eq!(violations, sorted);
    assert_eq!(violations.len(), 3);
}
