//! The subscription index: which subscriptions match a published topic.
//!
//! Exact patterns live in a hash map by topic; wildcard patterns in a trie
//! over `.`-separated tokens (a `*` child per node, and a bucket for the
//! patterns that end in `>` there), so a publish costs the topic's levels
//! plus its matches, however many patterns there are. Both sit behind one
//! read-write lock. Inside a bucket subscriptions are kept by id, so
//! removing one costs the same whether its pattern has one subscriber or a
//! hundred thousand.
//!
//! Publishers rarely touch the index: match results are cached per topic in
//! `fanout_shards` independently locked shards. Each cached [`MatchSet`]
//! carries a flag that a change to the index sets when it may alter that
//! answer, and only then: a change to an exact pattern marks the one topic's
//! answer (found in its shard); a change at a trie node marks the answers
//! whose computation visited that node, which every node keeps a list of.
//! A publisher holding an answer checks that one flag to reuse it.
//!
//! Subscriptions that name a queue group are kept as one [`QueueGroup`] per
//! (pattern, group name, QoS): a message reaches one member of the group
//! rather than every member, so the members share the work.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use blipmq_protocol::topic;
use parking_lot::{Mutex, RwLock};

use crate::subscription::{Subscription, SubscriptionSet};

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
    /// Set once a change to the index may have made this answer wrong.
    stale: AtomicBool,
}

impl MatchSet {
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty() && self.groups.is_empty()
    }

    /// Whether this is still the exact answer for its topic. The flag is set
    /// before the change that clears it is acknowledged (before the
    /// `Subscribed` or `Unsubscribed` goes out), so a publish read after the
    /// acknowledgement never reuses an answer that misses it.
    #[inline]
    pub fn is_current(&self) -> bool {
        !self.stale.load(Ordering::Acquire)
    }

    fn invalidate(&self) {
        self.stale.store(true, Ordering::Release);
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
    members: RwLock<SubscriptionSet>,
    next: AtomicUsize,
}

