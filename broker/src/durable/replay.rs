//! The durable layer's log records, and rebuilding the queues from them
//! after a restart.

use std::ops::ControlFlow;
use std::sync::Arc;

use blipmq_protocol::{decode, Frame, LENGTH_PREFIX_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;

use super::limits::{Dropped, QueueLimits};
use super::queue::{Detached, StoredQueue};
use super::{unix_ms, QueueKind, State};
use crate::queue_manifest::QueueDefinition;
use crate::subscription::{MessageRef, QueuedMessage};
use crate::wal::{Lsn, Wal, WalError};

pub(super) const KIND_MESSAGE: u8 = 1;
pub(super) const KIND_ACK: u8 = 3;

pub(super) fn ack_record(name: &str, lsn: Lsn) -> Bytes {
    let mut record = BytesMut::with_capacity(8 + name.len());
    record.put_u64_le(lsn);
    record.put_slice(name.as_bytes());
    record.freeze()
}

/// Replay the log into the queues the manifest names: each keeps the
/// matching messages from its `since` LSN on, minus the acked (and
/// dropped) ones, within its size limits. Also returns the highest message
/// id in the log, and what the limits dropped.
pub(super) fn rebuild(
    wal: &Wal,
    definitions: Vec<QueueDefinition>,
    limits: &QueueLimits,
) -> Result<(State, u64, Dropped), WalError> {
    let mut state = State::default();
    let now_ms = unix_ms();
    for d in definitions {
        let kind = if d.group {
            QueueKind::Group
        } else {
            QueueKind::Durable
        };
        let mut queue = StoredQueue::new(&d.name, d.pattern, kind, d.since);
        queue.detached = Some(Detached::recovered(d.detached_ms, now_ms));
        state.queues.insert(queue);
    }
    let State { queues, store } = &mut state;
    let mut skipped = 0u64;
    let mut max_message_id = 0;
    wal.replay(0, |lsn, kind, payload| {
        match kind {
            KIND_MESSAGE => match restore_message(payload) {
                Some((topic, message, timestamp_ms)) => {
                    max_message_id = max_message_id.max(message.message_id);
                    queues.for_each_keeper(lsn, &topic, |queue| {
                        queue.keep(lsn, &message, timestamp_ms, store);
                    });
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
                            queue.forget(acked, store);
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
    // Limits apply once every ack is in: an ack is logged a little after it
    // happened, so applying them message by message could drop one that the
    // live queue, acked in time, kept.
    let mut dropped = Dropped::default();
    let State { queues, store } = &mut state;
    for queue in queues.iter_mut() {
        queue.enforce_size(limits, store, &mut dropped);
    }
    Ok((state, max_message_id, dropped))
}

/// A stored Delivery frame back into a queued message, with its topic and
/// timestamp. Its TTL is not restored: the deadline was measured on a clock
/// that did not survive the restart, so a recovered message waits until it
/// is acked (or a limit drops it).
fn restore_message(frame: &[u8]) -> Option<(String, MessageRef, u64)> {
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
            published_at: std::time::Instant::now(),
            expires_at: None,
            message_id: delivery.message_id,
            trace_id: blipmq_protocol::headers::trace_id_of(&delivery.headers).map(Box::from),
            charge: Default::default(),
        }),
        delivery.timestamp_ms,
    ))
}
