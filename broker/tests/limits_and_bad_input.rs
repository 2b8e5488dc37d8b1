//! Limits, the handshake rules, and hostile or broken input, against the real
//! broker. Every test that abuses one connection also keeps a well-behaved
//! publisher/subscriber pair ("bystanders") running before and after the
//! abuse, to prove that one bad client cannot hurt the others.

mod common;

use std::time::{Duration, Instant};

use blipmq_protocol::{
    decode, error_code_name, fb, Confirm, Delivery, Encoder, ErrorCode, ErrorFrame, Frame,
    FrameError, Hello, Publish, Route, Subscribed, Unsubscribed, Welcome, FRAME_ENVELOPE_ALLOWANCE,
    LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A subscriber and a publisher that play by the rules. [`Bystanders::check`]
/// proves the broker still serves them.
struct Bystanders {
    publisher: RawClient,
    subscriber: RawClient,
    subscription_id: u64,
    topic: &'static str,
    round: u32,
}

impl Bystanders {
    async fn join(broker: &TestBroker) -> Bystanders {
        Self::join_with_key(broker, None).await
    }

    async fn join_with_key(broker: &TestBroker, api_key: Option<&str>) -> Bystanders {
        let topic = "bystanders.chat";
        let mut subscriber = RawClient::connect(broker.addr).await;
        subscriber.handshake(api_key).await;
        let subscription_id = subscriber.subscribe(topic).await;
        let mut publisher = RawClient::connect(broker.addr).await;
        publisher.handshake(api_key).await;
        let mut bystanders = Bystanders {
            publisher,
            subscriber,
            subscription_id,
            topic,
            round: 0,
        };
        bystanders.check().await;
        bystanders
    }

    /// One message from the publisher reaches the subscriber, intact.
    async fn check(&mut self) {
        self.round += 1;
        let payload = format!("bystander message #{}", self.round);
        self.publisher.publish(self.topic, payload.as_bytes()).await;
        let got = self.subscriber.expect_delivery().await;
        assert_eq!(got.subscription_id, self.subscription_id);
        assert_eq!(got.topic, self.topic);
        assert_eq!(
            got.payload,
            payload.as_bytes(),
            "bystander round {}",
            self.round
        );
        // Neither side got anything it did not ask for.
        assert!(self.publisher.sync().await.is_empty());
        assert!(self.subscriber.sync().await.is_empty());
    }
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    Encoder::new().encode_to_bytes(frame).to_vec()
}

/// `body` behind a correct length prefix.
fn prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn publish_frame<'a>(publish_id: u64, topic: &'a str, payload: &'a [u8]) -> Frame<'a> {
    Frame::Publish(Publish {
        publish_id,
        topic,
        payload,
        ttl_ms: 0,
        qos: 0,
        headers: vec![],
    })
}

/// A structurally valid Envelope whose union tag is `body_type`, carrying a
/// Ping table as its body.
fn envelope_with_body_type(body_type: u8) -> Vec<u8> {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let ping = fb::Ping::create(&mut b, &fb::PingArgs { nonce: 42 });
    let envelope = fb::Envelope::create(
        &mut b,
        &fb::EnvelopeArgs {
            body_type: fb::Body(body_type),
            body: Some(ping.as_union_value()),
        },
    );
    b.finish(envelope, None);
    prefixed(b.finished_data())
}

/// A valid Envelope with no body and no union tag.
fn empty_envelope() -> Vec<u8> {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let envelope = fb::Envelope::create(&mut b, &fb::EnvelopeArgs::default());
    b.finish(envelope, None);
    prefixed(b.finished_data())
}

/// How many error frames with `code` the broker has sent (0 before the first).
async fn errors_sent(broker: &TestBroker, code: ErrorCode) -> u64 {
    let sample = format!(
        "blipmq_errors_sent_total{{code=\"{}\",name=\"{}\"}}",
        code.0,
        error_code_name(code)
    );
    metric_value(&broker.metrics().await, &sample).unwrap_or(0)
}

/// The next frame is an error with `code` and `request_id`; returns its message.
async fn expect_error_code(client: &mut RawClient, code: ErrorCode, request_id: u64) -> String {
    let (got_code, message, got_request_id) = client.expect_error().await;
    assert_eq!(
        (got_code, got_request_id),
        (code, request_id),
        "error message: {message}"
    );
    assert!(!message.is_empty(), "errors explain themselves");
    message
}

/// The next frame is an error with `code`, and then the broker closes.
async fn expect_error_and_close(client: &mut RawClient, code: ErrorCode) -> String {
    let message = expect_error_code(client, code, 0).await;
    let rest = client.expect_closed().await;
    assert!(
        rest.is_empty(),
        "nothing after the error, got {:?}",
        rest.iter().map(|f| decode(f)).collect::<Vec<_>>()
    );
    message
}

/// The connection is open and in sync: a Ping is answered, with nothing
/// unexpected before the Pong.
async fn expect_alive(client: &mut RawClient) {
    let before = client.sync().await;
    assert!(
        before.is_empty(),
        "unexpected frames before the Pong: {:?}",
        before.iter().map(|f| decode(f)).collect::<Vec<_>>()
    );
}

fn hello(protocol_version: u16, api_key: Option<&str>) -> Frame<'_> {
    Frame::Hello(Hello {
        protocol_version,
        client_name: Some("limits-test"),
        api_key,
        drop_notices: false,
    })
}

