//! What the queues let go of, and what the log may then delete: the drops
//! of an operation settled out of the lock, ack records queued for the log
//! without waiting, and the release of log segments below everything still
//! needed (done on the log's release thread).

use std::sync::Arc;

use super::limits::Dropped;
use super::replay::ack_record;
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
    /// for an fsync (DUR-5). Queued for the ack log's task (`ack_log.rs`),
    /// which counts failures (a full or failing log) for a warning at most
    /// every few seconds, not one line each.
    pub(super) fn log_ack(&self, name: &str, lsn: Lsn) {
        if self.wal.get().is_none() {
            return;
        }
        // Fails only once the task is gone with the log.
        let _ = self.ack_log.send(ack_record(name, lsn));
    }

    /// [`Durable::log_ack`] for each of `acks` (queue, LSN).
    fn log_acks(&self, acks: Vec<(Arc<str>, Lsn)>) {
        for (queue, lsn) in acks {
            self.log_ack(&queue, lsn);
        }
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
        // The deletion itself (unlink, directory fsync) is the log's
        // release thread's: this may run on a runtime worker, on every ack.
        // Deleting later is safe: what nothing needs now, nothing will
        // (a queue only ever takes records written after its hold).
        wal.release_later(before);
    }
}