impl QueueGroup {
    fn pick(&self) -> Option<Arc<Subscription>> {
        let members = self.members.read();
        let members = members.as_slice();
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

/// A queue group's key within its pattern: the name and whether it is QoS 1
/// (QoS 0 and QoS 1 members of a same-named group never share messages).
type GroupKey = (String, bool);

fn group_key(subscription: &Subscription) -> Option<GroupKey> {
    let name = subscription.group.clone()?;
    Some((name, subscription.durable.is_some()))
}

/// The subscriptions of one pattern.
#[derive(Default)]
struct Bucket {
    subscriptions: SubscriptionSet,
    groups: HashMap<GroupKey, Arc<QueueGroup>>,
}

impl Bucket {
    fn is_empty(&self) -> bool {
        self.subscriptions.is_empty() && self.groups.is_empty()
    }

    fn add(&mut self, subscription: Arc<Subscription>) {
        let Some(key) = group_key(&subscription) else {
            self.subscriptions.insert(subscription);
            return;
        };
        let group = self.groups.entry(key).or_insert_with(|| {
            Arc::new(QueueGroup {
                members: RwLock::default(),
                next: AtomicUsize::new(0),
            })
        });
        group.members.write().insert(subscription);
    }

    /// Remove `subscription`; whether it was here.
    fn remove(&mut self, subscription: &Subscription) -> bool {
        let Some(key) = group_key(subscription) else {
            return self.subscriptions.remove(subscription.id).is_some();
        };
        let Some(group) = self.groups.get(&key) else {
            return false;
        };
        let (removed, emptied) = {
            let mut members = group.members.write();
            let removed = members.remove(subscription.id).is_some();
            (removed, members.is_empty())
        };
        if emptied {
            self.groups.remove(&key);
        }
        removed
    }

    fn extend_into(&self, found: &mut MatchSet) {
        found
            .subscriptions
            .extend(self.subscriptions.as_slice().iter().cloned());
        found.groups.extend(self.groups.values().cloned());
    }

    fn depth(&self) -> usize {
        let plain: usize = self
            .subscriptions
            .as_slice()
            .iter()
            .map(|s| s.depth())
            .sum();
        let grouped: usize = self
            .groups
            .values()
            .map(|g| {
                let members = g.members.read();
                members.as_slice().iter().map(|s| s.depth()).sum::<usize>()
            })
            .sum();
        plain + grouped
    }
}

/// Cached answers that a change at one trie node may make wrong.
#[derive(Default)]
struct Dependents {
    /// Every answer computed through this node: a change to its buckets or
    /// a new `*` child may alter any of them.
    answers: Vec<Weak<MatchSet>>,
    /// Those whose topic went on with a token this node had no literal
    /// child for, by that token's [`token_key`]: a new child alters only
    /// those (and, should two tokens share a key, the other's too).
    missing: HashMap<u64, Vec<Weak<MatchSet>>, TokenKeyHasher>,
    /// Entries in both.
    listed: usize,
    /// When `listed` reaches this, answers that are gone or already stale
    /// are cleared out (it is then twice what was left, so the clearing
    /// costs O(1) per answer listed).
    prune_at: usize,
}

impl Dependents {
    fn add_missing(&mut self, token: &str, answers: impl IntoIterator<Item = Weak<MatchSet>>) {
        let listed = self.missing.entry(token_key(token)).or_default();
        let before = listed.len();
        listed.extend(answers);
        self.listed += listed.len() - before;
    }
}

/// A token's key in [`Dependents::missing`]: FNV-1a, cheap for the short
/// tokens of topics (computed once per trie node on every cache miss).
fn token_key(token: &str) -> u64 {
    token.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The keys of [`Dependents::missing`] are hashes already.
#[derive(Default, Clone, Copy)]
struct TokenKeyHasher(u64);

impl std::hash::BuildHasher for TokenKeyHasher {
    type Hasher = TokenKeyHasher;
    fn build_hasher(&self) -> TokenKeyHasher {
        TokenKeyHasher(0)
    }
}

impl Hasher for TokenKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

fn still_needed(answer: &Weak<MatchSet>) -> bool {
    answer.upgrade().is_some_and(|a| a.is_current())
}

/// One level of the wildcard trie: the patterns whose tokens so far lead
/// here.
#[derive(Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Patterns that end at this node.
    here: Bucket,
    /// Patterns that end in `>` right after this node.
    tail: Bucket,
    /// Answers computed through this node: a change to its buckets or to
    /// which children it has marks them stale. Locked on its own, since
    /// publishers add to it under the index's read lock.
    dependents: Mutex<Dependents>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }

    fn bucket_mut(&mut self, tail: bool) -> &mut Bucket {
        if tail {
            &mut self.tail
        } else {
            &mut self.here
        }
    }

    fn find(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self;
        for token in path {
            node = match *token {
                "*" => node.star.as_deref()?,
                literal => node.literal.get(literal)?,
            };
        }
        Some(node)
    }

    /// The node at `path`, made along with the nodes before it if missing.
    /// A node that gains a child changes the answers that found no child
    /// there: for `*` every answer through the node, for a literal those
    /// whose topic had that token next.
    fn descend_creating(&mut self, path: &[&str]) -> &mut Node {
        let mut node = self;
        for token in path {
            node = match *token {
                "*" => {
                    if node.star.is_none() {
                        node.invalidate_dependents();
                    }
                    node.star.get_or_insert_with(Box::default)
                }
                literal => {
                    if !node.literal.contains_key(literal) {
                        node.invalidate_missing(literal);
                    }
                    node.literal.entry(literal.into()).or_default()
                }
            };
        }
        node
    }

    /// Remove `subscription` from the bucket at `path` and the nodes left
    /// empty; (whether it was there, whether its bucket is now empty).
    fn remove(&mut self, path: &[&str], tail: bool, subscription: &Subscription) -> (bool, bool) {
        let Some((token, rest)) = path.split_first() else {
            let bucket = self.bucket_mut(tail);
            let removed = bucket.remove(subscription);
            let emptied = removed && bucket.is_empty();
            if removed {
                self.invalidate_dependents();
            }
            return (removed, emptied);
        };
        // An emptied child is dropped without marking anything: an empty
        // subtree added nothing to any answer. The answers computed through
        // it must still learn when it comes back: for `*` this node's own
        // list has them all; for a literal they move to its `missing`.
        if *token == "*" {
            let Some(child) = self.star.as_mut() else {
                return (false, false);
            };
            let outcome = child.remove(rest, tail, subscription);
            if child.is_empty() {
                self.star = None;
            }
            outcome
        } else {
            let Some(child) = self.literal.get_mut(*token) else {
                return (false, false);
            };
            let outcome = child.remove(rest, tail, subscription);
            if child.is_empty() {
                if let Some(child) = self.literal.remove(*token) {
                    let through = std::mem::take(&mut child.dependents.lock().answers);
                    self.dependents.lock().add_missing(token, through);
                }
            }
            outcome
        }
    }

    /// Add the wildcard matches of the topic `tokens` to `found`, and every
    /// node visited to `visited` (with the next token, when the node had no
    /// literal child for it). `system`: the topic is a `$` topic, which
    /// wildcards in the first position do not reach (TOPIC rules).
    fn collect<'a, 't>(
        &'a self,
        mut tokens: std::str::Split<'t, char>,
        system: bool,
        found: &mut MatchSet,
        visited: &mut Vec<(&'a Node, Option<&'t str>)>,
    ) {
        let Some(token) = tokens.next() else {
            visited.push((self, None));
            self.here.extend_into(found);
            return;
        };
        if !system {
            self.tail.extend_into(found);
            if let Some(star) = &self.star {
                star.collect(tokens.clone(), false, found, visited);
            }
        }
        match self.literal.get(token) {
            Some(child) => {
                visited.push((self, None));
                child.collect(tokens, false, found, visited);
            }
            None => visited.push((self, Some(token))),
        }
    }

    fn depend(&self, answer: &Matches, missing: Option<&str>) {
        let mut dependents = self.dependents.lock();
        if dependents.listed >= dependents.prune_at {
            dependents.answers.retain(still_needed);
            dependents.missing.retain(|_, answers| {
                answers.retain(still_needed);
                !answers.is_empty()
            });
            let listed =
                dependents.answers.len() + dependents.missing.values().map(Vec::len).sum::<usize>();
            dependents.listed = listed;
            dependents.prune_at = (2 * listed).max(16);
        }
        dependents.answers.push(Arc::downgrade(answer));
        dependents.listed += 1;
        if let Some(token) = missing {
            dependents.add_missing(token, [Arc::downgrade(answer)]);
        }
    }

    /// Mark every answer computed through this node.
    fn invalidate_dependents(&self) {
        let mut dependents = self.dependents.lock();
        for answer in dependents.answers.drain(..) {
            if let Some(answer) = answer.upgrade() {
                answer.invalidate();
            }
        }
        // Each of these is among the answers just marked.
        dependents.missing.clear();
        dependents.listed = 0;
    }

    /// Mark the answers that found no literal child `token` here.
    fn invalidate_missing(&self, token: &str) {
        let mut dependents = self.dependents.lock();
        let Some(answers) = dependents.missing.remove(&token_key(token)) else {
            return;
        };
        for answer in answers {
            if let Some(answer) = answer.upgrade() {
                answer.invalidate();
            }
        }
    }

    fn depth(&self) -> usize {
        self.here.depth()
            + self.tail.depth()
            + self.star.as_ref().map_or(0, |s| s.depth())
            + self.literal.values().map(Node::depth).sum::<usize>()
    }
}

/// A wildcard pattern as a trie path: its tokens, without a final `>`, and
/// whether there was one.
fn trie_path(pattern: &str) -> (Vec<&str>, bool) {
    let mut tokens: Vec<&str> = pattern.split('.').collect();
    let tail = tokens.last() == Some(&">");
    if tail {
        tokens.pop();
    }
    (tokens, tail)
}

#[derive(Default)]
struct Index {
    exact: HashMap<String, Bucket>,
    wildcard: Node,
    /// Non-empty buckets in `wildcard`: its distinct patterns.
    wildcard_patterns: usize,
    subscriptions: usize,
}

impl Registry {
    /// Subscriptions held, over every connection (LIMIT-12).
    pub fn subscription_count(&self) -> usize {
        self.index.read().subscriptions
    }
}

impl Index {
    fn distinct_patterns(&self) -> usize {
        self.exact.len() + self.wildcard_patterns
    }
}

type Shard = Mutex<HashMap<String, Matches>>;

pub struct Registry {
    index: RwLock<Index>,
    /// Cached answers by topic. Lock order: the index, then a shard.
    cache: Box<[Shard]>,
    topic_capacity: usize,
}

impl Registry {
    pub fn new(topic_capacity: usize, shards: usize) -> Registry {
        Registry {
            index: RwLock::new(Index::default()),
            cache: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            topic_capacity,
        }
    }

