//! QoS 1 on top of the write-ahead log: stored messages, durable
//! subscriptions, acks, and rebuilding all of it after a restart.
//!
//! Every QoS 1 message is appended to the WAL before it is confirmed or
//! delivered. A durable subscription keeps, in log order, every stored
//! message that matches its pattern until the consumer acks it; the entries
//! survive disconnects (the subscription is *detached*) and restarts (the log
//! is replayed). While attached, at most `subscriber_capacity` of its
//! messages are in flight; each ack makes room for the next. On re-attach
//! every unacked message is delivered again, first and in order, with a
//! higher delivery count.
//!
//! Records (kind byte, payload):
//! - `MESSAGE`: the message's encoded Delivery frame, exactly as delivered.
//! - `SUBSCRIBE`: `u16 name length, name, pattern` — a durable subscription
//!   was created.
//! - `ACK`: `u64 lsn, name` — the subscription no longer needs that message.
//! - `UNSUBSCRIBE`: `name` — the durable subscription was deleted.
//!
//! The log is released up to the oldest message any durable subscription
//! still needs, so acked history is deleted segment by segment.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use blipmq_protocol::{decode, topic, Frame, LENGTH_PREFIX_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::subscription::{MessageRef, Queued, QueuedMessage, Subscription};
use crate::wal::{Lsn, Pending, Wal, WalConfig, WalError};

const KIND_MESSAGE: u8 = 1;
const KIND_SUBSCRIBE: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_UNSUBSCRIBE: u8 = 4;

struct Entry {
    message: MessageRef,
    /// Times sent to a consumer since the broker started.
    deliveries: u32,
    /// Sent and not yet acked on the current attachment.
    in_flight: bool,
}

impl Entry {
    /// A message just stored (or replayed): never sent yet.
    fn stored(message: MessageRef) -> Entry {
        Entry {
            message,
            deliveries: 0,
            in_flight: false,
        }
    }
}

struct DurableSub {
    pattern: String,
    entries: BTreeMap<Lsn, Entry>,
    attached: Option<Arc<Subscription>>,
}

/// Why a durable subscription could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("durable subscription {name:?} exists with pattern {existing:?}, not {requested:?}")]
    PatternMismatch {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("durable subscription {0:?} is attached to another connection")]
    InUse(String),
    #[error(transparent)]
    Storage(#[from] WalError),
}

/// The QoS 1 store. The WAL is opened at start when its directory exists
/// (to recover), and otherwise created on the first durable use, so a broker
/// that never sees QoS 1 never touches the disk.
pub struct Durable {
    config: WalConfig,
    wal: OnceCell<Arc<Wal>>,
    subs: Mutex<HashMap<String, DurableSub>>,
}

