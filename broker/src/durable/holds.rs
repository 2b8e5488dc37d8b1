//! Log holds: what keeps a record from retention between its write and its
//! queues taking it (issue 22, finding 1).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::wal::Lsn;

/// The oldest LSN each record in flight between the log and its queues may
/// have, counted (many records share a floor).
#[derive(Default)]
pub(super) struct Holds {
    floors: Mutex<BTreeMap<Lsn, usize>>,
}

impl Holds {
    pub fn take(self: &Arc<Self>, floor: Lsn) -> LogHold {
        *self.floors.lock().entry(floor).or_insert(0) += 1;
        LogHold {
            holds: Arc::clone(self),
            floor,
        }
    }

    pub fn oldest(&self) -> Option<Lsn> {
        self.floors.lock().keys().next().copied()
    }
}

/// Keeps every log record at or above its floor from being released, until
/// dropped. Taken by [`Durable::submit`](super::Durable::submit); drop it once [`Durable::stored`](super::Durable::stored)
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
