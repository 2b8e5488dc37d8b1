//! Job-queue controls for QoS 1 through the real broker (QOS-20..QOS-23):
//! nak with and without a delay, term to the dead-letter topic, in-progress
//! holding back the ack timeout, and each subscription's own ack timeout and
//! max_deliveries — for durable subscriptions, queue groups and QoS 1
//! subscriptions without a name alike.

mod common;

use std::time::{Duration, Instant};

use blipmq_protocol::{decode, Ack, AckKind, ErrorCode, Frame, Subscribe};
use common::*;

/// How a test subscribes at QoS 1.
#[derive(Clone, Copy)]
struct Sub<'a> {
    durable: Option<&'a str>,
    group: Option<&'a str>,
    ack_timeout_ms: u32,
    max_deliveries: u32,
}

const DURABLE: Sub<'static> = Sub {
    durable: Some("worker"),
    group: None,
    ack_timeout_ms: 0,
    max_deliveries: 0,
};

/// Subscribe with the job-queue terms; the subscription id, or the error
/// code (and the request id it carried must be ours).
async fn subscribe(
    client: &mut RawClient,
    pattern: &str,
    qos: u8,
    sub: Sub<'_>,
) -> Result<u64, ErrorCode> {
    let request_id = 7_000 + u64::from(sub.ack_timeout_ms % 1000) + u64::from(sub.max_deliveries);
    client
        .send(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            qos,
            durable_name: sub.durable,
            queue_group: sub.group,
            ack_timeout_ms: sub.ack_timeout_ms,
            max_deliveries: sub.max_deliveries,
        }))
        .await;
    let body = client.recv_owned().await.expect("an answer");
    match decode(&body).unwrap() {
        Frame::Subscribed(s) => Ok(s.subscription_id),
        Frame::Error(e) => {
            assert_eq!(e.request_id, request_id);
            Err(e.code)
        }
        other => panic!("expected Subscribed or Error, got {other:?}"),
    }
}

async fn settle(client: &mut RawClient, got: &Got, kind: AckKind, delay_ms: u32) {
    client
        .send(&Frame::Ack(Ack {
            subscription_id: got.subscription_id,
            delivery_id: got.delivery_id,
            kind: kind.as_wire(),
            delay_ms,
        }))
        .await;
}

