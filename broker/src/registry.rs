//! The subscription index: which subscriptions match a published topic.
//!
//! Subscriptions live in one index behind a read-write lock, split into exact
//! topics (a hash lookup) and wildcard patterns (matched token by token).
//! Publishers rarely touch it: match results are cached per topic in
//! `fanout_shards` independently locked shards, and any change to the index
//! bumps a generation number that makes every cached result stale.
//!
//! Subscriptions that name a queue group are kept as one [`QueueGroup`] per
//! (pattern, group name, QoS): a message reaches one member of the group
//! rather than every member, so the members share the work.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use blipmq_protocol::topic;
use parking_lot::{Mutex, RwLock};

use crate::subscription::Subscription;

/// What a topic reaches, shared by every publisher that asks.
pub type Matches = Arc<MatchSet>;

/// Cached results per shard before the shard is emptied and refilled; bounds
/// the memory that publishing to many distinct topics can take.
const CACHE_ENTRIES_PER_SHARD: usize = 4096;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the broker already holds {0} subscription patterns (queues.topic_capacity)")]
pub struct TooManyTopics(pub usize);

/// The subscriptions and queue groups one published topic reaches.
#[derive(Debug, Default)]
pub struct MatchSet {
    subscriptions: Vec<Arc<Subscription>>,
    groups: Vec<Arc<QueueGroup>>,
}

impl MatchSet {
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty() && self.groups.is_empty()
    }

    /// Receivers of one message: every matching subscription, then one
    /// member of each matching queue group (round robin, preferring a member
    /// with room in its queue).
    pub fn targets(&self) -> impl Iterator<Item = Cow<'_, Arc<Subscription>>> {
        self.subscriptions
            .iter()
            .map(Cow::Borrowed)
            .chain(self.groups.iter().filter_map(|g| g.pick().map(Cow::Owned)))
    }

    /// Receivers counted as in [`MatchSet::targets`] (for log lines).
    pub fn len(&self) -> usize {
        self.subscriptions.len() + self.groups.len()
    }
}

/// The members of one queue group on one pattern.
#[derive(Debug)]
pub struct QueueGroup {
    name: String,
    /// Whether the members are QoS 1 (a shared durable subscription): QoS 0
    /// and QoS 1 members of a same-named group never share messages.
    qos1: bool,
    members: RwLock<Vec<Arc<Subscription>>>,
    next: AtomicUsize,
}

impl QueueGroup {
    fn pick(&self) -> Option<Arc<Subscription>> {
        let members = self.members.read();
        let count = members.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let rotation = (0..count).map(|k| &members[(start + k) % count]);
        let chosen = rotation
            .clone()
            .find(|m| m.has_room() && !m.is_closed())
            .unwrap_or(&members[start]);
        Some(chosen.clone())
    }
}

#[derive(Default)]
struct Bucket {
    subscriptions: Vec<Arc<Subscription>>,
    groups: Vec<Arc<QueueGroup>>,
}

impl Bucket {
    fn is_empty(&self) -> bool {
        self.subscriptions.is_empty() && self.groups.is_empty()
    }

    fn add(&mut self, subscription: Arc<Subscription>) {
        let Some(name) = subscription.group.clone() else {
            self.subscriptions.push(subscription);
            return;
        };
        let qos1 = subscription.durable.is_some();
        match self
            .groups
            .iter()
            .find(|g| g.name == name && g.qos1 == qos1)
        {
            Some(group) => group.members.write().push(subscription),
            None => self.groups.push(Arc::new(QueueGroup {
                name,
                qos1,
                members: RwLock::new(vec![subscription]),
                next: AtomicUsize::new(0),
            })),
        }
    }

    /// Remove `subscription`; returns how many entries went.
    fn remove(&mut self, subscription: &Subscription) -> usize {
        let before = self.subscriptions.len();
        self.subscriptions.retain(|s| s.id != subscription.id);
        let mut removed = before - self.subscriptions.len();
        self.groups.retain(|group| {
            let mut members = group.members.write();
            let before = members.len();
            members.retain(|s| s.id != subscription.id);
            removed += before - members.len();
            !members.is_empty()
        });
        removed
    }

    fn extend_into(&self, found: &mut MatchSet) {
        found
            .subscriptions
            .extend(self.subscriptions.iter().cloned());
        found.groups.extend(self.groups.iter().cloned());
    }

