//! The `[durable]` limits through the real broker (issue 22, finding 6):
//! a subscription nobody consumes costs its own oldest messages, not every
//! producer's QoS 1 service; each limit drops exactly the oldest; a queue
//! detached for too long is deleted, and stays deleted after a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn durable(client: &mut RawClient, pattern: &str, name: &str) -> u64 {
    client
        .subscribe_with(pattern, 1, Some(name), None)
        .await
        .unwrap()
}

/// Attach to `name` and take every delivery it has: their payloads.
async fn drain(broker: &TestBroker, pattern: &str, name: &str) -> (RawClient, u64, Vec<Got>) {
    let mut client = broker.client().await;
    let sub = durable(&mut client, pattern, name).await;
    let mut got = Vec::new();
    while let Some(body) = client.recv_within(Duration::from_millis(300)).await {
        match blipmq_protocol::decode(&body).unwrap() {
            blipmq_protocol::Frame::Delivery(d) => got.push(Got {
                subscription_id: d.route.subscription_id,
                delivery_id: d.route.delivery_id,
                delivery_count: d.route.delivery_count,
                topic: d.topic.to_string(),
                payload: d.payload.to_vec(),
                message_id: d.message_id,
                timestamp_ms: d.timestamp_ms,
            }),
            other => panic!("expected deliveries, got {other:?}"),
        }
    }
    (client, sub, got)
}

/// A QoS 1 publish without headers (`publish_qos1` adds one), confirmed.
async fn publish_plain(client: &mut RawClient, publish_id: u64, topic: &str, payload: &[u8]) {
    client
        .send(&blipmq_protocol::Frame::Publish(blipmq_protocol::Publish {
            publish_id,
            topic,
            payload,
            ttl_ms: 0,
            qos: 1,
            headers: vec![],
        }))
        .await;
    let body = client.recv_owned().await.expect("a confirm");
    match blipmq_protocol::decode(&body).unwrap() {
        blipmq_protocol::Frame::Confirm(c) => assert_eq!(c.publish_id, publish_id),
        other => panic!("expected a Confirm, got {other:?}"),
    }
}

fn payloads(got: &[Got]) -> Vec<Vec<u8>> {
    got.iter().map(|g| g.payload.clone()).collect()
}

fn numbered(range: std::ops::RangeInclusive<u8>, len: usize) -> Vec<Vec<u8>> {
    range.map(|i| vec![i; len]).collect()
}

async fn dropped(broker: &TestBroker, reason: &str) -> u64 {
    broker
        .metric(&format!(
            "blipmq_messages_dropped_total{{reason=\"{reason}\"}}"
        ))
        .await
}

#[tokio::test]
async fn an_abandoned_durable_subscription_no_longer_stops_every_producer() {
    // A log of four small segments, and a subscription made once and left.
    let broker = TestBroker::start_with(|c| {
        c.wal.segment_bytes = 4096;
        c.wal.max_bytes = 16384;
        c.durable.max_messages = 4;
    })
    .await;
    let mut forgotten = broker.client().await;
    durable(&mut forgotten, "jobs.>", "forgotten").await;
    drop(forgotten);
    broker.wait_for_metric("blipmq_connections", 0).await;
    // Ten times what the log holds: without the limit, the publishes were
    // refused with StorageFull once it was full (after about 25).
    let mut producer = broker.client().await;
    for i in 0..250u64 {
        let confirmed = producer
            .publish_qos1(1 + i, "jobs.x", &[i as u8; 500])
            .await;
        assert!(confirmed.is_ok(), "publish {i}: {confirmed:?}");
    }
    assert_eq!(broker.metric("blipmq_wal_full_rejections_total").await, 0);
    assert_eq!(dropped(&broker, "max_messages").await, 246);
    // Whoever comes back finds the newest four.
    let (_client, _, got) = drain(&broker, "jobs.>", "forgotten").await;
    let expected: Vec<Vec<u8>> = (246..250u64).map(|i| vec![i as u8; 500]).collect();
    assert_eq!(payloads(&got), expected);
    broker.stop().await;
}

