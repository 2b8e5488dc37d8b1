//! The stored messages some queue still keeps, each held once however many
//! queues keep it.
//!
//! Why one shared map rather than a copy of the entry in every queue: a
//! message that 500 durable subscriptions keep used to cost 500 ordered-map
//! entries (and their per-entry delivery state), so memory grew with
//! queues × messages (issue 22, finding 7). Now a queue keeps only the
//! message's LSN (`queue.rs`), and the message, its size and its reference
//! count live here, once.

use std::collections::BTreeMap;

use crate::subscription::MessageRef;
use crate::wal::Lsn;

pub(super) struct StoredMessage {
    pub message: MessageRef,
    /// When it was stored (ms since the Unix epoch; for a message recovered
    /// from the log, its timestamp): what `durable.max_age_ms` measures.
    stored_ms: u64,
    /// Queues that keep it; it leaves the map when the last one lets go.
    refs: u32,
}

#[derive(Default)]
pub(super) struct MessageStore {
    messages: BTreeMap<Lsn, StoredMessage>,
    /// Messages with a TTL: when there are none, expiry has nothing to scan.
    expiring: usize,
}

impl MessageStore {
    /// The message at `lsn`, which a queue keeps. Queues only ask for
    /// messages they hold a reference to, so it is there.
    pub fn message(&self, lsn: Lsn) -> &MessageRef {
        &self.messages[&lsn].message
    }

    /// When the message at `lsn`, which a queue keeps, was stored.
    pub fn stored_ms(&self, lsn: Lsn) -> u64 {
        self.messages[&lsn].stored_ms
    }

    /// One more queue keeps the message at `lsn`.
    pub fn add_ref(&mut self, lsn: Lsn, message: &MessageRef, stored_ms: u64) {
        let entry = self.messages.entry(lsn).or_insert_with(|| {
            if message.expires_at.is_some() {
                self.expiring += 1;
            }
            StoredMessage {
                message: message.clone(),
                stored_ms,
                refs: 0,
            }
        });
        entry.refs += 1;
    }

    /// One queue less keeps the message at `lsn`; the last one frees it.
    pub fn unref(&mut self, lsn: Lsn) {
        let Some(entry) = self.messages.get_mut(&lsn) else {
            debug_assert!(false, "unref of a message no queue kept: {lsn}");
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            if let Some(gone) = self.messages.remove(&lsn) {
                if gone.message.expires_at.is_some() {
                    self.expiring -= 1;
                }
            }
        }
    }

    /// The oldest message any queue keeps: retention may release the log
    /// below it (and below the holds, see `holds.rs`).
    pub fn oldest(&self) -> Option<Lsn> {
        self.messages.keys().next().copied()
    }

    /// When the oldest message any queue keeps was stored. Messages are
    /// stored in log order, so this is the earliest time, as a queue's
    /// `enforce_age` assumes of its own oldest.
    pub fn oldest_stored_ms(&self) -> Option<u64> {
        self.messages.values().next().map(|m| m.stored_ms)
    }

    /// Whether any kept message has a TTL.
    pub fn has_expiring(&self) -> bool {
        self.expiring > 0
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages.len()
    }
}
