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
//!
//! In memory (one lock over all of it): the messages some queue keeps, each
//! once (`store.rs`); per queue, the LSNs it keeps and state only for what
//! it has sent (`queue.rs`); the queues by name and by pattern (`table.rs`).
//! What a message costs therefore grows with the queues that keep it by an
//! LSN each, not by a copy of its entry each. The manifest's rewrites are
//! batched (`manifest.rs`); the log holds of `holds.rs` keep a record from
//! retention until its queues own it; `replay.rs` rebuilds it all at start.

mod holds;
mod limits;
mod manifest;
mod queue;
mod replay;
mod store;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::{mpsc, OnceCell};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::queue_manifest::{self, QueueDefinition};
use crate::subscription::{MessageRef, QueuedMessage, Subscription};
use crate::wal::{FsyncPolicy, Lsn, Pending, Wal, WalConfig, WalError};

use holds::Holds;
pub use holds::LogHold;
use limits::{AckLogFailures, Dropped, Drops};
pub use limits::{DropReason, QueueLimits};
use manifest::ManifestWriter;
pub use queue::AckOutcome;
use queue::{Consumer, Detached, Rules, StoredQueue};
use replay::{ack_record, rebuild, KIND_ACK, KIND_MESSAGE};
use store::MessageStore;
use table::Queues;

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

/// The redelivery rules, from `[delivery]`, and the queues' limits, from
/// `[durable]`.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub ack_timeout: Duration,
    /// 0 = unlimited.
    pub max_deliveries: u32,
    pub max_in_flight: usize,
    /// Most durable subscriptions and queue groups at once.
    pub max_queues: usize,
    pub limits: QueueLimits,
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
            max_queues: config.durable.max_queues,
            limits: QueueLimits::from_config(config),
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
    #[error("the broker holds its limit of {max} durable subscriptions and queue groups (durable.max_queues)")]
    TooManyQueues { max: usize },
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
    /// Rewrites of the queue manifest.
    pub manifest_writes: u64,
    /// Stored messages dropped without an ack, by [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Durable subscriptions and groups deleted for being detached too long.
    pub expired_queues: u64,
}

/// The queues and the messages they keep, under one lock.
#[derive(Default)]
struct State {
    queues: Queues,
    store: MessageStore,
}

impl State {
    /// The manifest's view of the queues: durable ones, by name.
    fn definitions(&self) -> Vec<QueueDefinition> {
        let mut definitions: Vec<QueueDefinition> = self
            .queues
            .iter()
            .filter(|q| q.kind != QueueKind::Ephemeral)
            .map(|q| QueueDefinition {
                name: q.name.to_string(),
                pattern: q.pattern.clone(),
                group: q.kind == QueueKind::Group,
                since: q.since,
                detached_ms: q.detached.and_then(|d| d.recorded_ms),
            })
            .collect();
        definitions.sort_by(|a, b| a.name.cmp(&b.name));
        definitions
    }
}

