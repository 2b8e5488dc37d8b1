//! The stored queues, by name and by pattern.
//!
//! By pattern because a publish must find every queue that keeps it: testing
//! each distinct pattern once, rather than each queue, makes 500 durable
//! subscriptions on one pattern cost one match per publish (issue 22,
//! finding 7), and the lock the publish holds meanwhile shorter.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::topic;

use super::queue::{Detached, StoredQueue};
use super::QueueKind;
use crate::wal::Lsn;

#[derive(Default)]
pub(super) struct Queues {
    /// Queues by slot; a deleted queue's slot is reused.
    slots: Vec<Option<StoredQueue>>,
    free: Vec<usize>,
    by_name: HashMap<String, usize>,
    /// A set, not a list: deleting thousands of queues of one pattern at
    /// once (an expiry sweep) must not cost a scan of the list each.
    by_pattern: HashMap<String, BTreeSet<usize>>,
    /// Durable subscriptions and queue groups (not ephemeral queues): what
    /// the manifest lists and `durable.max_queues` caps.
    persistent: usize,
    /// The detached durable subscriptions and groups by [`Detached::key`],
    /// oldest detach first: the sweep takes those due to expire from the
    /// front instead of looking at every queue (issue 23, finding 8).
    detached: BTreeSet<(i64, Arc<str>)>,
    /// Those of them whose detach time the manifest does not have yet.
    unrecorded: BTreeSet<(i64, Arc<str>)>,
}

/// Keep the detach indexes in step with a queue's `detached`.
fn index(
    queue: &StoredQueue,
    detached: &mut BTreeSet<(i64, Arc<str>)>,
    unrecorded: &mut BTreeSet<(i64, Arc<str>)>,
    add: bool,
) {
    let (Some(d), true) = (&queue.detached, queue.persistent()) else {
        return;
    };
    let entry = (d.key(), queue.name.clone());
    let unrecorded_too = d.recorded_ms.is_none();
    if add {
        if unrecorded_too {
            unrecorded.insert(entry.clone());
        }
        detached.insert(entry);
    } else {
        unrecorded.remove(&entry);
        detached.remove(&entry);
    }
}

impl Queues {
    pub fn get(&self, name: &str) -> Option<&StoredQueue> {
        let &slot = self.by_name.get(name)?;
        self.slots[slot].as_ref()
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut StoredQueue> {
        let &slot = self.by_name.get(name)?;
        self.slots[slot].as_mut()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Add a queue whose name is not taken.
    pub fn insert(&mut self, queue: StoredQueue) {
        debug_assert!(!self.contains(&queue.name));
        if queue.kind != QueueKind::Ephemeral {
            self.persistent += 1;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.by_name.insert(queue.name.to_string(), slot);
        self.by_pattern
            .entry(queue.pattern.clone())
            .or_default()
            .insert(slot);
        index(&queue, &mut self.detached, &mut self.unrecorded, true);
        self.slots[slot] = Some(queue);
    }

    /// Set whether (and since when) `name` has no consumer: always through
    /// here, so that the sweep's index stays right.
    pub fn set_detached(&mut self, name: &str, detached: Option<Detached>) {
        let Some(&slot) = self.by_name.get(name) else {
            return;
        };
        let Some(queue) = self.slots[slot].as_mut() else {
            return;
        };
        index(queue, &mut self.detached, &mut self.unrecorded, false);
        queue.detached = detached;
        index(queue, &mut self.detached, &mut self.unrecorded, true);
    }

    /// The detached durable queues whose clock started at or before `key`
    /// (`unrecorded`: only those whose detach time is not written down).
    pub fn detached_since(&self, key: i64, unrecorded: bool) -> Vec<Arc<str>> {
        let index = if unrecorded {
            &self.unrecorded
        } else {
            &self.detached
        };
        index
            .iter()
            .take_while(|(k, _)| *k <= key)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Note that the manifest will have `name`'s detach time, if it has
    /// been detached for `after` at `now`. Whether it was.
    pub fn record_detach_time(
        &mut self,
        name: &str,
        now: Instant,
        now_ms: u64,
        after: Duration,
    ) -> bool {
        let Some(&slot) = self.by_name.get(name) else {
            return false;
        };
        let Some(queue) = self.slots[slot].as_mut() else {
            return false;
        };
        let Some(d) = queue.detached.as_mut() else {
            return false;
        };
        let age = d.age(now);
        // The index's keys are whole ms: a queue may be listed a moment early.
        if d.recorded_ms.is_some() || age < after {
            return false;
        }
        self.unrecorded.remove(&(d.key(), queue.name.clone()));
        d.recorded_ms = Some(now_ms.saturating_sub(age.as_millis() as u64));
        true
    }

    pub fn remove(&mut self, name: &str) -> Option<StoredQueue> {
        let slot = self.by_name.remove(name)?;
        let queue = self.slots[slot].take()?;
        self.free.push(slot);
        index(&queue, &mut self.detached, &mut self.unrecorded, false);
        if let Some(slots) = self.by_pattern.get_mut(&queue.pattern) {
            slots.remove(&slot);
            if slots.is_empty() {
                self.by_pattern.remove(&queue.pattern);
            }
        }
        if queue.kind != QueueKind::Ephemeral {
            self.persistent -= 1;
        }
        Some(queue)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoredQueue> {
        self.slots.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut StoredQueue> {
        self.slots.iter_mut().flatten()
    }

    /// Durable subscriptions and queue groups.
    pub fn persistent(&self) -> usize {
        self.persistent
    }

    /// Call `keep` for every queue that keeps a message stored at `lsn` on
    /// `topic`: its pattern matches, and it existed before `lsn`.
    pub fn for_each_keeper(
        &mut self,
        lsn: Lsn,
        topic: &str,
        mut keep: impl FnMut(&mut StoredQueue),
    ) {
        for (pattern, slots) in &self.by_pattern {
            if !topic::matches(pattern, topic) {
                continue;
            }
            for &slot in slots {
                if let Some(queue) = self.slots[slot].as_mut() {
                    if lsn >= queue.since {
                        keep(queue);
                    }
                }
            }
        }
    }
}
