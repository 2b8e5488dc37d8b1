//! QoS 1 on top of the write-ahead log: stored messages, the queues that
//! keep them for their consumers, acks, redelivery, dead letters, and
//! rebuilding all of it after a restart.
//!
//! Every QoS 1 message is appended to the WAL before it is confirmed or
//! delivered. A *stored queue* keeps, in log order, every stored message that
//! matches its pattern until a consumer acks it. There are three kinds:
//! - a durable subscription: one consumer at a time; survives disconnects
//!   (it is *detached*) and restarts (the log is replayed);
//! - a queue group: the same, shared by any number of consumers, each
//!   message going to one of them;
//! - an ephemeral QoS 1 subscription: one consumer, in memory only, gone
//!   with its connection.
//!
//! Each consumer holds at most `max_in_flight` unacked deliveries (its
//! credit); each ack makes room for the next. A delivery not acked within
//! `ack_timeout` — or held by a consumer that went away — is sent again with
//! a higher delivery count, to any consumer with credit. A message already
//! delivered `max_deliveries` times goes to the dead-letter topic instead
//! (see `dead_letter.rs`).
//!
//! Records (kind byte, payload):
//! - `MESSAGE`: the message's encoded Delivery frame, exactly as delivered.
//! - `ACK`: `u64 lsn, name` — the queue no longer needs that message.
//!
//! Which queues exist (and from which LSN each keeps messages) is kept in a
//! small file beside the log (`queue_manifest.rs`), not in the log: the log
//! is released up to the oldest message any queue still needs, so acked
//! history is deleted segment by segment — including the segment that was
//! current when a long-lived subscription was created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::{decode, topic, Frame, LENGTH_PREFIX_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{mpsc, OnceCell};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::queue_manifest::{self, QueueDefinition};
use crate::subscription::{MessageRef, Queued, QueuedMessage, Subscription};
use crate::wal::{FsyncPolicy, Lsn, Pending, Wal, WalConfig, WalError};

const KIND_MESSAGE: u8 = 1;
const KIND_ACK: u8 = 3;

/// How a stored queue is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// A named durable subscription: one consumer at a time.
    Durable,
    /// A queue group's shared durable subscription: many consumers.
    Group,
    /// A QoS 1 subscription without a name: not logged, ends with its
    /// connection.
    Ephemeral,
}

impl QueueKind {
    fn describe(self) -> &'static str {
        match self {
            QueueKind::Durable => "a durable subscription",
            QueueKind::Group => "a queue group",
            QueueKind::Ephemeral => "an ephemeral subscription",
        }
    }
}

/// The name an ephemeral QoS 1 subscription is stored under: it contains a
/// control character, so no client-chosen durable name can collide with it.
pub fn ephemeral_name(subscription_id: u64) -> String {
    format!("\u{1}ephemeral-{subscription_id}")
}

/// The redelivery rules, from `[delivery]`.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub ack_timeout: Duration,
    /// 0 = unlimited.
    pub max_deliveries: u32,
    pub max_in_flight: usize,
}

impl DeliverySettings {
    pub fn from_config(config: &Config) -> DeliverySettings {
        DeliverySettings {
            ack_timeout: Duration::from_millis(config.delivery.ack_timeout_ms),
            max_deliveries: config.delivery.max_deliveries,
            max_in_flight: config
                .delivery
                .max_in_flight
                .min(config.queues.subscriber_capacity),
        }
    }
}

/// A message that used up its deliveries, on its way to the dead-letter
/// topic. It stays in its queue until the dead letter is stored.
#[derive(Debug)]
pub struct DeadLetter {
    pub queue: String,
    pub lsn: Lsn,
    pub message: MessageRef,
    pub deliveries: u32,
}

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

struct Entry {
    message: MessageRef,
    /// Times sent to a consumer since the broker started.
    deliveries: u32,
    holder: Holder,
}

struct Consumer {
    live: Arc<Subscription>,
    in_flight: usize,
}