impl Durable {
    /// Recover from an existing log, or prepare to create one on first use.
    pub async fn open(config: WalConfig) -> Result<Durable, WalError> {
        let durable = Durable {
            config,
            wal: OnceCell::new(),
            subs: Mutex::new(HashMap::new()),
        };
        if durable.config.dir.exists() {
            let started = Instant::now();
            let wal = durable.wal().await?;
            let subs = tokio::task::spawn_blocking(move || rebuild(&wal))
                .await
                .map_err(|e| WalError::Failed(e.to_string()))??;
            let pending: usize = subs.values().map(|s| s.entries.len()).sum();
            info!(
                durable_subscriptions = subs.len(),
                unacked_messages = pending,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "recovered QoS 1 state from the write-ahead log"
            );
            *durable.subs.lock() = subs;
            durable.release();
        }
        Ok(durable)
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

    /// The WAL's counters, once it is open.
    pub fn wal_stats(&self) -> Option<crate::wal::WalStats> {
        self.wal.get().map(|wal| wal.stats())
    }

    /// Queue a QoS 1 message for the log. The returned [`Pending`] resolves
    /// to its LSN once durable; then confirm it and call [`Durable::stored`].
    pub async fn submit(&self, message: &QueuedMessage) -> Result<Pending, WalError> {
        let wal = self.wal().await?;
        wal.submit(KIND_MESSAGE, message.delivery.frame().clone())
            .await
    }

    /// A message is durable at `lsn`: every matching durable subscription
    /// keeps it until acked, and attached ones get it when they have room.
    pub fn stored(&self, lsn: Lsn, topic: &str, message: MessageRef) {
        let mut subs = self.subs.lock();
        let mut kept = false;
        for sub in subs.values_mut() {
            if topic::matches(&sub.pattern, topic) {
                sub.entries.insert(lsn, Entry::stored(message.clone()));
                top_up(sub);
                kept = true;
            }
        }
        drop(subs);
        if !kept {
            // Nobody needs it: the log may forget it as soon as it likes.
            self.release();
        }
    }

    /// Check that `name` can be attached with `pattern` (same pattern, not
    /// in use), creating it — and logging that — if it does not exist.
    pub async fn prepare(&self, name: &str, pattern: &str) -> Result<(), AttachError> {
        {
            let subs = self.subs.lock();
            if let Some(sub) = subs.get(name) {
                if sub.pattern != pattern {
                    return Err(AttachError::PatternMismatch {
                        name: name.to_string(),
                        existing: sub.pattern.clone(),
                        requested: pattern.to_string(),
                    });
                }
                if sub.attached.as_ref().is_some_and(|a| !a.is_closed()) {
                    return Err(AttachError::InUse(name.to_string()));
                }
                return Ok(());
            }
        }
        let wal = self.wal().await?;
        wal.append(KIND_SUBSCRIBE, subscribe_record(name, pattern))
            .await?;
        self.subs
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| DurableSub {
                pattern: pattern.to_string(),
                entries: BTreeMap::new(),
                attached: None,
            });
        Ok(())
    }

    /// Attach `subscription` (after [`Durable::prepare`] and after the
    /// client was told it is subscribed): every unacked message is sent
    /// again, oldest first, then new ones as they are stored. Should two
    /// connections race past `prepare`, the later one takes over.
    pub fn attach(&self, name: &str, subscription: Arc<Subscription>) {
        let mut subs = self.subs.lock();
        let Some(sub) = subs.get_mut(name) else {
            warn!(name, "durable subscription deleted while attaching");
            return;
        };
        for entry in sub.entries.values_mut() {
            entry.in_flight = false;
        }
        sub.attached = Some(subscription);
        top_up(sub);
    }

    /// The connection of `subscription` went away; the durable subscription
    /// keeps its messages for the next attach.
    pub fn detach(&self, name: &str, subscription: &Subscription) {
        if let Some(sub) = self.subs.lock().get_mut(name) {
            if sub
                .attached
                .as_ref()
                .is_some_and(|a| a.id == subscription.id)
            {
                sub.attached = None;
            }
        }
    }

    /// Delete the durable subscription and everything it kept.
    pub async fn delete(&self, name: &str) -> Result<(), WalError> {
        if self.subs.lock().remove(name).is_none() {
            return Ok(());
        }
        let wal = self.wal().await?;
        wal.append(KIND_UNSUBSCRIBE, Bytes::copy_from_slice(name.as_bytes()))
            .await?;
        self.release();
        Ok(())
    }

