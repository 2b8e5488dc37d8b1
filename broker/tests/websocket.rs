//! The WebSocket listener: binary messages of whole protocol frames, the
//! same handshake, auth, limits and metrics as TCP, origins, close codes,
//! and pub/sub between TCP and WebSocket clients.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use blipmq_protocol::websocket::WS_BATCH_LIMIT;
use blipmq_protocol::{
    decode, Encoder, ErrorCode, Frame, Hello, Publish, Subscribe, LENGTH_PREFIX_LEN,
    PROTOCOL_VERSION,
};
use bytes::Bytes;
use common::{TestBroker, PATIENCE};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What a WebSocket test client saw next.
#[derive(Debug)]
enum Received {
    /// A frame's body (without its length prefix), from a binary message.
    Frame(Bytes),
    /// The broker closed, with this close frame.
    Closed(Option<CloseFrame>),
}

struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    encoder: Encoder,
    next_request: u64,
    /// Frames of the last message not yet returned by `recv`.
    unread: VecDeque<Bytes>,
    /// Binary messages received so far.
    messages: usize,
}

impl WsClient {
    async fn connect(
        addr: SocketAddr,
        origin: Option<&str>,
    ) -> Result<WsClient, tungstenite::Error> {
        let mut request = format!("ws://{addr}/").into_client_request()?;
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient {
            ws,
            encoder: Encoder::new(),
            next_request: 1,
            unread: VecDeque::new(),
            messages: 0,
        })
    }

    /// Connected and past the protocol handshake.
    async fn ready(addr: SocketAddr) -> WsClient {
        let mut client = WsClient::connect(addr, None).await.expect("upgrade");
        client.hello(None).await;
        match client.recv_frame().await {
            Frame::Welcome(w) => assert_eq!(w.protocol_version, PROTOCOL_VERSION),
            other => panic!("expected Welcome, got {other:?}"),
        }
        client
    }

    async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    async fn send(&mut self, frame: &Frame<'_>) {
        let bytes = self.encoder.encode_to_bytes(frame);
        self.send_message(Message::Binary(bytes)).await;
    }

    async fn hello(&mut self, api_key: Option<&str>) {
        self.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: Some("ws-test"),
            api_key,
            drop_notices: false,
        }))
        .await;
    }

    async fn recv(&mut self) -> Received {
        if let Some(frame) = self.unread.pop_front() {
            return Received::Frame(frame);
        }
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a message or a close within the test's patience");
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    self.messages += 1;
                    self.unread = split_frames(&bytes);
                    let first = self.unread.pop_front();
                    return Received::Frame(first.expect("a message carries frames"));
                }
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    async fn recv_frame(&mut self) -> Frame<'static> {
        match self.recv().await {
            Received::Frame(body) => {
                // Leak for a 'static borrow: tests are short-lived.
                let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
                decode(body).unwrap()
            }
            Received::Closed(close) => panic!("expected a frame, the broker closed: {close:?}"),
        }
    }

    async fn expect_error(&mut self) -> (ErrorCode, String) {
        match self.recv_frame().await {
            Frame::Error(e) => (e.code, e.message.to_string()),
            other => panic!("expected Error, got {other:?}"),
        }
    }

    /// The broker closes; returns the close code.
    async fn expect_close(&mut self) -> u16 {
        match self.recv().await {
            Received::Closed(Some(frame)) => frame.code.into(),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, pattern: &str) -> u64 {
        self.next_request += 1;
        let request_id = self.next_request;
        self.send(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            ..Default::default()
        }))
        .await;
        match self.recv_frame().await {
            Frame::Subscribed(s) => {
                assert_eq!(s.request_id, request_id);
                s.subscription_id
            }
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.send(&Frame::Publish(Publish {
            publish_id: 0,
            topic,
            payload,
            ttl_ms: 0,
            qos: 0,
            headers: vec![],
        }))
        .await;
    }

    /// Ping/Pong: everything sent before has been handled.
    async fn sync(&mut self) {
        self.next_request += 1;
        let nonce = self.next_request;
        self.send(&Frame::Ping { nonce }).await;
        match self.recv_frame().await {
            Frame::Pong { nonce: n } => assert_eq!(n, nonce),
            other => panic!("expected Pong, got {other:?}"),
        }
    }
}

