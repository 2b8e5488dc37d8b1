//! QoS 1 delivery rules through the real broker: redelivery after the ack
//! timeout, dead letters after `max_deliveries`, per-consumer credit, queue
//! groups at QoS 0 and QoS 1, and QoS 1 subscriptions without a name.

mod common;

use std::time::Duration;

use blipmq_protocol::{decode, ErrorCode, Frame};
use common::*;

#[tokio::test]
async fn an_unacked_delivery_comes_again_after_the_ack_timeout() {
    let broker = TestBroker::start_with(|c| c.delivery.ack_timeout_ms = 150).await;
    let mut consumer = broker.client().await;
    let sub = consumer
        .subscribe_with("jobs", 1, Some("slow"), None)
        .await
        .unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"work").await.unwrap();
    let first = consumer.expect_delivery().await;
    assert_eq!(
        (first.delivery_count, first.payload.as_slice()),
        (1, &b"work"[..])
    );
    // No ack: the same delivery comes again, counted.
    let again = consumer.expect_delivery().await;
    assert_eq!(again.delivery_id, first.delivery_id);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.delivery_count, 2);
    consumer.ack(sub, again.delivery_id).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    consumer.expect_nothing(Duration::from_millis(400)).await;
    assert!(broker.metric("blipmq_redeliveries_total").await >= 1);
    broker.stop().await;
}

