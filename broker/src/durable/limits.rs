//! What a stored queue may hold, and the messages it drops for it
//! (issue 22, finding 6).
//!
//! Why limits at all, when QoS 1 promises to keep a message until it is
//! acked: the log is released only below the oldest message some queue
//! keeps, so one subscription nobody consumes any more holds every segment
//! written after its oldest message, until the log reaches `wal.max_bytes`
//! and every QoS 1 publish, to any topic, is refused. The limits bound
//! what one forgotten queue can hold, so that it costs its own messages and
//! not every producer's service.
//!
//! The policy is oldest first: a queue over `max_messages` or `max_bytes`
//! after keeping a new message drops its oldest messages (waiting, in
//! flight or on their way to the dead-letter topic) until it is within
//! both, always keeping the newest; a message older than `max_age` is
//! dropped by the once-a-second sweep. Dropping the oldest rather than
//! refusing the newest keeps a queue useful to a consumer that comes back:
//! it finds the latest messages. A queue detached for `detached_expiry` is
//! deleted with everything it kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::config::Config;
use crate::wal::Lsn;

/// `[durable]`'s per-queue limits; `None` = no limit.
#[derive(Debug, Clone, Default)]
pub struct QueueLimits {
    pub max_messages: Option<usize>,
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
    pub detached_expiry: Option<Duration>,
}

impl QueueLimits {
    pub fn from_config(config: &Config) -> QueueLimits {
        let durable = &config.durable;
        let nonzero = |v: u64| (v > 0).then_some(v);
        QueueLimits {
            max_messages: nonzero(durable.max_messages)
                .map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
            max_bytes: nonzero(durable.max_bytes),
            max_age: nonzero(durable.max_age_ms).map(Duration::from_millis),
            detached_expiry: nonzero(durable.detached_expiry_ms).map(Duration::from_millis),
        }
    }

    /// Whether a queue of `kept` messages and `bytes` bytes is over a size
    /// limit, and which.
    pub fn over(&self, kept: usize, bytes: u64) -> Option<DropReason> {
        if self.max_messages.is_some_and(|max| kept > max) {
            Some(DropReason::MaxMessages)
        } else if self.max_bytes.is_some_and(|max| bytes > max) {
            Some(DropReason::MaxBytes)
        } else {
            None
        }
    }
}

/// Why a stored queue let a message go without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its TTL passed.
    Ttl,
    MaxAge,
    MaxMessages,
    MaxBytes,
    /// Its queue was deleted after being detached for `detached_expiry`.
    DetachedExpiry,
    /// A dead letter that used up its deliveries in turn (QOS-19).
    DeadLetterExhausted,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Ttl,
        DropReason::MaxAge,
        DropReason::MaxMessages,
        DropReason::MaxBytes,
        DropReason::DetachedExpiry,
        DropReason::DeadLetterExhausted,
    ];

    /// The `reason` label in `blipmq_messages_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Ttl => "ttl",
            DropReason::MaxAge => "max_age",
            DropReason::MaxMessages => "max_messages",
            DropReason::MaxBytes => "max_bytes",
            DropReason::DetachedExpiry => "detached_expiry",
            DropReason::DeadLetterExhausted => "dead_letter_exhausted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one operation on the queues dropped, gathered under the lock and
/// settled after it ([`Drops::settle`]).
#[derive(Default)]
pub(super) struct Dropped {
    counts: [u64; DropReason::ALL.len()],
    /// Drops from durable subscriptions and queue groups, to be logged as
    /// acks so that a restart does not bring them back.
    pub records: Vec<(Arc<str>, Lsn)>,
}

impl Dropped {
    pub fn add(&mut self, queue: &Arc<str>, persistent: bool, lsn: Lsn, reason: DropReason) {
        self.counts[reason.index()] += 1;
        if persistent {
            self.records.push((queue.clone(), lsn));
        }
        debug!(
            queue = &**queue,
            lsn,
            reason = reason.label(),
            "dropped a stored message"
        );
    }

    /// Messages dropped with their queue (a deleted queue logs no acks: it
    /// is gone from the manifest).
    pub fn add_without_records(&mut self, reason: DropReason, n: u64) {
        self.counts[reason.index()] += n;
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Drops counted since start, and the rate-limited warning about them.
#[derive(Default)]
pub(super) struct Drops {
    counts: [AtomicU64; DropReason::ALL.len()],
    /// When the last warning went out, and the counts it reported.
    warned: Mutex<Option<(Instant, [u64; DropReason::ALL.len()])>>,
}

/// At most one warning about dropped messages per this long: an abandoned
/// queue over its limit drops one message per publish, and a line each
/// would flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Drops {
    /// Count what an operation dropped; warn (at most every
    /// [`WARN_EVERY`]) when limits dropped messages. TTL drops are the
    /// publisher's choice and only counted.
    pub fn settle(&self, dropped: &Dropped) {
        for reason in DropReason::ALL {
            let n = dropped.counts[reason.index()];
            if n > 0 {
                self.counts[reason.index()].fetch_add(n, Ordering::Relaxed);
            }
        }
        let by_limits = DropReason::ALL
            .iter()
            .any(|&r| r != DropReason::Ttl && dropped.counts[r.index()] > 0);
        if by_limits {
            self.warn_now_and_then();
        }
    }

    fn warn_now_and_then(&self) {
        let mut warned = self.warned.lock();
        let now = Instant::now();
        if warned.is_some_and(|(at, _)| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        let totals = self.totals();
        let before = warned.map_or([0; DropReason::ALL.len()], |(_, counts)| counts);
        let since = |r: DropReason| totals[r.index()] - before[r.index()];
        warn!(
            max_age = since(DropReason::MaxAge),
            max_messages = since(DropReason::MaxMessages),
            max_bytes = since(DropReason::MaxBytes),
            detached_expiry = since(DropReason::DetachedExpiry),
            dead_letter_exhausted = since(DropReason::DeadLetterExhausted),
            "stored QoS 1 messages dropped without an ack since the last warning \
             (blipmq_messages_dropped_total counts them all)"
        );
        *warned = Some((now, totals));
    }

    /// Messages dropped since start, by [`DropReason::ALL`] order.
    pub fn totals(&self) -> [u64; DropReason::ALL.len()] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// Ack (and drop) records the log refused: a full or failing log refuses
/// every one, and a line each would flood the log while it lasts.
#[derive(Default)]
pub(super) struct AckLogFailures {
    /// When the last warning went out, and what failed since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl AckLogFailures {
    pub fn failed(&self, n: u64, error: &crate::wal::WalError) {
        let mut state = self.state.lock();
        state.1 += n;
        let now = Instant::now();
        if state
            .0
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return;
        }
        warn!(
            %error,
            failed = state.1,
            "could not log acks of QoS 1 messages (after a crash they are delivered again)"
        );
        *state = (Some(now), 0);
    }
}