#[tokio::test]
async fn a_nak_redelivers_at_once_for_every_kind_of_qos1_subscription() {
    // The broker's ack timeout is long: only the nak can bring it back.
    let broker = TestBroker::start_with(|c| c.delivery.ack_timeout_ms = 60_000).await;
    let kinds = [
        ("durable", DURABLE),
        (
            "group",
            Sub {
                durable: None,
                group: Some("pool"),
                ..DURABLE
            },
        ),
        (
            "ephemeral",
            Sub {
                durable: None,
                ..DURABLE
            },
        ),
    ];
    let mut producer = broker.client().await;
    for (i, (what, sub)) in kinds.into_iter().enumerate() {
        let topic = format!("jobs.{what}");
        let mut consumer = broker.client().await;
        subscribe(&mut consumer, &topic, 1, sub).await.unwrap();
        producer
            .publish_qos1(1 + i as u64, &topic, b"job")
            .await
            .unwrap();
        let first = consumer.expect_delivery().await;
        assert_eq!(first.delivery_count, 1, "{what}");
        settle(&mut consumer, &first, AckKind::Nak, 0).await;
        let again = consumer.expect_delivery().await;
        assert_eq!(
            (again.delivery_id, again.message_id, again.delivery_count),
            (first.delivery_id, first.message_id, 2),
            "{what}: the same delivery, counted"
        );
        consumer.ack(again.subscription_id, again.delivery_id).await;
        consumer.expect_nothing(Duration::from_millis(100)).await;
    }
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_nak_with_a_delay_redelivers_no_sooner_than_the_delay() {
    let broker = TestBroker::start_with(|c| c.delivery.ack_timeout_ms = 60_000).await;
    let mut consumer = broker.client().await;
    subscribe(&mut consumer, "jobs", 1, DURABLE).await.unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"later").await.unwrap();
    producer.publish_qos1(2, "jobs", b"next").await.unwrap();
    let first = consumer.expect_delivery().await;
    let second = consumer.expect_delivery().await;
    let naked = Instant::now();
    settle(&mut consumer, &first, AckKind::Nak, 300).await;
    consumer
        .ack(second.subscription_id, second.delivery_id)
        .await;
    consumer.expect_nothing(Duration::from_millis(200)).await;
    let again = consumer.expect_delivery().await;
    assert!(
        naked.elapsed() >= Duration::from_millis(300),
        "{:?}",
        naked.elapsed()
    );
    assert_eq!(
        (again.payload.as_slice(), again.delivery_count),
        (&b"later"[..], 2)
    );
    consumer.ack(again.subscription_id, again.delivery_id).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn naks_count_toward_the_subscriptions_max_deliveries_then_it_dead_letters() {
    // The broker has no limit; the subscription asks for 2.
    let broker = TestBroker::start_with(|c| c.delivery.max_deliveries = 0).await;
    let mut dead = broker.client().await;
    dead.subscribe("$dlq.worker").await;
    let mut consumer = broker.client().await;
    let sub = Sub {
        max_deliveries: 2,
        ..DURABLE
    };
    subscribe(&mut consumer, "jobs", 1, sub).await.unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"flaky").await.unwrap();
    for count in 1..=2 {
        let got = consumer.expect_delivery().await;
        assert_eq!(got.delivery_count, count);
        settle(&mut consumer, &got, AckKind::Nak, 0).await;
    }
    let (letter, headers) = dead.expect_delivery_with_headers().await;
    assert_eq!(letter.payload, b"flaky");
    assert_eq!(headers["blipmq-deliveries"], b"2");
    assert_eq!(headers["blipmq-dead-letter-reason"], b"max_deliveries");
    consumer.expect_nothing(Duration::from_millis(200)).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_term_dead_letters_at_once_and_a_restart_does_not_bring_it_back() {
    let broker = TestBroker::start_with(|c| c.delivery.max_deliveries = 0).await;
    let mut dead = broker.client().await;
    dead.subscribe("$dlq.worker").await;
    let mut consumer = broker.client().await;
    subscribe(&mut consumer, "jobs.*", 1, DURABLE)
        .await
        .unwrap();
    let mut producer = broker.client().await;
    let message_id = producer
        .publish_qos1(1, "jobs.pdf", b"poison")
        .await
        .unwrap();
    producer.publish_qos1(2, "jobs.pdf", b"fine").await.unwrap();
    let poison = consumer.expect_delivery().await;
    let fine = consumer.expect_delivery().await;
    settle(&mut consumer, &poison, AckKind::Term, 0).await;
    let (letter, headers) = dead.expect_delivery_with_headers().await;
    assert_eq!(
        (letter.message_id, letter.payload.as_slice()),
        (message_id, &b"poison"[..])
    );
    assert_eq!(headers["blipmq-dead-letter-reason"], b"terminated");
    assert_eq!(headers["blipmq-dead-letter-queue"], b"worker");
    assert_eq!(headers["blipmq-original-topic"], b"jobs.pdf");
    assert_eq!(headers["blipmq-deliveries"], b"1");
    broker.wait_for_metric("blipmq_dead_letters_total", 1).await;
    // Still unacked: only "fine".
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 1)
        .await;
    consumer.expect_nothing(Duration::from_millis(100)).await;
    drop((consumer, producer, dead));
    let broker = broker.restart().await;
    let mut consumer = broker.client().await;
    subscribe(&mut consumer, "jobs.*", 1, DURABLE)
        .await
        .unwrap();
    let after = consumer.expect_delivery().await;
    assert_eq!(
        after.payload, fine.payload,
        "only the unacked one comes back"
    );
    consumer.ack(after.subscription_id, after.delivery_id).await;
    consumer.expect_nothing(Duration::from_millis(300)).await;
    broker.stop().await;
}

