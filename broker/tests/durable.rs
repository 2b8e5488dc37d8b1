//! QoS 1 through the real broker: publisher confirms after the write-ahead
//! log, durable subscriptions with acks, resume after a disconnect and after
//! a restart, deletion, and the storage-full path.

mod common;

use std::time::Duration;

use blipmq_protocol::{decode, ErrorCode, Frame, Header, Publish, Subscribe};
use common::*;

async fn subscribe_durable(
    client: &mut RawClient,
    pattern: &str,
    name: &str,
) -> Result<u64, ErrorCode> {
    client.subscribe_with(pattern, 1, Some(name), None).await
}

#[tokio::test]
async fn qos1_publish_is_confirmed_and_a_durable_subscriber_acks() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    let sub = subscribe_durable(&mut consumer, "jobs.*", "worker")
        .await
        .unwrap();
    let mut plain = broker.client().await;
    plain.subscribe("jobs.*").await;
    let mut producer = broker.client().await;
    let id = producer.publish_qos1(5, "jobs.a", b"one").await.unwrap();
    assert!(id > 0);
    let got = consumer.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload.as_slice()),
        (sub, &b"one"[..])
    );
    assert!(got.delivery_id > 0, "a durable delivery can be acked");
    assert_eq!(got.delivery_count, 1);
    // A plain subscription gets the same message at QoS 0.
    let copy = plain.expect_delivery().await;
    assert_eq!(
        (copy.delivery_id, copy.payload.as_slice()),
        (0, &b"one"[..])
    );
    consumer.ack(sub, got.delivery_id).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 1);
    // The message, then (soon, without the consumer waiting) its ack.
    broker.wait_for_metric("blipmq_wal_records_total", 2).await;
    broker.stop().await;
}

