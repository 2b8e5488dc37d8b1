//! Ack records on their way to the log, batched on one task.
//!
//! An ack is answered without waiting for its record (DUR-5), so nothing
//! waits for the append but the counting of failures. A task per ack did
//! that: an ack storm made one task per message (issue 23, finding 8).
//! Instead the ack path queues the encoded record on a channel, and one
//! task per log takes whatever has queued, submits it as a few batches (one
//! log entry each, so one wake-up of the writer per batch rather than per
//! ack) and goes on taking more while the log makes them durable.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::limits::AckLogFailures;
use super::replay::KIND_ACK;
use crate::wal::Wal;

/// Most records taken off the channel at once.
const ROUND: usize = 4096;

/// Append the records sent on `records` to `wal` until the channel closes
/// (the store is dropped) or the log is. Holds the log only while
/// submitting, so that dropping the store closes the log at once.
pub(super) async fn run(
    wal: Weak<Wal>,
    mut records: mpsc::UnboundedReceiver<Bytes>,
    failures: Arc<AckLogFailures>,
) {
    let mut taken = Vec::with_capacity(ROUND);
    // Submitted batches not yet durable, with their sizes.
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            n = records.recv_many(&mut taken, ROUND) => {
                if n == 0 {
                    break;
                }
            }
            Some((n, result)) = waiting.next() => {
                if let Err(error) = result {
                    failures.failed(n, &error);
                }
                continue;
            }
        }
        let Some(log) = wal.upgrade() else {
            return;
        };
        let room = log.batch_room();
        let mut batches = Vec::new();
        let mut batch: Vec<(u8, Bytes)> = Vec::new();
        let mut bytes = 0;
        for record in taken.drain(..) {
            let len = Wal::framed_len(record.len());
            if bytes + len > room && !batch.is_empty() {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += len;
            batch.push((KIND_ACK, record));
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let submits: Vec<_> = batches
            .into_iter()
            .map(|batch| (batch.len() as u64, log.submit_batch(batch)))
            .collect();
        drop(log);
        // In order: each waits only for room in the log's queue.
        for (n, submit) in submits {
            match submit.await {
                Ok(pending) => waiting.push(async move { (n, pending.await) }),
                Err(error) => failures.failed(n, &error),
            }
        }
    }
    while let Some((n, result)) = waiting.next().await {
        if let Err(error) = result {
            failures.failed(n, &error);
        }
    }
}
