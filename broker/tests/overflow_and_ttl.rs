//! Overflow policies (drop_new, drop_oldest, block), message TTL and the
//! queue-depth gauge, proven against the real broker with subscribers that
//! stop reading their sockets.
//!
//! A subscriber stalls by not reading: once the loopback socket buffers
//! between the broker and it are full, its connection's writer is stuck in a
//! socket write and its subscription queues stop draining. The stall tests
//! run with `delivery.max_batch = 1` and `delivery.max_batch_bytes = 1`, so a
//! stuck writer holds at most one popped message in flight; everything else
//! is either in the socket buffers (already written) or still queued.
//!
//! Every payload carries its index in its first four bytes (little endian).

mod common;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_broker::{Config, OverflowPolicy};
use blipmq_protocol::{decode, Encoder, Frame, Publish};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// Payload size of the messages that fill the socket buffers.
const BIG: usize = 64 * 1024;
/// Large messages a flood publishes between checks for a stall.
const CHUNK: u32 = 16;
/// A flood that has not stalled the subscriber after this many large
/// messages (64 MiB, many times what the loopback buffers of a connection
/// that never reads hold: a few MiB) is a failure.
const MAX_FLOOD: u32 = 1024;
/// The index of the last message a spawned flood publishes.
const END: u32 = u32::MAX;

const DROPPED_DROP_NEW: &str =
    "blipmq_messages_dropped_total{reason=\"queue_full\",policy=\"drop_new\"}";
const DROPPED_DROP_OLDEST: &str =
    "blipmq_messages_dropped_total{reason=\"queue_full\",policy=\"drop_oldest\"}";
const DROPPED_TTL: &str = "blipmq_messages_dropped_total{reason=\"ttl\"}";
const DROPPED_GONE: &str = "blipmq_messages_dropped_total{reason=\"subscriber_gone\"}";
const QUEUE_DEPTH: &str = "blipmq_queue_depth";
const DELIVERED: &str = "blipmq_messages_delivered_total";

/// Policy and queue capacity as given, and batches of one message.
fn stalling(policy: OverflowPolicy, capacity: usize) -> impl FnOnce(&mut Config) {
    move |config| {
        config.queues.overflow_policy = policy;
        config.queues.subscriber_capacity = capacity;
        config.delivery.max_batch = 1;
        config.delivery.max_batch_bytes = 1;
    }
}

/// A payload of `len` bytes (at least 4) that starts with `index`.
fn indexed(index: u32, len: usize) -> Vec<u8> {
    let mut payload = vec![0x5a; len.max(4)];
    payload[..4].copy_from_slice(&index.to_le_bytes());
    payload
}

fn index_of(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[..4].try_into().expect("an indexed payload"))
}

fn assert_increasing(what: &str, indices: &[u32]) {
    if let Some(w) = indices.windows(2).find(|w| w[0] >= w[1]) {
        panic!("{what}: {} came after {}: {indices:?}", w[1], w[0]);
    }
}