    fn depth(&self) -> usize {
        let plain: usize = self.subscriptions.iter().map(|s| s.depth()).sum();
        let grouped: usize = self
            .groups
            .iter()
            .map(|g| g.members.read().iter().map(|s| s.depth()).sum::<usize>())
            .sum();
        plain + grouped
    }
}

#[derive(Default)]
struct Index {
    exact: HashMap<String, Bucket>,
    wildcard: HashMap<String, Bucket>,
    subscriptions: usize,
}

struct CachedMatches {
    generation: u64,
    matches: Matches,
}

pub struct Registry {
    index: RwLock<Index>,
    generation: AtomicU64,
    cache: Box<[Mutex<HashMap<String, CachedMatches>>]>,
    topic_capacity: usize,
}

impl Registry {
    pub fn new(topic_capacity: usize, shards: usize) -> Registry {
        Registry {
            index: RwLock::new(Index::default()),
            generation: AtomicU64::new(0),
            cache: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            topic_capacity,
        }
    }

    /// The current generation; a [`Matches`] obtained at generation `g` is
    /// exact for as long as `generation() == g`.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn insert(&self, subscription: Arc<Subscription>) -> Result<(), TooManyTopics> {
        let mut index = self.index.write();
        let distinct = index.exact.len() + index.wildcard.len();
        let map = if topic::is_wildcard(&subscription.pattern) {
            &mut index.wildcard
        } else {
            &mut index.exact
        };
        if !map.contains_key(&subscription.pattern) && distinct >= self.topic_capacity {
            return Err(TooManyTopics(self.topic_capacity));
        }
        map.entry(subscription.pattern.clone())
            .or_default()
            .add(subscription);
        index.subscriptions += 1;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn remove(&self, subscription: &Subscription) {
        let mut index = self.index.write();
        let map = if topic::is_wildcard(&subscription.pattern) {
            &mut index.wildcard
        } else {
            &mut index.exact
        };
        let Some(bucket) = map.get_mut(&subscription.pattern) else {
            return;
        };
        let removed = bucket.remove(subscription);
        if bucket.is_empty() {
            map.remove(&subscription.pattern);
        }
        index.subscriptions -= removed;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Every subscription and queue group whose pattern matches `topic`,
    /// with the generation the answer is valid for.
    pub fn matching(&self, topic: &str) -> (u64, Matches) {
        let shard = &self.cache[shard_of(topic, self.cache.len())];
        let generation = self.generation();
        if let Some(hit) = shard.lock().get(topic) {
            if hit.generation == generation {
                return (generation, hit.matches.clone());
            }
        }
        let (generation, matches) = {
            let index = self.index.read();
            // Read under the lock: no change can slip between computing the
            // answer and labelling it with its generation.
            let generation = self.generation();
            let mut found = MatchSet::default();
            if let Some(bucket) = index.exact.get(topic) {
                bucket.extend_into(&mut found);
            }
            for (pattern, bucket) in &index.wildcard {
                if topic::matches(pattern, topic) {
                    bucket.extend_into(&mut found);
                }
            }
            (generation, Arc::new(found))
        };
        let mut shard = shard.lock();
        if shard.len() >= CACHE_ENTRIES_PER_SHARD {
            shard.clear();
        }
        shard.insert(
            topic.to_string(),
            CachedMatches {
                generation,
                matches: matches.clone(),
            },
        );
        (generation, matches)
    }

    /// (subscriptions, distinct patterns, messages queued) for /metrics.
    pub fn gauges(&self) -> (u64, u64, u64) {
        let index = self.index.read();
        let depth: usize = index
            .exact
            .values()
            .chain(index.wildcard.values())
            .map(Bucket::depth)
            .sum();
        (
            index.subscriptions as u64,
            (index.exact.len() + index.wildcard.len()) as u64,
            depth as u64,
        )
    }
}

fn shard_of(topic: &str, shards: usize) -> usize {
    if shards == 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    topic.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OverflowPolicy;
    use crate::outbox::Outbox;

    fn sub(id: u64, pattern: &str) -> Arc<Subscription> {
        grouped(id, pattern, None)
    }

    fn grouped(id: u64, pattern: &str, group: Option<&str>) -> Arc<Subscription> {
        Arc::new(Subscription::new(
            id,
            pattern.to_string(),
            4,
            OverflowPolicy::DropNew,
            Outbox::new(),
            None,
            group.map(str::to_string),
        ))
    }

    fn ids(matches: &Matches) -> Vec<u64> {
        let mut ids: Vec<u64> = matches.targets().map(|s| s.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn exact_and_wildcard_matches_and_cache_invalidation() {
        let registry = Registry::new(100, 4);
        let a = sub(1, "a.b");
        registry.insert(a.clone()).unwrap();
        registry.insert(sub(2, "a.*")).unwrap();
        registry.insert(sub(3, "a.>")).unwrap();
        registry.insert(sub(4, "x.y")).unwrap();
        assert_eq!(ids(&registry.matching("a.b").1), vec![1, 2, 3]);
        // Cached answer, same result.
        assert_eq!(ids(&registry.matching("a.b").1), vec![1, 2, 3]);
        assert_eq!(ids(&registry.matching("a.b.c").1), vec![3]);
        assert_eq!(ids(&registry.matching("q").1), Vec::<u64>::new());
        registry.remove(&a);
        assert_eq!(ids(&registry.matching("a.b").1), vec![2, 3]);
        assert_eq!(registry.gauges().0, 3);
    }

    #[test]
    fn topic_capacity_counts_distinct_patterns() {
        let registry = Registry::new(2, 1);
        registry.insert(sub(1, "a")).unwrap();
        registry.insert(sub(2, "b.*")).unwrap();
        // Another subscriber to an existing pattern is fine.
        registry.insert(sub(3, "a")).unwrap();
        assert_eq!(registry.insert(sub(4, "c")), Err(TooManyTopics(2)));
        assert_eq!(registry.gauges().1, 2);
    }

    #[test]
    fn a_queue_group_gets_each_message_once_round_robin() {
        let registry = Registry::new(100, 1);
        registry.insert(sub(1, "jobs")).unwrap();
        for id in 2..=4 {
            registry
                .insert(grouped(id, "jobs", Some("workers")))
                .unwrap();
        }
        // Another group on the same pattern gets its own copy.
        registry
            .insert(grouped(5, "jobs", Some("auditors")))
            .unwrap();
        let (_, matches) = registry.matching("jobs");
        let mut picked = Vec::new();
        for _ in 0..6 {
            let ids = ids(&matches);
            assert_eq!(ids.len(), 3, "plain + one worker + one auditor: {ids:?}");
            assert!(ids.contains(&1) && ids.contains(&5));
            picked.extend(ids.into_iter().filter(|id| (2..=4).contains(id)));
        }
        for worker in 2..=4 {
            assert_eq!(picked.iter().filter(|&&id| id == worker).count(), 2);
        }
        assert_eq!(registry.gauges().0, 5);
    }

    #[test]
    fn group_members_leave_and_the_group_goes_with_the_last() {
        let registry = Registry::new(100, 1);
        let a = grouped(1, "jobs.*", Some("w"));
        let b = grouped(2, "jobs.*", Some("w"));
        registry.insert(a.clone()).unwrap();
        registry.insert(b.clone()).unwrap();
        registry.remove(&a);
        assert_eq!(ids(&registry.matching("jobs.x").1), vec![2]);
        registry.remove(&b);
        assert!(registry.matching("jobs.x").1.is_empty());
        assert_eq!(registry.gauges(), (0, 0, 0));
    }

    #[test]
    fn a_group_prefers_a_member_with_room() {
        let registry = Registry::new(100, 1);
        let full = grouped(1, "jobs", Some("w"));
        let idle = grouped(2, "jobs", Some("w"));
        registry.insert(full.clone()).unwrap();
        registry.insert(idle.clone()).unwrap();
        let metrics = crate::metrics::Metrics::default();
        let message = Arc::new(crate::subscription::QueuedMessage {
            delivery: blipmq_protocol::Encoder::new().shared_delivery("jobs", b"x", &[], 1, 0),
            expires_at: None,
            message_id: 1,
            trace_id: None,
            charge: Default::default(),
        });
        for _ in 0..4 {
            full.enqueue_now(message.clone(), &metrics);
        }
        let (_, matches) = registry.matching("jobs");
        for _ in 0..4 {
            assert_eq!(ids(&matches), vec![2]);
        }
    }
}
