//! What the queues let go of, and what the log may then delete: the drops
//! of an operation settled out of the lock, ack records appended without
//! waiting, and the release of log segments below everything still needed.

use std::sync::Arc;

use tracing::warn;

use super::limits::Dropped;
use super::replay::{ack_record, KIND_ACK};
use super::Durable;
use crate::wal::Lsn;

impl Durable {
    /// After an operation on the queues, out of the lock: count what it
    /// dropped, log it, write an ack record for each drop from a durable
    /// queue (so that a restart does not bring it back, as it would a
    /// message whose TTL passed, or one dropped for a limit that a later ack
    /// brought the queue back under), and let retention have the space.
    pub(super) fn settle(&self, dropped: Dropped) {
        if dropped.is_empty() {
            return;
        }
        self.drops.settle(&dropped);
        // Logged as acks: a drop lost in a crash means the message is
        // dropped again after the restart, as a lost ack means a redelivery.
        self.log_acks(dropped.records);
        self.release();
    }

    /// Append the ack record of `lsn` in queue `name` without waiting: an
    /// ack lost in a crash only means one redelivery, so no consumer waits
    /// for an fsync. Failures (a full or failing log) are summed in a
    /// warning at most every few seconds, not one line each.
    pub(super) fn log_ack(&self, name: &str, lsn: Lsn) {
        let Some(wal) = self.wal.get() else {
            return;
        };
        let append = wal.append(KIND_ACK, ack_record(name, lsn));
        let failures = self.ack_failures.clone();
        tokio::spawn(async move {
            if let Err(error) = append.await {
                failures.failed(1, &error);
            }
        });
    }

    /// [`Durable::log_ack`] for each of `acks` (queue, LSN), on one task.
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

    /// Let the log delete segments nothing needs any more: below the oldest
    /// message a queue keeps and the oldest record still on its way to its
    /// queues.
    pub(super) fn release(&self) {
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