/// The QoS 1 store. The WAL is opened at start when its directory exists
/// (to recover), and otherwise created on the first durable use, so a broker
/// that never sees QoS 1 never touches the disk.
pub struct Durable {
    config: WalConfig,
    settings: DeliverySettings,
    wal: OnceCell<Arc<Wal>>,
    /// Shared with the manifest rewrites the sweep starts (`Arc`s, so that
    /// they can run on a task of their own).
    state: Arc<Mutex<State>>,
    manifest: Arc<ManifestWriter>,
    /// Records submitted to the log and not yet owned by their queues.
    holds: Arc<Holds>,
    dead_letters: mpsc::UnboundedSender<DeadLetter>,
    redeliveries: AtomicU64,
    dead_lettered: AtomicU64,
    drops: Drops,
    expired_queues: AtomicU64,
    /// Ack records the log refused, for a rate-limited warning.
    ack_failures: Arc<AckLogFailures>,
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
        let manifest = Arc::new(ManifestWriter::new(
            config.dir.clone(),
            config.fsync_policy != FsyncPolicy::Never,
        ));
        let mut durable = Durable {
            recovered_max_message_id: 0,
            config,
            settings,
            wal: OnceCell::new(),
            state: Arc::default(),
            manifest,
            holds: Arc::default(),
            dead_letters,
            redeliveries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            drops: Drops::default(),
            expired_queues: AtomicU64::new(0),
            ack_failures: Arc::default(),
        };
        if durable.config.dir.exists() {
            let started = Instant::now();
            let wal = durable.wal().await?;
            let definitions = queue_manifest::load(&durable.config.dir)?;
            let limits = durable.settings.limits.clone();
            let (state, max_message_id, dropped) =
                tokio::task::spawn_blocking(move || rebuild(&wal, definitions, &limits))
                    .await
                    .map_err(|e| WalError::Failed(e.to_string()))??;
            durable.recovered_max_message_id = max_message_id;
            let pending: usize = state.queues.iter().map(StoredQueue::kept).sum();
            info!(
                durable_subscriptions = state.queues.persistent(),
                unacked_messages = pending,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "recovered QoS 1 state from the write-ahead log"
            );
            *durable.state.lock() = state;
            // Limits lowered since the last run: the drops are logged now.
            durable.settle(dropped);
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
        let limits = &self.settings.limits;
        let now_ms = unix_ms();
        let mut dropped = Dropped::default();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
        let mut kept = false;
        queues.for_each_keeper(lsn, topic, |queue| {
            queue.keep(lsn, &message, now_ms, store);
            queue.enforce_size(limits, store, &mut dropped);
            queue.top_up(&rules, store, &mut dropped);
            kept = true;
        });
        drop(state);
        drop(hold);
        if !kept {
            // Nobody needs it: the log may forget it as soon as it likes.
            self.release();
        }
        self.settle(dropped);
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
        if self.check_existing(name, pattern, kind)? {
            return self.touch(name).await;
        }
        let wal = self.wal().await?;
        let created = {
            let mut state = self.state.lock();
            // Checked again: another connection may have made it meanwhile.
            if self.check_existing_in(&state, name, pattern, kind)? {
                false
            } else {
                let max = self.settings.max_queues;
                if kind != QueueKind::Ephemeral && state.queues.persistent() >= max {
                    return Err(AttachError::TooManyQueues { max });
                }
                let queue = StoredQueue::new(name, pattern.to_string(), kind, wal.next_lsn());
                state.queues.insert(queue);
                true
            }
        };
        if !created {
            return self.touch(name).await;
        }
        if kind != QueueKind::Ephemeral {
            if let Err(error) = self.save_manifest().await {
                self.state.lock().queues.remove(name);
                return Err(error.into());
            }
        }
        Ok(())
    }

    /// A consumer is about to attach to `name`: its idle clock starts
    /// again, so that the sweep cannot delete it between `prepare` and
    /// `attach`; a detach time the manifest has for it goes first, so that
    /// a crash while it is attached cannot make it look idle since then.
    async fn touch(&self, name: &str) -> Result<(), AttachError> {
        let recorded = {
            let mut state = self.state.lock();
            let Some(queue) = state.queues.get_mut(name) else {
                return Ok(());
            };
            let recorded = queue.detached.is_some_and(|d| d.recorded_ms.is_some());
            if queue.detached.is_some() {
                queue.detached = Some(Detached::now());
            }
            recorded
        };
        if recorded {
            self.save_manifest().await?;
        }
        Ok(())
    }

    /// Whether `name` exists and a consumer may attach to it as `kind` with
    /// `pattern` (an error when it exists otherwise).
    fn check_existing(
        &self,
        name: &str,
        pattern: &str,
        kind: QueueKind,
    ) -> Result<bool, AttachError> {
        self.check_existing_in(&self.state.lock(), name, pattern, kind)
    }

    fn check_existing_in(
        &self,
        state: &State,
        name: &str,
        pattern: &str,
        kind: QueueKind,
    ) -> Result<bool, AttachError> {
        let Some(queue) = state.queues.get(name) else {
            return Ok(false);
        };
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
        Ok(true)
    }