    fn shard(&self, topic: &str) -> &Shard {
        &self.cache[shard_of(topic, self.cache.len())]
    }

    /// Mark the cached answer for `topic` stale. Called under the index's
    /// write lock; answers are cached under its read lock, so none can be
    /// on its way into the shard meanwhile.
    fn invalidate_topic(&self, topic: &str) {
        if let Some(answer) = self.shard(topic).lock().remove(topic) {
            answer.invalidate();
        }
    }

    pub fn insert(&self, subscription: Arc<Subscription>) -> Result<(), TooManyTopics> {
        let mut index = self.index.write();
        let distinct = index.distinct_patterns();
        let pattern = subscription.pattern.as_str();
        if topic::is_wildcard(pattern) {
            let (path, tail) = trie_path(pattern);
            let new_pattern = index.wildcard.find(&path).is_none_or(|node| {
                if tail {
                    node.tail.is_empty()
                } else {
                    node.here.is_empty()
                }
            });
            if new_pattern && distinct >= self.topic_capacity {
                return Err(TooManyTopics(self.topic_capacity));
            }
            let node = index.wildcard.descend_creating(&path);
            node.bucket_mut(tail).add(subscription.clone());
            node.invalidate_dependents();
            if new_pattern {
                index.wildcard_patterns += 1;
            }
        } else {
            match index.exact.get_mut(pattern) {
                Some(bucket) => bucket.add(subscription.clone()),
                None if distinct >= self.topic_capacity => {
                    return Err(TooManyTopics(self.topic_capacity));
                }
                None => {
                    let mut bucket = Bucket::default();
                    bucket.add(subscription.clone());
                    index.exact.insert(pattern.to_string(), bucket);
                }
            }
            self.invalidate_topic(pattern);
        }
        index.subscriptions += 1;
        Ok(())
    }

