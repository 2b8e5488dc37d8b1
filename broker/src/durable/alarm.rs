//! When the redelivery sweep must next run.
//!
//! The server's timer sweeps on a fixed tick derived from the broker's ack
//! timeout. A subscription may ask for a shorter one (QOS-22), and a nak may
//! ask for a delay of any length (QOS-20): waiting for the next tick would
//! make both late by up to a tick. So every queue tells the alarm of each
//! deadline it sets, the alarm keeps the earliest, and the timer also wakes
//! at that instant. The alarm is only ever moved earlier between sweeps; a
//! sweep (which sees every queue) sets it to the earliest time still ahead.

use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Alarm {
    next: Mutex<Option<Instant>>,
    /// Wakes the timer when `next` moved earlier.
    moved: Notify,
}

impl Alarm {
    /// Something is due at `at`: ring no later than that.
    pub fn at(&self, at: Instant) {
        let mut next = self.next.lock();
        if next.is_none_or(|next| at < next) {
            *next = Some(at);
            self.moved.notify_one();
        }
    }

    /// After a sweep: the earliest time anything is still due (`None` when
    /// nothing is).
    pub fn reset(&self, earliest: Option<Instant>) {
        *self.next.lock() = earliest;
    }

    /// Resolves at the alarm's time (never, while none is set), following it
    /// when it moves earlier.
    pub async fn rung(&self) {
        loop {
            let moved = self.moved.notified();
            let next = *self.next.lock();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => return,
                        () = moved => {}
                    }
                }
                None => moved.await,
            }
        }
    }
}