// ---------------------------------------------------------------------------
// 1. Message size limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn payload_over_max_message_size_is_refused_with_its_publish_id_and_the_connection_survives()
{
    let broker = TestBroker::start_with(|c| c.server.max_message_size_bytes = 1024).await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut subscriber = broker.client().await;
    let subscription_id = subscriber.subscribe("big").await;
    let mut publisher = broker.client().await;

    let too_big = vec![0xAB; 1025];
    publisher.send(&publish_frame(7, "big", &too_big)).await;
    let message = expect_error_code(&mut publisher, ErrorCode::MessageTooLarge, 7).await;
    assert!(
        message.contains("1025") && message.contains("1024"),
        "{message}"
    );

    // Exactly at the limit is fine, on the same connection.
    let at_limit: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    publisher.send(&publish_frame(8, "big", &at_limit)).await;
    expect_alive(&mut publisher).await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(got.subscription_id, subscription_id);
    assert_eq!(got.payload, at_limit);
    // The refused message was never delivered.
    subscriber.expect_nothing(Duration::from_millis(50)).await;

    // Two bystander messages (join + check) and the one at the limit.
    bystanders.check().await;
    assert_eq!(broker.metric("blipmq_messages_published_total").await, 3);
    assert_eq!(errors_sent(&broker, ErrorCode::MessageTooLarge).await, 1);
    // A payload over the limit is a refused request, not a protocol error.
    assert_eq!(broker.metric("blipmq_protocol_errors_total").await, 0);
    broker.stop().await;
}

#[tokio::test]
async fn frame_over_the_frame_limit_is_skipped_without_closing_the_connection() {
    let max = 1024;
    let broker = TestBroker::start_with(|c| c.server.max_message_size_bytes = max).await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut subscriber = broker.client().await;
    let subscription_id = subscriber.subscribe("huge").await;
    let mut publisher = broker.client().await;

    // A real, well-formed publish whose frame is far over the limit.
    let huge_payload = vec![0x5A; 100 * 1024];
    let huge = encode(&publish_frame(9, "huge", &huge_payload));
    let announced = u32::from_le_bytes(huge[..LENGTH_PREFIX_LEN].try_into().unwrap()) as usize;
    // The frame limit: the payload limit plus room for topic, headers, envelope.
    let limit = {
        let mut config = blipmq_broker::Config::default();
        config.server.max_message_size_bytes = max;
        config.max_frame_size()
    };
    assert!(limit >= max + FRAME_ENVELOPE_ALLOWANCE);
    assert!(announced > limit);
    publisher.send_raw(&huge).await;
    // The frame is refused as a whole: its body is never parsed, so the
    // error cannot name the publish_id.
    let message = expect_error_code(&mut publisher, ErrorCode::MessageTooLarge, 0).await;
    assert!(
        message.contains(&announced.to_string()) && message.contains(&limit.to_string()),
        "{message}"
    );
    expect_alive(&mut publisher).await;
    publisher.publish("huge", b"after the skipped frame").await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(got.subscription_id, subscription_id);
    assert_eq!(got.payload, b"after the skipped frame");

    // The skip also resynchronises when the oversized frame and the next
    // ones arrive in the same write.
    let mut burst = huge.clone();
    burst.extend_from_slice(&encode(&publish_frame(0, "huge", b"same write")));
    burst.extend_from_slice(&encode(&Frame::Ping { nonce: 4242 }));
    publisher.send_raw(&burst).await;
    expect_error_code(&mut publisher, ErrorCode::MessageTooLarge, 0).await;
    match decode(&publisher.recv_owned().await.expect("Pong")).unwrap() {
        Frame::Pong { nonce } => assert_eq!(nonce, 4242),
        other => panic!("expected Pong, got {other:?}"),
    }
    assert_eq!(subscriber.expect_delivery().await.payload, b"same write");
    subscriber.expect_nothing(Duration::from_millis(50)).await;

    bystanders.check().await;
    assert_eq!(errors_sent(&broker, ErrorCode::MessageTooLarge).await, 2);
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 2)
        .await;
    broker.wait_for_metric("blipmq_connections", 4).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 2. Absurd length prefix
