//! Test harness: the real broker on 127.0.0.1:0 in this process, and a raw
//! protocol client that speaks frames directly (no client crate involved).

#![allow(dead_code)]

pub mod tls_client;

use std::net::SocketAddr;
use std::time::Duration;

use blipmq_broker::{run_and_notify, Config, Listeners};
use blipmq_protocol::{
    check_frame, decode, Ack, Encoder, ErrorCode, Frame, FrameError, Header, Hello, Publish,
    Subscribe, Unsubscribe, LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestBroker {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The WebSocket listener, when the config turns it on.
    pub websocket_addr: Option<SocketAddr>,
    /// Holds the write-ahead log; kept across `restart`.
    pub data: std::sync::Arc<tempfile::TempDir>,
    /// The users in effect, to replace as a SIGHUP would.
    pub auth: std::sync::Arc<blipmq_broker::auth::AuthState>,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    /// Start with the built-in defaults changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestBroker {
        let data = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = Config::default();
        config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
        config.metrics.bind_addr = "127.0.0.1:0".parse().unwrap();
        config.wal.dir = data.path().join("wal");
        configure(&mut config);
        Self::start_config(config, data).await
    }

    /// Stop, then start again on new ports with the same config and the
    /// same write-ahead log (a clean restart).
    pub async fn restart(self) -> TestBroker {
        let config = self.config.clone();
        let data = self.data.clone();
        self.stop().await;
        Self::start_config(config, data).await
    }

    async fn start_config(config: Config, data: std::sync::Arc<tempfile::TempDir>) -> TestBroker {
        config.validate().expect("test config is valid");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let auth = listeners.auth.clone().expect("bind makes the users");
        let addr = listeners.clients.local_addr().unwrap();
        let metrics_addr = listeners.metrics.as_ref().unwrap().local_addr().unwrap();
        let websocket_addr = listeners
            .websocket
            .as_ref()
            .map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, is_ready) = oneshot::channel::<()>();
        let task = tokio::spawn(run_and_notify(
            listeners,
            config.clone(),
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready.send(());
            },
        ));
        // As the binary's readiness line does: the log is recovered.
        tokio::time::timeout(PATIENCE, is_ready)
            .await
            .expect("the broker became ready")
            .expect("the broker started");
        TestBroker {
            addr,
            metrics_addr,
            websocket_addr,
            data,
            auth,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client that has completed the handshake.
    pub async fn client(&self) -> RawClient {
        let mut client = RawClient::connect(self.addr).await;
        client.handshake(None).await;
        client
    }

    /// A client that has completed the handshake asking for Dropped notices.
    pub async fn client_with_drop_notices(&self) -> RawClient {
        let mut client = RawClient::connect(self.addr).await;
        client.handshake_with_drop_notices().await;
        client
    }

    /// GET /metrics and return the body.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_addr, "/metrics").await.1
    }

    /// The value of one sample line, e.g. `blipmq_connections` or
    /// `blipmq_messages_dropped_total{reason="ttl"}`.
    pub async fn metric(&self, sample: &str) -> u64 {
        let text = self.metrics().await;
        metric_value(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }

    /// Poll /metrics until `sample` has `value` (gauges settle asynchronously).
    pub async fn wait_for_metric(&self, sample: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.metric(sample).await;
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sample} stayed at {now}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("broker stops in time")
                .expect("broker task")
                .expect("broker ran cleanly");
        }
    }
}

pub fn metric_value(text: &str, sample: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(sample)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("metrics answer in time")
        .unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `blipmq ready clients=ADDR metrics=ADDR|off`
pub fn parse_ready(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let rest = line.strip_prefix("blipmq ready clients=")?;
    let (clients, metrics) = rest.split_once(" metrics=")?;
    let metrics = match metrics {
        "off" => None,
        addr => Some(addr.parse().ok()?),
    };
    Some((clients.parse().ok()?, metrics))
}

/// A delivery, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub subscription_id: u64,
    pub delivery_id: u64,
    pub delivery_count: u32,
    pub topic: String,
    pub payload: Vec<u8>,
    pub message_id: u64,
    pub timestamp_ms: u64,
}

