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
//! - `ACK`: `u64 lsn, name` — the queue no longer needs that message (acked,
//!   or dropped by a limit of `limits.rs`).
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
//! What a queue may hold (`limits.rs`), the timer's sweeps (`sweep.rs`), and
//! what is let go of and released to the log (`retention.rs`) have files of
//! their own; this one is the store's API.

mod ack_log;
mod admin;
mod alarm;
mod holds;
mod limits;
mod manifest;
mod queue;
mod replay;
mod retention;
mod store;
mod sweep;
mod table;
mod terms;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, OnceCell};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::queue_manifest::{self, QueueDefinition};
use crate::subscription::{MessageRef, QueuedMessage, Subscription};
use crate::wal::{FsyncPolicy, Lsn, OsStorage, Pending, Storage, Wal, WalConfig, WalError};

pub use admin::{Deletion, QueueStats};
use alarm::Alarm;
use holds::Holds;
pub use holds::LogHold;
use limits::{AckLogFailures, Dropped, Drops};
pub use limits::{DropReason, QueueLimits};
use manifest::ManifestWriter;
pub use queue::AckOutcome;
use queue::{Consumer, Detached, Rules, StoredQueue};
use replay::{rebuild, KIND_MESSAGE};
use store::MessageStore;
use table::Queues;
pub use terms::{ConsumerTerms, TermsRefused};

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

/// Why a message goes to the dead-letter topic (the header
/// `blipmq-dead-letter-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Delivered `max_deliveries` times without an ack (QOS-12).
    MaxDeliveries,
    /// Its consumer said it can never be processed (QOS-21).
    Terminated,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MaxDeliveries => "max_deliveries",
            DeadLetterReason::Terminated => "terminated",
        }
    }
}