struct StoredQueue {
    pattern: String,
    kind: QueueKind,
    /// The first LSN this queue keeps: it was created just before it.
    since: Lsn,
    entries: BTreeMap<Lsn, Entry>,
    /// Entries that are `Ready`, in log order.
    ready: BTreeSet<Lsn>,
    /// Entries in flight by deadline, for the redelivery sweep.
    deadlines: BTreeSet<(Instant, Lsn)>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
}

impl StoredQueue {
    fn new(pattern: String, kind: QueueKind, since: Lsn) -> StoredQueue {
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
    fn keep(&mut self, lsn: Lsn, message: MessageRef) {
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
    fn forget(&mut self, lsn: Lsn) -> bool {
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
    fn end_flight(&mut self, lsn: Lsn, consumer: u64, deadline: Instant) {
        self.deadlines.remove(&(deadline, lsn));
        if let Some(c) = self.consumers.iter_mut().find(|c| c.live.id == consumer) {
            c.in_flight -= 1;
        }
    }

    /// Whether this queue keeps a message stored at `lsn` on `topic`.
    fn keeps(&self, lsn: Lsn, topic: &str) -> bool {
        lsn >= self.since && topic::matches(&self.pattern, topic)
    }

    /// Put an in-flight or dead-lettering entry back in line.
    fn make_ready(&mut self, lsn: Lsn) {
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
    fn release_consumer(&mut self, id: u64) -> usize {
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

    /// Send ready messages, oldest first, while some consumer has credit.
    /// Expired messages are dropped here, and messages out of deliveries are
    /// handed to `dead_letters`.
    fn top_up(&mut self, name: &str, rules: &Rules<'_>) {
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
struct Rules<'a> {
    settings: &'a DeliverySettings,
    dead_letters: &'a mpsc::UnboundedSender<DeadLetter>,
    redeliveries: &'a AtomicU64,
}

/// Why a consumer could not be attached to a stored queue.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("subscription {name:?} exists with pattern {existing:?}, not {requested:?}")]
    PatternMismatch {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("{name:?} exists as {existing}, not as {requested}")]
    KindMismatch {
        name: String,
        existing: &'static str,
        requested: &'static str,
    },
    #[error("durable subscription {0:?} is attached to another connection")]
    InUse(String),
    #[error(transparent)]
    Storage(#[from] WalError),
}

/// Counters for /metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DurableGauges {
    /// Durable subscriptions and queue groups, attached or not.
    pub queues: u64,
    /// Stored messages some queue has not had acked.
    pub unacked: u64,
    /// Deliveries sent again (ack timeout or consumer gone).
    pub redeliveries: u64,
    /// Messages moved to a dead-letter topic.
    pub dead_letters: u64,
}

/// The QoS 1 store. The WAL is opened at start when its directory exists
/// (to recover), and otherwise created on the first durable use, so a broker
/// that never sees QoS 1 never touches the disk.
pub struct Durable {
    config: WalConfig,
    settings: DeliverySettings,
    wal: OnceCell<Arc<Wal>>,
    queues: Mutex<HashMap<String, StoredQueue>>,
    /// Serialises rewrites of the queue manifest.
    manifest: tokio::sync::Mutex<()>,
    /// Records submitted to the log and not yet owned by their queues.
    holds: Arc<Holds>,
    dead_letters: mpsc::UnboundedSender<DeadLetter>,
    redeliveries: AtomicU64,
    dead_lettered: AtomicU64,
    /// The highest message id found in the log at start (0 if none).
    recovered_max_message_id: u64,
}

impl Durable {
    /// Recover from an existing log, or prepare to create one on first use.
    /// Messages out of deliveries are sent on the returned channel.
    pub async fn open(
        config: WalConfig,
        settings: DeliverySettings,
    ) -> Result<(Durable, mpsc::UnboundedReceiver<DeadLetter>), WalError> {
        let (dead_letters, dead_letter_queue) = mpsc::unbounded_channel();
        let mut durable = Durable {
            recovered_max_message_id: 0,
            config,
            settings,
            wal: OnceCell::new(),
            queues: Mutex::new(HashMap::new()),
            manifest: tokio::sync::Mutex::new(()),
            holds: Arc::default(),
            dead_letters,
            redeliveries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        };
        if durable.config.dir.exists() {
            let started = Instant::now();
            let wal = durable.wal().await?;
            let definitions = queue_manifest::load(&durable.config.dir)?;
            let (queues, max_message_id) =
                tokio::task::spawn_blocking(move || rebuild(&wal, definitions))
                    .await
                    .map_err(|e| WalError::Failed(e.to_string()))??;
            durable.recovered_max_message_id = max_message_id;
            let pending: usize = queues.values().map(|s| s.entries.len()).sum();
            info!(
                durable_subscriptions = queues.len(),
                unacked_messages = pending,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "recovered QoS 1 state from the write-ahead log"
            );
            *durable.queues.lock() = queues;
            durable.release();
        }
        Ok((durable, dead_letter_queue))
    }

    /// The highest message id stored in the log before this start, so that
    /// ids stay unique across restarts (PUB-5).
    pub fn recovered_max_message_id(&self) -> u64 {
        self.recovered_max_message_id
    }

    async fn wal(&self) -> Result<Arc<Wal>, WalError> {
        self.wal
            .get_or_try_init(|| async {
                let config = self.config.clone();
                let (wal, recovery) = tokio::task::spawn_blocking(move || Wal::open(config))
                    .await
                    .map_err(|e| WalError::Failed(e.to_string()))??;
                if recovery.torn_tail || !recovery.damage.is_empty() {
                    warn!(?recovery.damage, truncated_bytes = recovery.truncated_bytes, "repaired the write-ahead log");
                }
                Ok(Arc::new(wal))
            })
            .await
            .cloned()
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            settings: &self.settings,
            dead_letters: &self.dead_letters,
            redeliveries: &self.redeliveries,
        }
    }

    /// The WAL's counters, once it is open.
    pub fn wal_stats(&self) -> Option<crate::wal::WalStats> {
        self.wal.get().map(|wal| wal.stats())
    }

    /// Whether the log takes appends (`Ok` before it is first opened: it
    /// will be created on first use).
    pub fn health(&self) -> crate::wal::WalHealth {
        self.wal
            .get()
            .map_or(crate::wal::WalHealth::Ok, |wal| wal.health())
    }

    /// Queue a QoS 1 message for the log. The returned [`Pending`] resolves
    /// to its LSN once durable; then hand the [`LogHold`] to
    /// [`Durable::stored`] before confirming it: until its queues own the
    /// record, the hold keeps retention from deleting its segment.
    pub async fn submit(&self, message: &QueuedMessage) -> Result<(Pending, LogHold), WalError> {
        let wal = self.wal().await?;
        // Taken before the record exists, from an LSN it cannot be below:
        // the writer assigns LSNs upwards from `next_lsn`.
        let hold = self.holds.take(wal.next_lsn());
        let pending = wal
            .submit(KIND_MESSAGE, message.delivery.frame().clone())
            .await?;
        Ok((pending, hold))
    }

    /// A message is durable at `lsn`: every matching queue keeps it until
    /// acked, and sends it when a consumer has credit. Takes the hold from
    /// [`Durable::submit`] and lets it go once the queues own the record.
    pub fn stored(&self, lsn: Lsn, topic: &str, message: MessageRef, hold: LogHold) {
        let rules = self.rules();
        let mut queues = self.queues.lock();
        let mut kept = false;
        for (name, queue) in queues.iter_mut() {
            if queue.keeps(lsn, topic) {
                queue.keep(lsn, message.clone());
                queue.top_up(name, &rules);
                kept = true;
            }
        }
        drop(queues);
        drop(hold);
        if !kept {
            // Nobody needs it: the log may forget it as soon as it likes.
            self.release();
        }
    }

    /// Check that a consumer can attach to `name` as `kind` with `pattern`,
    /// creating the queue — and logging that, unless ephemeral — if it does
    /// not exist.
    pub async fn prepare(
        &self,
        name: &str,
        pattern: &str,
        kind: QueueKind,
    ) -> Result<(), AttachError> {
        {
            let queues = self.queues.lock();
            if let Some(queue) = queues.get(name) {
                if queue.pattern != pattern {
                    return Err(AttachError::PatternMismatch {
                        name: name.to_string(),
                        existing: queue.pattern.clone(),
                        requested: pattern.to_string(),
                    });
                }
                if queue.kind != kind {
                    return Err(AttachError::KindMismatch {
                        name: name.to_string(),
                        existing: queue.kind.describe(),
                        requested: kind.describe(),
                    });
                }
                let busy = queue.consumers.iter().any(|c| !c.live.is_closed());
                if kind == QueueKind::Durable && busy {
                    return Err(AttachError::InUse(name.to_string()));
                }
                return Ok(());
            }
        }
        let wal = self.wal().await?;
        self.queues
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| StoredQueue::new(pattern.to_string(), kind, wal.next_lsn()));
        if kind != QueueKind::Ephemeral {
            if let Err(error) = self.save_manifest().await {
                self.queues.lock().remove(name);
                return Err(error.into());
            }
        }
        Ok(())
    }

    /// Rewrite the queue manifest from the queues in memory.
    async fn save_manifest(&self) -> Result<(), WalError> {
        let _one_at_a_time = self.manifest.lock().await;
        let definitions: Vec<QueueDefinition> = {
            let queues = self.queues.lock();
            let mut definitions: Vec<QueueDefinition> = queues
                .iter()
                .filter(|(_, q)| q.kind != QueueKind::Ephemeral)
                .map(|(name, q)| QueueDefinition {
                    name: name.clone(),
                    pattern: q.pattern.clone(),
                    group: q.kind == QueueKind::Group,
                    since: q.since,
                })
                .collect();
            definitions.sort_by(|a, b| a.name.cmp(&b.name));
            definitions
        };
        let dir = self.config.dir.clone();
        let sync = self.config.fsync_policy != FsyncPolicy::Never;
        tokio::task::spawn_blocking(move || queue_manifest::store(&dir, &definitions, sync))
            .await
            .map_err(|e| WalError::Failed(e.to_string()))?
    }

    /// Attach a consumer (after [`Durable::prepare`] and after the client was
    /// told it is subscribed): unacked messages are sent first, oldest
    /// first, then new ones as they are stored. Should two connections race
    /// past `prepare` for one durable subscription, the later one takes over.
    pub fn attach(&self, name: &str, subscription: Arc<Subscription>) {
        let rules = self.rules();
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(name) else {
            warn!(name, "stored queue deleted while attaching");
            return;
        };
        if queue.kind != QueueKind::Group {
            let previous: Vec<u64> = queue.consumers.iter().map(|c| c.live.id).collect();
            for id in previous {
                queue.release_consumer(id);
            }
            queue.consumers.clear();
        }
        queue.consumers.push(Consumer {
            live: subscription,
            in_flight: 0,
        });
        queue.top_up(name, &rules);
    }

    /// A consumer went away (connection closed, or unsubscribed keeping the
    /// queue): what it held goes to the other consumers or waits for the
    /// next attach. An ephemeral queue ends with its consumer.
    pub fn detach(&self, name: &str, subscription: &Subscription) {
        let rules = self.rules();
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(name) else {
            return;
        };
        let released = queue.release_consumer(subscription.id);
        queue.consumers.retain(|c| c.live.id != subscription.id);
        if queue.kind == QueueKind::Ephemeral {
            queues.remove(name);
            drop(queues);
            self.release();
            return;
        }
        if released > 0 {
            debug!(
                name,
                released, "a consumer left; its unacked messages go back in line"
            );
        }
        queue.top_up(name, &rules);
    }

    /// A consumer unsubscribed for good: a durable subscription is deleted
    /// with everything it kept; a queue group only when this was its last
    /// consumer.
    pub async fn unsubscribe(
        &self,
        name: &str,
        subscription: &Subscription,
    ) -> Result<(), WalError> {
        let kind = {
            let queues = self.queues.lock();
            let Some(queue) = queues.get(name) else {
                return Ok(());
            };
            let others = queue
                .consumers
                .iter()
                .any(|c| c.live.id != subscription.id && !c.live.is_closed());
            if queue.kind == QueueKind::Group && others {
                None
            } else {
                Some(queue.kind)
            }
        };
        match kind {
            None | Some(QueueKind::Ephemeral) => {
                self.detach(name, subscription);
                Ok(())
            }
            Some(_) => self.delete(name).await,
        }
    }

    /// Delete the queue and everything it kept.
    async fn delete(&self, name: &str) -> Result<(), WalError> {
        let Some(queue) = self.queues.lock().remove(name) else {
            return Ok(());
        };
        if queue.kind != QueueKind::Ephemeral {
            self.save_manifest().await?;
        }
        self.release();
        Ok(())
    }

    /// The consumer acked `lsn`. Returns false when the queue did not hold
    /// it (already acked, or never matched): acks are idempotent.
    pub fn ack(&self, name: &str, lsn: Lsn) -> bool {
        let rules = self.rules();
        let (removed, logged) = {
            let mut queues = self.queues.lock();
            let Some(queue) = queues.get_mut(name) else {
                return false;
            };
            let removed = queue.forget(lsn);
            if removed {
                queue.top_up(name, &rules);
            }
            (removed, queue.kind != QueueKind::Ephemeral)
        };
        if removed {
            if let (true, Some(wal)) = (logged, self.wal.get()) {
                // An ack lost in a crash only means one redelivery: do not
                // make the consumer wait for its fsync.
                let append = wal.append(KIND_ACK, ack_record(name, lsn));
                tokio::spawn(async move {
                    if let Err(error) = append.await {
                        warn!(%error, "could not log an ack");
                    }
                });
            }
            self.release();
        }
        removed
    }

    /// The dead letter for `lsn` is stored: the queue lets the original go.
    pub fn dead_lettered(&self, queue: &str, lsn: Lsn) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.ack(queue, lsn);
    }

    /// The dead letter for `lsn` could not be stored: keep the original in
    /// line (it will be tried again).
    pub fn dead_letter_failed(&self, queue: &str, lsn: Lsn) {
        if let Some(q) = self.queues.lock().get_mut(queue) {
            q.make_ready(lsn);
        }
    }

    /// Send again every delivery whose ack is overdue. Returns how many.
    pub fn redeliver_overdue(&self, now: Instant) -> usize {
        let rules = self.rules();
        let mut queues = self.queues.lock();
        let mut overdue_total = 0;
        for (name, queue) in queues.iter_mut() {
            let overdue: Vec<Lsn> = queue
                .deadlines
                .iter()
                .take_while(|(deadline, _)| *deadline <= now)
                .map(|&(_, lsn)| lsn)
                .collect();
            if overdue.is_empty() {
                continue;
            }
            overdue_total += overdue.len();
            for lsn in overdue {
                queue.make_ready(lsn);
            }
            queue.top_up(name, &rules);
        }
        overdue_total
    }

    /// Drop the expired messages of queues nobody is attached to (attached
    /// queues drop theirs as they send), so that they stop holding log
    /// segments. Returns how many went.
    pub fn expire_detached(&self, now: Instant) -> usize {
        let mut expired = 0;
        {
            let mut queues = self.queues.lock();
            for queue in queues.values_mut().filter(|q| q.consumers.is_empty()) {
                let gone: Vec<Lsn> = queue
                    .entries
                    .iter()
                    .filter(|(_, e)| e.message.expires_at.is_some_and(|at| at <= now))
                    .map(|(&lsn, _)| lsn)
                    .collect();
                for lsn in gone {
                    queue.forget(lsn);
                    expired += 1;
                }
            }
        }
        if expired > 0 {
            self.release();
        }
        expired
    }

    /// How often [`Durable::redeliver_overdue`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.settings.ack_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    pub fn gauges(&self) -> DurableGauges {
        let queues = self.queues.lock();
        DurableGauges {
            queues: queues
                .values()
                .filter(|q| q.kind != QueueKind::Ephemeral)
                .count() as u64,
            unacked: queues.values().map(|s| s.entries.len() as u64).sum(),
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            dead_letters: self.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Let the log delete segments nothing needs any more: below the oldest
    /// message a queue keeps and the oldest record still on its way to its
    /// queues.
    fn release(&self) {
        let Some(wal) = self.wal.get() else {
            return;
        };
        // The order of these three reads is what makes this safe against a
        // concurrent publish. A record below `written` was written before
        // this read, so its hold was taken before it too, and is either
        // still there when `holds` is read, or was dropped after
        // `Durable::stored` put the record in its queues, which are read
        // last. A record at or above `written` is never released here.
        let written = wal.next_lsn();
        let held = self.holds.oldest();
        let queued = self
            .queues
            .lock()
            .values()
            .filter_map(|s| s.entries.keys().next().copied())
            .min();
        let before = [Some(written), held, queued]
            .into_iter()
            .flatten()
            .min()
            .expect("written is always there");
        if let Err(error) = wal.release_before(before) {
            warn!(%error, "could not release write-ahead log segments");
        }
    }
}

/// The oldest LSN each record in flight between the log and its queues may
/// have, counted (many records share a floor).
#[derive(Default)]
struct Holds {
    floors: Mutex<BTreeMap<Lsn, usize>>,
}

impl Holds {
    fn take(self: &Arc<Self>, floor: Lsn) -> LogHold {
        *self.floors.lock().entry(floor).or_insert(0) += 1;
        LogHold {
            holds: Arc::clone(self),
            floor,
        }
    }

    fn oldest(&self) -> Option<Lsn> {
        self.floors.lock().keys().next().copied()
    }
}

/// Keeps every log record at or above its floor from being released, until
/// dropped. Taken by [`Durable::submit`]; drop it once [`Durable::stored`]
/// has run (or the append failed).
#[must_use = "dropping the hold lets retention delete the record before its queues own it"]
pub struct LogHold {
    holds: Arc<Holds>,
    floor: Lsn,
}

impl Drop for LogHold {
    fn drop(&mut self) {
        let mut floors = self.holds.floors.lock();
        if let Some(count) = floors.get_mut(&self.floor) {
            *count -= 1;
            if *count == 0 {
                floors.remove(&self.floor);
            }
        }
    }
}

fn ack_record(name: &str, lsn: Lsn) -> Bytes {
    let mut record = BytesMut::with_capacity(8 + name.len());
    record.put_u64_le(lsn);
    record.put_slice(name.as_bytes());
    record.freeze()
}

/// Replay the log into the queues the manifest names: each keeps the
/// matching messages from its `since` LSN on, minus the acked ones. Also
/// returns the highest message id in the log.
fn rebuild(
    wal: &Wal,
    definitions: Vec<QueueDefinition>,
) -> Result<(HashMap<String, StoredQueue>, u64), WalError> {
    let mut queues: HashMap<String, StoredQueue> = definitions
        .into_iter()
        .map(|d| {
            let kind = if d.group {
                QueueKind::Group
            } else {
                QueueKind::Durable
            };
            (d.name, StoredQueue::new(d.pattern, kind, d.since))
        })
        .collect();
    let mut skipped = 0u64;
    let mut max_message_id = 0;
    wal.replay(0, |lsn, kind, payload| {
        match kind {
            KIND_MESSAGE => match restore_message(payload) {
                Some((topic, message)) => {
                    max_message_id = max_message_id.max(message.message_id);
                    for queue in queues.values_mut().filter(|q| q.keeps(lsn, &topic)) {
                        queue.keep(lsn, message.clone());
                    }
                }
                None => skipped += 1,
            },
            KIND_ACK => {
                let acked = payload
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                let name = payload.get(8..).and_then(|b| std::str::from_utf8(b).ok());
                match (acked, name) {
                    (Some(acked), Some(name)) => {
                        if let Some(queue) = queues.get_mut(name) {
                            queue.forget(acked);
                        }
                    }
                    _ => skipped += 1,
                }
            }
            _ => skipped += 1,
        }
        ControlFlow::Continue(())
    })?;
    if skipped > 0 {
        warn!(
            skipped,
            "write-ahead log records of an unknown shape were skipped"
        );
    }
    Ok((queues, max_message_id))
}

/// A stored Delivery frame back into a queued message. Its TTL is not
/// restored: the deadline was measured on a clock that did not survive the
/// restart, so a recovered message waits until it is acked.
fn restore_message(frame: &[u8]) -> Option<(String, MessageRef)> {
    let body = frame.get(LENGTH_PREFIX_LEN..)?;
    let Ok(Frame::Delivery(delivery)) = decode(body) else {
        return None;
    };
    let mut encoder = blipmq_protocol::Encoder::new();
    let shared = encoder.shared_delivery(
        delivery.topic,
        delivery.payload,
        &delivery.headers,
        delivery.message_id,
        delivery.timestamp_ms,
    );
    Some((
        delivery.topic.to_string(),
        Arc::new(QueuedMessage {
            delivery: shared,
            expires_at: None,
            message_id: delivery.message_id,
            trace_id: blipmq_protocol::headers::trace_id_of(&delivery.headers).map(Box::from),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DeliverySettings {
        DeliverySettings {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 0,
            max_in_flight: 16,
        }
    }

    fn small_log(dir: &std::path::Path) -> WalConfig {
        WalConfig {
            segment_bytes: 4096,
            max_bytes: 0,
            ..WalConfig::new(dir.join("wal"))
        }
    }

    fn message(topic: &str, id: u64, payload: &[u8]) -> MessageRef {
        let mut encoder = blipmq_protocol::Encoder::new();
        Arc::new(QueuedMessage {
            delivery: encoder.shared_delivery(topic, payload, &[], id, 0),
            expires_at: None,
            message_id: id,
            trace_id: None,
        })
    }

    /// Store a message the way a connection's confirm pipeline does.
    async fn publish(durable: &Durable, topic: &str, message: MessageRef) -> Lsn {
        let (pending, hold) = durable.submit(&message).await.unwrap();
        let lsn = pending.await.unwrap();
        durable.stored(lsn, topic, message, hold);
        lsn
    }

    #[tokio::test]
    async fn a_record_is_kept_from_retention_until_its_queues_own_it() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
            .await
            .unwrap();
        durable
            .prepare("keeper", "jobs.>", QueueKind::Durable)
            .await
            .unwrap();
        // A job is in the log, its confirm pipeline not yet past the wait.
        let job = message("jobs.1", 1, b"the job");
        let (pending, hold) = durable.submit(&job).await.unwrap();
        let lsn = pending.await.unwrap();
        // Meanwhile other connections publish what no queue keeps: their
        // records seal segment after segment, and each one releases.
        for id in 2..40 {
            publish(&durable, "other", message("other", id, &[7; 512])).await;
        }
        assert!(durable.wal_stats().unwrap().segments > 2);
        durable.stored(lsn, "jobs.1", job, hold);
        drop(durable);

        let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
            .await
            .unwrap();
        assert_eq!(durable.gauges().unacked, 1, "the job's segment was deleted");
        // Once owned and acked, retention takes it (and everything before).
        assert!(durable.ack("keeper", lsn));
        for id in 40..60 {
            publish(&durable, "other", message("other", id, &[7; 512])).await;
        }
        let wal = durable.wal.get().unwrap();
        assert!(wal.first_lsn().unwrap() > lsn);
    }
}