#[tokio::test]
async fn unacked_messages_come_back_first_and_in_order_after_a_disconnect() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    let sub = subscribe_durable(&mut consumer, "q", "d").await.unwrap();
    let mut producer = broker.client().await;
    for i in 0..5u8 {
        producer
            .publish_qos1(10 + i as u64, "q", &[b'a' + i])
            .await
            .unwrap();
    }
    let mut first = Vec::new();
    for _ in 0..5 {
        first.push(consumer.expect_delivery().await);
    }
    // Ack the first two; the other three stay owed.
    consumer.ack(sub, first[0].delivery_id).await;
    consumer.ack(sub, first[1].delivery_id).await;
    assert!(consumer.sync().await.is_empty());
    drop(consumer);
    broker.wait_for_metric("blipmq_connections", 1).await;
    for i in 5..7u8 {
        producer
            .publish_qos1(10 + i as u64, "q", &[b'a' + i])
            .await
            .unwrap();
    }
    let mut again = broker.client().await;
    let sub = subscribe_durable(&mut again, "q", "d").await.unwrap();
    let mut resumed = Vec::new();
    for _ in 0..5 {
        resumed.push(again.expect_delivery().await);
    }
    let payloads: Vec<u8> = resumed.iter().map(|g| g.payload[0]).collect();
    assert_eq!(payloads, b"cdefg");
    let counts: Vec<u32> = resumed.iter().map(|g| g.delivery_count).collect();
    assert_eq!(counts, vec![2, 2, 2, 1, 1], "redeliveries are marked");
    assert_eq!(resumed[0].delivery_id, first[2].delivery_id);
    for got in &resumed {
        again.ack(sub, got.delivery_id).await;
    }
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    again.expect_nothing(Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_durable_subscription_and_its_unacked_messages_survive_a_restart() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "orders.>", "billing")
        .await
        .unwrap();
    let mut producer = broker.client().await;
    for i in 0..3u8 {
        producer
            .publish_qos1(1 + i as u64, "orders.eu", &[b'0' + i])
            .await
            .unwrap();
    }
    let got = consumer.expect_delivery().await;
    consumer.ack(got.subscription_id, got.delivery_id).await;
    assert!(consumer.sync().await.len() <= 2);
    drop(consumer);
    drop(producer);
    let broker = broker.restart().await;
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 1);
    assert_eq!(broker.metric("blipmq_durable_unacked_messages").await, 2);
    let mut consumer = broker.client().await;
    let sub = subscribe_durable(&mut consumer, "orders.>", "billing")
        .await
        .unwrap();
    for expected in [b'1', b'2'] {
        let got = consumer.expect_delivery().await;
        assert_eq!(got.payload, vec![expected]);
        assert_eq!(got.topic, "orders.eu");
        consumer.ack(sub, got.delivery_id).await;
    }
    consumer.expect_nothing(Duration::from_millis(100)).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn headers_survive_a_restart() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "h", "keeper")
        .await
        .unwrap();
    drop(consumer);
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "h", b"with header").await.unwrap();
    drop(producer);
    let broker = broker.restart().await;
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "h", "keeper")
        .await
        .unwrap();
    let body = consumer.recv_owned().await.unwrap();
    match decode(&body).unwrap() {
        Frame::Delivery(d) => {
            assert_eq!(d.payload, b"with header");
            assert_eq!(
                d.headers,
                vec![Header {
                    key: "n",
                    value: b"with header"
                }]
            );
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn rules_for_durable_subscriptions() {
    let broker = TestBroker::start().await;
    let mut a = broker.client().await;
    subscribe_durable(&mut a, "x.*", "one").await.unwrap();
    // The same name from another connection while attached.
    let mut b = broker.client().await;
    assert_eq!(
        subscribe_durable(&mut b, "x.*", "one").await,
        Err(ErrorCode::DurableInUse)
    );
    // The same name with another pattern.
    drop(a);
    broker.wait_for_metric("blipmq_connections", 1).await;
    assert_eq!(
        subscribe_durable(&mut b, "y", "one").await,
        Err(ErrorCode::InvalidArgument)
    );
    // A durable name at QoS 0, a bad name, a queue group under a durable
    // subscription's name.
    b.send(&Frame::Subscribe(Subscribe {
        request_id: 2,
        pattern: "z",
        qos: 0,
        durable_name: Some("d"),
        queue_group: None,
        ..Default::default()
    }))
    .await;
    assert_eq!(b.expect_error().await.0, ErrorCode::InvalidArgument);
    assert_eq!(
        subscribe_durable(&mut b, "z", "has space").await,
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        b.subscribe_with("x.*", 1, None, Some("one")).await,
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        b.subscribe_with("x.*", 0, None, Some("bad group")).await,
        Err(ErrorCode::InvalidArgument)
    );
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribing_deletes_a_durable_subscription() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    let sub = subscribe_durable(&mut consumer, "t", "gone").await.unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "t", b"old").await.unwrap();
    consumer.expect_delivery().await;
    consumer.unsubscribe(sub).await;
    broker
        .wait_for_metric("blipmq_durable_subscriptions", 0)
        .await;
    // A new subscription with the same name starts empty.
    subscribe_durable(&mut consumer, "t", "gone").await.unwrap();
    consumer.expect_nothing(Duration::from_millis(150)).await;
    producer.publish_qos1(2, "t", b"new").await.unwrap();
    assert_eq!(consumer.expect_delivery().await.payload, b"new");
    broker.stop().await;
}

#[tokio::test]
async fn a_full_log_refuses_qos1_with_storage_full_and_nothing_is_delivered() {
    let broker = TestBroker::start_with(|c| {
        c.wal.segment_bytes = 4096;
        c.wal.max_bytes = 8192;
    })
    .await;
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "full", "never-acks")
        .await
        .unwrap();
    let mut producer = broker.client().await;
    let payload = [7u8; 1000];
    let mut confirmed = 0;
    let mut refused = None;
    for i in 0..40u64 {
        match producer.publish_qos1(100 + i, "full", &payload).await {
            Ok(_) => confirmed += 1,
            Err(code) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(ErrorCode::StorageFull),
        "after {confirmed} confirms"
    );
    assert!(confirmed > 0);
    assert!(broker.metric("blipmq_wal_full_rejections_total").await >= 1);
    // Not ready, and the probe says why.
    let (status, body) = http_get(broker.metrics_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("log full"), "{body}");
    // Exactly the confirmed messages are delivered.
    for _ in 0..confirmed.min(8) {
        consumer.expect_delivery().await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn many_qos1_publishes_in_flight_are_confirmed_in_order() {
    let broker = TestBroker::start().await;
    let mut producer = broker.client().await;
    for i in 0..500u64 {
        producer
            .send(&Frame::Publish(Publish {
                publish_id: 1000 + i,
                topic: "pipelined",
                payload: b"x",
                ttl_ms: 0,
                qos: 1,
                headers: vec![],
            }))
            .await;
    }
    let mut last_message = 0;
    for i in 0..500u64 {
        let body = producer.recv_owned().await.unwrap();
        match decode(&body).unwrap() {
            Frame::Confirm(c) => {
                assert_eq!(c.publish_id, 1000 + i, "confirms come in publish order");
                assert!(c.message_id > last_message);
                last_message = c.message_id;
            }
            other => panic!("expected Confirm, got {other:?}"),
        }
    }
    // Group commit: far fewer fsyncs than records.
    let fsyncs = broker.metric("blipmq_wal_fsyncs_total").await;
    assert!(fsyncs < 500, "{fsyncs} fsyncs for 500 records");
    broker.stop().await;
}

#[tokio::test]
async fn qos0_after_qos1_on_one_connection_keeps_publish_order() {
    // A QoS 1 message is delivered only once it is durable; a QoS 0 message
    // right behind it must not overtake it (PUB-6), and once nothing is in
    // flight QoS 0 goes straight out again.
    let broker = TestBroker::start().await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("mixed").await;
    let mut producer = broker.client().await;
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for (i, payload) in expected.iter().enumerate() {
        producer
            .send(&Frame::Publish(Publish {
                publish_id: if i % 3 == 0 { 1 + i as u64 } else { 0 },
                topic: "mixed",
                payload: payload.as_bytes(),
                ttl_ms: 0,
                qos: u8::from(i % 3 == 0),
                headers: vec![],
            }))
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(String::from_utf8(subscriber.expect_delivery().await.payload).unwrap());
    }
    assert_eq!(got, expected, "delivered in publish order");
    for i in (0..100u64).step_by(3) {
        let body = producer.recv_owned().await.unwrap();
        match decode(&body).unwrap() {
            Frame::Confirm(c) => assert_eq!(c.publish_id, 1 + i),
            other => panic!("expected Confirm, got {other:?}"),
        }
    }
    // Nothing in flight now: a QoS 0 message goes out on its own.
    producer.publish("mixed", b"last").await;
    assert_eq!(subscriber.expect_delivery().await.payload, b"last");
    broker.stop().await;
}

#[tokio::test]
async fn a_durable_subscription_outlives_the_segments_released_since_it_was_created() {
    // Retention deletes acked history segment by segment, including the
    // segment that was current when the subscription was made; the
    // subscription itself must survive that and a restart.
    let broker = TestBroker::start_with(|c| c.wal.segment_bytes = 4096).await;
    let mut consumer = broker.client().await;
    let sub = subscribe_durable(&mut consumer, "keep", "long-lived")
        .await
        .unwrap();
    let mut producer = broker.client().await;
    for i in 0..40u64 {
        producer
            .publish_qos1(i + 1, "keep", &[1u8; 500])
            .await
            .unwrap();
        let got = consumer.expect_delivery().await;
        consumer.ack(sub, got.delivery_id).await;
    }
    consumer.sync().await;
    assert!(broker.metric("blipmq_wal_segments_deleted_total").await > 0);
    drop((consumer, producer));
    let broker = broker.restart().await;
    let mut producer = broker.client().await;
    producer.publish_qos1(100, "keep", b"after").await.unwrap();
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "keep", "long-lived")
        .await
        .unwrap();
    assert_eq!(consumer.expect_delivery().await.payload, b"after");
    consumer.expect_nothing(Duration::from_millis(150)).await;
    broker.stop().await;
}

#[tokio::test]
async fn message_ids_are_never_reused_after_a_restart() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "ids", "keeper")
        .await
        .unwrap();
    let mut producer = broker.client().await;
    let before = producer.publish_qos1(1, "ids", b"old").await.unwrap();
    drop((consumer, producer));
    let broker = broker.restart().await;
    let mut producer = broker.client().await;
    let after = producer.publish_qos1(2, "ids", b"new").await.unwrap();
    assert!(after > before, "{after} after a restart, {before} before");
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "ids", "keeper")
        .await
        .unwrap();
    let ids = [
        consumer.expect_delivery().await.message_id,
        consumer.expect_delivery().await.message_id,
    ];
    assert_eq!(ids, [before, after], "the stored message keeps its id");
    broker.stop().await;
}

