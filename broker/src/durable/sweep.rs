//! The sweeps the server runs on its timer: redelivery of overdue acks,
//! and, about once a second, expiry (TTL, `max_age`) and the deletion of
//! queues left detached for `detached_expiry` (issue 22, finding 6).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use super::limits::{DropReason, Dropped};
use super::{unix_ms, Durable, State};

impl Durable {
    /// Send again every delivery whose ack is overdue. Returns how many.
    pub fn redeliver_overdue(&self, now: Instant) -> usize {
        let rules = self.rules();
        let mut dropped = Dropped::default();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
        let mut overdue = 0;
        for queue in queues.iter_mut() {
            let taken_back = queue.take_back_overdue(now);
            if taken_back > 0 {
                overdue += taken_back;
                queue.top_up(&rules, store, &mut dropped);
            }
        }
        drop(state);
        self.settle(dropped);
        overdue
    }

    /// The once-a-second sweep (the server calls it with the redelivery
    /// sweep, about every second): drop the messages past their TTL in
    /// detached queues (attached ones drop theirs as they send) and past
    /// `max_age` in every queue, so that they stop holding log segments;
    /// delete the durable subscriptions and groups detached for longer than
    /// `detached_expiry`; write down detach times. Returns how many
    /// messages went.
    pub fn expire_detached(&self, now: Instant) -> usize {
        let limits = &self.settings.limits;
        let now_ms = unix_ms();
        let mut dropped = Dropped::default();
        let mut expired = Vec::new();
        let mut record_detach_times = false;
        {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            for queue in queues.iter_mut() {
                if queue.consumers.is_empty() && store.has_expiring() {
                    queue.expire(now, store, &mut dropped);
                }
                if let Some(max_age) = limits.max_age {
                    let cutoff = now_ms.saturating_sub(max_age.as_millis() as u64);
                    queue.enforce_age(cutoff, store, &mut dropped);
                }
                let persistent = queue.persistent();
                let (Some(detached), Some(expiry), true) =
                    (&mut queue.detached, limits.detached_expiry, persistent)
                else {
                    continue;
                };
                let age = detached.age(now);
                if age >= expiry {
                    expired.push(queue.name.clone());
                } else if detached.recorded_ms.is_none() && age >= record_detach_after(expiry) {
                    detached.recorded_ms = Some(now_ms.saturating_sub(age.as_millis() as u64));
                    record_detach_times = true;
                }
            }
            let mut messages = 0;
            for name in &expired {
                if let Some(mut queue) = queues.remove(name) {
                    messages += queue.kept() as u64;
                    queue.clear(store);
                }
            }
            if !expired.is_empty() {
                dropped.add_without_records(DropReason::DetachedExpiry, messages);
                self.expired_queues
                    .fetch_add(expired.len() as u64, Ordering::Relaxed);
                // One line per sweep, however many expired at once (a
                // restart can find thousands past their time).
                let names: Vec<&str> = expired.iter().take(10).map(|n| &**n).collect();
                warn!(
                    count = expired.len(),
                    ?names,
                    messages,
                    "deleted durable subscriptions nobody attached to for \
                     durable.detached_expiry_ms, with the messages they kept"
                );
            }
        }
        if !expired.is_empty() || record_detach_times {
            // On a task of its own: this sweep runs on the server's timer,
            // which must not wait for the disk. Should the rewrite fail, the
            // next one (any create, delete or sweep) writes the same state.
            let (manifest, state) = (self.manifest.clone(), self.state.clone());
            tokio::spawn(async move {
                if let Err(error) = manifest.save(|| state.lock().definitions()).await {
                    warn!(%error, "could not rewrite the durable subscription manifest");
                }
            });
        }
        let gone = dropped.total();
        self.settle(dropped);
        gone as usize
    }

    /// How often [`Durable::redeliver_overdue`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.settings.ack_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

/// How long a queue stays detached before its detach time is written to the
/// manifest. Not at once, so that consumers that reconnect within it (the
/// usual case) cost no rewrite; a restart meanwhile only starts the queue's
/// clock again, so it can live this much longer than `expiry`, never less.
pub(super) fn record_detach_after(expiry: Duration) -> Duration {
    (expiry / 4).min(Duration::from_secs(60))
}