// ---------------------------------------------------------------------------

const ABSURD_PREFIX: u32 = 0xFFFF_FFF0;

fn absurd_frame() -> Vec<u8> {
    let mut bytes = ABSURD_PREFIX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"junk!");
    bytes
}

#[tokio::test]
async fn absurd_length_prefix_after_the_handshake_is_refused_promptly() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut abuser = broker.client().await;

    let started = Instant::now();
    abuser.send_raw(&absurd_frame()).await;
    // The broker refuses on the prefix alone, without waiting for (or
    // allocating) the ~4 GiB it announces.
    let message = expect_error_code(&mut abuser, ErrorCode::MessageTooLarge, 0).await;
    assert!(
        started.elapsed() < PATIENCE / 2,
        "took {:?}",
        started.elapsed()
    );
    assert!(message.contains(&ABSURD_PREFIX.to_string()), "{message}");

    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 1)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::MessageTooLarge).await, 1);
    bystanders.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn absurd_length_prefix_before_the_handshake_gets_an_error_and_a_close() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut abuser = RawClient::connect(broker.addr).await;

    abuser.send_raw(&absurd_frame()).await;
    let message = expect_error_and_close(&mut abuser, ErrorCode::MessageTooLarge).await;
    assert!(message.contains("before the handshake"), "{message}");

    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 1)
        .await;
    // The bystanders' two connections are all that is left.
    broker.wait_for_metric("blipmq_connections", 2).await;
    bystanders.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Random bytes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn random_frame_bodies_are_malformed_frames_and_the_connection_survives() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut abuser = broker.client().await;

    // An empty body first: a valid prefix of 0 bytes.
    let mut bodies = vec![Vec::new()];
    for seed in [1u64, 2, 3, 42, 1234, 0xDEAD_BEEF, 0x5EED_5EED_5EED] {
        let mut rng = SmallRng::seed_from_u64(seed);
        let len = rng.gen_range(1..=512);
        let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        bodies.push(body);
    }
    for (i, body) in bodies.iter().enumerate() {
        // Guard against a vacuous test: the codec itself rejects the bytes.
        assert!(
            matches!(decode(body), Err(FrameError::Malformed(_))),
            "body #{i} is not malformed: {:?}",
            decode(body)
        );
        abuser.send_raw(&prefixed(body)).await;
        expect_error_code(&mut abuser, ErrorCode::MalformedFrame, 0).await;
        // The framing was intact, so the connection goes on.
        expect_alive(&mut abuser).await;
        bystanders.check().await;
    }
    // It still does real work afterwards.
    abuser
        .publish(bystanders.topic, b"from the reformed abuser")
        .await;
    assert_eq!(
        bystanders.subscriber.expect_delivery().await.payload,
        b"from the reformed abuser"
    );

    let n = bodies.len() as u64;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", n)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::MalformedFrame).await, n);
    broker.stop().await;
}

