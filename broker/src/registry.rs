//! The subscription index: which subscriptions match a published topic.
//!
//! Subscriptions live in one index behind a read-write lock, split into exact
//! topics (a hash lookup) and wildcard patterns (matched token by token).
//! Publishers rarely touch it: match results are cached per topic in
//! `fanout_shards` independently locked shards, and any change to the index
//! bumps a generation number that makes every cached result stale.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blipmq_protocol::topic;
use parking_lot::{Mutex, RwLock};

use crate::subscription::Subscription;

/// The subscriptions a topic reaches, shared by every publisher that asks.
pub type Matches = Arc<[Arc<Subscription>]>;

/// Cached results per shard before the shard is emptied and refilled; bounds
/// the memory that publishing to many distinct topics can take.
const CACHE_ENTRIES_PER_SHARD: usize = 4096;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the broker already holds {0} subscription patterns (queues.topic_capacity)")]
pub struct TooManyTopics(pub usize);

#[derive(Default)]
struct Index {
    exact: HashMap<String, Vec<Arc<Subscription>>>,
    wildcard: HashMap<String, Vec<Arc<Subscription>>>,
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
            .push(subscription);
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
        let Some(list) = map.get_mut(&subscription.pattern) else {
            return;
        };
        let before = list.len();
        list.retain(|s| s.id != subscription.id);
        let removed = before - list.len();
        if list.is_empty() {
            map.remove(&subscription.pattern);
        }
        index.subscriptions -= removed;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Every subscription whose pattern matches `topic`, with the generation
    /// the answer is valid for.
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
            let mut found: Vec<Arc<Subscription>> = Vec::new();
            if let Some(list) = index.exact.get(topic) {
                found.extend(list.iter().cloned());
            }
            for (pattern, list) in &index.wildcard {
                if topic::matches(pattern, topic) {
                    found.extend(list.iter().cloned());
                }
            }
            (generation, Matches::from(found))
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
            .flatten()
            .map(|s| s.depth())
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
        Arc::new(Subscription::new(
            id,
            pattern.to_string(),
            4,
            OverflowPolicy::DropNew,
            Outbox::new(),
            None,
        ))
    }

    fn ids(matches: &Matches) -> Vec<u64> {
        let mut ids: Vec<u64> = matches.iter().map(|s| s.id).collect();
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
}