#[tokio::test]
async fn durable_subscriptions_beyond_max_queues_are_refused() {
    let broker = TestBroker::start_with(|c| c.durable.max_queues = 2).await;
    let mut client = broker.client().await;
    let one = subscribe_durable(&mut client, "a", "one").await.unwrap();
    // A queue group counts too.
    client
        .subscribe_with("b", 1, None, Some("two"))
        .await
        .unwrap();
    assert_eq!(
        subscribe_durable(&mut client, "c", "three").await,
        Err(ErrorCode::TooManyTopics)
    );
    // Not refused: an ephemeral QoS 1 subscription (it ends with its
    // connection), and another member joining an existing group.
    client.subscribe_with("c", 1, None, None).await.unwrap();
    let mut other = broker.client().await;
    other
        .subscribe_with("b", 1, None, Some("two"))
        .await
        .unwrap();
    // Deleting one makes room for another.
    client.unsubscribe(one).await;
    subscribe_durable(&mut client, "c", "three").await.unwrap();
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 2);
    broker.stop().await;
}

#[tokio::test]
async fn a_subscribe_refused_at_topic_capacity_leaves_no_stored_queue_behind() {
    // Found attacking issue 23's work: the stored queue was made before the
    // pattern was refused, and stayed. Every refused durable subscribe then
    // took one of `durable.max_queues` for a week (until it expired), so one
    // client could refuse durable subscriptions to everyone.
    let broker = TestBroker::start_with(|c| {
        c.queues.topic_capacity = 1;
        c.durable.max_queues = 2;
    })
    .await;
    let mut client = broker.client().await;
    let taken = client.subscribe("only").await;
    for i in 0..5 {
        assert_eq!(
            subscribe_durable(&mut client, &format!("p.{i}"), &format!("d{i}")).await,
            Err(ErrorCode::TooManyTopics)
        );
        // An ephemeral QoS 1 subscription makes a queue too.
        assert_eq!(
            client
                .subscribe_with(&format!("e.{i}"), 1, None, None)
                .await
                .err(),
            Some(ErrorCode::TooManyTopics)
        );
    }
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 0);
    // With the pattern slot free, durable subscriptions are there to make.
    client.unsubscribe(taken).await;
    subscribe_durable(&mut client, "p.0", "d0").await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_damaged_subscription_manifest_stops_the_broker_at_start() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    subscribe_durable(&mut consumer, "m", "worker")
        .await
        .unwrap();
    drop(consumer);
    let data = broker.data.clone();
    broker.stop().await;
    // One changed letter: without a checksum it reads as another
    // subscription, and "worker" with its messages is gone.
    let manifest = data.path().join("wal").join("subscriptions");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("worker", "workes")).unwrap();
    let mut config = blipmq_broker::Config::default();
    config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.wal.dir = data.path().join("wal");
    let listeners = blipmq_broker::Listeners::bind(&config).await.unwrap();
    let run = blipmq_broker::run(listeners, config, std::future::pending());
    let error = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("refused at start, not served")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&manifest.display().to_string()) && error.contains("checksum"),
        "{error}"
    );
}