/// A message that used up its deliveries, or that its consumer terminated,
/// on its way to the dead-letter topic. It stays in its queue until the
/// dead letter is stored.
#[derive(Debug)]
pub struct DeadLetter {
    pub queue: String,
    pub lsn: Lsn,
    pub message: MessageRef,
    pub deliveries: u32,
    pub reason: DeadLetterReason,
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
    /// Where the log and the manifest live (the real filesystem but in
    /// tests).
    storage: Arc<dyn Storage>,
    settings: DeliverySettings,
    wal: OnceCell<Arc<Wal>>,
    /// Shared with the manifest rewrites the sweep starts (`Arc`s, so that
    /// they can run on a task of their own).
    state: Arc<Mutex<State>>,
    manifest: Arc<ManifestWriter>,
    /// Records submitted to the log and not yet owned by their queues.
    holds: Arc<Holds>,
    dead_letters: mpsc::UnboundedSender<DeadLetter>,
    /// When the redelivery sweep is next due (ack deadlines, nak delays).
    alarm: Alarm,
    redeliveries: AtomicU64,
    dead_lettered: AtomicU64,
    drops: Drops,
    expired_queues: AtomicU64,
    /// Queues the once-a-second sweep has looked at, for tests: it should
    /// be those with something due, not all of them.
    swept_queues: AtomicU64,
    /// Ack records the log refused, for a rate-limited warning.
    ack_failures: Arc<AckLogFailures>,
    /// Ack records for the log, appended in batches by one task
    /// (`ack_log.rs`), which takes the receiver when the log is opened.
    ack_log: mpsc::UnboundedSender<Bytes>,
    ack_log_records: Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>,
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
        Durable::open_with(config, settings, Arc::new(OsStorage)).await
    }

    /// [`Durable::open`] with the log and the manifest on `storage` (tests
    /// use a simulated disk).
    pub async fn open_with(
        config: WalConfig,
        settings: DeliverySettings,
        storage: Arc<dyn Storage>,
    ) -> Result<(Durable, mpsc::UnboundedReceiver<DeadLetter>), WalError> {
        let (dead_letters, dead_letter_queue) = mpsc::unbounded_channel();
        let (ack_log, ack_log_records) = mpsc::unbounded_channel();
        let manifest = Arc::new(ManifestWriter::new(
            Arc::clone(&storage),
            config.dir.clone(),
            config.fsync_policy != FsyncPolicy::Never,
        ));
        let mut durable = Durable {
            recovered_max_message_id: 0,
            storage,
            config,
            settings,
            wal: OnceCell::new(),
            state: Arc::default(),
            manifest,
            holds: Arc::default(),
            dead_letters,
            alarm: Alarm::default(),
            redeliveries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            drops: Drops::default(),
            expired_queues: AtomicU64::new(0),
            swept_queues: AtomicU64::new(0),
            ack_failures: Arc::default(),
            ack_log,
            ack_log_records: Mutex::new(Some(ack_log_records)),
        };
        if durable.storage.exists(&durable.config.dir) {
            let started = Instant::now();
            let wal = durable.wal().await?;
            let mut definitions =
                queue_manifest::load(durable.storage.as_ref(), &durable.config.dir)?;
            // A queue keeps the messages from its `since` on. The log never
            // hands out an LSN twice, except after an OS crash under
            // `interval` or `never` took its newest records: then `since`
            // may lie past the log's end, and the queue would keep nothing
            // until the log caught up. It keeps from the log's end instead.
            let log_end = wal.next_lsn();
            let mut moved_back = false;
            for definition in definitions.iter_mut().filter(|d| d.since > log_end) {
                warn!(
                    name = %definition.name,
                    since = definition.since,
                    log_end,
                    "a durable subscription began past the end of the recovered log (records lost in an OS crash); it keeps messages from the log's end"
                );
                definition.since = log_end;
                moved_back = true;
            }
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
            if moved_back {
                durable.save_manifest().await?;
            }
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
                let storage = Arc::clone(&self.storage);
                let (wal, recovery) =
                    tokio::task::spawn_blocking(move || Wal::open_with(config, storage))
                    .await
                    .map_err(|e| WalError::Failed(e.to_string()))??;
                if recovery.torn_tail || !recovery.damage.is_empty() {
                    warn!(?recovery.damage, truncated_bytes = recovery.truncated_bytes, "repaired the write-ahead log");
                }
                let wal = Arc::new(wal);
                if let Some(records) = self.ack_log_records.lock().take() {
                    tokio::spawn(ack_log::run(
                        Arc::downgrade(&wal),
                        records,
                        self.ack_failures.clone(),
                    ));
                }
                Ok(wal)
            })
            .await
            .cloned()
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            settings: &self.settings,
            dead_letters: &self.dead_letters,
            redeliveries: &self.redeliveries,
            alarm: &self.alarm,
        }
    }

    /// The terms a consumer gets when its Subscribe asked for none.
    pub fn default_terms(&self) -> ConsumerTerms {
        ConsumerTerms::defaults(&self.settings)
    }

    /// Resolves when an ack deadline or a nak's delay may have come, ahead
    /// of the server's regular sweep.
    pub async fn sweep_due(&self) {
        self.alarm.rung().await
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
    /// not exist. `true` when this call created it (see [`Durable::abandon`]).
    pub async fn prepare(
        &self,
        name: &str,
        pattern: &str,
        kind: QueueKind,
    ) -> Result<bool, AttachError> {
        if self.check_existing(name, pattern, kind)? {
            return self.touch(name).await.map(|()| false);
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
            return self.touch(name).await.map(|()| false);
        }
        if kind != QueueKind::Ephemeral {
            if let Err(error) = self.save_manifest().await {
                self.state.lock().queues.remove(name);
                return Err(error.into());
            }
        }
        Ok(true)
    }

    /// The subscribe that created `name` with [`Durable::prepare`] was
    /// refused after all (a limit checked later): the queue goes again, so
    /// that a refusal holds nothing (no slot of `max_queues`, no memory).
    /// Left alone if a consumer attached to it meanwhile.
    pub async fn abandon(&self, name: &str) {
        let unused = self
            .state
            .lock()
            .queues
            .get(name)
            .is_some_and(|queue| queue.consumers.is_empty());
        if unused {
            if let Err(error) = self.delete(name).await {
                warn!(name, %error, "could not delete a queue made for a refused subscribe");
            }
        }
    }

    /// A consumer is about to attach to `name`: its idle clock starts
    /// again, so that the sweep cannot delete it between `prepare` and
    /// `attach`; a detach time the manifest has for it goes first, so that
    /// a crash while it is attached cannot make it look idle since then.
    async fn touch(&self, name: &str) -> Result<(), AttachError> {
        let recorded = {
            let mut state = self.state.lock();
            let Some(queue) = state.queues.get(name) else {
                return Ok(());
            };
            let recorded = queue.detached.is_some_and(|d| d.recorded_ms.is_some());
            if queue.detached.is_some() {
                state.queues.set_detached(name, Some(Detached::now()));
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

    /// [`Durable::attach_with`] the broker's default terms.
    #[cfg(test)]
    pub fn attach(&self, name: &str, subscription: Arc<Subscription>) {
        self.attach_with(name, subscription, self.default_terms());
    }

    /// Attach a consumer (after [`Durable::prepare`] and after the client was
    /// told it is subscribed) with the terms it asked for (QOS-22): unacked
    /// messages are sent first, oldest first, then new ones as they are
    /// stored. Should two connections race past `prepare` for one durable
    /// subscription, the later one takes over.
    pub fn attach_with(&self, name: &str, subscription: Arc<Subscription>, terms: ConsumerTerms) {
        let rules = self.rules();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
        if !queues.contains(name) {
            warn!(name, "stored queue deleted while attaching");
            return;
        }
        queues.set_detached(name, None);
        let queue = queues.get_mut(name).expect("checked above");
        if queue.kind != QueueKind::Group {
            let previous: Vec<u64> = queue.consumers.iter().map(|c| c.live.id).collect();
            for id in previous {
                queue.release_consumer(id);
            }
            queue.consumers.clear();
        }
        queue.consumers.push(Consumer::new(
            subscription,
            terms,
            self.settings.max_in_flight,
        ));
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
        let now_detached = queue.consumers.is_empty();
        let mut dropped = Dropped::default();
        queue.top_up(&rules, store, &mut dropped);
        if now_detached {
            queues.set_detached(name, Some(Detached::now()));
        }
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
                self.log_ack(name, lsn);
            }
            self.release();
        }
        outcome
    }

    /// Subscription `consumer` nak'd delivery `lsn` of queue `name`: it is
    /// sent again once `delay` is over (QOS-20). Nothing is logged: after a
    /// restart every unacked message is delivered again anyway (QOS-9).
    pub fn nak(&self, name: &str, consumer: u64, lsn: Lsn, delay: Duration) -> AckOutcome {
        let rules = self.rules();
        let mut dropped = Dropped::default();
        let now = Instant::now();
        let outcome = {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            let Some(queue) = queues.get_mut(name) else {
                return AckOutcome::Late;
            };
            let outcome = queue.nak(consumer, lsn, delay, now);
            if outcome == AckOutcome::Acked {
                if !delay.is_zero() {
                    self.alarm.at(now + delay);
                }
                // The nak gave the consumer its credit back.
                queue.top_up(&rules, store, &mut dropped);
            }
            outcome
        };
        self.settle(dropped);
        outcome
    }

    /// Subscription `consumer` gave up on delivery `lsn` of queue `name`
    /// for good: it goes to the dead-letter topic now (QOS-21). The
    /// original is released, and its ack record logged, once the dead
    /// letter is stored ([`Durable::dead_lettered`]), as for QOS-12.
    pub fn term(&self, name: &str, consumer: u64, lsn: Lsn) -> AckOutcome {
        let rules = self.rules();
        let mut dropped = Dropped::default();
        let outcome = {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            let Some(queue) = queues.get_mut(name) else {
                return AckOutcome::Late;
            };
            let outcome = queue.term(consumer, lsn, store, &self.dead_letters);
            if outcome == AckOutcome::Acked {
                queue.top_up(&rules, store, &mut dropped);
            }
            outcome
        };
        self.settle(dropped);
        outcome
    }

    /// Subscription `consumer` is still working on delivery `lsn` of queue
    /// `name`: its ack deadline starts again (QOS-23). Not logged: a
    /// deadline means nothing after a restart.
    pub fn in_progress(&self, name: &str, consumer: u64, lsn: Lsn) -> AckOutcome {
        let mut state = self.state.lock();
        let Some(queue) = state.queues.get_mut(name) else {
            return AckOutcome::Late;
        };
        let (outcome, deadline) = queue.in_progress(consumer, lsn, Instant::now());
        if let Some(deadline) = deadline {
            self.alarm.at(deadline);
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
            match reason {
                // Counted here; its ack record is written below either way.
                Some(reason) => dropped.add(&queue.name, false, lsn, reason),
                None => queue.dead_letters += 1,
            }
            queue.persistent()
        };
        self.settle(dropped);
        if persistent {
            self.log_ack(name, lsn);
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
}

/// Now, in ms since the Unix epoch: what stored messages and detach times
/// are stamped with, since they must mean the same after a restart.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
