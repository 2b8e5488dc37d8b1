//! What the run publishes and who consumes it: topics, and the stored
//! queues with their consumers. Patterns overlap on purpose, so one message
//! is owed to several queues at once; two topics match none, so the log
//! also holds messages no queue needs (and the broker releases the log as
//! each of those is stored).

use blipmq_history::QueueKind;

/// Topics the publishers pick from, uniformly.
pub const TOPICS: &[&str] = &[
    "hist.orders.eu",
    "hist.orders.us",
    "hist.jobs.resize",
    "hist.jobs.encode.eu",
    "hist.audit.eu",
    "hist.metrics",
    "noise.unwanted",
    "noise.ignored.eu",
];

/// A stored queue: a durable subscription (one consumer at a time) or a
/// queue group (several members attached at once).
pub struct QueuePlan {
    pub name: &'static str,
    pub pattern: &'static str,
    pub kind: QueueKind,
    /// Who consumes it during the faults.
    pub consumers: &'static [&'static str],
    /// Who drains it at the end.
    pub drainers: &'static [&'static str],
}

pub const QUEUES: &[QueuePlan] = &[
    QueuePlan {
        name: "h-all",
        pattern: "hist.>",
        kind: QueueKind::Durable,
        consumers: &["all"],
        drainers: &["drain-all"],
    },
    QueuePlan {
        name: "h-orders",
        pattern: "hist.orders.*",
        kind: QueueKind::Durable,
        consumers: &["orders"],
        drainers: &["drain-orders"],
    },
    QueuePlan {
        name: "h-eu",
        pattern: "hist.*.eu",
        kind: QueueKind::Durable,
        consumers: &["eu"],
        drainers: &["drain-eu"],
    },
    QueuePlan {
        name: "h-jobs",
        pattern: "hist.jobs.>",
        kind: QueueKind::Group,
        consumers: &["jobs-w1", "jobs-w2"],
        drainers: &["drain-jobs-1", "drain-jobs-2"],
    },
];

impl QueuePlan {
    pub fn options(&self) -> blipmq::SubscribeOptions {
        let name = Some(self.name.to_string());
        let (durable, group) = match self.kind {
            QueueKind::Durable => (name, None),
            QueueKind::Group => (None, name),
        };
        blipmq::SubscribeOptions {
            qos: blipmq::Qos::AtLeastOnce,
            durable,
            group,
            ..Default::default()
        }
    }
}

/// A seed of its own for each actor, derived from the run's seed, so that
/// one actor's choices do not shift when another's change.
pub fn actor_seed(run_seed: u64, actor: &str) -> u64 {
    actor
        .bytes()
        .fold(run_seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}