#[tokio::test]
async fn in_progress_keeps_a_long_job_from_its_subscriptions_ack_timeout() {
    // The broker's timeout is a minute; the subscription's is 200 ms, and
    // the broker honours it without waiting for its own sweep tick.
    let broker = TestBroker::start_with(|c| c.delivery.ack_timeout_ms = 60_000).await;
    let mut consumer = broker.client().await;
    let sub = Sub {
        ack_timeout_ms: 200,
        ..DURABLE
    };
    subscribe(&mut consumer, "jobs", 1, sub).await.unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"long").await.unwrap();
    let job = consumer.expect_delivery().await;
    // Working for 3x the ack timeout, saying so every 100 ms.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        settle(&mut consumer, &job, AckKind::InProgress, 0).await;
        consumer.expect_nothing(Duration::from_millis(100)).await;
    }
    consumer.ack(job.subscription_id, job.delivery_id).await;
    consumer.expect_nothing(Duration::from_millis(300)).await;
    // Without in-progress the subscription's own timeout takes it back.
    producer.publish_qos1(2, "jobs", b"stalled").await.unwrap();
    let stalled = consumer.expect_delivery().await;
    let sent = Instant::now();
    let again = consumer.expect_delivery().await;
    assert_eq!(
        (again.delivery_id, again.delivery_count),
        (stalled.delivery_id, 2)
    );
    // Well before the sweep's regular tick (a second, from the broker's
    // own timeout): the alarm rang for the subscription's deadline.
    assert!(
        sent.elapsed() < Duration::from_millis(800),
        "{:?}",
        sent.elapsed()
    );
    consumer.ack(again.subscription_id, again.delivery_id).await;
    broker
        .wait_for_metric("blipmq_durable_unacked_messages", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn terms_out_of_bounds_and_unknown_ack_kinds_are_refused() {
    let broker = TestBroker::start().await;
    let mut client = broker.client().await;
    for (qos, ack_timeout_ms, max_deliveries) in [
        (1, 9, 0),
        (1, 3_600_001, 0),
        (1, 0, 10_001),
        // Terms mean nothing at QoS 0.
        (0, 1_000, 0),
        (0, 0, 3),
    ] {
        let sub = Sub {
            durable: None,
            group: None,
            ack_timeout_ms,
            max_deliveries,
        };
        assert_eq!(
            subscribe(&mut client, "jobs", qos, sub).await,
            Err(ErrorCode::InvalidArgument),
            "qos {qos}, ack_timeout_ms {ack_timeout_ms}, max_deliveries {max_deliveries}"
        );
    }
    // The connection serves on; the bounds themselves are accepted.
    let edges = Sub {
        ack_timeout_ms: 10,
        max_deliveries: 10_000,
        ..DURABLE
    };
    subscribe(&mut client, "edges", 1, edges).await.unwrap();
    let id = subscribe(
        &mut client,
        "jobs",
        1,
        Sub {
            durable: None,
            ..DURABLE
        },
    )
    .await
    .unwrap();
    let mut producer = broker.client().await;
    producer.publish_qos1(1, "jobs", b"x").await.unwrap();
    let got = client.expect_delivery().await;
    // An ack kind from a newer client: refused, request id 0, nothing done.
    client
        .send(&Frame::Ack(Ack {
            subscription_id: id,
            delivery_id: got.delivery_id,
            kind: 9,
            delay_ms: 0,
        }))
        .await;
    let (code, _, request_id) = client.expect_error().await;
    assert_eq!((code, request_id), (ErrorCode::InvalidArgument, 0));
    // A nak, term or in-progress of a delivery never sent here: as for an
    // ack (QOS-18), refused with request id 0.
    for kind in [AckKind::Nak, AckKind::Term, AckKind::InProgress] {
        let guessed = Got {
            delivery_id: got.delivery_id + 1_000,
            ..got.clone()
        };
        settle(&mut client, &guessed, kind, 0).await;
        let (code, _, request_id) = client.expect_error().await;
        assert_eq!(
            (code, request_id),
            (ErrorCode::InvalidArgument, 0),
            "{kind:?}"
        );
    }
    broker.stop().await;
}
