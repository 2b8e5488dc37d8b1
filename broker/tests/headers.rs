//! Message headers through the real broker: round trip, limits, Welcome.

mod common;

use blipmq_protocol::{decode, ErrorCode, Frame, Header, Publish};
use common::*;

fn publish<'a>(publish_id: u64, topic: &'a str, headers: Vec<Header<'a>>) -> Frame<'a> {
    Frame::Publish(Publish {
        publish_id,
        topic,
        payload: b"body",
        ttl_ms: 0,
        qos: 0,
        headers,
    })
}

#[tokio::test]
async fn headers_arrive_in_order_with_duplicates_and_binary_values() {
    let broker = TestBroker::start().await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("h.>").await;
    subscriber.subscribe("h.plain").await;
    let mut publisher = broker.client().await;
    let binary = [0u8, 255, 10, 13, 0];
    let sent = vec![
        Header {
            key: "content-type",
            value: b"application/json",
        },
        Header {
            key: "x-tenant",
            value: b"acme",
        },
        Header {
            key: "x-tenant",
            value: b"second value, same key",
        },
        Header {
            key: "blob",
            value: &binary,
        },
        Header {
            key: "empty",
            value: b"",
        },
    ];
    publisher.send(&publish(0, "h.with", sent.clone())).await;
    publisher.send(&publish(0, "h.plain", vec![])).await;
    let body = subscriber.recv_owned().await.unwrap();
    match decode(&body).unwrap() {
        Frame::Delivery(d) => {
            assert_eq!(d.topic, "h.with");
            assert_eq!(d.headers, sent);
            assert_eq!(d.payload, b"body");
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    // A message without headers arrives without headers, to both subscriptions.
    for _ in 0..2 {
        let body = subscriber.recv_owned().await.unwrap();
        match decode(&body).unwrap() {
            Frame::Delivery(d) => assert!(d.headers.is_empty()),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn welcome_announces_the_header_limits() {
    let broker = TestBroker::start_with(|c| {
        c.server.max_headers = 3;
        c.server.max_header_key_bytes = 10;
        c.server.max_headers_bytes = 100;
    })
    .await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send_hello(None).await;
    let body = client.recv_owned().await.unwrap();
    match decode(&body).unwrap() {
        Frame::Welcome(w) => {
            assert_eq!(w.max_headers, 3);
            assert_eq!(w.max_header_key_size, 10);
            assert_eq!(w.max_headers_size, 100);
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn header_limits_and_rules_are_enforced_with_their_codes() {
    let broker = TestBroker::start_with(|c| {
        c.server.max_headers = 3;
        c.server.max_header_key_bytes = 10;
        c.server.max_headers_bytes = 100;
    })
    .await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("lim").await;
    let mut c = broker.client().await;
    let h = |key: &'static str, value: &'static [u8]| Header { key, value };
    let cases: Vec<(u64, Vec<Header<'static>>, ErrorCode, &str)> = vec![
        (
            1,
            vec![h("a", b""), h("b", b""), h("c", b""), h("d", b"")],
            ErrorCode::HeadersTooLarge,
            "4 headers",
        ),
        (
            2,
            vec![h("elevenbytes", b"")],
            ErrorCode::HeadersTooLarge,
            "key of 11 bytes",
        ),
        (
            3,
            vec![h("k", &[7u8; 100])],
            ErrorCode::HeadersTooLarge,
            "101 header bytes",
        ),
        (
            4,
            vec![h("has space", b"v")],
            ErrorCode::InvalidHeader,
            "whitespace",
        ),
        (5, vec![h("", b"v")], ErrorCode::InvalidHeader, "empty key"),
    ];
    for (id, headers, code, fragment) in cases {
        c.send(&publish(id, "lim", headers)).await;
        let (got, message, request_id) = c.expect_error().await;
        assert_eq!((got, request_id), (code, id), "{message}");
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
    // At the limits exactly, the message goes through.
    c.send(&publish(
        6,
        "lim",
        vec![h("k", &[7u8; 97]), h("x", b""), h("y", b"")],
    ))
    .await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(got.topic, "lim");
    assert!(
        broker
            .metric("blipmq_errors_sent_total{code=\"404\",name=\"HeadersTooLarge\"}")
            .await
            >= 3
    );
    // Nothing refused was delivered.
    assert!(c.sync().await.is_empty());
    subscriber
        .expect_nothing(std::time::Duration::from_millis(100))
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_frame_with_headers_at_the_limits_and_a_full_payload_fits_the_frame_limit() {
    let broker = TestBroker::start_with(|c| {
        c.server.max_message_size_bytes = 1024;
        c.server.max_headers = 64;
        c.server.max_headers_bytes = 16 * 1024;
    })
    .await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("big").await;
    let mut c = broker.client().await;
    let keys: Vec<String> = (0..64).map(|i| format!("key-{i:03}")).collect();
    let value = vec![b'v'; 16 * 1024 / 64 - 7];
    let headers: Vec<Header<'_>> = keys
        .iter()
        .map(|k| Header {
            key: k,
            value: &value,
        })
        .collect();
    c.send(&Frame::Publish(Publish {
        publish_id: 9,
        topic: "big",
        payload: &[1u8; 1024],
        ttl_ms: 0,
        qos: 0,
        headers,
    }))
    .await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(got.payload.len(), 1024);
    broker.stop().await;
}
