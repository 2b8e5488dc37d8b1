//! The `connection_frames` target's broker: the real one (`blipmq_broker::run`)
//! on 127.0.0.1:0, started once per fuzz process in a runtime of its own, and
//! the client side of one exchange with it.
//!
//! The broker outlives inputs, as it outlives connections in production, so
//! state an input leaves behind (durable queues, log records) is part of
//! what later inputs meet. A crash that needs such state may not reproduce
//! from its artifact alone; see fuzz/README.md.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use blipmq_broker::{run, Config, Listeners};
use blipmq_protocol::{
    check_frame, decode, Encoder, ErrorCode, Frame, FrameError, Hello, LENGTH_PREFIX_LEN,
    PROTOCOL_VERSION,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::scratch_dir;

/// Far longer than any exchange takes: once a client has sent everything
/// and closed its side, the broker has nothing to wait for.
const PATIENCE: Duration = Duration::from_secs(5);

pub struct Broker {
    runtime: Runtime,
    addr: SocketAddr,
    /// Holds the broker's log for as long as the process runs.
    _data: TempDir,
}

impl Broker {
    /// The process's broker, started on first use.
    pub fn get() -> &'static Broker {
        static BROKER: OnceLock<Broker> = OnceLock::new();
        BROKER.get_or_init(Broker::start)
    }

    fn start() -> Broker {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let data = scratch_dir("broker");
        let config = config(&data);
        config.validate().expect("the fuzz config is valid");
        let listeners = runtime
            .block_on(Listeners::bind(&config))
            .expect("bind 127.0.0.1:0");
        let addr = listeners.clients.local_addr().expect("a bound address");
        runtime.spawn(async move {
            let result = run(listeners, config, std::future::pending()).await;
            panic!("the broker stopped by itself: {result:?}");
        });
        Broker {
            runtime,
            addr,
            _data: data,
        }
    }

    /// Send `bytes` on a new connection, close the sending side, and return
    /// everything the broker answers until it closes.
    pub fn exchange(&self, bytes: &[u8]) -> Answer {
        self.runtime.block_on(async {
            let stream = TcpStream::connect(self.addr).await.expect("connect");
            let (mut read_half, mut write_half) = stream.into_split();
            // Read while writing: a broker whose replies are not read
            // stops reading itself, and the exchange would stall.
            let send = async {
                // The broker may close first (a bad frame before the
                // handshake); what it did not read does not matter then.
                let _ = write_half.write_all(bytes).await;
                let _ = write_half.shutdown().await;
            };
            let receive = async {
                let mut bytes = Vec::new();
                let result = read_half.read_to_end(&mut bytes).await;
                Answer {
                    bytes,
                    clean_close: result.is_ok(),
                }
            };
            let ((), answer) = tokio::time::timeout(PATIENCE, async {
                tokio::join!(send, receive)
            })
            .await
            .unwrap_or_else(|_| {
                panic!("the broker kept a connection open {PATIENCE:?} after its client closed")
            });
            answer
        })
    }

    /// A fresh client gets a Welcome and a Pong: the broker still serves.
    pub fn check_serving(&self) {
        self.runtime.block_on(async {
            tokio::time::timeout(PATIENCE, self.handshake_and_ping())
                .await
                .unwrap_or_else(|_| {
                    panic!("a fresh client got no Welcome and Pong in {PATIENCE:?}")
                })
        })
    }

    async fn handshake_and_ping(&self) {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("the broker accepts connections");
        let mut encoder = Encoder::new();
        let hello = Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: Some("fuzz-health-check"),
            api_key: None,
            drop_notices: false,
        });
        let mut out = encoder.encode_to_bytes(&hello).to_vec();
        out.extend_from_slice(&encoder.encode_to_bytes(&Frame::Ping { nonce: 42 }));
        stream.write_all(&out).await.expect("send Hello and Ping");
        let mut answer = Vec::new();
        let mut frames = Vec::new();
        while frames.len() < 2 {
            let read = stream.read_buf(&mut answer).await.expect("read");
            assert!(read > 0, "closed before Welcome and Pong: {frames:?}");
            frames = whole_frames(&answer).0;
        }
        let kinds: Vec<_> = frames
            .iter()
            .map(|body| decode(body).map(|frame| frame.kind()))
            .collect();
        assert!(
            matches!(decode(&frames[0]), Ok(Frame::Welcome(_)))
                && matches!(decode(&frames[1]), Ok(Frame::Pong { nonce: 42 })),
            "a fresh client got {kinds:?}"
        );
    }
}

/// What the broker sent on one connection.
pub struct Answer {
    pub bytes: Vec<u8>,
    /// It closed with a FIN. A broker that closes with input still unread
    /// (a bad frame before the handshake) makes the kernel send a reset
    /// instead, and a reset may discard what was not read yet, so only a
    /// clean close shows where the broker's output really ended.
    pub clean_close: bool,
}

/// The defaults, with small limits so that short inputs reach the paths
/// past them (too large, too many headers, full queues, log rotation).
fn config(data: &TempDir) -> Config {
    let mut config = Config::default();
    config.server.bind_addr = "127.0.0.1:0".parse().expect("an address");
    config.metrics.enabled = false;
    config.server.max_message_size_bytes = 1024;
    config.server.max_headers = 4;
    config.server.max_header_key_bytes = 32;
    config.server.max_headers_bytes = 256;
    config.queues.subscriber_capacity = 8;
    config.wal.dir = data.path().join("wal");
    config.wal.segment_bytes = 64 * 1024;
    // Bounds what detached durable queues can pin over a long run.
    config.wal.max_bytes = 256 << 20;
    config
}

/// What a broker may send: whole frames (up to a reset, which may cut what
/// was in flight), each one that decodes, of a broker-to-client type, and
/// errors only with a code from the schema's table.
pub fn check_answer(answer: &Answer) {
    let (bodies, used) = whole_frames(&answer.bytes);
    if answer.clean_close {
        assert_eq!(
            used,
            answer.bytes.len(),
            "the broker's answer ends inside a frame"
        );
    }
    for body in &bodies {
        match decode(body) {
            Ok(Frame::Error(error)) => assert!(
                ErrorCode::ENUM_VALUES.contains(&error.code),
                "an error code outside the table: {error:?}"
            ),
            Ok(
                Frame::Welcome(_)
                | Frame::Confirm(_)
                | Frame::Subscribed(_)
                | Frame::Unsubscribed(_)
                | Frame::Delivery(_)
                | Frame::Pong { .. },
            ) => {}
            Ok(other) => panic!("the broker sent a client's frame: {other:?}"),
            Err(e) => panic!("the broker sent a frame that does not decode ({e}): {body:?}"),
        }
    }
}

/// The bodies of the whole frames at the front of `bytes`, and how many
/// bytes they take.
pub fn whole_frames(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut bodies = Vec::new();
    let mut at = 0;
    loop {
        match check_frame(&bytes[at..], usize::MAX >> 1) {
            Ok(total) => {
                bodies.push(bytes[at + LENGTH_PREFIX_LEN..at + total].to_vec());
                at += total;
            }
            Err(FrameError::Incomplete { .. }) => return (bodies, at),
            Err(e) => unreachable!("no limit to exceed: {e}"),
        }
    }
}
