//! What QoS 1 state costs in memory, measured on the real `blipmq` binary
//! (its resident set, from /proc). A measurement, not a check: it prints
//! numbers and asserts only that the broker kept every message. Ignored by
//! default; run it on a release build:
//!
//! ```sh
//! cargo test --release -p blipmq-broker --test durable_memory -- --ignored --nocapture
//! ```
//!
//! The setting is issue 22's: 500 durable subscriptions on one pattern, made
//! and then left (detached), and 2,000 QoS 1 publishes of 8 bytes that every
//! one of them keeps; then the same subscriptions attached again by one
//! consumer that reads every delivery and acks none (each holds up to
//! `max_in_flight` deliveries in flight).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blipmq_protocol::{decode, Frame, Publish, Subscribe};
use common::{http_get, metric_value, parse_ready, RawClient, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_blipmq");
const SUBSCRIPTIONS: usize = 500;
const PUBLISHES: u64 = 2_000;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn metric(addr: std::net::SocketAddr, sample: &str) -> u64 {
    let text = http_get(addr, "/metrics").await.1;
    metric_value(&text, sample).unwrap_or_else(|| panic!("no {sample}"))
}

async fn wait_for(addr: std::net::SocketAddr, sample: &str, value: u64) {
    let deadline = Instant::now() + PATIENCE * 6;
    while metric(addr, sample).await != value {
        assert!(Instant::now() < deadline, "{sample} never reached {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscribe to durable `d0..d{n}` on `mem.>` from one connection, pipelined.
async fn subscribe_all(client: &mut RawClient) {
    for i in 0..SUBSCRIPTIONS {
        let name = format!("d{i}");
        client
            .send(&Frame::Subscribe(Subscribe {
                request_id: 1 + i as u64,
                pattern: "mem.>",
                qos: 1,
                durable_name: Some(&name),
                queue_group: None,
                ..Default::default()
            }))
            .await;
    }
    let mut subscribed = 0;
    while subscribed < SUBSCRIPTIONS {
        let body = client.recv_owned().await.expect("Subscribed");
        match decode(&body).unwrap() {
            Frame::Subscribed(_) => subscribed += 1,
            Frame::Delivery(_) => {}
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }
}

#[tokio::test]
#[ignore = "a measurement: run on a release build with --ignored --nocapture"]
async fn memory_of_500_durable_subscriptions_and_2000_messages() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("RUST_LOG", "warn")
        .env("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0")
        .env("BLIPMQ_METRICS_BIND_ADDR", "127.0.0.1:0")
        .env("BLIPMQ_WAL_DIR", data.path().join("wal"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn blipmq");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("a readiness line").unwrap();
    let broker = Broker(child);
    let pid = broker.0.id();
    let (addr, metrics) = parse_ready(&ready).expect("readiness line");
    let metrics = metrics.expect("metrics on");
    let idle = rss_kib(pid);

    let started = Instant::now();
    let mut consumer = RawClient::connect(addr).await;
    consumer.handshake(None).await;
    subscribe_all(&mut consumer).await;
    let create = started.elapsed();
    drop(consumer);
    wait_for(metrics, "blipmq_connections", 0).await;
    let subscribed = rss_kib(pid);

    let mut producer = RawClient::connect(addr).await;
    producer.handshake(None).await;
    let started = Instant::now();
    for i in 0..PUBLISHES {
        producer
            .send(&Frame::Publish(Publish {
                publish_id: 1 + i,
                topic: "mem.x",
                payload: &i.to_le_bytes(),
                ttl_ms: 0,
                qos: 1,
                headers: vec![],
            }))
            .await;
    }
    for _ in 0..PUBLISHES {
        let body = producer.recv_owned().await.expect("Confirm");
        assert!(matches!(decode(&body).unwrap(), Frame::Confirm(_)));
    }
    let publish = started.elapsed();
    let kept = SUBSCRIPTIONS as u64 * PUBLISHES;
    wait_for(metrics, "blipmq_durable_unacked_messages", kept).await;
    let detached = rss_kib(pid);

    // Attach every subscription again; read every delivery, ack none.
    let mut consumer = RawClient::connect(addr).await;
    consumer.handshake(None).await;
    subscribe_all(&mut consumer).await;
    let in_flight = SUBSCRIPTIONS as u64 * PUBLISHES.min(1024);
    let mut delivered = 0u64;
    while delivered < in_flight {
        match consumer.recv_within(Duration::from_secs(5)).await {
            Some(body) => {
                if let Frame::Delivery(_) = decode(&body).unwrap() {
                    delivered += 1;
                }
            }
            None => break,
        }
    }
    let attached = rss_kib(pid);
    let wal = metric(metrics, "blipmq_wal_bytes").await;

    println!(
        "blipmq RSS, {SUBSCRIPTIONS} durable subscriptions on one pattern, {PUBLISHES} QoS 1 \
         publishes of 8 bytes ({kept} kept message copies; log {wal} bytes):"
    );
    println!("  idle                     {idle:>8} KiB");
    println!("  + {SUBSCRIPTIONS} subscriptions     {subscribed:>8} KiB   (created in {create:.2?}, one connection)");
    println!("  + {PUBLISHES} messages, detached {detached:>8} KiB   (published and confirmed in {publish:.2?})");
    println!("  attached, {delivered} in flight {attached:>8} KiB");
}