#[tokio::test]
async fn max_messages_drops_exactly_the_oldest_and_they_stay_dropped_after_a_restart() {
    let broker = TestBroker::start_with(|c| c.durable.max_messages = 3).await;
    let mut client = broker.client().await;
    durable(&mut client, "m", "three").await;
    drop(client);
    broker.wait_for_metric("blipmq_connections", 0).await;
    let mut producer = broker.client().await;
    for i in 1..=4u8 {
        producer.publish_qos1(i as u64, "m", &[i]).await.unwrap();
    }
    assert_eq!(dropped(&broker, "max_messages").await, 1);
    let (mut consumer, sub, got) = drain(&broker, "m", "three").await;
    assert_eq!(payloads(&got), numbered(2..=4, 1));
    // An ack takes the queue below the limit: the message dropped for it
    // must not come back with the restart (its drop is in the log too).
    consumer.ack(sub, got[0].delivery_id).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 2)
        .await;
    // Four messages, one drop, one ack.
    broker.wait_for_metric("blipmq_wal_records_total", 6).await;
    drop((consumer, producer));
    let broker = broker.restart().await;
    let (_consumer, _, got) = drain(&broker, "m", "three").await;
    assert_eq!(payloads(&got), numbered(3..=4, 1));
    broker.stop().await;
}

#[tokio::test]
async fn max_bytes_drops_exactly_the_oldest() {
    // Two 1,000-byte messages fit in 2,500 bytes; three do not.
    let broker = TestBroker::start_with(|c| {
        c.server.max_message_size_bytes = 1000;
        c.durable.max_bytes = 2500;
    })
    .await;
    let mut client = broker.client().await;
    durable(&mut client, "b", "two").await;
    drop(client);
    broker.wait_for_metric("blipmq_connections", 0).await;
    let mut producer = broker.client().await;
    for i in 1..=5u8 {
        publish_plain(&mut producer, i as u64, "b", &[i; 1000]).await;
    }
    assert_eq!(dropped(&broker, "max_bytes").await, 3);
    let (_client, _, got) = drain(&broker, "b", "two").await;
    assert_eq!(payloads(&got), numbered(4..=5, 1000));
    broker.stop().await;
}

#[tokio::test]
async fn max_age_drops_exactly_the_messages_older_than_it() {
    let broker = TestBroker::start_with(|c| c.durable.max_age_ms = 300).await;
    let mut client = broker.client().await;
    durable(&mut client, "a", "young").await;
    drop(client);
    broker.wait_for_metric("blipmq_connections", 0).await;
    let mut producer = broker.client().await;
    for i in 1..=3u8 {
        producer.publish_qos1(i as u64, "a", &[i]).await.unwrap();
    }
    // The sweep runs about once a second.
    broker
        .wait_for_metric("blipmq_messages_dropped_total{reason=\"max_age\"}", 3)
        .await;
    producer.publish_qos1(4, "a", &[4]).await.unwrap();
    let (_client, _, got) = drain(&broker, "a", "young").await;
    assert_eq!(payloads(&got), numbered(4..=4, 1));
    broker.stop().await;
}

#[tokio::test]
async fn a_detached_subscription_expires_and_stays_deleted_after_a_restart() {
    let broker = TestBroker::start_with(|c| c.durable.detached_expiry_ms = 300).await;
    let mut left = broker.client().await;
    durable(&mut left, "e", "left").await;
    let mut staying = broker.client().await;
    durable(&mut staying, "e", "staying").await;
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "e", b"one").await.unwrap();
    producer.publish_qos1(2, "e", b"two").await.unwrap();
    drop(left);
    broker
        .wait_for_metric("blipmq_durable_expired_total", 1)
        .await;
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 1);
    assert_eq!(dropped(&broker, "detached_expiry").await, 2);
    // The manifest is rewritten on a task of its own: wait for it.
    let manifest = broker.data.path().join("wal").join("subscriptions");
    let deadline = Instant::now() + PATIENCE;
    while std::fs::read_to_string(&manifest)
        .unwrap()
        .contains(" left ")
    {
        assert!(Instant::now() < deadline, "the manifest still lists it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((staying, producer));
    let broker = broker.restart().await;
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 1);
    // A subscription of that name is a new one: nothing from before.
    let (_client, _, got) = drain(&broker, "e", "left").await;
    assert!(got.is_empty(), "{got:?}");
    broker.stop().await;
}