#[tokio::test]
async fn after_max_deliveries_a_message_moves_to_its_dead_letter_topic() {
    let broker = TestBroker::start_with(|c| {
        c.delivery.ack_timeout_ms = 100;
        c.delivery.max_deliveries = 2;
    })
    .await;
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("jobs.*", 1, Some("jobs"), None)
        .await
        .unwrap();
    let mut dead = broker.client().await;
    dead.subscribe("$dlq.jobs").await;
    // A catch-all subscriber sees the original but never a dead letter.
    let mut everything = broker.client().await;
    everything.subscribe(">").await;
    let mut producer = broker.client().await;
    let message_id = producer
        .publish_qos1(1, "jobs.email", b"poison")
        .await
        .unwrap();

    for count in 1..=2 {
        let got = consumer.expect_delivery().await;
        assert_eq!((got.delivery_count, got.message_id), (count, message_id));
    }
    let (letter, headers) = dead.expect_delivery_with_headers().await;
    assert_eq!(letter.topic, "$dlq.jobs");
    assert_eq!(letter.payload, b"poison");
    assert_eq!(letter.message_id, message_id);
    assert_eq!(headers["n"], b"poison", "the original headers are kept");
    assert_eq!(headers["blipmq-dead-letter-queue"], b"jobs");
    assert_eq!(headers["blipmq-original-topic"], b"jobs.email");
    assert_eq!(headers["blipmq-deliveries"], b"2");
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    assert_eq!(broker.metric("blipmq_dead_letters_total").await, 1);
    consumer.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(everything.expect_delivery().await.topic, "jobs.email");
    everything.expect_nothing(Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_durable_dead_letter_subscription_keeps_dead_letters_across_a_restart() {
    let broker = TestBroker::start_with(|c| {
        c.delivery.ack_timeout_ms = 50;
        c.delivery.max_deliveries = 1;
    })
    .await;
    let mut graveyard = broker.client().await;
    graveyard
        .subscribe_with("$dlq.>", 1, Some("graveyard"), None)
        .await
        .unwrap();
    drop(graveyard);
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("jobs", 1, Some("w"), None)
        .await
        .unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"bad").await.unwrap();
    consumer.expect_delivery().await;
    broker.wait_for_metric("blipmq_dead_letters_total", 1).await;
    drop((consumer, producer));
    let broker = broker.restart().await;
    let mut graveyard = broker.client().await;
    let sub = graveyard
        .subscribe_with("$dlq.>", 1, Some("graveyard"), None)
        .await
        .unwrap();
    let letter = graveyard.expect_delivery().await;
    assert_eq!(
        (letter.topic.as_str(), letter.payload.as_slice()),
        ("$dlq.w", &b"bad"[..])
    );
    graveyard.ack(sub, letter.delivery_id).await;
    broker.stop().await;
}

#[tokio::test]
async fn credit_limits_the_unacked_deliveries_a_consumer_holds() {
    let broker = TestBroker::start_with(|c| c.delivery.max_in_flight = 3).await;
    let mut consumer = broker.client().await;
    let sub = consumer
        .subscribe_with("t", 1, Some("credit"), None)
        .await
        .unwrap();
    let mut producer = broker.client().await;
    for i in 0..10u8 {
        producer
            .publish_qos1(u64::from(i) + 1, "t", &[i])
            .await
            .unwrap();
    }
    let mut held = Vec::new();
    for expected in 0..3u8 {
        let got = consumer.expect_delivery().await;
        assert_eq!(got.payload, [expected]);
        held.push(got.delivery_id);
    }
    consumer.expect_nothing(Duration::from_millis(200)).await;
    // Each ack makes room for exactly one more, in order.
    consumer.ack(sub, held[0]).await;
    assert_eq!(consumer.expect_delivery().await.payload, [3]);
    consumer.expect_nothing(Duration::from_millis(150)).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_queue_group_shares_qos0_messages_round_robin() {
    let broker = TestBroker::start().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut member = broker.client().await;
        member
            .subscribe_with("jobs", 0, None, Some("workers"))
            .await
            .unwrap();
        members.push(member);
    }
    let mut audit = broker.client().await;
    audit.subscribe("jobs").await;
    let mut producer = broker.client().await;
    for i in 0..30u8 {
        producer.publish("jobs", &[i]).await;
    }
    producer.sync().await;
    let mut seen = Vec::new();
    for member in &mut members {
        let got = member.sync().await;
        assert_eq!(got.len(), 10, "round robin over three idle members");
        for body in got {
            let Frame::Delivery(d) = decode(&body).unwrap() else {
                panic!("a delivery")
            };
            seen.push(d.payload[0]);
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..30).collect::<Vec<u8>>(),
        "each message to exactly one member"
    );
    assert_eq!(
        audit.sync().await.len(),
        30,
        "a plain subscriber gets everything"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_qos1_group_shares_work_and_a_lost_members_messages_go_to_a_survivor() {
    let broker = TestBroker::start().await;
    let mut a = broker.client().await;
    let mut b = broker.client().await;
    a.subscribe_with("jobs", 1, None, Some("workers"))
        .await
        .unwrap();
    let sub_b = b
        .subscribe_with("jobs", 1, None, Some("workers"))
        .await
        .unwrap();
    let mut producer = broker.client().await;
    for i in 0..10u8 {
        producer
            .publish_qos1(u64::from(i) + 1, "jobs", &[i])
            .await
            .unwrap();
    }
    let mut got_a = Vec::new();
    for _ in 0..5 {
        got_a.push(a.expect_delivery().await.payload[0]);
    }
    let mut got_b = Vec::new();
    for _ in 0..5 {
        let got = b.expect_delivery().await;
        got_b.push(got.payload[0]);
        b.ack(sub_b, got.delivery_id).await;
    }
    let mut all: Vec<u8> = got_a.iter().chain(&got_b).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<u8>>(), "each job to one member");
    // `a` dies without acking: its jobs go to `b`, marked as redeliveries.
    drop(a);
    let mut redelivered = Vec::new();
    for _ in 0..5 {
        let got = b.expect_delivery().await;
        assert_eq!(got.delivery_count, 2);
        redelivered.push(got.payload[0]);
        b.ack(sub_b, got.delivery_id).await;
    }
    redelivered.sort();
    got_a.sort();
    assert_eq!(redelivered, got_a);
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_qos1_group_outlives_its_members_and_restarts_until_the_last_unsubscribes() {
    let broker = TestBroker::start().await;
    let mut a = broker.client().await;
    let mut b = broker.client().await;
    let sub_a = a.subscribe_with("jobs", 1, None, Some("g")).await.unwrap();
    b.subscribe_with("jobs", 1, None, Some("g")).await.unwrap();
    // A group cannot be taken over as a plain durable subscription.
    let mut other = broker.client().await;
    assert_eq!(
        other.subscribe_with("jobs", 1, Some("g"), None).await,
        Err(ErrorCode::InvalidArgument)
    );
    // One member unsubscribing leaves the group to the others.
    a.unsubscribe(sub_a).await;
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 1);
    drop(b);
    broker.wait_for_metric("blipmq_connections", 2).await;
    let mut producer = broker.client().await;
    for i in 0..3u8 {
        producer
            .publish_qos1(u64::from(i) + 1, "jobs", &[i])
            .await
            .unwrap();
    }
    drop(producer);
    let broker = broker.restart().await;
    let mut c = broker.client().await;
    let sub_c = c.subscribe_with("jobs", 1, None, Some("g")).await.unwrap();
    for i in 0..3u8 {
        let got = c.expect_delivery().await;
        assert_eq!(
            got.payload,
            [i],
            "kept while no member was connected, in order"
        );
        c.ack(sub_c, got.delivery_id).await;
    }
    // The last member unsubscribing deletes the group.
    c.unsubscribe(sub_c).await;
    broker
        .wait_for_metric("blipmq_durable_subscriptions", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_qos1_subscription_without_a_name_acks_and_redelivers_until_its_connection_ends() {
    let broker = TestBroker::start_with(|c| c.delivery.ack_timeout_ms = 150).await;
    let mut consumer = broker.client().await;
    let sub = consumer.subscribe_with("t", 1, None, None).await.unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "t", b"x").await.unwrap();
    let first = consumer.expect_delivery().await;
    assert!(first.delivery_id > 0);
    let again = consumer.expect_delivery().await;
    assert_eq!(
        (again.delivery_id, again.delivery_count),
        (first.delivery_id, 2)
    );
    consumer.ack(sub, again.delivery_id).await;
    producer.publish_qos1(2, "t", b"y").await.unwrap();
    assert_eq!(consumer.expect_delivery().await.payload, b"y");
    // It is not a durable subscription, and goes with its connection.
    assert_eq!(broker.metric("blipmq_durable_subscriptions").await, 0);
    drop(consumer);
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn expired_messages_of_a_detached_durable_subscription_are_dropped() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("t", 1, Some("away"), None)
        .await
        .unwrap();
    drop(consumer);
    broker.wait_for_metric("blipmq_connections", 0).await;
    let mut producer = broker.client().await;
    producer
        .send(&blipmq_protocol::Frame::Publish(blipmq_protocol::Publish {
            publish_id: 1,
            topic: "t",
            payload: b"short-lived",
            ttl_ms: 100,
            qos: 1,
            headers: vec![],
        }))
        .await;
    let confirm = producer.recv_owned().await.expect("a confirm");
    assert!(matches!(decode(&confirm).unwrap(), Frame::Confirm(_)));
    producer.publish_qos1(2, "t", b"kept").await.unwrap();
    assert_eq!(broker.metric("blipmq_durable_unacked_messages").await, 2);
    // Nobody attaches, yet the expired one goes (and stops pinning the log).
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 1)
        .await;
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("t", 1, Some("away"), None)
        .await
        .unwrap();
    assert_eq!(consumer.expect_delivery().await.payload, b"kept");
    broker.stop().await;
}

#[tokio::test]
async fn an_ack_of_a_delivery_not_sent_to_the_subscription_is_refused_and_changes_nothing() {
    let broker = TestBroker::start_with(|c| c.delivery.max_in_flight = 1).await;
    let mut a = broker.client().await;
    let sub_a = a
        .subscribe_with("jobs", 1, None, Some("workers"))
        .await
        .unwrap();
    let mut b = broker.client().await;
    let sub_b = b
        .subscribe_with("jobs", 1, None, Some("workers"))
        .await
        .unwrap();
    let mut producer = broker.client().await;
    for i in 1..=3u8 {
        producer.publish_qos1(i.into(), "jobs", &[i]).await.unwrap();
    }
    let got_a = a.expect_delivery().await;
    let got_b = b.expect_delivery().await;
    // Delivery ids are log positions, easy to guess: B's, the third
    // message's (sent to nobody yet: no credit), and one that never was.
    let third = got_a.delivery_id.max(got_b.delivery_id) + 1;
    for id in [got_b.delivery_id, third, third + 1000] {
        a.ack(sub_a, id).await;
        let (code, message, request_id) = a.expect_error().await;
        assert_eq!(
            (code, request_id),
            (ErrorCode::InvalidArgument, 0),
            "{message}"
        );
    }
    assert_eq!(broker.metric("blipmq_durable_unacked_messages").await, 3);
    // B's own ack counts, and B gets the third.
    b.ack(sub_b, got_b.delivery_id).await;
    assert_eq!(b.expect_delivery().await.payload, [3]);
    // A's own, twice: the second is a harmless repeat.
    a.ack(sub_a, got_a.delivery_id).await;
    a.ack(sub_a, got_a.delivery_id).await;
    assert!(a.sync().await.is_empty(), "no answer to a repeated ack");
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 1)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_late_ack_after_the_message_went_to_another_member_changes_nothing() {
    let broker = TestBroker::start_with(|c| {
        c.delivery.ack_timeout_ms = 300;
        c.delivery.max_in_flight = 1;
    })
    .await;
    let mut a = broker.client().await;
    let sub_a = a
        .subscribe_with("jobs", 1, None, Some("workers"))
        .await
        .unwrap();
    let mut b = broker.client().await;
    let sub_b = b
        .subscribe_with("jobs", 1, None, Some("workers"))
        .await
        .unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"job").await.unwrap();
    let first = a.expect_delivery().await;
    // A sits on it past the ack timeout: it goes to B (its turn).
    let again = b.expect_delivery().await;
    assert_eq!(
        (again.delivery_id, again.delivery_count),
        (first.delivery_id, 2)
    );
    // A acks late: no error, and B still holds the message.
    a.ack(sub_a, first.delivery_id).await;
    assert!(a.sync().await.is_empty(), "a late ack is not an error");
    assert_eq!(broker.metric("blipmq_durable_unacked_messages").await, 1);
    b.ack(sub_b, again.delivery_id).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_dead_letter_that_runs_out_of_deliveries_is_dropped_not_dead_lettered_again() {
    let broker = TestBroker::start_with(|c| {
        c.delivery.ack_timeout_ms = 100;
        c.delivery.max_deliveries = 2;
    })
    .await;
    // A durable subscription to every dead letter that acks nothing: its
    // own dead letters (to $dlq.watcher) would match it again.
    let mut watcher = broker.client().await;
    watcher
        .subscribe_with("$dlq.>", 1, Some("watcher"), None)
        .await
        .unwrap();
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("jobs", 1, Some("jobs"), None)
        .await
        .unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"poison").await.unwrap();
    broker
        .wait_for_metric(
            "blipmq_messages_dropped_total{reason=\"dead_letter_exhausted\"}",
            1,
        )
        .await;
    // Everything the watcher got: the one dead letter, twice, with one set
    // of dead-letter headers.
    let mut letters = Vec::new();
    while let Some(body) = watcher.recv_within(Duration::from_millis(400)).await {
        let Frame::Delivery(d) = decode(&body).unwrap() else {
            panic!("expected deliveries");
        };
        let marks = d
            .headers
            .iter()
            .filter(|h| h.key == "blipmq-dead-letter-queue")
            .count();
        letters.push((d.topic.to_string(), d.route.delivery_count, marks));
    }
    let once = |count| ("$dlq.jobs".to_string(), count, 1);
    assert_eq!(letters, [once(1), once(2)]);
    assert_eq!(broker.metric("blipmq_dead_letters_total").await, 1);
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}