    /// Make the queues in memory the queue manifest on disk.
    async fn save_manifest(&self) -> Result<(), WalError> {
        self.manifest.save(|| self.state.lock().definitions()).await
    }

    /// Attach a consumer (after [`Durable::prepare`] and after the client was
    /// told it is subscribed): unacked messages are sent first, oldest
    /// first, then new ones as they are stored. Should two connections race
    /// past `prepare` for one durable subscription, the later one takes over.
    pub fn attach(&self, name: &str, subscription: Arc<Subscription>) {
        let rules = self.rules();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
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
        queue
            .consumers
            .push(Consumer::new(subscription, self.settings.max_in_flight));
        queue.detached = None;
        let mut dropped = Dropped::default();
        queue.top_up(&rules, store, &mut dropped);
        drop(state);
        self.settle(dropped);
    }

    /// A consumer went away (connection closed, or unsubscribed keeping the
    /// queue): what it held goes to the other consumers or waits for the
    /// next attach. An ephemeral queue ends with its consumer.
    pub fn detach(&self, name: &str, subscription: &Subscription) {
        let rules = self.rules();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
        let Some(queue) = queues.get_mut(name) else {
            return;
        };
        let released = queue.release_consumer(subscription.id);
        queue.consumers.retain(|c| c.live.id != subscription.id);
        if queue.kind == QueueKind::Ephemeral {
            if let Some(mut queue) = queues.remove(name) {
                queue.clear(store);
            }
            drop(state);
            self.release();
            return;
        }
        if released > 0 {
            debug!(
                name,
                released, "a consumer left; its unacked messages go back in line"
            );
        }
        if queue.consumers.is_empty() {
            queue.detached = Some(Detached::now());
        }
        let mut dropped = Dropped::default();
        queue.top_up(&rules, store, &mut dropped);
        drop(state);
        self.settle(dropped);
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
            let state = self.state.lock();
            let Some(queue) = state.queues.get(name) else {
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
        let kind = {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            let Some(mut queue) = queues.remove(name) else {
                return Ok(());
            };
            queue.clear(store);
            queue.kind
        };
        if kind != QueueKind::Ephemeral {
            self.save_manifest().await?;
        }
        self.release();
        Ok(())
    }

    /// Subscription `consumer` acked delivery `lsn` of queue `name`: see
    /// [`StoredQueue::ack`] for which acks count.
    pub fn ack(&self, name: &str, consumer: u64, lsn: Lsn) -> AckOutcome {
        let rules = self.rules();
        let mut dropped = Dropped::default();
        let (outcome, persistent) = {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            let Some(queue) = queues.get_mut(name) else {
                // Deleted meanwhile (unsubscribed by another member).
                return AckOutcome::Late;
            };
            let outcome = queue.ack(consumer, lsn, store);
            if outcome == AckOutcome::Acked {
                queue.top_up(&rules, store, &mut dropped);
            }
            (outcome, queue.persistent())
        };
        self.settle(dropped);
        if outcome == AckOutcome::Acked {
            if persistent {
                self.log_acks(vec![(Arc::from(name), lsn)]);
            }
            self.release();
        }
        outcome
    }

    /// The dead letter for `lsn` is stored: the queue lets the original go.
    pub fn dead_lettered(&self, queue: &str, lsn: Lsn) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.forget_dead_letter(queue, lsn, None);
    }

    /// The message at `lsn` is itself a dead letter that used up its
    /// deliveries: it is dropped rather than dead-lettered again (QOS-19).
    pub fn dead_letter_dropped(&self, queue: &str, lsn: Lsn) {
        self.forget_dead_letter(queue, lsn, Some(DropReason::DeadLetterExhausted));
    }

