//! What one client cannot take from the others (LIMIT-20 to LIMIT-26):
//! handshake slots apart from connection slots, the handshake budget, the
//! metrics port's own limits, and failed logins.

mod common;

use std::time::{Duration, Instant};

use blipmq_protocol::ErrorCode;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the peer closes `stream` within `wait` (anything it sends first
/// is returned with the answer).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (false, got),
        }
    }
}

#[tokio::test]
async fn unauthenticated_sockets_hold_handshake_slots_not_connection_slots() {
    let broker = TestBroker::start_with(|c| c.server.max_connections = 1).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(broker.addr).await.unwrap());
    }
    broker.wait_for_metric("blipmq_handshakes", 3).await;
    assert_eq!(broker.metric("blipmq_connections").await, 0);
    // The one connection slot is still there for a client that says Hello.
    let mut client = broker.client().await;
    client.sync().await;
    broker.wait_for_metric("blipmq_connections", 1).await;
    broker.wait_for_metric("blipmq_handshakes", 3).await;
    drop(idle);
    broker.wait_for_metric("blipmq_handshakes", 0).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_socket_beyond_max_handshakes_is_refused_at_once() {
    let broker = TestBroker::start_with(|c| c.server.max_handshakes = 2).await;
    let mut bystander = broker.client().await;
    let _idle = [
        TcpStream::connect(broker.addr).await.unwrap(),
        TcpStream::connect(broker.addr).await.unwrap(),
    ];
    broker.wait_for_metric("blipmq_handshakes", 2).await;
    let mut third = RawClient::connect(broker.addr).await;
    let (code, message, _) = third.expect_error().await;
    assert_eq!(code, ErrorCode::TooManyConnections, "{message}");
    assert!(message.contains("handshake"), "{message}");
    assert!(third.expect_closed().await.is_empty());
    assert_eq!(broker.metric("blipmq_handshakes_rejected_total").await, 1);
    // Authenticated clients are not counted against the handshake budget.
    bystander.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn the_websocket_port_refuses_beyond_max_handshakes_without_an_upgrade() {
    let broker = TestBroker::start_with(|c| {
        c.server.max_handshakes = 1;
        c.websocket.bind_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ws = broker.websocket_addr.unwrap();
    let _idle = TcpStream::connect(ws).await.unwrap();
    broker.wait_for_metric("blipmq_handshakes", 1).await;
    let mut second = TcpStream::connect(ws).await.unwrap();
    let (closed, answer) = closed_within(&mut second, PATIENCE).await;
    assert!(closed);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    broker.stop().await;
}

#[tokio::test]
async fn failed_logins_past_the_budget_are_answered_late_and_right_keys_never() {
    let broker = TestBroker::start_with(|c| {
        c.auth.api_keys = vec!["right".into()];
        c.auth.max_failures = 1;
        c.auth.failure_delay_ms = 400;
    })
    .await;
    let wrong = |broker_addr| async move {
        let start = Instant::now();
        let mut client = RawClient::connect(broker_addr).await;
        client.send_hello(Some("wrong")).await;
        assert_eq!(client.expect_error().await.0, ErrorCode::AuthFailed);
        assert!(client.expect_closed().await.is_empty());
        start.elapsed()
    };
    assert!(wrong(broker.addr).await < Duration::from_millis(300));
    assert!(wrong(broker.addr).await >= Duration::from_millis(400));
    assert_eq!(broker.metric("blipmq_auth_failures_delayed_total").await, 1);
    let start = Instant::now();
    let mut right = RawClient::connect(broker.addr).await;
    right.handshake(Some("right")).await;
    assert!(start.elapsed() < Duration::from_millis(300));
    broker.stop().await;
}

#[tokio::test]
async fn the_metrics_port_caps_connections_and_closes_slow_requests() {
    let broker = TestBroker::start_with(|c| {
        c.metrics.max_connections = 2;
        c.metrics.request_timeout_ms = 300;
    })
    .await;
    let mut first = TcpStream::connect(broker.metrics_addr).await.unwrap();
    let mut second = TcpStream::connect(broker.metrics_addr).await.unwrap();
    // Half a request head: the slot is held until the request timeout.
    first.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    second.write_all(b"GET /metr").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = TcpStream::connect(broker.metrics_addr).await.unwrap();
    let (closed, answer) = closed_within(&mut third, Duration::from_millis(200)).await;
    assert!(closed);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let start = Instant::now();
    assert!(closed_within(&mut first, PATIENCE).await.0);
    assert!(closed_within(&mut second, PATIENCE).await.0);
    assert!(start.elapsed() < Duration::from_secs(2));
    // Room again, and the refusals and timeouts are counted.
    assert_eq!(
        broker
            .metric("blipmq_http_connections_rejected_total")
            .await,
        1
    );
    assert_eq!(
        broker
            .metric("blipmq_http_timeouts_total{phase=\"request\"}")
            .await,
        2
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_scraper_that_never_reads_is_disconnected_at_the_write_timeout() {
    let broker = TestBroker::start_with(|c| c.metrics.write_timeout_ms = 300).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut scraper = socket.connect(broker.metrics_addr).await.unwrap();
    let requests = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n".repeat(3000);
    let _ = tokio::time::timeout(Duration::from_secs(2), scraper.write_all(&requests)).await;
    broker
        .wait_for_metric("blipmq_http_timeouts_total{phase=\"write\"}", 1)
        .await;
    assert!(closed_within(&mut scraper, PATIENCE).await.0);
    broker.stop().await;
}

/// A client frame as a browser sends it (masked, here with a zero key).
fn ws_binary(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 126];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn a_hello_sent_with_the_upgrade_request_is_read_after_it() {
    let broker =
        TestBroker::start_with(|c| c.websocket.bind_addr = Some("127.0.0.1:0".parse().unwrap()))
            .await;
    let ws = broker.websocket_addr.unwrap();
    let mut stream = TcpStream::connect(ws).await.unwrap();
    // The request, the Hello and a Ping in one write: the broker reads the
    // request up to its end, and the frames after it under the handshake
    // budget.
    let mut out = format!(
        "GET / HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    let mut encoder = blipmq_protocol::Encoder::new();
    for frame in [
        blipmq_protocol::Frame::Hello(blipmq_protocol::Hello {
            protocol_version: blipmq_protocol::PROTOCOL_VERSION,
            client_name: Some("pipelined"),
            api_key: None,
            drop_notices: false,
        }),
        blipmq_protocol::Frame::Ping { nonce: 7 },
    ] {
        out.extend_from_slice(&ws_binary(&encoder.encode_to_bytes(&frame)));
    }
    stream.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // The 101, then two binary messages (Welcome, Pong).
    while got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_none_or(|end| {
            let mut rest = &got[end + 4..];
            let mut messages = 0;
            while rest.len() >= 2 && rest.len() >= 2 + usize::from(rest[1] & 0x7f) {
                rest = &rest[2 + usize::from(rest[1] & 0x7f)..];
                messages += 1;
            }
            messages < 2
        })
    {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("Welcome and Pong in time")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    broker.wait_for_metric("blipmq_connections", 1).await;
    broker.stop().await;
}
