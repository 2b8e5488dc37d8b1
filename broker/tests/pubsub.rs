//! Topic pub/sub through the real broker, driven with raw protocol frames.

mod common;

use std::time::Duration;

use blipmq_protocol::{decode, ErrorCode, Frame, Publish, Subscribe};
use common::*;

#[tokio::test]
async fn round_trip() {
    let broker = TestBroker::start().await;
    let mut subscriber = broker.client().await;
    let sub_id = subscriber.subscribe("orders.created").await;
    let mut publisher = broker.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    publisher.publish("orders.created", b"hello").await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(got.subscription_id, sub_id);
    assert_eq!(got.topic, "orders.created");
    assert_eq!(got.payload, b"hello");
    assert!(got.message_id > 0);
    assert!(got.timestamp_ms >= before && got.timestamp_ms < before + 60_000);
    // A publish to another topic does not arrive.
    publisher.publish("orders.deleted", b"x").await;
    publisher.sync().await;
    subscriber.expect_nothing(Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn binary_and_empty_payloads_arrive_intact_and_in_order() {
    let broker = TestBroker::start().await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("bin").await;
    let mut publisher = broker.client().await;
    let payloads: Vec<Vec<u8>> = (0..200u32)
        .map(|i| (0..(i * 37 % 3000)).map(|j| (j * 31 + i) as u8).collect())
        .collect();
    for p in &payloads {
        publisher.publish("bin", p).await;
    }
    let mut last_id = 0;
    for p in &payloads {
        let got = subscriber.expect_delivery().await;
        assert_eq!(&got.payload, p);
        assert!(got.message_id > last_id, "message ids increase");
        last_id = got.message_id;
    }
    broker.stop().await;
}

#[tokio::test]
async fn wildcards() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    let star = c.subscribe("a.*").await;
    let tail = c.subscribe("a.>").await;
    let first = c.subscribe("*.b").await;
    let mut publisher = broker.client().await;
    for topic in ["a.b", "a.b.c", "x.b", "a", "b.a"] {
        publisher.publish(topic, topic.as_bytes()).await;
    }
    publisher.sync().await;
    let mut got = Vec::new();
    // a.b -> star, tail, first; a.b.c -> tail; x.b -> first.
    for _ in 0..5 {
        let d = c.expect_delivery().await;
        got.push((d.topic, d.subscription_id));
    }
    c.expect_nothing(Duration::from_millis(100)).await;
    got.sort();
    let mut expected = vec![
        ("a.b".to_string(), star),
        ("a.b".to_string(), tail),
        ("a.b".to_string(), first),
        ("a.b.c".to_string(), tail),
        ("x.b".to_string(), first),
    ];
    expected.sort();
    assert_eq!(got, expected);
    broker.stop().await;
}

#[tokio::test]
async fn fan_out_to_many_subscribers_in_order() {
    let broker = TestBroker::start().await;
    let mut subscribers = Vec::new();
    for _ in 0..40 {
        let mut s = broker.client().await;
        s.subscribe("fan.out").await;
        subscribers.push(s);
    }
    let mut publisher = broker.client().await;
    for i in 0..250u32 {
        publisher.publish("fan.out", &i.to_le_bytes()).await;
    }
    for s in &mut subscribers {
        for i in 0..250u32 {
            assert_eq!(s.expect_delivery().await.payload, i.to_le_bytes());
        }
    }
    assert_eq!(broker.metric("blipmq_messages_published_total").await, 250);
    assert_eq!(
        broker.metric("blipmq_messages_enqueued_total").await,
        250 * 40
    );
    broker
        .wait_for_metric("blipmq_messages_delivered_total", 250 * 40)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_deliveries_and_unknown_ids_are_refused() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    let id = c.subscribe("u.t").await;
    let mut publisher = broker.client().await;
    publisher.publish("u.t", b"1").await;
    assert_eq!(c.expect_delivery().await.payload, b"1");
    c.unsubscribe(id).await;
    publisher.publish("u.t", b"2").await;
    publisher.sync().await;
    c.expect_nothing(Duration::from_millis(100)).await;
    c.send(&Frame::Unsubscribe(blipmq_protocol::Unsubscribe {
        request_id: 77,
        subscription_id: id,
        keep_durable: false,
    }))
    .await;
    let (code, _, request_id) = c.expect_error().await;
    assert_eq!(code, ErrorCode::UnknownSubscription);
    assert_eq!(request_id, 77);
    broker.wait_for_metric("blipmq_subscriptions", 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn one_connection_cannot_unsubscribe_or_ack_another_connections_subscription() {
    let broker = TestBroker::start().await;
    let mut owner = broker.client().await;
    let id = owner.subscribe("mine").await;
    let mut other = broker.client().await;
    other
        .send(&Frame::Unsubscribe(blipmq_protocol::Unsubscribe {
            request_id: 5,
            subscription_id: id,
            keep_durable: false,
        }))
        .await;
    assert_eq!(other.expect_error().await.0, ErrorCode::UnknownSubscription);
    other
        .send(&Frame::Ack(blipmq_protocol::Ack {
            subscription_id: id,
            delivery_id: 1,
            ..Default::default()
        }))
        .await;
    assert_eq!(other.expect_error().await.0, ErrorCode::UnknownSubscription);
    // The owner's subscription is untouched.
    other.publish("mine", b"still here").await;
    assert_eq!(owner.expect_delivery().await.payload, b"still here");
    broker.stop().await;
}

#[tokio::test]
async fn invalid_topics_and_patterns_get_an_error_naming_the_request() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    for (i, topic) in ["", "a..b", "a.*", "a.>", "has space", ".x"]
        .iter()
        .enumerate()
    {
        c.send(&Frame::Publish(Publish {
            publish_id: 100 + i as u64,
            topic,
            payload: b"p",
            ttl_ms: 0,
            qos: 0,
            headers: vec![],
        }))
        .await;
        let (code, message, request_id) = c.expect_error().await;
        assert_eq!(code, ErrorCode::InvalidTopic, "{topic:?}: {message}");
        assert_eq!(request_id, 100 + i as u64);
    }
    for (i, pattern) in ["", "a.>.b", "a*", "a..b"].iter().enumerate() {
        c.send(&Frame::Subscribe(Subscribe {
            request_id: 200 + i as u64,
            pattern,
            ..Default::default()
        }))
        .await;
        let (code, _, request_id) = c.expect_error().await;
        assert_eq!(code, ErrorCode::InvalidTopic, "{pattern:?}");
        assert_eq!(request_id, 200 + i as u64);
    }
    // The connection still works.
    c.subscribe("ok").await;
    assert!(
        broker
            .metric("blipmq_errors_sent_total{code=\"300\",name=\"InvalidTopic\"}")
            .await
            >= 10
    );
    broker.stop().await;
}

#[tokio::test]
async fn invalid_qos_and_invalid_group_names_are_refused() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    c.send(&Frame::Publish(Publish {
        publish_id: 10,
        topic: "q",
        payload: b"",
        ttl_ms: 0,
        qos: 7,
        headers: vec![],
    }))
    .await;
    let (code, _, id) = c.expect_error().await;
    assert_eq!((code, id), (ErrorCode::InvalidArgument, 10));
    c.send(&Frame::Subscribe(Subscribe {
        request_id: 11,
        pattern: "q",
        qos: 0,
        durable_name: None,
        queue_group: Some("two words"),
        ..Default::default()
    }))
    .await;
    let (code, _, id) = c.expect_error().await;
    assert_eq!((code, id), (ErrorCode::InvalidArgument, 11));
    c.send(&Frame::Subscribe(Subscribe {
        request_id: 12,
        pattern: "q",
        qos: 9,
        durable_name: None,
        queue_group: None,
        ..Default::default()
    }))
    .await;
    let (code, _, id) = c.expect_error().await;
    assert_eq!((code, id), (ErrorCode::InvalidArgument, 12));
    broker.stop().await;
}

#[tokio::test]
async fn ping_pong_and_a_publish_with_no_subscribers_is_accepted_silently() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    c.publish("nobody.listens", b"x").await;
    assert!(c.sync().await.is_empty());
    assert_eq!(broker.metric("blipmq_messages_published_total").await, 1);
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_removes_subscriptions_and_closes_the_socket() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    c.subscribe("gone.*").await;
    c.subscribe("gone.>").await;
    broker.wait_for_metric("blipmq_subscriptions", 2).await;
    broker.wait_for_metric("blipmq_connections", 1).await;
    // Half-close: the broker must answer with its own FIN (no CLOSE-WAIT).
    tokio::io::AsyncWriteExt::shutdown(&mut c.stream)
        .await
        .unwrap();
    assert!(c.expect_closed().await.is_empty());
    broker.wait_for_metric("blipmq_subscriptions", 0).await;
    broker.wait_for_metric("blipmq_connections", 0).await;
    assert_eq!(broker.metric("blipmq_topics").await, 0);
    // Publishing to the old topic reaches nobody and breaks nothing.
    let mut p = broker.client().await;
    p.publish("gone.x", b"x").await;
    assert!(p.sync().await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn broker_shutdown_tells_clients_and_closes_them() {
    let broker = TestBroker::start().await;
    let mut c = broker.client().await;
    c.subscribe("s").await;
    broker.stop().await;
    let frames = c.expect_closed().await;
    let codes: Vec<_> = frames
        .iter()
        .filter_map(|f| match decode(f).unwrap() {
            Frame::Error(e) => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![ErrorCode::ShuttingDown]);
}

#[tokio::test]
async fn topic_capacity_limits_distinct_patterns() {
    let broker = TestBroker::start_with(|c| c.queues.topic_capacity = 2).await;
    let mut c = broker.client().await;
    c.subscribe("t1").await;
    c.subscribe("t2.*").await;
    c.subscribe("t1").await;
    c.send(&Frame::Subscribe(Subscribe {
        request_id: 42,
        pattern: "t3",
        ..Default::default()
    }))
    .await;
    let (code, _, id) = c.expect_error().await;
    assert_eq!((code, id), (ErrorCode::TooManyTopics, 42));
    broker.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text_and_404s_elsewhere() {
    let broker = TestBroker::start().await;
    let (status, body) = http_get(broker.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "blipmq_messages_published_total",
        "blipmq_messages_delivered_total",
        "blipmq_messages_dropped_total",
        "blipmq_flush_bytes_total",
        "blipmq_flush_batches_total",
        "blipmq_connections",
        "blipmq_connections_total",
        "blipmq_connections_rejected_total",
        "blipmq_auth_failures_total",
        "blipmq_protocol_errors_total",
        "blipmq_subscriptions",
        "blipmq_queue_depth",
        "blipmq_wal_corruptions_total",
        "blipmq_wal_write_failures_total",
        "blipmq_wal_repairs_total",
        "blipmq_wal_fsync_failures_total",
        "blipmq_wal_delete_failures_total",
    ] {
        assert!(body.contains(&format!("# HELP {family} ")), "{family}");
        assert!(body.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert_eq!(
        http_get(broker.metrics_addr, "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        http_get(broker.metrics_addr, "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(http_get(broker.metrics_addr, "/nope").await.0, 404);
    broker.stop().await;
}