#[tokio::test]
async fn random_garbage_before_the_handshake_gets_an_error_and_a_close() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut protocol_errors = 0;

    // Raw garbage: its first four bytes are read as a length prefix, which
    // is almost always far over the handshake frame limit.
    for seed in [7u64, 99, 2024, 0xBAD_C0DE] {
        let mut rng = SmallRng::seed_from_u64(seed);
        let garbage: Vec<u8> = (0..256).map(|_| rng.gen()).collect();
        let mut abuser = RawClient::connect(broker.addr).await;
        abuser.send_raw(&garbage).await;
        let (code, message, request_id) = abuser.expect_error().await;
        assert!(
            matches!(code, ErrorCode::MessageTooLarge | ErrorCode::MalformedFrame),
            "seed {seed}: {code:?} {message}"
        );
        assert_eq!(request_id, 0);
        assert!(abuser.expect_closed().await.is_empty());
        protocol_errors += 1;
        bystanders.check().await;
    }

    // Garbage behind a plausible prefix is a malformed frame, and before the
    // handshake that also ends the connection.
    let mut rng = SmallRng::seed_from_u64(31337);
    let body: Vec<u8> = (0..60).map(|_| rng.gen()).collect();
    assert!(matches!(decode(&body), Err(FrameError::Malformed(_))));
    let mut abuser = RawClient::connect(broker.addr).await;
    abuser.send_raw(&prefixed(&body)).await;
    expect_error_and_close(&mut abuser, ErrorCode::MalformedFrame).await;
    protocol_errors += 1;

    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", protocol_errors)
        .await;
    broker.wait_for_metric("blipmq_connections", 2).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Truncated frame
// ---------------------------------------------------------------------------

#[tokio::test]
async fn truncated_frame_then_close_is_counted_and_other_clients_are_unaffected() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let frame = encode(&publish_frame(3, "bystanders.chat", &[1u8; 1000]));

    // Half a frame, then a clean half-close: the broker closes its side too.
    let mut abuser = broker.client().await;
    abuser.send_raw(&frame[..frame.len() / 2]).await;
    expect_alive(&mut bystanders.publisher).await;
    tokio::io::AsyncWriteExt::shutdown(&mut abuser.stream)
        .await
        .unwrap();
    assert!(abuser.expect_closed().await.is_empty());
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 1)
        .await;
    bystanders.check().await;

    // Half a length prefix, then the socket is simply dropped.
    let mut abuser = broker.client().await;
    abuser.send_raw(&frame[..2]).await;
    drop(abuser);
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 2)
        .await;
    broker.wait_for_metric("blipmq_connections", 2).await;

    // The half-sent message was never delivered, and the broker keeps
    // serving: the old pair and a brand-new pair.
    bystanders
        .subscriber
        .expect_nothing(Duration::from_millis(50))
        .await;
    bystanders.check().await;
    let mut subscriber = broker.client().await;
    let id = subscriber.subscribe("after.truncation").await;
    let mut publisher = broker.client().await;
    publisher.publish("after.truncation", b"fresh").await;
    let got = subscriber.expect_delivery().await;
    assert_eq!((got.subscription_id, got.payload), (id, b"fresh".to_vec()));
    assert_eq!(broker.metric("blipmq_messages_published_total").await, 4);
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 5. Unknown and wrong-direction frame types
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_body_type_is_an_unsupported_frame_and_the_connection_survives() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let unknown = envelope_with_body_type(200);
    // The Envelope itself is valid; only the union tag is from the future.
    assert_eq!(
        decode(&unknown[LENGTH_PREFIX_LEN..]),
        Err(FrameError::UnknownBody(200))
    );
    assert_eq!(
        decode(&empty_envelope()[LENGTH_PREFIX_LEN..]),
        Err(FrameError::UnknownBody(0))
    );

    let mut client = broker.client().await;
    client.send_raw(&unknown).await;
    let message = expect_error_code(&mut client, ErrorCode::UnsupportedFrame, 0).await;
    assert!(message.contains("200"), "{message}");
    expect_alive(&mut client).await;
    // An Envelope with no body at all (tag NONE) is refused the same way.
    client.send_raw(&empty_envelope()).await;
    expect_error_code(&mut client, ErrorCode::UnsupportedFrame, 0).await;
    expect_alive(&mut client).await;
    client.subscribe("still.works").await;
    bystanders.check().await;

    // Before the handshake the same frame ends the connection.
    let mut early = RawClient::connect(broker.addr).await;
    early.send_raw(&unknown).await;
    expect_error_and_close(&mut early, ErrorCode::UnsupportedFrame).await;

    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 3)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::UnsupportedFrame).await, 3);
    broker.stop().await;
}