#[tokio::test]
async fn a_publisher_that_never_reads_its_confirms_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    // LIMIT-2 for confirms: each Confirm is a small answer, and a publisher
    // that reads none of them is disconnected once they fill the backlog
    // (they were dropped with a warning each, the connection kept open).
    let broker =
        TestBroker::start_with(|c| c.wal.fsync_policy = blipmq_broker::wal::FsyncPolicy::Never)
            .await;
    let mut greedy = broker.client().await;
    let mut encoder = blipmq_protocol::Encoder::new();
    let burst: Vec<u8> = (0..10_000u64)
        .flat_map(|i| {
            encoder
                .encode_to_bytes(&Frame::Publish(Publish {
                    publish_id: i + 1,
                    topic: "c",
                    payload: b"",
                    ttl_ms: 0,
                    qos: 1,
                    headers: vec![],
                }))
                .to_vec()
        })
        .collect();
    let closed = tokio::time::timeout(PATIENCE * 6, async {
        // Bounded: 150 bursts is several times what fills the backlog.
        for _ in 0..150 {
            if greedy.stream.write_all(&burst).await.is_err() {
                return true;
            }
        }
        false
    })
    .await
    .expect("the broker acts within the test's patience");
    assert!(
        closed,
        "the broker kept a publisher that never reads its confirms"
    );
    broker.wait_for_metric("blipmq_connections", 0).await;
    broker.stop().await;
}
