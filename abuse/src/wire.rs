//! A raw protocol client over TCP: frames in and out exactly as given, so
//! that a case can send what no SDK would (a Hello that never ends, frames
//! out of order, garbage) and still speak properly as a bystander.

use std::net::SocketAddr;
use std::time::Duration;

use blipmq_protocol::{
    check_frame, decode, Ack, ErrorCode, Frame, Hello, Publish, Subscribe, LENGTH_PREFIX_LEN,
    PROTOCOL_VERSION,
};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger than any frame the broker sends in these tests.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// What the broker said, owned (the cases only look at these fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Welcome,
    Subscribed {
        request_id: u64,
        subscription_id: u64,
    },
    Unsubscribed {
        request_id: u64,
    },
    Confirm {
        publish_id: u64,
    },
    Delivery {
        subscription_id: u64,
        delivery_id: u64,
        topic: String,
        /// The payload's first 8 bytes (cases put an index there).
        head: u64,
        payload_len: usize,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        request_id: u64,
    },
    Ping {
        nonce: u64,
    },
    Other(&'static str),
}

pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    encoder: blipmq_protocol::Encoder,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
            encoder: blipmq_protocol::Encoder::new(),
        })
    }

    /// Connect with a receive buffer of a few KiB, so that what the broker
    /// sends a peer that does not read piles up in the broker rather than
    /// in this side's kernel buffers.
    pub async fn connect_unread(addr: SocketAddr) -> std::io::Result<Conn> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
            encoder: blipmq_protocol::Encoder::new(),
        })
    }

    /// Connect and complete the handshake.
    pub async fn ready(addr: SocketAddr, api_key: Option<&str>) -> Result<Conn, String> {
        let mut conn = Conn::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        conn.hello(api_key).await?;
        Ok(conn)
    }

    /// Send a Hello and wait for Welcome (an Error frame is `Err`).
    pub async fn hello(&mut self, api_key: Option<&str>) -> Result<(), String> {
        self.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: Some("abuse"),
            api_key,
            drop_notices: false,
        }))
        .await
        .map_err(|e| format!("send Hello: {e}"))?;
        match self.recv_within(Duration::from_secs(10)).await? {
            Reply::Welcome => Ok(()),
            other => Err(format!("expected Welcome, got {other:?}")),
        }
    }

    /// Queue a frame without writing it (see [`Conn::flush`]).
    pub fn push(&mut self, frame: &Frame<'_>) {
        self.encoder.encode(frame, &mut self.out);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        let out = self.out.split();
        self.stream.write_all(&out).await
    }

    pub async fn send(&mut self, frame: &Frame<'_>) -> std::io::Result<()> {
        self.push(frame);
        self.flush().await
    }

    /// Bytes as they are: a partial frame, garbage, a lying length prefix.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub fn push_subscribe(&mut self, request_id: u64, pattern: &str, qos: u8) {
        self.push(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            qos,
            durable_name: None,
            queue_group: None,
            ..Default::default()
        }));
    }

    /// A Subscribe with every option.
    pub fn push_subscribe_with(
        &mut self,
        request_id: u64,
        pattern: &str,
        qos: u8,
        durable_name: Option<&str>,
        queue_group: Option<&str>,
    ) {
        self.push(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            qos,
            durable_name,
            queue_group,
            ..Default::default()
        }));
    }

    /// A QoS 1 subscription under a durable name.
    pub fn push_subscribe_durable(&mut self, request_id: u64, pattern: &str, name: &str) {
        self.push(&Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            qos: 1,
            durable_name: Some(name),
            queue_group: None,
            ..Default::default()
        }));
    }

    pub fn push_ack(&mut self, subscription_id: u64, delivery_id: u64) {
        self.push(&Frame::Ack(Ack {
            subscription_id,
            delivery_id,
            ..Default::default()
        }));
    }

    pub fn push_publish(&mut self, publish_id: u64, topic: &str, payload: &[u8], qos: u8) {
        self.push(&Frame::Publish(Publish {
            publish_id,
            topic,
            payload,
            ttl_ms: 0,
            qos,
            headers: Vec::new(),
        }));
    }

    /// The next frame; `Err` on close, timeout, or a frame that does not decode.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Reply, String> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| format!("no frame within {limit:?}"))?
    }

    pub async fn recv(&mut self) -> Result<Reply, String> {
        loop {
            match check_frame(&self.buf, MAX_REPLY) {
                Ok(total) => {
                    let reply = decode(&self.buf[LENGTH_PREFIX_LEN..total])
                        .map(to_reply)
                        .map_err(|e| format!("undecodable frame from the broker: {e}"));
                    self.buf.advance(total);
                    return reply;
                }
                Err(blipmq_protocol::FrameError::Incomplete { needed }) => {
                    self.buf.reserve(needed);
                }
                Err(e) => return Err(format!("bad frame from the broker: {e}")),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Read until the broker closes the connection (or `limit` passes):
    /// the replies on the way, and whether it closed.
    pub async fn drain_until_closed(&mut self, limit: Duration) -> (Vec<Reply>, bool) {
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Ok(reply)) => replies.push(reply),
                Ok(Err(_)) => return (replies, true),
                Err(_) => return (replies, false),
            }
        }
    }

    /// Round trip of one Ping, skipping anything else that arrives.
    pub async fn ping(&mut self, nonce: u64, limit: Duration) -> Result<Duration, String> {
        let start = std::time::Instant::now();
        self.send(&Frame::Ping { nonce })
            .await
            .map_err(|e| format!("send Ping: {e}"))?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Ok(Reply::Pong { nonce: n })) if n == nonce => return Ok(start.elapsed()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(format!("no Pong within {limit:?}")),
            }
        }
    }
}