    fn forget_dead_letter(&self, name: &str, lsn: Lsn, reason: Option<DropReason>) {
        let mut dropped = Dropped::default();
        let persistent = {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            let Some(queue) = queues.get_mut(name) else {
                return;
            };
            if !queue.forget_dead_letter(lsn, store) {
                return;
            }
            if let Some(reason) = reason {
                // Counted here; its ack record is written below either way.
                dropped.add(&queue.name, false, lsn, reason);
            }
            queue.persistent()
        };
        self.settle(dropped);
        if persistent {
            self.log_acks(vec![(Arc::from(name), lsn)]);
        }
        self.release();
    }

    /// The dead letter for `lsn` could not be stored: keep the original in
    /// line (it will be tried again).
    pub fn dead_letter_failed(&self, queue: &str, lsn: Lsn) {
        if let Some(q) = self.state.lock().queues.get_mut(queue) {
            q.make_ready(lsn);
        }
    }

    /// Send again every delivery whose ack is overdue. Returns how many.
    pub fn redeliver_overdue(&self, now: Instant) -> usize {
        let rules = self.rules();
        let mut dropped = Dropped::default();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
        let mut overdue = 0;
        for queue in queues.iter_mut() {
            let taken_back = queue.take_back_overdue(now);
            if taken_back > 0 {
                overdue += taken_back;
                queue.top_up(&rules, store, &mut dropped);
            }
        }
        drop(state);
        self.settle(dropped);
        overdue
    }

    /// The once-a-second sweep (the server calls it with the redelivery
    /// sweep, about every second): drop the messages past their TTL in
    /// detached queues (attached ones drop theirs as they send) and past
    /// `max_age` in every queue, so that they stop holding log segments;
    /// delete the durable subscriptions and groups detached for longer than
    /// `detached_expiry`; write down detach times. Returns how many
    /// messages went.
    pub fn expire_detached(&self, now: Instant) -> usize {
        let limits = &self.settings.limits;
        let now_ms = unix_ms();
        let mut dropped = Dropped::default();
        let mut expired = Vec::new();
        let mut record_detach_times = false;
        {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            for queue in queues.iter_mut() {
                if queue.consumers.is_empty() && store.has_expiring() {
                    queue.expire(now, store, &mut dropped);
                }
                if let Some(max_age) = limits.max_age {
                    let cutoff = now_ms.saturating_sub(max_age.as_millis() as u64);
                    queue.enforce_age(cutoff, store, &mut dropped);
                }
                let persistent = queue.persistent();
                let (Some(detached), Some(expiry), true) =
                    (&mut queue.detached, limits.detached_expiry, persistent)
                else {
                    continue;
                };
                let age = detached.age(now);
                if age >= expiry {
                    expired.push(queue.name.clone());
                } else if detached.recorded_ms.is_none() && age >= record_detach_after(expiry) {
                    detached.recorded_ms = Some(now_ms.saturating_sub(age.as_millis() as u64));
                    record_detach_times = true;
                }
            }
            let mut messages = 0;
            for name in &expired {
                if let Some(mut queue) = queues.remove(name) {
                    messages += queue.kept() as u64;
                    queue.clear(store);
                }
            }
            if !expired.is_empty() {
                dropped.add_without_records(DropReason::DetachedExpiry, messages);
                self.expired_queues
                    .fetch_add(expired.len() as u64, Ordering::Relaxed);
                // One line per sweep, however many expired at once (a
                // restart can find thousands past their time).
                let names: Vec<&str> = expired.iter().take(10).map(|n| &**n).collect();
                warn!(
                    count = expired.len(),
                    ?names,
                    messages,
                    "deleted durable subscriptions nobody attached to for \
                     durable.detached_expiry_ms, with the messages they kept"
                );
            }
        }
        if !expired.is_empty() || record_detach_times {
            // On a task of its own: this sweep runs on the server's timer,
            // which must not wait for the disk. Should the rewrite fail, the
            // next one (any create, delete or sweep) writes the same state.
            let (manifest, state) = (self.manifest.clone(), self.state.clone());
            tokio::spawn(async move {
                if let Err(error) = manifest.save(|| state.lock().definitions()).await {
                    warn!(%error, "could not rewrite the durable subscription manifest");
                }
            });
        }
        let gone = dropped.total();
        self.settle(dropped);
        gone as usize
    }

