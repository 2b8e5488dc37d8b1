//! Keepalive after the handshake (LIMIT-30, LIMIT-31, PING-2): a silent
//! connection is pinged, then closed, which detaches its subscriptions.

mod common;

use std::time::{Duration, Instant};

use blipmq_protocol::{decode, ErrorCode, Frame};
use common::{RawClient, TestBroker};

const INTERVAL_MS: u64 = 200;

async fn broker(missed: u32) -> TestBroker {
    TestBroker::start_with(|c| {
        c.server.keepalive_interval_ms = INTERVAL_MS;
        c.server.keepalive_missed = missed;
    })
    .await
}

/// The next frame, which must be a broker Ping; returns when it came.
async fn expect_ping(client: &mut RawClient) -> Instant {
    let body = client.recv_owned().await.expect("a Ping, not a close");
    match decode(&body).unwrap() {
        Frame::Ping { .. } => Instant::now(),
        other => panic!("expected Ping, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_connection_is_pinged_then_closed() {
    let broker = broker(2).await;
    let mut client = broker.client().await;
    let heard = Instant::now();
    let interval = Duration::from_millis(INTERVAL_MS);
    // LIMIT-30: a Ping after an interval of silence, and one per further
    // silent interval; LIMIT-31: closed after `missed` of them go unanswered.
    let first = expect_ping(&mut client).await;
    let second = expect_ping(&mut client).await;
    assert!(first - heard >= interval, "{:?}", first - heard);
    assert!(second - first >= interval, "{:?}", second - first);
    assert!(client.expect_closed().await.is_empty());
    let closed = heard.elapsed();
    assert!(closed >= interval * 3, "closed after {closed:?}");
    assert!(
        closed < interval * 3 + Duration::from_secs(2),
        "closed after {closed:?}"
    );
    broker
        .wait_for_metric("blipmq_keepalive_closes_total", 1)
        .await;
    broker.wait_for_metric("blipmq_connections", 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_connection_that_answers_pings_stays() {
    let broker = broker(1).await;
    let mut client = broker.client().await;
    let until = Instant::now() + Duration::from_millis(INTERVAL_MS * 8);
    let mut pings = 0;
    while Instant::now() < until {
        let body = client.recv_owned().await.expect("a Ping, not a close");
        let Frame::Ping { nonce } = decode(&body).unwrap() else {
            panic!("expected Ping");
        };
        client.send(&Frame::Pong { nonce }).await;
        pings += 1;
    }
    assert!(pings >= 3, "{pings} pings");
    client.sync().await;
    assert_eq!(broker.metric("blipmq_keepalive_closes_total").await, 0);
    broker.stop().await;
}

#[tokio::test]
async fn a_connection_that_keeps_talking_is_never_pinged() {
    let broker = broker(1).await;
    let mut client = broker.client().await;
    // Any frame counts as alive, not only a Pong.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS / 2)).await;
        client.publish("chatter", b"x").await;
    }
    client
        .expect_nothing(Duration::from_millis(INTERVAL_MS / 2))
        .await;
    client.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn keepalive_zero_never_pings() {
    let broker = TestBroker::start_with(|c| c.server.keepalive_interval_ms = 0).await;
    let mut client = broker.client().await;
    client.expect_nothing(Duration::from_millis(800)).await;
    client.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_durable_consumer_is_detached_and_its_replacement_gets_the_unacked() {
    let broker = broker(1).await;
    let mut consumer = broker.client().await;
    let sub = consumer
        .subscribe_with("jobs", 1, Some("worker"), None)
        .await
        .expect("subscribed");
    let mut producer = broker.client().await;
    for i in 0..3u64 {
        producer
            .publish_qos1(i + 1, "jobs", format!("job-{i}").as_bytes())
            .await
            .expect("confirmed");
    }
    for _ in 0..3 {
        assert_eq!(consumer.expect_delivery().await.subscription_id, sub);
    }
    drop(producer);
    // The consumer hangs: it neither reads nor writes, and never closes.
    let mut replacement = broker.client().await;
    assert_eq!(
        replacement
            .subscribe_with("jobs", 1, Some("worker"), None)
            .await,
        Err(ErrorCode::DurableInUse),
        "attached while the first consumer is alive"
    );
    // The replacement answers its own Pings meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.metric("blipmq_keepalive_closes_total").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the silent consumer was not closed"
        );
        if let Some(body) = replacement.recv_within(Duration::from_millis(50)).await {
            if let Frame::Ping { nonce } = decode(&body).unwrap() {
                replacement.send(&Frame::Pong { nonce }).await;
            }
        }
    }
    let sub2 = replacement
        .subscribe_with("jobs", 1, Some("worker"), None)
        .await
        .expect("attached once the silent consumer was closed");
    let mut got = Vec::new();
    while got.len() < 3 {
        let body = replacement.recv_owned().await.expect("a delivery");
        match decode(&body).unwrap() {
            Frame::Delivery(d) => {
                assert_eq!(d.route.subscription_id, sub2);
                assert!(d.route.delivery_count >= 2, "a redelivery");
                got.push(d.payload.to_vec());
            }
            Frame::Ping { nonce } => replacement.send(&Frame::Pong { nonce }).await,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        got,
        [b"job-0".to_vec(), b"job-1".to_vec(), b"job-2".to_vec()]
    );
    drop(consumer);
    broker.stop().await;
}