fn to_reply(frame: Frame<'_>) -> Reply {
    match frame {
        Frame::Welcome(_) => Reply::Welcome,
        Frame::Subscribed(s) => Reply::Subscribed {
            request_id: s.request_id,
            subscription_id: s.subscription_id,
        },
        Frame::Unsubscribed(u) => Reply::Unsubscribed {
            request_id: u.request_id,
        },
        Frame::Confirm(c) => Reply::Confirm {
            publish_id: c.publish_id,
        },
        Frame::Delivery(d) => Reply::Delivery {
            subscription_id: d.route.subscription_id,
            delivery_id: d.route.delivery_id,
            topic: d.topic.to_string(),
            head: d
                .payload
                .get(..8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
            payload_len: d.payload.len(),
        },
        Frame::Pong { nonce } => Reply::Pong { nonce },
        Frame::Ping { nonce } => Reply::Ping { nonce },
        Frame::Error(e) => Reply::Error {
            code: e.code,
            message: e.message.to_string(),
            request_id: e.request_id,
        },
        other => Reply::Other(other.kind()),
    }
}

/// A WebSocket opened by hand on `addr`: the upgrade request and its 101,
/// then the bare socket, so that a case can send frames (or parts of them)
/// no WebSocket library would.
pub async fn ws_upgrade(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .write_all(ws_upgrade_request(addr).as_bytes())
        .await
        .map_err(|e| format!("send the upgrade request: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing of the first frame may be read with the head.
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return Err(format!("the upgrade got no answer: {head:?}")),
        }
        if head.len() > 4096 {
            return Err("the upgrade answer does not end".into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        ));
    }
    Ok(stream)
}

/// The HTTP request that asks `addr` for a WebSocket.
pub fn ws_upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The header of a final binary frame from a client carrying `len` bytes,
/// masked with a zero key (so the payload goes as it is).
pub fn ws_binary_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x82];
    match len {
        0..=125 => header.push(0x80 | len as u8),
        126..=0xFFFF => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&len.to_be_bytes());
        }
    }
    header.extend_from_slice(&[0; 4]);
    header
}
