//! The log's release thread: where segment files are deleted and the
//! directory fsynced once retention lets them go.
//!
//! Retention is decided on whatever thread acks a message, often a runtime
//! worker serving a connection; an unlink and a directory fsync there stall
//! every connection on that worker (issue 23, finding 8). So the caller only
//! raises the target ([`Wal::release_later`](super::Wal::release_later)),
//! and this thread deletes up to the highest target asked for, many
//! requests in one pass. Deleting later is safe: a record nothing needed
//! when the target was computed is never needed again (see
//! `Durable::release`), and `release_before` still checks, at the time of
//! deletion, that nothing unconfirmed or in a batch being written goes.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tracing::warn;

use super::{Inner, Lsn};

#[derive(Default)]
pub(crate) struct Releaser {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Everything below it may go: the highest LSN asked for.
    target: Lsn,
    /// A pass was asked for since the thread last started one.
    pending: bool,
    /// The thread is in a pass.
    busy: bool,
    stop: bool,
}

impl Releaser {
    /// Ask for the records below `lsn` to be deleted; `deletable` says
    /// whether a segment is known to lie wholly below it (else the thread
    /// is not woken, only the target raised).
    pub fn request(&self, lsn: Lsn, deletable: bool) {
        let mut state = self.state.lock();
        state.target = state.target.max(lsn);
        if deletable && !state.pending {
            state.pending = true;
            self.wake.notify_one();
        }
    }

    /// Blocks until no pass is asked for or running.
    pub fn wait_idle(&self) {
        let mut state = self.state.lock();
        while state.pending || state.busy {
            self.wake.wait(&mut state);
        }
    }

    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// The thread's loop: one pass per wake-up, until stopped (a pass asked
    /// for before the stop is still made).
    pub fn run(inner: Arc<Inner>) {
        let releaser = &inner.releaser;
        loop {
            let target = {
                let mut state = releaser.state.lock();
                while !state.pending && !state.stop {
                    releaser.wake.wait(&mut state);
                }
                if !state.pending {
                    return;
                }
                state.pending = false;
                state.busy = true;
                state.target
            };
            if let Err(error) = inner.release_before(target) {
                warn!(%error, "could not release write-ahead log segments");
            }
            releaser.state.lock().busy = false;
            releaser.wake.notify_all();
        }
    }
}