/// A received message's frames, checking WS-1: one or more whole frames,
/// at most `WS_BATCH_LIMIT` bytes unless it is one larger frame.
fn split_frames(message: &Bytes) -> VecDeque<Bytes> {
    let mut frames = VecDeque::new();
    let mut at = 0;
    while at < message.len() {
        let prefix = &message[at..at + LENGTH_PREFIX_LEN];
        let end = at + LENGTH_PREFIX_LEN + u32::from_le_bytes(prefix.try_into().unwrap()) as usize;
        assert!(end <= message.len(), "a message ends inside a frame");
        frames.push_back(message.slice(at + LENGTH_PREFIX_LEN..end));
        at = end;
    }
    assert!(
        frames.len() == 1 || message.len() <= WS_BATCH_LIMIT,
        "a message of {} frames is {} bytes",
        frames.len(),
        message.len()
    );
    frames
}

async fn broker_with(
    configure: impl FnOnce(&mut blipmq_broker::Config),
) -> (TestBroker, SocketAddr) {
    let broker = TestBroker::start_with(|c| {
        c.websocket.bind_addr = Some("127.0.0.1:0".parse().unwrap());
        configure(c);
    })
    .await;
    let ws = broker.websocket_addr.expect("the WebSocket listener is on");
    (broker, ws)
}

fn code(error: ErrorCode) -> u16 {
    4000 + error.0
}

#[tokio::test]
async fn the_listener_is_off_unless_configured() {
    let broker = TestBroker::start().await;
    assert_eq!(broker.websocket_addr, None);
    broker.stop().await;
}

#[tokio::test]
async fn messages_flow_between_tcp_and_websocket_clients() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut ws = WsClient::ready(ws_addr).await;
    let mut tcp = broker.client().await;
    ws.subscribe("prices.>").await;
    tcp.subscribe("orders.*").await;

    // TCP publishes, the WebSocket client receives, and the other way round.
    tcp.publish("prices.eur", b"1.08").await;
    tcp.sync().await;
    match ws.recv_frame().await {
        Frame::Delivery(d) => {
            assert_eq!(d.topic, "prices.eur");
            assert_eq!(d.payload, b"1.08");
        }
        other => panic!("expected Delivery, got {other:?}"),
    }
    let big = vec![7u8; 200_000];
    ws.publish("orders.created", b"order #1").await;
    ws.publish("orders.big", &big).await;
    ws.sync().await;
    let got = tcp.expect_delivery().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("orders.created", &b"order #1"[..])
    );
    assert_eq!(tcp.expect_delivery().await.payload, big);

    // Connections are counted per transport, and together.
    assert_eq!(broker.metric("blipmq_connections").await, 2);
    assert_eq!(
        broker
            .metric("blipmq_transport_connections{transport=\"websocket\"}")
            .await,
        1
    );
    assert_eq!(
        broker
            .metric("blipmq_transport_connections{transport=\"tcp\"}")
            .await,
        1
    );
    assert_eq!(
        broker
            .metric("blipmq_transport_connections_total{transport=\"websocket\"}")
            .await,
        1
    );

    // A client's close is answered, and the connection is gone.
    ws.ws.close(None).await.unwrap();
    broker
        .wait_for_metric("blipmq_transport_connections{transport=\"websocket\"}", 0)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_burst_arrives_in_order_packed_into_messages_of_whole_frames() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut ws = WsClient::ready(ws_addr).await;
    ws.subscribe("burst").await;
    let before = ws.messages;
    let mut tcp = broker.client().await;
    for i in 0..500u32 {
        tcp.publish("burst", &i.to_le_bytes()).await;
    }
    // `recv` checks that each message is whole frames within the limit.
    for i in 0..500u32 {
        match ws.recv_frame().await {
            Frame::Delivery(d) => assert_eq!(d.payload, i.to_le_bytes()),
            other => panic!("expected Delivery, got {other:?}"),
        }
    }
    let messages = ws.messages - before;
    assert!(messages < 500, "500 deliveries came in {messages} messages");
    broker.stop().await;
}

