//! Job-queue controls of a QoS 1 message against a live broker: nak (with
//! and without a delay), term to the dead-letter topic, in-progress against
//! the subscription's own ack timeout, and the subscribe options
//! `ack_timeout` and `max_deliveries`, bad values included.

use std::time::{Duration, Instant};

use blipmq::{
    Client, ErrorCode, PublishOptions, Qos, RequestErrorKind, SubscribeErrorKind, SubscribeOptions,
};

use futures::StreamExt;

mod common;

use common::{Broker, PATIENCE};

async fn next(sub: &mut blipmq::Subscription) -> blipmq::Message {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("a message in time")
        .expect("subscription still open")
}

async fn nothing_within(sub: &mut blipmq::Subscription, wait: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(wait, sub.next()).await {
        panic!(
            "unexpected message {:?} (delivery {})",
            m.payload(),
            m.delivery_count()
        );
    }
}

fn worker() -> SubscribeOptions {
    SubscribeOptions {
        qos: Qos::AtLeastOnce,
        durable: Some("worker".into()),
        ..Default::default()
    }
}

async fn publish_qos1(client: &Client, topic: &str, payload: &'static str) {
    let qos1 = PublishOptions {
        qos: Qos::AtLeastOnce,
        ..Default::default()
    };
    client.publish_with(topic, payload, qos1).await.unwrap();
}

/// The broker's own ack timeout is a minute in these tests: only a nak, or
/// the subscription's own timeout, brings a message back sooner.
async fn patient_broker() -> Broker {
    Broker::start_with(|c| {
        c.delivery.ack_timeout_ms = 60_000;
        c.delivery.max_deliveries = 0;
    })
    .await
}

#[tokio::test]
async fn nak_redelivers_at_once_and_nak_with_delay_waits() {
    let broker = patient_broker().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut sub = client.subscribe_with("jobs", worker()).await.unwrap();
    publish_qos1(&client, "jobs", "retry me").await;
    let first = next(&mut sub).await;
    assert_eq!(first.delivery_count(), 1);
    first.nak().await.unwrap();
    let second = next(&mut sub).await;
    assert_eq!(
        (second.delivery_id(), second.delivery_count()),
        (first.delivery_id(), 2)
    );
    let naked = Instant::now();
    second
        .nak_with_delay(Duration::from_millis(300))
        .await
        .unwrap();
    nothing_within(&mut sub, Duration::from_millis(200)).await;
    let third = next(&mut sub).await;
    assert!(naked.elapsed() >= Duration::from_millis(300));
    assert_eq!(third.delivery_count(), 3);
    third.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(200)).await;
    client.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn term_moves_the_message_to_the_dead_letter_topic() {
    let broker = patient_broker().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut dead = client.subscribe("$dlq.worker").await.unwrap();
    let mut sub = client.subscribe_with("jobs", worker()).await.unwrap();
    publish_qos1(&client, "jobs", "poison").await;
    let poison = next(&mut sub).await;
    poison.term().await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(&letter.payload()[..], b"poison");
    assert_eq!(letter.id(), poison.id());
    let reason = letter.headers().get("blipmq-dead-letter-reason");
    assert_eq!(reason.map(|v| &v[..]), Some(&b"terminated"[..]));
    nothing_within(&mut sub, Duration::from_millis(200)).await;
    client.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn in_progress_holds_off_the_subscriptions_own_ack_timeout() {
    let broker = patient_broker().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let options = SubscribeOptions {
        ack_timeout: Some(Duration::from_millis(200)),
        ..worker()
    };
    let mut sub = client.subscribe_with("jobs", options).await.unwrap();
    publish_qos1(&client, "jobs", "long").await;
    let job = next(&mut sub).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        job.in_progress().await.unwrap();
        nothing_within(&mut sub, Duration::from_millis(100)).await;
    }
    job.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(300)).await;
    // Without it, the 200 ms timeout (not the broker's minute) applies.
    publish_qos1(&client, "jobs", "stalled").await;
    let stalled = next(&mut sub).await;
    let again = next(&mut sub).await;
    assert_eq!(
        (again.delivery_id(), again.delivery_count()),
        (stalled.delivery_id(), 2)
    );
    again.ack().await.unwrap();
    client.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn max_deliveries_of_the_subscription_dead_letters_after_naks() {
    let broker = patient_broker().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut dead = client.subscribe("$dlq.worker").await.unwrap();
    let options = SubscribeOptions {
        max_deliveries: 2,
        ..worker()
    };
    let mut sub = client.subscribe_with("jobs", options).await.unwrap();
    publish_qos1(&client, "jobs", "flaky").await;
    for count in 1..=2 {
        let m = next(&mut sub).await;
        assert_eq!(m.delivery_count(), count);
        m.nak().await.unwrap();
    }
    let letter = next(&mut dead).await;
    let deliveries = letter.headers().get("blipmq-deliveries");
    assert_eq!(deliveries.map(|v| &v[..]), Some(&b"2"[..]));
    nothing_within(&mut sub, Duration::from_millis(200)).await;
    client.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn bad_terms_are_refused_and_qos0_controls_are_no_ops() {
    let broker = patient_broker().await;
    let client = Client::connect(broker.url()).await.unwrap();
    for options in [
        SubscribeOptions {
            ack_timeout: Some(Duration::from_millis(5)),
            ..worker()
        },
        SubscribeOptions {
            // Rounded up to 1 ms, not to 0 (which would mean the default).
            ack_timeout: Some(Duration::from_micros(10)),
            ..worker()
        },
        SubscribeOptions {
            max_deliveries: 10_001,
            ..worker()
        },
        SubscribeOptions {
            ack_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    ] {
        let error = client.subscribe_with("jobs", options).await.unwrap_err();
        assert_eq!(error.kind(), SubscribeErrorKind::Rejected, "{error}");
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
    }
    // QoS 0 messages need none of it: every control returns at once.
    let mut plain = client.subscribe("news").await.unwrap();
    client.publish("news", "hi").await.unwrap();
    let m = next(&mut plain).await;
    m.nak().await.unwrap();
    m.nak_with_delay(Duration::from_secs(1)).await.unwrap();
    m.term().await.unwrap();
    m.in_progress().await.unwrap();
    // After close, a QoS 1 control fails as an ack does.
    let mut sub = client.subscribe_with("jobs", worker()).await.unwrap();
    publish_qos1(&client, "jobs", "late").await;
    let job = next(&mut sub).await;
    client.close().await;
    let error = job.nak().await.unwrap_err();
    assert_eq!(error.kind(), RequestErrorKind::Closed);
    assert_eq!(
        job.ack().await.unwrap_err().kind(),
        RequestErrorKind::Closed
    );
    broker.stop().await;
}