    pub fn remove(&self, subscription: &Subscription) {
        self.remove_all([subscription]);
    }

    /// Remove several subscriptions under one hold of the write lock; each
    /// costs the same however many others share its pattern.
    pub fn remove_all<'a>(&self, subscriptions: impl IntoIterator<Item = &'a Subscription>) {
        let mut index = self.index.write();
        for subscription in subscriptions {
            let pattern = subscription.pattern.as_str();
            if topic::is_wildcard(pattern) {
                let (path, tail) = trie_path(pattern);
                let (removed, emptied) = index.wildcard.remove(&path, tail, subscription);
                index.subscriptions -= usize::from(removed);
                index.wildcard_patterns -= usize::from(emptied);
            } else {
                let Some(bucket) = index.exact.get_mut(pattern) else {
                    continue;
                };
                let removed = bucket.remove(subscription);
                if bucket.is_empty() {
                    index.exact.remove(pattern);
                }
                if removed {
                    index.subscriptions -= 1;
                    self.invalidate_topic(pattern);
                }
            }
        }
    }

    /// Every subscription and queue group whose pattern matches `topic`;
    /// exact for as long as [`MatchSet::is_current`].
    pub fn matching(&self, topic: &str) -> Matches {
        let shard = self.shard(topic);
        if let Some(hit) = shard.lock().get(topic) {
            if hit.is_current() {
                return hit.clone();
            }
        }
        let index = self.index.read();
        let mut found = MatchSet::default();
        if let Some(bucket) = index.exact.get(topic) {
            bucket.extend_into(&mut found);
        }
        let mut visited = Vec::with_capacity(8);
        let system = topic.starts_with('$');
        index
            .wildcard
            .collect(topic.split('.'), system, &mut found, &mut visited);
        let matches = Arc::new(found);
        for (node, missing) in visited {
            node.depend(&matches, missing);
        }
        // Still under the read lock, so that a change to the exact pattern
        // `topic` (under the write lock) finds this answer in the shard.
        let mut shard = shard.lock();
        if shard.len() >= CACHE_ENTRIES_PER_SHARD {
            // Answers dropped from the shard are no longer found by exact
            // changes: mark them, so that no publisher keeps using one.
            for evicted in shard.values() {
                evicted.invalidate();
            }
            shard.clear();
        }
        if let Some(replaced) = shard.insert(topic.to_string(), matches.clone()) {
            replaced.invalidate();
        }
        matches
    }