#[tokio::test]
async fn broker_to_client_frames_sent_by_a_client_are_unsupported_frames() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut client = broker.client().await;

    let frames = [
        Frame::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            server_name: "impostor",
            server_version: "0",
            max_message_size: 1,
            connection_id: 1,
            ..Default::default()
        }),
        Frame::Delivery(Delivery {
            route: Route {
                subscription_id: 1,
                delivery_id: 1,
                delivery_count: 1,
            },
            topic: "bystanders.chat",
            payload: b"forged delivery",
            message_id: 1,
            timestamp_ms: 1,
            headers: vec![],
        }),
        Frame::Confirm(Confirm {
            publish_id: 1,
            message_id: 1,
        }),
        Frame::Subscribed(Subscribed {
            request_id: 1,
            subscription_id: 1,
        }),
        Frame::Unsubscribed(Unsubscribed {
            request_id: 1,
            subscription_id: 1,
        }),
        Frame::Error(ErrorFrame {
            code: ErrorCode::Internal,
            message: "client-side error",
            request_id: 1,
        }),
    ];
    for frame in &frames {
        client.send(frame).await;
        let message = expect_error_code(&mut client, ErrorCode::UnsupportedFrame, 0).await;
        assert!(
            message.contains(frame.kind()) && message.contains("broker-to-client"),
            "{message}"
        );
        expect_alive(&mut client).await;
    }
    // A forged Delivery reached nobody.
    bystanders
        .subscriber
        .expect_nothing(Duration::from_millis(50))
        .await;
    bystanders.check().await;
    let n = frames.len() as u64;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", n)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::UnsupportedFrame).await, n);
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 6. Handshake rules
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_frame_before_hello_is_refused_with_handshake_required_and_closed() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut client = RawClient::connect(broker.addr).await;
    client
        .send(&publish_frame(5, "bystanders.chat", b"too early"))
        .await;
    let message = expect_error_and_close(&mut client, ErrorCode::HandshakeRequired).await;
    assert!(message.contains("Publish"), "{message}");
    // The early publish was not delivered.
    bystanders
        .subscriber
        .expect_nothing(Duration::from_millis(50))
        .await;
    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 1)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::HandshakeRequired).await, 1);
    broker.stop().await;
}

#[tokio::test]
async fn hello_with_an_unsupported_protocol_version_is_refused_and_closed() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send(&hello(99, None)).await;
    let message = expect_error_and_close(&mut client, ErrorCode::UnsupportedVersion).await;
    assert!(
        message.contains("99") && message.contains(&PROTOCOL_VERSION.to_string()),
        "{message}"
    );
    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 1)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::UnsupportedVersion).await, 1);
    broker.stop().await;
}

#[tokio::test]
async fn a_second_hello_is_a_duplicate_handshake_and_the_connection_survives() {
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut client = broker.client().await;
    client.send_hello(None).await;
    expect_error_code(&mut client, ErrorCode::DuplicateHandshake, 0).await;
    expect_alive(&mut client).await;
    // Even a Hello with another version changes nothing now.
    client.send(&hello(99, None)).await;
    expect_error_code(&mut client, ErrorCode::DuplicateHandshake, 0).await;
    expect_alive(&mut client).await;
    // The connection still publishes and subscribes.
    let id = client.subscribe("dup.hello").await;
    bystanders
        .publisher
        .publish("dup.hello", b"still here")
        .await;
    let got = client.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (id, b"still here".to_vec())
    );
    bystanders.check().await;
    broker
        .wait_for_metric("blipmq_protocol_errors_total", 2)
        .await;
    assert_eq!(errors_sent(&broker, ErrorCode::DuplicateHandshake).await, 2);
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_connection_gets_handshake_timeout_and_is_closed() {
    let timeout = Duration::from_millis(200);
    let broker =
        TestBroker::start_with(|c| c.server.handshake_timeout_ms = timeout.as_millis() as u64)
            .await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut silent = RawClient::connect(broker.addr).await;
    let connected = Instant::now();
    let message = expect_error_and_close(&mut silent, ErrorCode::HandshakeTimeout).await;
    let waited = connected.elapsed();
    assert!(waited >= timeout, "closed after only {waited:?}: {message}");
    assert!(waited < PATIENCE / 2, "took {waited:?}");

    // The timeout is for the handshake only: handshaken connections (the
    // bystanders, by now well past it) stay.
    tokio::time::sleep(timeout * 2).await;
    bystanders.check().await;
    assert_eq!(errors_sent(&broker, ErrorCode::HandshakeTimeout).await, 1);
    broker.wait_for_metric("blipmq_connections", 2).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 7. Authentication
// ---------------------------------------------------------------------------

#[tokio::test]
async fn configured_api_keys_are_required_in_the_hello() {
    let broker = TestBroker::start_with(|c| c.auth.api_keys = vec!["s3cret".into()]).await;
    let mut bystanders = Bystanders::join_with_key(&broker, Some("s3cret")).await;

    let mut no_key = RawClient::connect(broker.addr).await;
    no_key.send_hello(None).await;
    let message = expect_error_and_close(&mut no_key, ErrorCode::AuthFailed).await;
    assert!(message.contains("API key"), "{message}");

    // Same length as the real key, one byte off.
    let mut wrong_key = RawClient::connect(broker.addr).await;
    wrong_key.send_hello(Some("s3creT")).await;
    let message = expect_error_and_close(&mut wrong_key, ErrorCode::AuthFailed).await;
    assert!(message.contains("API key"), "{message}");
    assert!(!message.contains("s3cre"), "never echo keys: {message}");

    // The right key gets a Welcome, and pub/sub works.
    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.handshake(Some("s3cret")).await;
    let id = subscriber.subscribe("secure.topic").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.handshake(Some("s3cret")).await;
    publisher.publish("secure.topic", b"authorised").await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (id, b"authorised".to_vec())
    );

    bystanders.check().await;
    assert_eq!(broker.metric("blipmq_auth_failures_total").await, 2);
    assert_eq!(errors_sent(&broker, ErrorCode::AuthFailed).await, 2);
    // A refused key is an auth failure, not a protocol error.
    assert_eq!(broker.metric("blipmq_protocol_errors_total").await, 0);
    broker.wait_for_metric("blipmq_connections", 4).await;
    broker.stop().await;
}

