//! What messages may take of the broker's memory (issue 23, finding 3):
//! subscriber queues bounded by bytes as well as by count
//! (`queues.subscriber_capacity_bytes`, LIMIT-4), and one budget for every
//! message held (`queues.max_memory_bytes`, LIMIT-3) that discards QoS 0
//! messages, holds back `block` publishers and refuses QoS 1 publishes when
//! it is full. Subscribers stall by not reading their sockets, as in
//! `overflow_and_ttl.rs`.

mod common;

use std::time::{Duration, Instant};

use blipmq_broker::{Config, OverflowPolicy};
use blipmq_protocol::{decode, ErrorCode, Frame, Publish};
use common::*;

const BIG: usize = 64 * 1024;
const QUEUE_DEPTH: &str = "blipmq_queue_depth";
const MEMORY: &str = "blipmq_memory_bytes";
const DROPPED_DROP_NEW: &str =
    "blipmq_messages_dropped_total{reason=\"queue_full\",policy=\"drop_new\"}";
const DROPPED_BUDGET: &str = "blipmq_messages_dropped_total{reason=\"memory_budget\"}";
const REFUSED_BUDGET: &str = "blipmq_publishes_refused_total{reason=\"memory_budget\"}";

/// Batches of one message, so a stalled writer holds at most one.
fn one_per_batch(config: &mut Config) {
    config.delivery.max_batch = 1;
    config.delivery.max_batch_bytes = 1;
}

/// Publish `count` messages of `BIG` bytes to `topic` and wait until the
/// broker has handled them all.
async fn flood(publisher: &mut RawClient, topic: &str, count: usize) {
    let payload = vec![0x5a; BIG];
    for _ in 0..count {
        publisher.publish(topic, &payload).await;
    }
    assert!(publisher.sync().await.is_empty());
}

