//! The durable layer's log records, and rebuilding the queues from them
//! after a restart.

use std::ops::ControlFlow;
use std::sync::Arc;

use blipmq_protocol::{decode, Frame, LENGTH_PREFIX_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;

use super::queue::StoredQueue;
use super::{QueueKind, State};
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
/// matching messages from its `since` LSN on, minus the acked ones. Also
/// returns the highest message id in the log.
pub(super) fn rebuild(
    wal: &Wal,
    definitions: Vec<QueueDefinition>,
) -> Result<(State, u64), WalError> {
    let mut state = State::default();
    for d in definitions {
        let kind = if d.group {
            QueueKind::Group
        } else {
            QueueKind::Durable
        };
        state
            .queues
            .insert(StoredQueue::new(d.name, d.pattern, kind, d.since));
    }
    let State { queues, store } = &mut state;
    let mut skipped = 0u64;
    let mut max_message_id = 0;
    wal.replay(0, |lsn, kind, payload| {
        match kind {
            KIND_MESSAGE => match restore_message(payload) {
                Some((topic, message)) => {
                    max_message_id = max_message_id.max(message.message_id);
                    queues.for_each_keeper(lsn, &topic, |queue| {
                        queue.keep(lsn, &message, store);
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
    Ok((state, max_message_id))
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
