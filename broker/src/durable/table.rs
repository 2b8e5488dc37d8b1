//! The stored queues, by name and by pattern.
//!
//! By pattern because a publish must find every queue that keeps it: testing
//! each distinct pattern once, rather than each queue, makes 500 durable
//! subscriptions on one pattern cost one match per publish (issue 22,
//! finding 7), and the lock the publish holds meanwhile shorter.

use std::collections::HashMap;

use blipmq_protocol::topic;

use super::queue::StoredQueue;
use super::QueueKind;
use crate::wal::Lsn;

#[derive(Default)]
pub(super) struct Queues {
    /// Queues by slot; a deleted queue's slot is reused.
    slots: Vec<Option<StoredQueue>>,
    free: Vec<usize>,
    by_name: HashMap<String, usize>,
    by_pattern: HashMap<String, Vec<usize>>,
    /// Durable subscriptions and queue groups (not ephemeral queues): what
    /// the manifest lists and `durable.max_queues` caps.
    persistent: usize,
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
            .push(slot);
        self.slots[slot] = Some(queue);
    }

    pub fn remove(&mut self, name: &str) -> Option<StoredQueue> {
        let slot = self.by_name.remove(name)?;
        let queue = self.slots[slot].take()?;
        self.free.push(slot);
        if let Some(slots) = self.by_pattern.get_mut(&queue.pattern) {
            slots.retain(|&s| s != slot);
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