    /// After an operation on the queues, out of the lock: count what it
    /// dropped, log it, write an ack record for each drop from a durable
    /// queue (so that a restart does not bring it back, as it would a
    /// message whose TTL passed, or one dropped for a limit that a later ack
    /// brought the queue back under), and let retention have the space.
    fn settle(&self, dropped: Dropped) {
        if dropped.is_empty() {
            return;
        }
        self.drops.settle(&dropped);
        // Logged as acks: a drop lost in a crash means the message is
        // dropped again after the restart, as a lost ack means a redelivery.
        self.log_acks(dropped.records);
        self.release();
    }

    /// Append an ack record for each of `acks` (queue, LSN) without
    /// waiting: an ack lost in a crash only means one redelivery, so no
    /// consumer waits for an fsync. Failures (a full or failing log) are
    /// summed in a warning at most every few seconds, not one line each.
    fn log_acks(&self, acks: Vec<(Arc<str>, Lsn)>) {
        let Some(wal) = self.wal.get() else {
            return;
        };
        if acks.is_empty() {
            return;
        }
        let appends: Vec<_> = acks
            .iter()
            .map(|(queue, lsn)| wal.append(KIND_ACK, ack_record(queue, *lsn)))
            .collect();
        let failures = self.ack_failures.clone();
        tokio::spawn(async move {
            let mut error = None;
            let mut failed = 0;
            for result in futures_util::future::join_all(appends).await {
                if let Err(e) = result {
                    failed += 1;
                    error = Some(e);
                }
            }
            if let Some(error) = error {
                failures.failed(failed, &error);
            }
        });
    }