/// Whether a connection's writer is stuck: messages are queued and no write
/// completes for a while (an unstalled writer moves a 64 KiB delivery in
/// microseconds). `delivered` is the delivery count seen earlier.
async fn stalled_since(broker: &TestBroker, delivered: u64) -> bool {
    if broker.metric(QUEUE_DEPTH).await == 0 || broker.metric(DELIVERED).await != delivered {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    broker.metric(QUEUE_DEPTH).await > 0 && broker.metric(DELIVERED).await == delivered
}

/// Wait until some connection's writer is stuck (see [`stalled_since`]).
async fn wait_until_stalled(broker: &TestBroker) {
    let deadline = Instant::now() + PATIENCE;
    while !stalled_since(broker, broker.metric(DELIVERED).await).await {
        assert!(
            Instant::now() < deadline,
            "the subscriber's writer never stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stall the subscriber(s) of `topic`, which do not read, under a policy
/// that never makes publishing wait: publish large indexed messages (with
/// `ttl_ms`) until their writer is stuck, then `capacity + 8` more so that
/// the queue is full. Returns how many were published (indices `0..n`).
async fn stall(
    broker: &TestBroker,
    publisher: &mut RawClient,
    topic: &str,
    ttl_ms: u32,
    capacity: usize,
) -> u32 {
    let mut sent = 0;
    loop {
        let delivered = broker.metric(DELIVERED).await;
        for _ in 0..CHUNK {
            publisher
                .publish_with(topic, &indexed(sent, BIG), ttl_ms)
                .await;
            sent += 1;
        }
        assert!(publisher.sync().await.is_empty());
        if stalled_since(broker, delivered).await {
            break;
        }
        assert!(sent < MAX_FLOOD, "{sent} messages did not stall the writer");
    }
    for _ in 0..capacity + 8 {
        publisher
            .publish_with(topic, &indexed(sent, BIG), ttl_ms)
            .await;
        sent += 1;
    }
    // The Pong proves every publish was handled (enqueued or dropped).
    assert!(publisher.sync().await.is_empty());
    sent
}

/// A flood of large indexed messages to `topic` from a task of its own, for a
/// publisher that is going to block: the broker stops reading its socket, so
/// its writes stall too. Once `stop` is set it publishes a last message with
/// index [`END`] and yields the client and how many came before that. Socket
/// errors end the flood quietly (the broker may close the connection).
fn spawn_flood(
    mut publisher: RawClient,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(RawClient, io::Result<u32>)> {
    tokio::spawn(async move {
        let mut encoder = Encoder::new();
        let mut sent = 0;
        loop {
            let done = stop.load(Ordering::Relaxed) || sent == MAX_FLOOD;
            let payload = indexed(if done { END } else { sent }, BIG);
            let frame = encoder.encode_to_bytes(&Frame::Publish(Publish {
                publish_id: 0,
                topic,
                payload: &payload,
                ttl_ms: 0,
                qos: 0,
                headers: vec![],
            }));
            if let Err(error) = publisher.stream.write_all(&frame).await {
                return (publisher, Err(error));
            }
            if done {
                return (publisher, Ok(sent));
            }
            sent += 1;
        }
    })
}

/// The next frame of a publisher that only ever gets a Pong.
async fn expect_pong(client: &mut RawClient, nonce: u64) {
    let body = client.recv_owned().await.expect("a Pong, not a close");
    match decode(&body).unwrap() {
        Frame::Pong { nonce: n } => assert_eq!(n, nonce),
        other => panic!("expected Pong, got {other:?}"),
    }
}

/// Read deliveries until every (topic, index) in `lasts` has arrived; then
/// check that nothing follows. Returns each topic's indices in arrival order.
async fn read_until(
    subscriber: &mut RawClient,
    lasts: &[(&str, u32)],
) -> BTreeMap<String, Vec<u32>> {
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut missing = lasts.len();
    while missing > 0 {
        let got = subscriber.expect_delivery().await;
        let index = index_of(&got.payload);
        if lasts.contains(&(got.topic.as_str(), index)) {
            missing -= 1;
        }
        by_topic.entry(got.topic).or_default().push(index);
    }
    subscriber.expect_nothing(Duration::from_millis(200)).await;
    by_topic
}

/// Overflow the queue (of 8) of a subscriber that does not read under a
/// dropping `policy`, then let it read. Checks what both dropping policies
/// share; returns how many were published and the indices received.
async fn overflow_a_stalled_subscriber(policy: OverflowPolicy) -> (u32, Vec<u32>) {
    const CAPACITY: usize = 8;
    let (dropped_sample, other_sample) = match policy {
        OverflowPolicy::DropNew => (DROPPED_DROP_NEW, DROPPED_DROP_OLDEST),
        OverflowPolicy::DropOldest => (DROPPED_DROP_OLDEST, DROPPED_DROP_NEW),
        OverflowPolicy::Block => unreachable!("block does not drop"),
    };
    let broker = TestBroker::start_with(stalling(policy, CAPACITY)).await;
    let mut subscriber = broker.client().await;
    let subscription_id = subscriber.subscribe("flood").await;
    // From here on the subscriber does not read until told.
    let mut publisher = broker.client().await;
    let n = stall(&broker, &mut publisher, "flood", 0, CAPACITY).await;
    let dropped = broker.metric(dropped_sample).await;
    assert!(
        dropped >= 8 && dropped < u64::from(n),
        "{dropped} of {n} dropped"
    );
    assert_eq!(broker.metric(other_sample).await, 0);
    assert_eq!(
        broker.metric(QUEUE_DEPTH).await,
        CAPACITY as u64,
        "the stalled subscriber's queue is full"
    );

    let expected = u64::from(n) - dropped;
    let mut received = Vec::new();
    for _ in 0..expected {
        let got = subscriber.expect_delivery().await;
        assert_eq!(got.subscription_id, subscription_id);
        assert_eq!(got.topic, "flood");
        assert_eq!(got.payload.len(), BIG);
        received.push(index_of(&got.payload));
    }
    subscriber.expect_nothing(Duration::from_millis(200)).await;
    assert_increasing("deliveries", &received);
    // Draining drops nothing more, and everything not dropped was delivered.
    assert_eq!(broker.metric(dropped_sample).await, dropped);
    assert_eq!(broker.metric(DROPPED_TTL).await, 0);
    broker.wait_for_metric(DELIVERED, expected).await;
    broker.wait_for_metric(QUEUE_DEPTH, 0).await;
    broker.stop().await;
    (n, received)
}

#[tokio::test]
async fn drop_new_discards_the_newest_messages_of_a_full_queue() {
    let (n, received) = overflow_a_stalled_subscriber(OverflowPolicy::DropNew).await;
    assert_eq!(received[0], 0, "the first message is delivered");
    assert!(
        !received.contains(&(n - 1)),
        "the last message published went into a full queue and is dropped"
    );
}

#[tokio::test]
async fn drop_oldest_evicts_the_oldest_messages_of_a_full_queue() {
    let (n, received) = overflow_a_stalled_subscriber(OverflowPolicy::DropOldest).await;
    assert_eq!(received[0], 0, "the first message is delivered");
    // The full queue ends up holding exactly the newest messages.
    let newest: Vec<u32> = (n - 8..n).collect();
    assert_eq!(received[received.len() - 8..], newest[..]);
}

/// What [`block_and_stall`] sets up.
struct Blocked {
    broker: TestBroker,
    /// The subscriber that does not read.
    stalled: RawClient,
    /// The flooding publisher, blocked on the stalled subscriber's queue.
    filler: JoinHandle<(RawClient, io::Result<u32>)>,
    stop_filler: Arc<AtomicBool>,
}

/// A `block` broker with queues of 4, a subscriber to `pattern` that does not
/// read, and a publisher flooding `fill_topic` that is now blocked on it.
async fn block_and_stall(pattern: &str, fill_topic: &'static str) -> Blocked {
    const CAPACITY: u64 = 4;
    let broker = TestBroker::start_with(stalling(OverflowPolicy::Block, CAPACITY as usize)).await;
    let mut stalled = broker.client().await;
    stalled.subscribe(pattern).await;
    let stop_filler = Arc::new(AtomicBool::new(false));
    let filler = spawn_flood(broker.client().await, fill_topic, stop_filler.clone());
    broker.wait_for_metric(QUEUE_DEPTH, CAPACITY).await;
    wait_until_stalled(&broker).await;
    // The queue stays full: the publisher's next message waits for room, and
    // so does everything it sends after (the last being its END message).
    stop_filler.store(true, Ordering::Relaxed);
    assert_eq!(broker.metric(QUEUE_DEPTH).await, CAPACITY);
    Blocked {
        broker,
        stalled,
        filler,
        stop_filler,
    }
}

/// Await a released flooding publisher; returns it and how many it sent
/// before its [`END`] message.
async fn released(filler: JoinHandle<(RawClient, io::Result<u32>)>) -> (RawClient, u32) {
    let (client, flooded) = tokio::time::timeout(PATIENCE, filler)
        .await
        .expect("the flooding publisher is released")
        .expect("flood task");
    (client, flooded.expect("the flood was written"))
}

#[tokio::test]
async fn block_stalls_only_the_blocked_publisher_and_loses_nothing() {
    const N: u32 = 32;
    let Blocked {
        broker,
        mut stalled,
        filler,
        ..
    } = block_and_stall("blk.>", "blk.fill").await;
    let mut bystander = broker.client().await;
    bystander.subscribe("free").await;

    let mut publisher = broker.client().await;
    for i in 0..N {
        publisher.publish("blk.main", &indexed(i, 1024)).await;
    }
    publisher.send(&Frame::Ping { nonce: 4242 }).await;
    // Its first publish cannot be queued, so its Ping is not even read.
    publisher.expect_nothing(Duration::from_millis(300)).await;

    // Meanwhile another publisher, to another topic, is not held up.
    let mut other = broker.client().await;
    let started = Instant::now();
    for i in 0..20 {
        other.publish("free", &indexed(i, 16)).await;
        assert_eq!(index_of(&bystander.expect_delivery().await.payload), i);
    }
    assert!(other.sync().await.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the other topic took {:?}",
        started.elapsed()
    );
    publisher.expect_nothing(Duration::from_millis(100)).await;

    // The subscriber reads: every message of both publishers, each in order.
    let by_topic = read_until(&mut stalled, &[("blk.main", N - 1), ("blk.fill", END)]).await;
    assert_eq!(by_topic.len(), 2, "{:?}", by_topic.keys());
    assert_eq!(by_topic["blk.main"], (0..N).collect::<Vec<_>>());
    // Both publishers are released.
    expect_pong(&mut publisher, 4242).await;
    let (mut filler, flooded) = released(filler).await;
    assert!(filler.sync().await.is_empty());
    let mut fill: Vec<u32> = (0..flooded).collect();
    fill.push(END);
    assert_eq!(by_topic["blk.fill"], fill);

    for sample in [
        DROPPED_DROP_NEW,
        DROPPED_DROP_OLDEST,
        DROPPED_TTL,
        DROPPED_GONE,
    ] {
        assert_eq!(broker.metric(sample).await, 0, "{sample}");
    }
    broker
        .wait_for_metric(DELIVERED, u64::from(flooded + 1 + N + 20))
        .await;
    broker.wait_for_metric(QUEUE_DEPTH, 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn block_releases_the_publisher_when_the_stalled_subscriber_disconnects() {
    let Blocked {
        broker,
        stalled,
        filler,
        ..
    } = block_and_stall("gone.>", "gone.fill").await;
    let mut publisher = broker.client().await;
    for i in 0..8 {
        publisher.publish("gone.main", &indexed(i, 1024)).await;
    }
    publisher.send(&Frame::Ping { nonce: 7 }).await;
    publisher.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(broker.metric(DROPPED_GONE).await, 0);

    drop(stalled);
    expect_pong(&mut publisher, 7).await;
    let (mut filler, _) = released(filler).await;
    assert!(filler.sync().await.is_empty());
    // Each of the two blocked publishers abandoned the message it was
    // waiting to queue.
    assert_eq!(broker.metric(DROPPED_GONE).await, 2);
    broker.wait_for_metric("blipmq_subscriptions", 0).await;
    broker.wait_for_metric(QUEUE_DEPTH, 0).await;
    // The publisher goes on working.
    publisher.publish("gone.main", b"to nobody").await;
    assert!(publisher.sync().await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn broker_shutdown_is_not_held_up_by_a_blocked_publisher() {
    let Blocked {
        broker,
        stalled: _stalled,
        filler,
        stop_filler,
    } = block_and_stall("shut.>", "shut.fill").await;
    let mut publisher = broker.client().await;
    publisher.publish("shut.main", b"wait").await;
    publisher.send(&Frame::Ping { nonce: 1 }).await;
    publisher.expect_nothing(Duration::from_millis(200)).await;
    // The harness asserts that the broker stops within PATIENCE.
    broker.stop().await;
    publisher.expect_closed().await;
    stop_filler.store(true, Ordering::Relaxed);
    // Its socket was closed under it: how its flood ended does not matter.
    let (_filler, _flooded) = tokio::time::timeout(PATIENCE, filler)
        .await
        .expect("the flooding publisher is released")
        .expect("flood task");
}

/// What a subscriber that asked for Dropped notices read until the broker
/// fell quiet: each delivery's index, and each notice's count with how many
/// deliveries came before it.
#[derive(Debug, Default)]
struct Heard {
    indices: Vec<u32>,
    notices: Vec<(usize, u64)>,
}

impl Heard {
    fn dropped(&self) -> u64 {
        self.notices.iter().map(|(_, count)| count).sum()
    }
}

async fn read_until_quiet(subscriber: &mut RawClient, subscription_id: u64) -> Heard {
    let mut heard = Heard::default();
    while let Some(body) = subscriber.recv_within(Duration::from_millis(300)).await {
        match decode(&body).unwrap() {
            Frame::Delivery(d) => {
                assert_eq!(d.route.subscription_id, subscription_id);
                heard.indices.push(index_of(d.payload));
            }
            Frame::Dropped(notice) => {
                assert_eq!(notice.subscription_id, subscription_id);
                assert!(notice.count > 0, "a notice of nothing");
                heard.notices.push((heard.indices.len(), notice.count));
            }
            other => panic!("expected a delivery or a notice, got {other:?}"),
        }
    }
    heard
}

/// QUEUE-6: a subscriber that asks is told exactly how many of its messages
/// a full queue discarded, under either dropping policy.
async fn overflow_a_subscriber_that_asks(policy: OverflowPolicy, dropped_sample: &str) {
    const CAPACITY: usize = 8;
    let broker = TestBroker::start_with(stalling(policy, CAPACITY)).await;
    overflow_and_hear(broker, CAPACITY, dropped_sample).await;
}

/// Stall a subscriber that asked for notices, overflow it (`extra` more
/// than its writer holds), and check that what it then reads accounts for
/// every message: each discard counted in `dropped_sample` is reported
/// exactly where the messages were missing.
async fn overflow_and_hear(broker: TestBroker, extra: usize, dropped_sample: &str) {
    let mut subscriber = broker.client_with_drop_notices().await;
    let subscription_id = subscriber.subscribe("flood").await;
    let mut publisher = broker.client().await;
    let n = stall(&broker, &mut publisher, "flood", 0, extra).await;
    let dropped = broker.metric(dropped_sample).await;
    assert!(dropped >= 8, "{dropped} of {n} dropped");

    let heard = read_until_quiet(&mut subscriber, subscription_id).await;
    assert_increasing("deliveries", &heard.indices);
    assert_eq!(heard.dropped(), dropped, "{:?}", heard.notices);
    assert_eq!(heard.indices.len() as u64 + heard.dropped(), u64::from(n));
    // Each notice stands exactly where the messages it counts were missing.
    let mut next = 0u32;
    for (position, index) in heard.indices.iter().chain([&n]).enumerate() {
        let reported: u64 = heard
            .notices
            .iter()
            .filter(|(at, _)| *at == position)
            .map(|(_, count)| count)
            .sum();
        assert_eq!(
            reported,
            u64::from(index - next),
            "before delivery {position}"
        );
        next = index + 1;
    }
    // The publisher, which did not ask, heard nothing of it.
    publisher.expect_nothing(Duration::from_millis(50)).await;
    broker.stop().await;
}

#[tokio::test]
async fn drop_new_tells_a_subscriber_that_asks_how_many_it_lost() {
    overflow_a_subscriber_that_asks(OverflowPolicy::DropNew, DROPPED_DROP_NEW).await;
}

#[tokio::test]
async fn drop_oldest_tells_a_subscriber_that_asks_how_many_it_lost() {
    overflow_a_subscriber_that_asks(OverflowPolicy::DropOldest, DROPPED_DROP_OLDEST).await;
}

#[tokio::test]
async fn a_full_memory_budget_tells_a_subscriber_that_asks_how_many_it_lost() {
    const DROPPED_BUDGET: &str = "blipmq_messages_dropped_total{reason=\"memory_budget\"}";
    // The queue has room for far more than the 4 MiB budget: every discard
    // is the budget's, and under drop_oldest they are the newest messages,
    // so each is reported with the message queued after it.
    let broker = TestBroker::start_with(|config| {
        stalling(OverflowPolicy::DropOldest, 100_000)(config);
        config.queues.max_memory_bytes = 4 * 1024 * 1024;
    })
    .await;
    overflow_and_hear(broker, 100, DROPPED_BUDGET).await;
}

#[tokio::test]
async fn expired_messages_are_reported_where_they_were_even_with_nothing_after_them() {
    const K: u32 = 20;
    let broker = TestBroker::start_with(stalling(OverflowPolicy::DropOldest, 128)).await;
    let mut subscriber = broker.client_with_drop_notices().await;
    let subscription_id = subscriber.subscribe("ttl.>").await;
    let mut publisher = broker.client().await;
    let floods = stall(&broker, &mut publisher, "ttl.fill", 0, 0).await;
    // K that expire, one that does not, K that expire: the last notice has
    // nothing after it.
    for i in 0..K {
        publisher
            .publish_with("ttl.short", &indexed(i, 16), 100)
            .await;
    }
    publisher.publish_with("ttl.keep", &indexed(K, 16), 0).await;
    for i in 0..K {
        publisher
            .publish_with("ttl.short", &indexed(K + 1 + i, 16), 100)
            .await;
    }
    assert!(publisher.sync().await.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;

    let heard = read_until_quiet(&mut subscriber, subscription_id).await;
    let delivered = heard.indices.len();
    assert_eq!(heard.indices[delivered - 1], K, "ttl.keep comes last");
    assert_eq!(delivered as u32, floods + 1);
    assert_eq!(
        heard.notices,
        vec![(delivered - 1, u64::from(K)), (delivered, u64::from(K))],
        "each run of expired messages is reported where it was"
    );
    broker.wait_for_metric(DROPPED_TTL, u64::from(2 * K)).await;
    broker.stop().await;
}

#[tokio::test]
async fn messages_expire_in_a_stalled_queue_and_the_rest_arrive() {
    const K: u32 = 20;
    // Room for every small message below on top of whatever floods remain.
    let broker = TestBroker::start_with(stalling(OverflowPolicy::DropOldest, 128)).await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("ttl.>").await;
    let mut publisher = broker.client().await;
    let floods = stall(&broker, &mut publisher, "ttl.fill", 0, 0).await;

    for i in 0..K {
        publisher
            .publish_with("ttl.short", &indexed(i, 16), 100)
            .await;
        publisher.publish_with("ttl.keep", &indexed(i, 16), 0).await;
        // Outlives the wait below: expiry is not applied early.
        publisher
            .publish_with("ttl.patient", &indexed(i, 16), 10_000)
            .await;
    }
    assert!(publisher.sync().await.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;

    let by_topic = read_until(
        &mut subscriber,
        &[("ttl.fill", floods - 1), ("ttl.patient", K - 1)],
    )
    .await;
    assert!(!by_topic.contains_key("ttl.short"), "{by_topic:?}");
    assert_eq!(by_topic["ttl.keep"], (0..K).collect::<Vec<_>>());
    assert_eq!(by_topic["ttl.patient"], (0..K).collect::<Vec<_>>());
    assert_increasing("ttl.fill", &by_topic["ttl.fill"]);
    broker.wait_for_metric(DROPPED_TTL, u64::from(K)).await;
    broker.wait_for_metric(QUEUE_DEPTH, 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn default_ttl_applies_to_messages_published_without_one() {
    const K: u32 = 20;
    let broker = TestBroker::start_with(|config| {
        stalling(OverflowPolicy::DropOldest, 128)(config);
        config.delivery.default_ttl_ms = 100;
    })
    .await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("dflt.>").await;
    let mut publisher = broker.client().await;
    let floods = stall(&broker, &mut publisher, "dflt.fill", 60_000, 0).await;

    for i in 0..K {
        publisher
            .publish_with("dflt.zero", &indexed(i, 16), 0)
            .await;
    }
    publisher
        .publish_with("dflt.long", &indexed(0, 16), 60_000)
        .await;
    assert!(publisher.sync().await.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;

    let by_topic = read_until(
        &mut subscriber,
        &[("dflt.fill", floods - 1), ("dflt.long", 0)],
    )
    .await;
    assert!(!by_topic.contains_key("dflt.zero"), "{by_topic:?}");
    assert_eq!(by_topic["dflt.long"], vec![0]);
    assert_increasing("dflt.fill", &by_topic["dflt.fill"]);
    broker.wait_for_metric(DROPPED_TTL, u64::from(K)).await;
    broker.stop().await;
}

#[tokio::test]
async fn messages_with_a_ttl_reach_a_subscriber_that_reads_promptly() {
    const N: u32 = 100;
    let broker = TestBroker::start_with(|config| config.delivery.default_ttl_ms = 1_000).await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("fresh").await;
    let mut publisher = broker.client().await;
    for i in 0..N {
        // Alternately an explicit TTL and the default one.
        let ttl = if i % 2 == 0 { 1_000 } else { 0 };
        publisher.publish_with("fresh", &indexed(i, 64), ttl).await;
        assert_eq!(index_of(&subscriber.expect_delivery().await.payload), i);
    }
    assert!(publisher.sync().await.is_empty());
    subscriber.expect_nothing(Duration::from_millis(100)).await;
    assert_eq!(broker.metric(DROPPED_TTL).await, 0);
    broker.wait_for_metric(DELIVERED, u64::from(N)).await;
    broker.stop().await;
}

#[tokio::test]
async fn queue_depth_gauge_counts_a_stalled_queue_and_returns_to_zero() {
    const CAPACITY: u64 = 64;
    const EXTRA: u32 = 10;
    let broker =
        TestBroker::start_with(stalling(OverflowPolicy::DropOldest, CAPACITY as usize)).await;
    assert_eq!(broker.metric(QUEUE_DEPTH).await, 0);
    let mut subscriber = broker.client().await;
    subscriber.subscribe("depth.fill").await;
    subscriber.subscribe("depth.count").await;
    let mut publisher = broker.client().await;
    let floods = stall(&broker, &mut publisher, "depth.fill", 0, CAPACITY as usize).await;
    assert_eq!(broker.metric(QUEUE_DEPTH).await, CAPACITY);

    // A second queue of the stalled connection adds exactly what it holds.
    for i in 0..EXTRA {
        publisher.publish("depth.count", &indexed(i, 16)).await;
    }
    assert!(publisher.sync().await.is_empty());
    assert_eq!(
        broker.metric(QUEUE_DEPTH).await,
        CAPACITY + u64::from(EXTRA)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        broker.metric(QUEUE_DEPTH).await,
        CAPACITY + u64::from(EXTRA),
        "nothing drains while the subscriber does not read"
    );

    let by_topic = read_until(
        &mut subscriber,
        &[("depth.fill", floods - 1), ("depth.count", EXTRA - 1)],
    )
    .await;
    assert_eq!(by_topic["depth.count"], (0..EXTRA).collect::<Vec<_>>());
    assert_increasing("depth.fill", &by_topic["depth.fill"]);
    broker.wait_for_metric(QUEUE_DEPTH, 0).await;
    broker.stop().await;
}
