//! The sweeps the server runs on its timer: redelivery of overdue acks,
//! and, about once a second, expiry (TTL, `max_age`) and the deletion of
//! queues left detached for `detached_expiry` (issue 22, finding 6). The
//! deletion looks only at the queues that are due, from an index of detach
//! times (`table.rs`), not at every queue under the lock (issue 23,
//! finding 8).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use super::limits::{DropReason, Dropped};
use super::queue::clock_key;
use super::{unix_ms, Durable, State};

impl Durable {
    /// Send again every delivery whose ack is overdue. Returns how many.
    pub fn redeliver_overdue(&self, now: Instant) -> usize {
        let rules = self.rules();
        let mut dropped = Dropped::default();
        let mut state = self.state.lock();
        let State { queues, store } = &mut *state;
        let mut overdue = 0;
        let mut next_due = None;
        for queue in queues.iter_mut() {
            let taken_back = queue.take_back_overdue(now);
            if taken_back > 0 {
                overdue += taken_back;
                queue.top_up(&rules, store, &mut dropped);
            }
            next_due = next_due.into_iter().chain(queue.next_due()).min();
        }
        // Under the lock, so no deadline set meanwhile is missed.
        self.alarm.reset(next_due);
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
        let mut examined = 0u64;
        {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            // Messages: only when some are or may be past their time.
            let ttl = store.has_expiring();
            let age_cutoff = limits
                .max_age
                .map(|max_age| now_ms.saturating_sub(max_age.as_millis() as u64))
                .filter(|&cutoff| {
                    store
                        .oldest_stored_ms()
                        .is_some_and(|oldest| oldest < cutoff)
                });
            if ttl || age_cutoff.is_some() {
                for queue in queues.iter_mut() {
                    examined += 1;
                    if ttl && queue.consumers.is_empty() {
                        queue.expire(now, store, &mut dropped);
                    }
                    if let Some(cutoff) = age_cutoff {
                        queue.enforce_age(cutoff, store, &mut dropped);
                    }
                }
            }
            // Queues: from the index of detach times, only those now due.
            if let Some(expiry) = limits.detached_expiry {
                let now_key = clock_key(now);
                let record_after = record_detach_after(expiry);
                let due = now_key - record_after.as_millis() as i64;
                for name in queues.detached_since(due, true) {
                    examined += 1;
                    record_detach_times |=
                        queues.record_detach_time(&name, now, now_ms, record_after);
                }
                let due = now_key - expiry.as_millis() as i64;
                for name in queues.detached_since(due, false) {
                    examined += 1;
                    let age = queues
                        .get(&name)
                        .and_then(|q| q.detached)
                        .map(|d| d.age(now));
                    if age.is_some_and(|age| age >= expiry) {
                        expired.push(name);
                    }
                }
            }
            self.swept_queues.fetch_add(examined, Ordering::Relaxed);
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