    /// How often [`Durable::redeliver_overdue`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.settings.ack_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    pub fn gauges(&self) -> DurableGauges {
        let state = self.state.lock();
        DurableGauges {
            queues: state.queues.persistent() as u64,
            unacked: state.queues.iter().map(|q| q.kept() as u64).sum(),
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            dead_letters: self.dead_lettered.load(Ordering::Relaxed),
            manifest_writes: self.manifest.writes(),
            dropped: self.drops.totals(),
            expired_queues: self.expired_queues.load(Ordering::Relaxed),
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
        let queued = self.state.lock().store.oldest();
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

/// Now, in ms since the Unix epoch: what stored messages and detach times
/// are stamped with, since they must mean the same after a restart.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a queue stays detached before its detach time is written to the
/// manifest. Not at once, so that consumers that reconnect within it (the
/// usual case) cost no rewrite; a restart meanwhile only starts the queue's
/// clock again, so it can live this much longer than `expiry`, never less.
fn record_detach_after(expiry: Duration) -> Duration {
    (expiry / 4).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DeliverySettings {
        DeliverySettings {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 0,
            max_in_flight: 16,
            max_queues: 100,
            limits: QueueLimits::default(),
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

    /// A consumer (subscription `id`) attached to `name`.
    fn attach(durable: &Durable, name: &str, id: u64) -> Arc<Subscription> {
        let subscription = Arc::new(Subscription::new(
            id,
            "p".into(),
            64,
            crate::config::OverflowPolicy::DropNew,
            crate::outbox::Outbox::new(),
            Some(name.into()),
            None,
        ));
        durable.attach(name, subscription.clone());
        subscription
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
        let consumer = attach(&durable, "keeper", 1);
        assert_eq!(consumer.pop().unwrap().delivery_id, lsn);
        assert_eq!(durable.ack("keeper", 1, lsn), AckOutcome::Acked);
        for id in 40..60 {
            publish(&durable, "other", message("other", id, &[7; 512])).await;
        }
        let wal = durable.wal.get().unwrap();
        assert!(wal.first_lsn().unwrap() > lsn);
    }

    #[tokio::test]
    async fn concurrent_creates_share_manifest_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
            .await
            .unwrap();
        let durable = Arc::new(durable);
        let creates: Vec<_> = (0..50)
            .map(|i| {
                let durable = durable.clone();
                tokio::spawn(async move {
                    durable
                        .prepare(&format!("d{i}"), "jobs.>", QueueKind::Durable)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for create in creates {
            create.await.unwrap();
        }
        let writes = durable.gauges().manifest_writes;
        assert!(writes < 10, "{writes} manifest rewrites for 50 creates");
        // Each create returned only once it was on disk.
        let on_disk = queue_manifest::load(&dir.path().join("wal")).unwrap();
        assert_eq!(on_disk.len(), 50);
    }

    #[tokio::test]
    async fn a_message_is_held_once_however_many_queues_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
            .await
            .unwrap();
        for i in 0..20 {
            durable
                .prepare(&format!("d{i}"), "jobs.>", QueueKind::Durable)
                .await
                .unwrap();
        }
        let mut lsns = Vec::new();
        for id in 1..=5 {
            lsns.push(publish(&durable, "jobs.x", message("jobs.x", id, b"x")).await);
        }
        assert_eq!(durable.gauges().unacked, 100);
        assert_eq!(durable.state.lock().store.len(), 5);
        // A message leaves the store when the last queue lets it go.
        for i in 0..19 {
            durable.delete(&format!("d{i}")).await.unwrap();
        }
        assert_eq!(durable.state.lock().store.len(), 5);
        let _consumer = attach(&durable, "d19", 1);
        for &lsn in &lsns[..4] {
            assert_eq!(durable.ack("d19", 1, lsn), AckOutcome::Acked);
        }
        assert_eq!(durable.state.lock().store.len(), 1);
        assert_eq!(durable.state.lock().store.oldest(), Some(lsns[4]));
    }

    fn expiring_after(expiry: Duration) -> DeliverySettings {
        DeliverySettings {
            limits: QueueLimits {
                detached_expiry: Some(expiry),
                ..QueueLimits::default()
            },
            ..settings()
        }
    }

    #[tokio::test]
    async fn a_detach_time_in_the_manifest_counts_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_log(dir.path());
        std::fs::create_dir_all(&config.dir).unwrap();
        let hour_ago = unix_ms() - 3_600_000;
        let queue = |name: &str, detached_ms| QueueDefinition {
            name: name.into(),
            pattern: "p".into(),
            group: false,
            since: 1,
            detached_ms,
        };
        let definitions = [queue("old", Some(hour_ago)), queue("unrecorded", None)];
        queue_manifest::store(&config.dir, &definitions, true).unwrap();
        let expiry = Duration::from_secs(600);
        let (durable, _dead) = Durable::open(config, expiring_after(expiry)).await.unwrap();
        durable.expire_detached(Instant::now());
        // Detached an hour ago by the manifest: past ten minutes. The other
        // one's clock started with this run.
        let gauges = durable.gauges();
        assert_eq!((gauges.queues, gauges.expired_queues), (1, 1));
        assert!(durable.state.lock().queues.contains("unrecorded"));
    }

    #[tokio::test]
    async fn a_detach_time_is_written_down_and_cleared_by_the_next_attach() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_log(dir.path());
        let wal_dir = config.dir.clone();
        let expiry = Duration::from_millis(400);
        let (durable, _dead) = Durable::open(config, expiring_after(expiry)).await.unwrap();
        durable.prepare("q", "p", QueueKind::Durable).await.unwrap();
        let recorded = || queue_manifest::load(&wal_dir).unwrap()[0].detached_ms;
        assert_eq!(recorded(), None);
        tokio::time::sleep(record_detach_after(expiry) + Duration::from_millis(20)).await;
        durable.expire_detached(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        while recorded().is_none() {
            assert!(Instant::now() < deadline, "never written down");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(recorded().unwrap() <= unix_ms());
        // A consumer on its way: the time goes before it is attached.
        durable.prepare("q", "p", QueueKind::Durable).await.unwrap();
        assert_eq!(recorded(), None);
        assert_eq!(durable.gauges().queues, 1);
    }
}