#[tokio::test]
async fn several_frames_in_one_message_are_all_handled_in_order() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut tcp = broker.client().await;
    tcp.subscribe("packed").await;
    let mut ws = WsClient::ready(ws_addr).await;
    let mut encoder = Encoder::new();
    let mut message = Vec::new();
    for i in 0..100u32 {
        message.extend_from_slice(&encoder.encode_to_bytes(&Frame::Publish(Publish {
            publish_id: 0,
            topic: "packed",
            payload: &i.to_le_bytes(),
            ttl_ms: 0,
            qos: 0,
            headers: vec![],
        })));
    }
    message.extend_from_slice(&encoder.encode_to_bytes(&Frame::Ping { nonce: 77 }));
    ws.send_message(Message::Binary(message.into())).await;
    match ws.recv_frame().await {
        Frame::Pong { nonce } => assert_eq!(nonce, 77),
        other => panic!("expected Pong, got {other:?}"),
    }
    for i in 0..100u32 {
        assert_eq!(tcp.expect_delivery().await.payload, i.to_le_bytes());
    }
    broker.stop().await;
}

/// A client gains nothing by packing: a message of many tiny frames is
/// bounded by the same limits as the bytes over TCP (the pre-handshake
/// budget, the message limit), and every frame in it is handled as one
/// read from a TCP socket would be.
#[tokio::test]
async fn a_message_of_many_tiny_frames_is_held_to_the_same_limits() {
    let (broker, ws_addr) = broker_with(|c| c.server.max_message_size_bytes = 1024).await;
    let mut encoder = Encoder::new();
    let ping = encoder.encode_to_bytes(&Frame::Ping { nonce: 9 });
    let pings = |bytes: usize| ping.repeat(bytes / ping.len());

    // After the handshake: a message as large as the batch limit, of the
    // smallest frames, even where the largest frame is smaller; each frame
    // is answered, in order.
    let mut ws = WsClient::ready(ws_addr).await;
    let packed = pings(WS_BATCH_LIMIT);
    let count = packed.len() / ping.len();
    assert!(packed.len() > 1024 + 4096 + LENGTH_PREFIX_LEN);
    ws.send_message(Message::Binary(packed.into())).await;
    for _ in 0..count {
        assert!(matches!(ws.recv_frame().await, Frame::Pong { nonce: 9 }));
    }
    ws.sync().await;
    // One byte over the batch limit (beyond the largest frame too): refused
    // unread.
    let mut over = pings(WS_BATCH_LIMIT);
    over.resize(WS_BATCH_LIMIT + 1, 0);
    ws.send_message(Message::Binary(over.into())).await;
    assert_eq!(ws.expect_close().await, code(ErrorCode::MessageTooLarge));

    // Before the handshake: a Hello followed by tiny frames past the 16 KiB
    // budget is refused unread. A message is read whole before its Hello is
    // handled, so all of it counts against the budget (LIMIT-22).
    let mut early = WsClient::connect(ws_addr, None).await.unwrap();
    let mut message = encoder
        .encode_to_bytes(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: None,
            api_key: None,
            drop_notices: false,
        }))
        .to_vec();
    message.extend_from_slice(&pings(20 * 1024));
    early.send_message(Message::Binary(message.into())).await;
    loop {
        match early.recv().await {
            Received::Frame(_) => continue,
            Received::Closed(frame) => {
                let code_sent: u16 = frame.expect("a close frame").code.into();
                assert_eq!(code_sent, code(ErrorCode::MessageTooLarge));
                break;
            }
        }
    }
    assert_eq!(broker.metric("blipmq_handshake_too_large_total").await, 1);
    broker.wait_for_metric("blipmq_connections", 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn auth_is_the_same_handshake_as_over_tcp() {
    let (broker, ws_addr) = broker_with(|c| c.auth.api_keys = vec!["s3cret".into()]).await;
    for key in [None, Some("wrong")] {
        let mut ws = WsClient::connect(ws_addr, None).await.unwrap();
        ws.hello(key).await;
        let (code_sent, message) = ws.expect_error().await;
        assert_eq!(code_sent, ErrorCode::AuthFailed, "{message}");
        assert_eq!(ws.expect_close().await, code(ErrorCode::AuthFailed));
    }
    assert_eq!(broker.metric("blipmq_auth_failures_total").await, 2);

    let mut ws = WsClient::connect(ws_addr, None).await.unwrap();
    ws.hello(Some("s3cret")).await;
    assert!(matches!(ws.recv_frame().await, Frame::Welcome(_)));

    // Frames before Hello are refused as over TCP.
    let mut early = WsClient::connect(ws_addr, None).await.unwrap();
    early.send(&Frame::Ping { nonce: 1 }).await;
    assert_eq!(early.expect_error().await.0, ErrorCode::HandshakeRequired);
    assert_eq!(
        early.expect_close().await,
        code(ErrorCode::HandshakeRequired)
    );
    broker.stop().await;
}

#[tokio::test]
async fn origins_outside_the_allowed_list_are_refused_at_the_upgrade() {
    let (broker, ws_addr) =
        broker_with(|c| c.websocket.allowed_origins = vec!["http://good.test:8080".into()]).await;
    match WsClient::connect(ws_addr, Some("http://evil.test")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(other) => panic!("expected HTTP 403, got {other}"),
        Ok(_) => panic!("an origin outside the list was let in"),
    }
    assert_eq!(
        broker
            .metric("blipmq_websocket_upgrade_failures_total{reason=\"origin\"}")
            .await,
        1
    );
    // The listed origin (case-insensitively), and non-browser clients
    // (no Origin header), are let in.
    for origin in [Some("http://GOOD.test:8080"), None] {
        let mut ws = WsClient::connect(ws_addr, origin).await.expect("let in");
        ws.hello(None).await;
        assert!(matches!(ws.recv_frame().await, Frame::Welcome(_)));
    }
    broker.stop().await;
}

#[tokio::test]
async fn not_a_websocket_request_is_counted_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (broker, ws_addr) = broker_with(|_| {}).await;
    // A TCP protocol client on the WebSocket port: not an HTTP upgrade.
    let mut stream = TcpStream::connect(ws_addr).await.unwrap();
    stream
        .write_all(&Encoder::new().encode_to_bytes(&Frame::Ping { nonce: 1 }))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    broker
        .wait_for_metric(
            "blipmq_websocket_upgrade_failures_total{reason=\"handshake\"}",
            1,
        )
        .await;
    broker.wait_for_metric("blipmq_connections", 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn text_messages_close_with_1003() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut ws = WsClient::ready(ws_addr).await;
    ws.send_message(Message::text("{\"op\": \"publish\"}"))
        .await;
    assert_eq!(ws.expect_close().await, 1003);
    assert_eq!(broker.metric("blipmq_protocol_errors_total").await, 1);
    broker.wait_for_metric("blipmq_connections", 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_message_that_is_not_whole_frames_closes_with_malformed_frame() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut encoder = Encoder::new();
    let ping = encoder.encode_to_bytes(&Frame::Ping { nonce: 5 });
    let truncated = ping[..ping.len() - 1].to_vec();
    // Whole frames followed by a partial one: refused whole, so not even
    // the whole frames before it are answered.
    let partial_trailing = [&ping[..], &ping[..], &ping[..3]].concat();
    let trailing_prefix = [&ping[..], &ping[..ping.len() - 1]].concat();
    for bad in [
        truncated,
        partial_trailing,
        trailing_prefix,
        vec![1, 0],
        Vec::new(),
    ] {
        let mut ws = WsClient::ready(ws_addr).await;
        ws.send_message(Message::Binary(bad.into())).await;
        assert_eq!(ws.expect_close().await, code(ErrorCode::MalformedFrame));
    }
    assert_eq!(broker.metric("blipmq_protocol_errors_total").await, 5);
    assert_eq!(
        broker
            .metric("blipmq_errors_sent_total{code=\"100\",name=\"MalformedFrame\"}")
            .await,
        5
    );
    // A message that is one frame but not a valid envelope is an Error
    // frame, as over TCP, and the connection stays.
    let mut ws = WsClient::ready(ws_addr).await;
    let mut garbage = 8u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    ws.send_message(Message::Binary(garbage.into())).await;
    assert_eq!(ws.expect_error().await.0, ErrorCode::MalformedFrame);
    ws.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn oversized_payloads_and_messages() {
    let (broker, ws_addr) = broker_with(|c| c.server.max_message_size_bytes = 1024).await;
    let mut ws = WsClient::ready(ws_addr).await;
    let mut sub = WsClient::ready(ws_addr).await;
    sub.subscribe("big").await;
    // A payload over the limit in a frame the broker can read: an Error
    // frame, and the connection goes on (as over TCP).
    ws.publish("big", &[1u8; 1025]).await;
    assert_eq!(ws.expect_error().await.0, ErrorCode::MessageTooLarge);
    ws.publish("big", &[2u8; 1024]).await;
    ws.sync().await;
    match sub.recv_frame().await {
        Frame::Delivery(d) => assert_eq!(d.payload, [2u8; 1024]),
        other => panic!("expected Delivery, got {other:?}"),
    }
    // A message beyond the largest frame is refused unread: the connection
    // closes with MessageTooLarge's close code.
    ws.publish("big", &vec![3u8; 1024 * 1024]).await;
    assert_eq!(ws.expect_close().await, code(ErrorCode::MessageTooLarge));
    // Before the handshake the limit is a Hello's (16 KiB), as over TCP; a
    // larger message is refused unread, as beyond the frame limit (WS-3):
    // the broker stops reading at the limit, so it never holds more
    // (LIMIT-22).
    let mut early = WsClient::connect(ws_addr, None).await.unwrap();
    let mut large = ((20 * 1024) as u32).to_le_bytes().to_vec();
    large.resize(4 + 20 * 1024, 0);
    early.send_message(Message::Binary(large.into())).await;
    assert_eq!(early.expect_close().await, code(ErrorCode::MessageTooLarge));
    assert_eq!(broker.metric("blipmq_handshake_too_large_total").await, 1);
    sub.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn abrupt_disconnects_free_the_connection_and_its_subscriptions() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut keeper = WsClient::ready(ws_addr).await;
    keeper.subscribe("live").await;
    for _ in 0..3 {
        let mut ws = WsClient::ready(ws_addr).await;
        ws.subscribe("elsewhere").await;
        ws.publish("live", b"x").await;
        ws.sync().await;
        // Gone without a close frame: the TCP socket just drops.
        drop(ws);
    }
    // Mid-upgrade: an HTTP request cut off.
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(ws_addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
            .await
            .unwrap();
    }
    broker.wait_for_metric("blipmq_subscriptions", 1).await;
    broker.wait_for_metric("blipmq_connections", 1).await;
    // The survivor got every message and still works.
    for _ in 0..3 {
        assert!(matches!(keeper.recv_frame().await, Frame::Delivery(_)));
    }
    keeper.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn limits_and_timeouts_close_with_their_codes() {
    let (broker, ws_addr) = broker_with(|c| {
        c.server.max_connections = 1;
        c.server.handshake_timeout_ms = 300;
    })
    .await;
    // No Hello in time.
    let mut slow = WsClient::connect(ws_addr, None).await.unwrap();
    assert_eq!(slow.expect_error().await.0, ErrorCode::HandshakeTimeout);
    assert_eq!(slow.expect_close().await, code(ErrorCode::HandshakeTimeout));
    broker.wait_for_metric("blipmq_connections", 0).await;
    // One connection is the limit, whichever the transport. A connection
    // slot is taken when the Hello is accepted (LIMIT-20), so the refusal
    // answers the Hello.
    let mut first = WsClient::ready(ws_addr).await;
    let mut second = WsClient::connect(ws_addr, None).await.unwrap();
    second.hello(None).await;
    assert_eq!(second.expect_error().await.0, ErrorCode::TooManyConnections);
    assert_eq!(
        second.expect_close().await,
        code(ErrorCode::TooManyConnections)
    );
    let mut tcp = common::RawClient::connect(broker.addr).await;
    tcp.send_hello(None).await;
    assert_eq!(tcp.expect_error().await.0, ErrorCode::TooManyConnections);
    assert_eq!(broker.metric("blipmq_connections_rejected_total").await, 2);
    first.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_tells_websocket_clients_why() {
    let (broker, ws_addr) = broker_with(|_| {}).await;
    let mut ws = WsClient::ready(ws_addr).await;
    let stopping = tokio::spawn(broker.stop());
    assert_eq!(ws.expect_error().await.0, ErrorCode::ShuttingDown);
    assert_eq!(ws.expect_close().await, code(ErrorCode::ShuttingDown));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the broker stops")
        .unwrap();
}