/// A client speaking raw frames over TCP, or over any byte stream (TLS).
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    buf: BytesMut,
    encoder: Encoder,
    next_request: u64,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        RawClient::over(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// A client over a stream already connected (a TLS session, say).
    pub fn over(stream: S) -> RawClient<S> {
        RawClient {
            stream,
            buf: BytesMut::new(),
            encoder: Encoder::new(),
            next_request: 1,
        }
    }

    pub async fn send(&mut self, frame: &Frame<'_>) {
        let bytes = self.encoder.encode_to_bytes(frame);
        self.stream.write_all(&bytes).await.expect("send");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send raw");
    }

    pub async fn handshake(&mut self, api_key: Option<&str>) {
        self.send_hello(api_key).await;
        self.expect_welcome().await;
    }

    /// The handshake of a client that asks for Dropped notices (QUEUE-6).
    pub async fn handshake_with_drop_notices(&mut self) {
        self.send_hello_asking(None, true).await;
        self.expect_welcome().await;
    }

    async fn expect_welcome(&mut self) {
        match self.recv_owned().await {
            Some(body) => match decode(&body).unwrap() {
                Frame::Welcome(w) => assert_eq!(w.protocol_version, PROTOCOL_VERSION),
                other => panic!("expected Welcome, got {other:?}"),
            },
            None => panic!("closed during handshake"),
        }
    }

    pub async fn send_hello(&mut self, api_key: Option<&str>) {
        self.send_hello_asking(api_key, false).await;
    }

    async fn send_hello_asking(&mut self, api_key: Option<&str>, drop_notices: bool) {
        self.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: Some("test"),
            api_key,
            drop_notices,
        }))
        .await;
    }

    /// The next frame's body, or `None` if the broker closed the connection.
    pub async fn recv_owned(&mut self) -> Option<Bytes> {
        tokio::time::timeout(PATIENCE, self.recv_inner())
            .await
            .expect("a frame or a close within the test's patience")
    }

    async fn recv_inner(&mut self) -> Option<Bytes> {
        loop {
            match check_frame(&self.buf, usize::MAX >> 1) {
                Ok(total) => {
                    let frame = self.buf.split_to(total).freeze();
                    return Some(frame.slice(LENGTH_PREFIX_LEN..));
                }
                Err(FrameError::Incomplete { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    assert!(self.buf.is_empty(), "connection closed mid-frame");
                    return None;
                }
                Ok(_) => {}
            }
        }
    }

    /// Whether a frame arrives within `wait` (without consuming a close).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Bytes> {
        tokio::time::timeout(wait, self.recv_inner())
            .await
            .ok()
            .flatten()
    }

    pub async fn expect_error(&mut self) -> (ErrorCode, String, u64) {
        let body = self
            .recv_owned()
            .await
            .expect("an error frame, not a close");
        match decode(&body).unwrap() {
            Frame::Error(e) => (e.code, e.message.to_string(), e.request_id),
            other => panic!("expected Error, got {other:?}"),
        }
    }

    /// The broker closes the connection (after any frames still in flight,
    /// which are returned).
    pub async fn expect_closed(&mut self) -> Vec<Bytes> {
        let mut rest = Vec::new();
        while let Some(frame) = self.recv_owned().await {
            rest.push(frame);
        }
        rest
    }

    pub async fn expect_delivery(&mut self) -> Got {
        self.expect_delivery_with_headers().await.0
    }

    /// A delivery and its headers (`Got` has none), e.g. a dead letter's.
    pub async fn expect_delivery_with_headers(
        &mut self,
    ) -> (Got, std::collections::HashMap<String, Vec<u8>>) {
        let body = self.recv_owned().await.expect("a delivery, not a close");
        match decode(&body).unwrap() {
            Frame::Delivery(d) => {
                let headers = d
                    .headers
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.to_vec()))
                    .collect();
                let got = Got {
                    subscription_id: d.route.subscription_id,
                    delivery_id: d.route.delivery_id,
                    delivery_count: d.route.delivery_count,
                    topic: d.topic.to_string(),
                    payload: d.payload.to_vec(),
                    message_id: d.message_id,
                    timestamp_ms: d.timestamp_ms,
                };
                (got, headers)
            }
            other => panic!("expected Delivery, got {other:?}"),
        }
    }

    pub async fn expect_nothing(&mut self, wait: Duration) {
        if let Some(body) = self.recv_within(wait).await {
            panic!("expected silence, got {:?}", decode(&body));
        }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Subscribe and return the subscription id.
    pub async fn subscribe(&mut self, pattern: &str) -> u64 {
        let request_id = self.request_id();
        self.send(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            ..Default::default()
        }))
        .await;
        let body = self.recv_owned().await.expect("Subscribed");
        match decode(&body).unwrap() {
            Frame::Subscribed(s) => {
                assert_eq!(s.request_id, request_id);
                s.subscription_id
            }
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    pub async fn unsubscribe(&mut self, subscription_id: u64) {
        let request_id = self.request_id();
        self.send(&Frame::Unsubscribe(Unsubscribe {
            request_id,
            subscription_id,
            keep_durable: false,
        }))
        .await;
        let body = self.recv_owned().await.expect("Unsubscribed");
        match decode(&body).unwrap() {
            Frame::Unsubscribed(u) => assert_eq!(u.subscription_id, subscription_id),
            other => panic!("expected Unsubscribed, got {other:?}"),
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.publish_with(topic, payload, 0).await;
    }

    pub async fn publish_with(&mut self, topic: &str, payload: &[u8], ttl_ms: u32) {
        self.send(&Frame::Publish(Publish {
            publish_id: 0,
            topic,
            payload,
            ttl_ms,
            qos: 0,
            headers: vec![],
        }))
        .await;
    }

    /// Ping and wait for the Pong: every frame sent before has been handled.
    /// Frames that arrive first are returned.
    pub async fn sync(&mut self) -> Vec<Bytes> {
        let nonce = self.request_id();
        self.send(&Frame::Ping { nonce }).await;
        let mut before = Vec::new();
        loop {
            let body = self.recv_owned().await.expect("Pong, not a close");
            if let Frame::Pong { nonce: n } = decode(&body).unwrap() {
                assert_eq!(n, nonce);
                return before;
            }
            before.push(body);
        }
    }

    /// Subscribe with every option; the subscription id, or the error code
    /// the broker answered with.
    pub async fn subscribe_with(
        &mut self,
        pattern: &str,
        qos: u8,
        durable_name: Option<&str>,
        queue_group: Option<&str>,
    ) -> Result<u64, ErrorCode> {
        let request_id = self.request_id();
        self.send(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            qos,
            durable_name,
            queue_group,
            ..Default::default()
        }))
        .await;
        let body = self.recv_owned().await.expect("an answer");
        match decode(&body).unwrap() {
            Frame::Subscribed(s) => {
                assert_eq!(s.request_id, request_id);
                Ok(s.subscription_id)
            }
            Frame::Error(e) => {
                assert_eq!(e.request_id, request_id);
                Err(e.code)
            }
            other => panic!("expected Subscribed or Error, got {other:?}"),
        }
    }

    /// Publish at QoS 1 (with the payload also as header `n`) and return the
    /// broker's Confirm (message id), or the error code it answered with.
    pub async fn publish_qos1(
        &mut self,
        publish_id: u64,
        topic: &str,
        payload: &[u8],
    ) -> Result<u64, ErrorCode> {
        self.send(&Frame::Publish(Publish {
            publish_id,
            topic,
            payload,
            ttl_ms: 0,
            qos: 1,
            headers: vec![Header {
                key: "n",
                value: payload,
            }],
        }))
        .await;
        let body = self.recv_owned().await.expect("an answer");
        match decode(&body).unwrap() {
            Frame::Confirm(c) => {
                assert_eq!(c.publish_id, publish_id);
                Ok(c.message_id)
            }
            Frame::Error(e) => {
                assert_eq!(e.request_id, publish_id);
                Err(e.code)
            }
            other => panic!("expected Confirm or Error, got {other:?}"),
        }
    }

    pub async fn ack(&mut self, subscription_id: u64, delivery_id: u64) {
        self.send(&Frame::Ack(Ack {
            subscription_id,
            delivery_id,
            ..Default::default()
        }))
        .await;
    }

    /// Discard buffered input, for tests that stop reading on purpose.
    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
    }
}