    /// The consumer acked `lsn`. Returns false when the subscription did not
    /// hold it (already acked, or never matched): acks are idempotent.
    pub fn ack(&self, name: &str, lsn: Lsn) -> bool {
        let removed = {
            let mut subs = self.subs.lock();
            let Some(sub) = subs.get_mut(name) else {
                return false;
            };
            let removed = sub.entries.remove(&lsn).is_some();
            if removed {
                top_up(sub);
            }
            removed
        };
        if removed {
            if let Some(wal) = self.wal.get() {
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

    /// (durable subscriptions, messages they hold) for /metrics.
    pub fn gauges(&self) -> (u64, u64) {
        let subs = self.subs.lock();
        (
            subs.len() as u64,
            subs.values().map(|s| s.entries.len() as u64).sum(),
        )
    }

    /// Let the log delete segments no durable subscription needs any more.
    fn release(&self) {
        let Some(wal) = self.wal.get() else {
            return;
        };
        let oldest_needed = self
            .subs
            .lock()
            .values()
            .filter_map(|s| s.entries.keys().next().copied())
            .min();
        let before = oldest_needed.unwrap_or_else(|| wal.last_lsn().map_or(0, |l| l + 1));
        if let Err(error) = wal.release_before(before) {
            warn!(%error, "could not release write-ahead log segments");
        }
    }
}

/// Offer an attached subscription its unsent messages, oldest first, while
/// its queue has room. Expired messages are dropped from the store here.
fn top_up(sub: &mut DurableSub) {
    let Some(live) = sub.attached.clone() else {
        return;
    };
    let now = Instant::now();
    let mut expired = Vec::new();
    for (lsn, entry) in sub.entries.iter_mut().filter(|(_, e)| !e.in_flight) {
        if entry.message.expires_at.is_some_and(|at| at <= now) {
            expired.push(*lsn);
            continue;
        }
        if !live.has_room() {
            break;
        }
        let queued = Queued {
            message: entry.message.clone(),
            delivery_id: *lsn,
            delivery_count: entry.deliveries + 1,
        };
        if live.try_enqueue_durable(queued).is_err() {
            break;
        }
        entry.deliveries += 1;
        entry.in_flight = true;
    }
    for lsn in expired {
        sub.entries.remove(&lsn);
    }
}

fn subscribe_record(name: &str, pattern: &str) -> Bytes {
    let mut record = BytesMut::with_capacity(2 + name.len() + pattern.len());
    record.put_u16_le(name.len() as u16);
    record.put_slice(name.as_bytes());
    record.put_slice(pattern.as_bytes());
    record.freeze()
}

fn ack_record(name: &str, lsn: Lsn) -> Bytes {
    let mut record = BytesMut::with_capacity(8 + name.len());
    record.put_u64_le(lsn);
    record.put_slice(name.as_bytes());
    record.freeze()
}

/// Replay the log into durable subscriptions and their unacked messages.
fn rebuild(wal: &Wal) -> Result<HashMap<String, DurableSub>, WalError> {
    let mut subs: HashMap<String, DurableSub> = HashMap::new();
    let mut skipped = 0u64;
    wal.replay(0, |lsn, kind, payload| {
        match kind {
            KIND_MESSAGE => match restore_message(payload) {
                Some((topic, message)) => {
                    for sub in subs
                        .values_mut()
                        .filter(|s| topic::matches(&s.pattern, &topic))
                    {
                        sub.entries.insert(lsn, Entry::stored(message.clone()));
                    }
                }
                None => skipped += 1,
            },
            KIND_SUBSCRIBE => {
                let name_len = payload
                    .get(..2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
                let parts = name_len.and_then(|n| {
                    let name = std::str::from_utf8(payload.get(2..2 + n)?).ok()?;
                    let pattern = std::str::from_utf8(payload.get(2 + n..)?).ok()?;
                    Some((name.to_string(), pattern.to_string()))
                });
                match parts {
                    Some((name, pattern)) => {
                        subs.insert(
                            name,
                            DurableSub {
                                pattern,
                                entries: BTreeMap::new(),
                                attached: None,
                            },
                        );
                    }
                    None => skipped += 1,
                }
            }
            KIND_ACK => {
                let acked = payload
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                let name = payload.get(8..).and_then(|b| std::str::from_utf8(b).ok());
                match (acked, name) {
                    (Some(acked), Some(name)) => {
                        if let Some(sub) = subs.get_mut(name) {
                            sub.entries.remove(&acked);
                        }
                    }
                    _ => skipped += 1,
                }
            }
            KIND_UNSUBSCRIBE => match std::str::from_utf8(payload) {
                Ok(name) => {
                    subs.remove(name);
                }
                Err(_) => skipped += 1,
            },
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
    Ok(subs)
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