/// A QoS 1 publish of `BIG` bytes (no headers); its Confirm or error code.
async fn publish_qos1(publisher: &mut RawClient, publish_id: u64) -> Result<(), ErrorCode> {
    let payload = vec![7; BIG];
    publisher
        .send(&Frame::Publish(Publish {
            publish_id,
            topic: "q",
            payload: &payload,
            qos: 1,
            ..Default::default()
        }))
        .await;
    let body = publisher.recv_owned().await.expect("an answer");
    match decode(&body).unwrap() {
        Frame::Confirm(c) if c.publish_id == publish_id => Ok(()),
        Frame::Error(e) if e.request_id == publish_id => Err(e.code),
        other => panic!("expected Confirm or Error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscription_queue_is_bounded_by_bytes_as_well_as_by_count() {
    let broker = TestBroker::start_with(|config| {
        one_per_batch(config);
        config.queues.overflow_policy = OverflowPolicy::DropNew;
        config.queues.subscriber_capacity = 100_000;
        config.queues.subscriber_capacity_bytes = 1024 * 1024;
    })
    .await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("t").await;
    let mut publisher = broker.client().await;
    // 25 MiB: far more than the loopback buffers of a subscriber that
    // does not read hold, so most of it meets the full queue.
    flood(&mut publisher, "t", 400).await;
    let depth = broker.metric(QUEUE_DEPTH).await;
    // 1 MiB of 64 KiB deliveries (a little more than 64 KiB each with
    // their envelope): 15 fit. The count bound alone would have kept all.
    assert!(
        (1..=16).contains(&depth),
        "{depth} messages queued for a 1 MiB queue"
    );
    assert!(broker.metric(DROPPED_DROP_NEW).await > 300);
    assert!(
        broker.metric(MEMORY).await < 4 * 1024 * 1024,
        "the budget counts what the queue and the sockets' writer hold"
    );
    drop(subscriber);
}

#[tokio::test]
async fn at_the_memory_budget_qos0_is_discarded_and_qos1_refused_until_memory_frees() {
    let broker = TestBroker::start_with(|config| {
        one_per_batch(config);
        config.queues.overflow_policy = OverflowPolicy::DropNew;
        config.queues.subscriber_capacity = 100_000;
        config.queues.max_memory_bytes = 4 * 1024 * 1024;
    })
    .await;
    let mut subscribers = Vec::new();
    for topic in ["a", "b", "c", "d"] {
        let mut subscriber = broker.client().await;
        subscriber.subscribe(topic).await;
        subscribers.push(subscriber);
    }
    let mut publisher = broker.client().await;
    // Each queue alone has room for 64 MiB; together they may hold 4 MiB.
    for topic in ["a", "b", "c", "d"] {
        flood(&mut publisher, topic, 100).await;
    }
    // Once the writers are stuck (the sockets' buffers are full), top the
    // budget up again: nothing frees it from then on.
    let mut last = u64::MAX;
    while broker.metric(MEMORY).await != last {
        last = broker.metric(MEMORY).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flood(&mut publisher, "a", 100).await;
    let held = broker.metric(MEMORY).await;
    assert!(
        held <= 4 * 1024 * 1024 + 2 * BIG as u64,
        "{held} bytes held over a 4 MiB budget"
    );
    assert!(broker.metric(DROPPED_BUDGET).await > 100);
    // A QoS 1 publish is refused rather than stored past the budget.
    let refused = publish_qos1(&mut publisher, 1).await;
    assert_eq!(refused, Err(ErrorCode::QueueFull));
    assert_eq!(broker.metric(REFUSED_BUDGET).await, 1);
    // The subscribers read: the budget frees and QoS 1 is stored again.
    for subscriber in &mut subscribers {
        subscriber.clear();
    }
    let drained = async {
        for subscriber in &mut subscribers {
            while subscriber
                .recv_within(Duration::from_millis(300))
                .await
                .is_some()
            {}
        }
    };
    drained.await;
    let deadline = Instant::now() + PATIENCE;
    while broker.metric(MEMORY).await > 0 {
        assert!(Instant::now() < deadline, "the budget never freed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(publish_qos1(&mut publisher, 2).await.is_ok());
}

#[tokio::test]
async fn a_block_publisher_waits_for_the_memory_budget_and_nothing_is_lost() {
    let broker = TestBroker::start_with(|config| {
        one_per_batch(config);
        config.queues.overflow_policy = OverflowPolicy::Block;
        config.queues.subscriber_capacity = 100_000;
        config.queues.max_memory_bytes = 4 * 1024 * 1024;
    })
    .await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("t").await;
    let mut publisher = broker.client().await;
    const COUNT: u32 = 400;
    let flood = tokio::spawn(async move {
        for i in 0..COUNT {
            let mut payload = vec![0x5a; BIG];
            payload[..4].copy_from_slice(&i.to_le_bytes());
            publisher.publish("t", &payload).await;
        }
        assert!(publisher.sync().await.is_empty());
    });
    // The publisher stalls with the budget full, not the queue (100,000).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = broker.metric(MEMORY).await;
        if held >= 3 * 1024 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "only {held} bytes ever held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!flood.is_finished(), "the publisher waits for room");
    assert!(broker.metric(MEMORY).await <= 4 * 1024 * 1024 + 2 * BIG as u64);
    // Reading frees the budget; every message arrives, in order.
    for expected in 0..COUNT {
        let body = subscriber.recv_owned().await.expect("a delivery");
        match decode(&body).unwrap() {
            Frame::Delivery(d) => {
                let index = u32::from_le_bytes(d.payload[..4].try_into().unwrap());
                assert_eq!(index, expected);
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    tokio::time::timeout(PATIENCE, flood)
        .await
        .expect("the publisher finished")
        .unwrap();
    assert_eq!(broker.metric(DROPPED_BUDGET).await, 0);
}

#[tokio::test]
async fn many_unread_subscriptions_to_one_topic_stay_inside_the_memory_budget() {
    // One connection, 200 subscriptions to one topic, never read: every
    // message takes an entry in 200 queues. Each queue alone is far from
    // its bounds (20,000 tiny messages), and the messages themselves are
    // ~1 MB; it is the entries that add up (4 million of them, ~160 MB).
    // Past the first 1024 of a queue, entries are charged to the budget,
    // and a queue takes no more while it is full.
    const BUDGET: u64 = 4 * 1024 * 1024;
    const SUBSCRIPTIONS: u64 = 200;
    const MESSAGES: u64 = 20_000;
    let broker = TestBroker::start_with(|config| {
        config.queues.overflow_policy = OverflowPolicy::DropNew;
        config.queues.max_memory_bytes = BUDGET as usize;
    })
    .await;
    let mut subscriber = broker.client().await;
    for _ in 0..SUBSCRIPTIONS {
        subscriber.subscribe("fan").await;
    }
    let mut publisher = broker.client().await;
    for _ in 0..MESSAGES {
        publisher.publish("fan", b"tiny").await;
    }
    assert!(publisher.sync().await.is_empty());
    let depth = broker.metric(QUEUE_DEPTH).await;
    let held = broker.metric(MEMORY).await;
    // The free entries of every queue, and what the budget pays for (an
    // entry is about 40 bytes).
    let most = SUBSCRIPTIONS * 1024 + BUDGET / 32;
    assert!(
        depth <= most,
        "{depth} entries queued: the budget did not bound them (at most {most})"
    );
    assert!(held <= BUDGET + 64 * 1024, "{held} bytes charged");
    assert!(
        broker.metric(DROPPED_DROP_NEW).await > 0,
        "the queues stopped taking messages"
    );
    drop(subscriber);
}