#[tokio::test]
async fn without_configured_keys_a_hello_with_any_key_is_accepted() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.handshake(Some("whatever-key")).await;
    let id = subscriber.subscribe("open.topic").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.handshake(Some("")).await;
    let mut keyless = RawClient::connect(broker.addr).await;
    keyless.handshake(None).await;
    publisher
        .publish("open.topic", b"from a keyed client")
        .await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (id, b"from a keyed client".to_vec())
    );
    keyless
        .publish("open.topic", b"from a keyless client")
        .await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (id, b"from a keyless client".to_vec())
    );
    assert_eq!(broker.metric("blipmq_auth_failures_total").await, 0);
    broker.wait_for_metric("blipmq_connections", 3).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 8. Connection limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn connections_over_max_connections_are_refused_until_one_closes() {
    let broker = TestBroker::start_with(|c| c.server.max_connections = 2).await;
    let mut first = broker.client().await;
    let id = first.subscribe("limited").await;
    let mut second = broker.client().await;
    broker.wait_for_metric("blipmq_connections", 2).await;

    // The third is told why, and closed. It says Hello straight away, as a
    // real client would; the refusal must still arrive.
    let mut third = RawClient::connect(broker.addr).await;
    third.send_hello(None).await;
    let (code, message, request_id) = third.expect_error().await;
    assert_eq!(
        (code, request_id),
        (ErrorCode::TooManyConnections, 0),
        "{message}"
    );
    assert!(message.contains('2'), "{message}");
    assert!(third.expect_closed().await.is_empty());
    assert_eq!(broker.metric("blipmq_connections_rejected_total").await, 1);
    assert_eq!(errors_sent(&broker, ErrorCode::TooManyConnections).await, 1);
    assert_eq!(broker.metric("blipmq_connections_total").await, 2);
    broker.wait_for_metric("blipmq_connections", 2).await;

    // The two admitted clients are served as before.
    second.publish("limited", b"still served").await;
    let got = first.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (id, b"still served".to_vec())
    );

    // Once one leaves, there is room again.
    drop(first);
    broker.wait_for_metric("blipmq_connections", 1).await;
    let mut fourth = broker.client().await;
    let id = fourth.subscribe("limited").await;
    second.publish("limited", b"room again").await;
    let got = fourth.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (id, b"room again".to_vec())
    );
    assert_eq!(broker.metric("blipmq_connections_rejected_total").await, 1);
    assert_eq!(broker.metric("blipmq_connections_total").await, 3);
    broker.wait_for_metric("blipmq_connections", 2).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// LIMIT-10: subscriptions per connection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_past_the_per_connection_limit_are_refused_and_the_connection_goes_on() {
    let broker = TestBroker::start_with(|c| c.queues.max_subscriptions_per_connection = 3).await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut greedy = broker.client().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(greedy.subscribe(&format!("greedy.{n}")).await);
    }
    greedy
        .send(&Frame::Subscribe(blipmq_protocol::Subscribe {
            request_id: 77,
            pattern: "greedy.>",
            ..Default::default()
        }))
        .await;
    let message = expect_error_code(&mut greedy, ErrorCode::TooManyTopics, 77).await;
    assert!(
        message.contains("max_subscriptions_per_connection"),
        "{message}"
    );
    assert_eq!(
        broker
            .metric(
                "blipmq_subscriptions_refused_total{limit=\"max_subscriptions_per_connection\"}"
            )
            .await,
        1
    );
    assert_eq!(broker.metric("blipmq_subscriptions").await, 4);
    // Its subscriptions still deliver, and another connection has a limit
    // of its own.
    bystanders
        .publisher
        .publish("greedy.1", b"still yours")
        .await;
    let got = greedy.expect_delivery().await;
    assert_eq!(
        (got.subscription_id, got.payload),
        (ids[1], b"still yours".to_vec())
    );
    let mut other = broker.client().await;
    other.subscribe("greedy.0").await;
    // Unsubscribing makes room again.
    greedy.unsubscribe(ids[0]).await;
    greedy.subscribe("greedy.>").await;
    expect_alive(&mut greedy).await;
    bystanders.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// LIMIT-12: subscriptions over every connection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_past_the_broker_wide_limit_are_refused_whichever_connection_asks() {
    let broker = TestBroker::start_with(|c| {
        c.queues.max_subscriptions = 4;
        c.queues.max_subscriptions_per_connection = 3;
    })
    .await;
    // Two connections, each under its own limit, fill the broker's.
    let (mut a, mut b) = (broker.client().await, broker.client().await);
    let first = a.subscribe("a.1").await;
    a.subscribe("a.2").await;
    b.subscribe("b.1").await;
    b.subscribe("b.2").await;
    let mut late = broker.client().await;
    late.send(&Frame::Subscribe(blipmq_protocol::Subscribe {
        request_id: 9,
        pattern: "late",
        ..Default::default()
    }))
    .await;
    let message = expect_error_code(&mut late, ErrorCode::TooManyTopics, 9).await;
    assert!(message.contains("queues.max_subscriptions"), "{message}");
    assert_eq!(
        broker
            .metric("blipmq_subscriptions_refused_total{limit=\"max_subscriptions\"}")
            .await,
        1
    );
    // The refused connection goes on, and room made anywhere is room for it.
    expect_alive(&mut late).await;
    a.unsubscribe(first).await;
    late.subscribe("late").await;
    assert_eq!(broker.metric("blipmq_subscriptions").await, 4);
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// LIMIT-2: a client that never reads its replies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let broker = TestBroker::start().await;
    let mut bystanders = Bystanders::join(&broker).await;
    let mut greedy = broker.client().await;
    // Each invalid Subscribe earns an Error frame that quotes the pattern,
    // about 300 bytes; the client never reads them. Once the socket buffers
    // are full, the replies pile up in the broker until the 8 MiB backlog
    // limit closes the connection.
    let pattern = format!("bad..{}", "p".repeat(240));
    let request = encode(&Frame::Subscribe(blipmq_protocol::Subscribe {
        request_id: 1,
        pattern: &pattern,
        ..Default::default()
    }));
    let burst: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 1000)
        .collect();
    let closed = tokio::time::timeout(PATIENCE * 3, async {
        // Bounded: 200 bursts of 1000 requests is far beyond the limit.
        for _ in 0..200 {
            if greedy.stream.write_all(&burst).await.is_err() {
                return true;
            }
        }
        false
    })
    .await
    .expect("the broker acts within the test's patience");
    assert!(closed, "the broker kept a client that never reads");
    // It was the backlog that closed it: more replies were queued than the
    // socket buffers could take (8 MiB / ~300 B is about 28,000).
    let replies = errors_sent(&broker, ErrorCode::InvalidTopic).await;
    assert!(replies > 20_000, "closed after only {replies} replies");
    bystanders.check().await;
    broker.wait_for_metric("blipmq_connections", 2).await;
    broker.stop().await;
}