    /// (subscriptions, distinct patterns, messages queued) for /metrics.
    pub fn gauges(&self) -> (u64, u64, u64) {
        let index = self.index.read();
        let depth = index.exact.values().map(Bucket::depth).sum::<usize>() + index.wildcard.depth();
        (
            index.subscriptions as u64,
            index.distinct_patterns() as u64,
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
        assert_eq!(ids(&registry.matching("a.b")), vec![1, 2, 3]);
        // Cached answer, same result.
        assert_eq!(ids(&registry.matching("a.b")), vec![1, 2, 3]);
        assert_eq!(ids(&registry.matching("a.b.c")), vec![3]);
        assert_eq!(ids(&registry.matching("q")), Vec::<u64>::new());
        registry.remove(&a);
        assert_eq!(ids(&registry.matching("a.b")), vec![2, 3]);
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
        let matches = registry.matching("jobs");
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
        assert_eq!(ids(&registry.matching("jobs.x")), vec![2]);
        registry.remove(&b);
        assert!(registry.matching("jobs.x").is_empty());
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
            published_at: std::time::Instant::now(),
            expires_at: None,
            message_id: 1,
            trace_id: None,
            charge: Default::default(),
        });
        for _ in 0..4 {
            full.enqueue_now(message.clone(), &metrics);
        }
        let matches = registry.matching("jobs");
        for _ in 0..4 {
            assert_eq!(ids(&matches), vec![2]);
        }
    }

    /// Ids of the non-group subscriptions (groups pick one member, so tests
    /// of which patterns match use plain subscriptions).
    fn plain_ids(matches: &Matches) -> Vec<u64> {
        let mut ids: Vec<u64> = matches.subscriptions.iter().map(|s| s.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_trie_matches_as_the_topic_rules_say() {
        let registry = Registry::new(100, 2);
        let patterns = [
            "a", "a.b", "*", "*.b", "a.*", "a.>", ">", "*.*", "a.*.c", "*.b.>", "$dlq.*", "$dlq.>",
        ];
        for (id, pattern) in patterns.iter().enumerate() {
            registry.insert(sub(id as u64, pattern)).unwrap();
        }
        for topic in [
            "a",
            "b",
            "a.b",
            "a.c",
            "x.b",
            "a.b.c",
            "a.x.c",
            "x.b.y.z",
            "$dlq.jobs",
            "$dlq",
            "$x.b",
        ] {
            let expected: Vec<u64> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| topic::matches(p, topic))
                .map(|(id, _)| id as u64)
                .collect();
            assert_eq!(plain_ids(&registry.matching(topic)), expected, "{topic}");
        }
        // Wildcards in the first position skip `$` topics.
        assert_eq!(plain_ids(&registry.matching("$dlq.jobs")), vec![10, 11]);
        assert_eq!(registry.gauges().1, patterns.len() as u64);
    }

    #[test]
    fn removal_prunes_the_trie_and_counts_patterns() {
        let registry = Registry::new(100, 1);
        let deep = sub(1, "a.*.c.>");
        let shallow = sub(2, "a.*");
        let twin = sub(3, "a.*");
        for s in [&deep, &shallow, &twin] {
            registry.insert(s.clone()).unwrap();
        }
        assert_eq!(registry.gauges().1, 2);
        registry.remove(&deep);
        assert_eq!(plain_ids(&registry.matching("a.b.c.d")), Vec::<u64>::new());
        assert_eq!(plain_ids(&registry.matching("a.b")), vec![2, 3]);
        // Removing twice is harmless.
        registry.remove(&deep);
        registry.remove_all([&*shallow, &*twin]);
        assert_eq!(registry.gauges(), (0, 0, 0));
        let index = registry.index.read();
        assert!(
            index.wildcard.is_empty(),
            "every node went with its patterns"
        );
    }

    #[test]
    fn groups_in_the_trie_and_exact_map_keep_their_semantics() {
        let registry = Registry::new(100, 1);
        // QoS 0 and QoS 1 members of a same-named group are separate groups.
        let qos0 = grouped(1, "jobs.*", Some("w"));
        let qos1 = Arc::new(Subscription::new(
            2,
            "jobs.*".into(),
            4,
            OverflowPolicy::DropNew,
            Outbox::new(),
            Some("w".into()),
            Some("w".into()),
        ));
        registry.insert(qos0.clone()).unwrap();
        registry.insert(qos1.clone()).unwrap();
        registry.insert(grouped(3, "jobs.x", Some("w"))).unwrap();
        let matches = registry.matching("jobs.x");
        assert_eq!(matches.len(), 3, "three groups, one member each");
        assert_eq!(ids(&matches), vec![1, 2, 3]);
        registry.remove(&qos0);
        assert_eq!(ids(&registry.matching("jobs.x")), vec![2, 3]);
    }

    /// An answer handed out earlier, and whether it is still current.
    fn current(registry: &Registry, topic: &str) -> (Matches, bool) {
        let answer = registry.matching(topic);
        let current = answer.is_current();
        (answer, current)
    }

    #[test]
    fn a_change_marks_only_the_answers_it_can_alter() {
        let registry = Registry::new(100, 4);
        registry.insert(sub(1, "orders.*")).unwrap();
        registry.insert(sub(2, "metrics.cpu")).unwrap();
        let (orders, _) = current(&registry, "orders.eu");
        let (cpu, _) = current(&registry, "metrics.cpu");
        let (mem, _) = current(&registry, "metrics.mem");
        let (deep, _) = current(&registry, "orders.eu.x");

        // Another subscriber to an exact topic: only that topic's answer.
        registry.insert(sub(3, "metrics.cpu")).unwrap();
        assert!(!cpu.is_current());
        assert!(orders.is_current() && mem.is_current() && deep.is_current());
        assert_eq!(plain_ids(&registry.matching("metrics.cpu")), vec![2, 3]);

        // Another subscriber to an existing wildcard pattern: the topics
        // that reach its node, not the others.
        let (cpu, _) = current(&registry, "metrics.cpu");
        registry.insert(sub(4, "orders.*")).unwrap();
        assert!(!orders.is_current());
        assert!(cpu.is_current() && mem.is_current());
        assert_eq!(plain_ids(&registry.matching("orders.eu")), vec![1, 4]);

        // A new wildcard pattern under `metrics`: the `metrics` topics, not
        // `orders`.
        let (orders, _) = current(&registry, "orders.eu");
        registry.insert(sub(5, "metrics.*")).unwrap();
        assert!(!mem.is_current() && !cpu.is_current());
        assert!(orders.is_current());
        assert_eq!(plain_ids(&registry.matching("metrics.mem")), vec![5]);

        // Unsubscribing marks as subscribing does.
        let (mem, _) = current(&registry, "metrics.mem");
        let victim = sub(6, "metrics.mem");
        registry.insert(victim.clone()).unwrap();
        let (mem_again, _) = current(&registry, "metrics.mem");
        assert!(!mem.is_current());
        registry.remove(&victim);
        assert!(!mem_again.is_current());
        assert!(orders.is_current());
        assert_eq!(plain_ids(&registry.matching("metrics.mem")), vec![5]);
    }

    #[test]
    fn an_answer_through_a_pruned_node_sees_the_node_come_back() {
        let registry = Registry::new(100, 1);
        let deep = sub(1, "x.*.z");
        registry.insert(deep.clone()).unwrap();
        // Through `x` and its `*`, matching nothing.
        let (answer, _) = current(&registry, "x.q");
        assert!(answer.is_empty());
        // The last pattern under `x` goes and its nodes with it; the answer
        // is still right.
        registry.remove(&deep);
        assert!(answer.is_current());
        // A pattern under `x` again.
        registry.insert(sub(2, "x.>")).unwrap();
        assert!(!answer.is_current(), "the answer misses x.>");
        assert_eq!(plain_ids(&registry.matching("x.q")), vec![2]);
    }

    #[test]
    fn an_answer_evicted_from_its_shard_is_no_longer_current() {
        let registry = Registry::new(100, 1);
        let (first, _) = current(&registry, "t.0");
        for n in 1..=CACHE_ENTRIES_PER_SHARD {
            registry.matching(&format!("t.{n}"));
        }
        // Evicted: an exact change would not find it any more.
        assert!(!first.is_current());
        registry.insert(sub(1, "t.0")).unwrap();
        assert_eq!(plain_ids(&registry.matching("t.0")), vec![1]);
    }

    #[test]
    fn dependents_lists_stay_bounded() {
        let registry = Registry::new(100, 1);
        registry.insert(sub(1, "x.*")).unwrap();
        for n in 0..20 * CACHE_ENTRIES_PER_SHARD {
            registry.matching(&format!("t.{n}"));
        }
        let index = registry.index.read();
        let root = index.wildcard.dependents.lock().listed;
        assert!(
            root <= 4 * CACHE_ENTRIES_PER_SHARD + 16,
            "{root} answers listed at the root"
        );
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        // Few tokens and short topics, so that patterns share trie nodes,
        // nodes empty and come back, and topics are published again.
        const TOKENS: [&str; 3] = ["a", "b", "$s"];

        fn topic_strategy() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(&TOKENS[..]), 1..4)
                .prop_map(|tokens| tokens.join("."))
        }

        fn pattern_strategy() -> impl Strategy<Value = String> {
            let token = prop::sample::select(&["a", "b", "$s", "*", "*", ">"][..]);
            prop::collection::vec(token, 1..4).prop_map(|tokens| {
                // `>` only last, as validate_pattern demands.
                let mut out: Vec<&str> = Vec::new();
                for t in tokens {
                    out.push(t);
                    if t == ">" {
                        break;
                    }
                }
                out.join(".")
            })
        }

        #[derive(Debug, Clone)]
        enum Op {
            Subscribe(String),
            /// Unsubscribe the n-th live subscription (modulo their number).
            Unsubscribe(usize),
            Publish(String),
        }

        fn op_strategy() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => pattern_strategy().prop_map(Op::Subscribe),
                3 => any::<usize>().prop_map(Op::Unsubscribe),
                4 => topic_strategy().prop_map(Op::Publish),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The trie, its cache and the answers publishers keep agree
            /// with `topic::matches` over every pattern, after any sequence
            /// of subscribes and unsubscribes: after each change, every
            /// answer handed out earlier is either marked stale or still
            /// exact.
            #[test]
            fn the_index_agrees_with_brute_force(ops in prop::collection::vec(op_strategy(), 1..80)) {
                let registry = Registry::new(1000, 2);
                let mut live: Vec<Arc<Subscription>> = Vec::new();
                let mut kept: Vec<(String, Matches)> = Vec::new();
                let mut next_id = 0;
                let expected = |live: &[Arc<Subscription>], topic: &str| {
                    let mut ids: Vec<u64> = live
                        .iter()
                        .filter(|s| topic::matches(&s.pattern, topic))
                        .map(|s| s.id)
                        .collect();
                    ids.sort();
                    ids
                };
                for op in ops {
                    match op {
                        Op::Subscribe(pattern) => {
                            prop_assert!(topic::validate_pattern(&pattern).is_ok(), "{}", pattern);
                            next_id += 1;
                            let s = sub(next_id, &pattern);
                            registry.insert(s.clone()).unwrap();
                            live.push(s);
                        }
                        Op::Unsubscribe(n) if !live.is_empty() => {
                            let s = live.swap_remove(n % live.len());
                            registry.remove(&s);
                        }
                        Op::Unsubscribe(_) => {}
                        Op::Publish(topic) => {
                            let answer = registry.matching(&topic);
                            prop_assert_eq!(plain_ids(&answer), expected(&live, &topic), "{}", &topic);
                            kept.push((topic, answer));
                            continue;
                        }
                    }
                    kept.retain(|(_, answer)| answer.is_current());
                    for (topic, answer) in &kept {
                        prop_assert_eq!(
                            plain_ids(answer),
                            expected(&live, topic),
                            "a kept answer for {} is current but wrong", topic
                        );
                    }
                }
                prop_assert_eq!(registry.gauges().0, live.len() as u64);
                let distinct: std::collections::HashSet<&str> =
                    live.iter().map(|s| s.pattern.as_str()).collect();
                prop_assert_eq!(registry.gauges().1, distinct.len() as u64);
            }
        }
    }
}
