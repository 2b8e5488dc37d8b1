//! The soak test: a mixed workload against one broker for a fixed time,
//! sampling the broker's RSS, file descriptors and CPU and a bystander's
//! Ping round trips every second, and failing on growth or loss.
//!
//! The workload, all at once:
//! - QoS 0 fan-out: one publisher, four subscribers of `fan.>`;
//! - QoS 1: a publisher of `jobs.*` (windows of 16, waiting for Confirms),
//!   a durable subscription and a two-member queue group, all acking;
//! - WebSocket clients that connect, subscribe to `fan.>`, read a while
//!   and leave;
//! - TCP clients that connect, subscribe and leave, ten a second.
//!
//! Pass: after a warm-up (the first fifth), RSS grows by at most a quarter
//! (+8 MB), fds by at most 16, the bystander's worst per-second p99 stays
//! under 250 ms, and every confirmed QoS 1 message reaches the durable
//! subscription and the queue group.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::broker::Broker;
use crate::cases::Ctx;
use crate::wire::{Conn, Reply};

/// What the QoS 1 side saw: indices confirmed, and received per consumer.
#[derive(Default)]
struct Ledger {
    confirmed: BTreeSet<u64>,
    durable: BTreeSet<u64>,
    group: BTreeSet<u64>,
}

type Shared = Arc<Mutex<Ledger>>;

pub async fn run(ctx: &Ctx, duration: Duration) -> Result<String, String> {
    let mut broker = Broker::start(&ctx.bin, "", "")?;
    let stop = Arc::new(AtomicBool::new(false));
    let ledger: Shared = Arc::default();
    let fanned = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Consumers first, so that nothing published is missed.
    for _ in 0..4 {
        tasks.push(tokio::spawn(fan_subscriber(
            broker.clients,
            stop.clone(),
            fanned.clone(),
        )));
    }
    tasks.push(tokio::spawn(qos1_consumer(
        broker.clients,
        stop.clone(),
        ledger.clone(),
        Kind::Durable,
    )));
    for _ in 0..2 {
        tasks.push(tokio::spawn(qos1_consumer(
            broker.clients,
            stop.clone(),
            ledger.clone(),
            Kind::Group,
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks.push(tokio::spawn(fan_publisher(broker.clients, stop.clone())));
    tasks.push(tokio::spawn(qos1_publisher(
        broker.clients,
        stop.clone(),
        ledger.clone(),
    )));
    tasks.push(tokio::spawn(churn(broker.clients, stop.clone())));
    if let Some(ws) = broker.websocket {
        tasks.push(tokio::spawn(websocket_churn(ws, stop.clone())));
    }
    let mut bystander = Conn::ready(broker.clients, None).await?;
    let start = Instant::now();
    let warm_up = duration / 5;
    let mut warm: Option<(u64, usize)> = None;
    let mut worst_p99 = Duration::ZERO;
    let mut last_cpu = broker.cpu();
    let mut peak_cpu = 0.0_f64;
    let mut nonce = 0;
    while start.elapsed() < duration {
        let second = Instant::now();
        let mut rtts = Vec::new();
        while second.elapsed() < Duration::from_secs(1) {
            nonce += 1;
            rtts.push(bystander.ping(nonce, Duration::from_secs(10)).await?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rtts.sort();
        let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
        worst_p99 = worst_p99.max(p99);
        let cpu = broker.cpu();
        peak_cpu = peak_cpu.max((cpu - last_cpu).as_secs_f64() / second.elapsed().as_secs_f64());
        last_cpu = cpu;
        if warm.is_none() && start.elapsed() >= warm_up {
            warm = Some((broker.rss(), broker.fds()));
        }
        if !broker.alive() {
            return Err(format!(
                "the broker died; its log ends:\n{}",
                broker.log_tail()
            ));
        }
        // A workload task ends early only when it failed: stop at once
        // rather than soak on with part of the load missing.
        if let Some(at) = tasks.iter().position(|t| t.is_finished()) {
            let failed = tasks.swap_remove(at);
            let error = match failed.await {
                Ok(Err(error)) => error,
                Ok(Ok(())) => "a workload task stopped early".to_string(),
                Err(error) => format!("a workload task panicked: {error}"),
            };
            stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "after {:.0} s: {error}",
                start.elapsed().as_secs_f64()
            ));
        }
    }
    let (rss_end, fds_end) = (broker.rss(), broker.fds());
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await
            .map_err(|e| format!("a workload task failed: {e}"))??;
    }
    let (warm_rss, warm_fds) = warm.unwrap_or((rss_end, fds_end));
    let ledger = ledger.lock().unwrap();
    let mut failures = Vec::new();
    let rss_bound = warm_rss + warm_rss / 4 + 8_000_000;
    if rss_end > rss_bound {
        failures.push(format!(
            "RSS grew from {warm_rss} to {rss_end} bytes (bound {rss_bound})"
        ));
    }
    if fds_end > warm_fds + 16 {
        failures.push(format!("fds grew from {warm_fds} to {fds_end}"));
    }
    if worst_p99 > Duration::from_millis(250) {
        failures.push(format!("a second's p99 Ping round trip was {worst_p99:?}"));
    }
    let lost_durable = ledger.confirmed.difference(&ledger.durable).count();
    let lost_group = ledger.confirmed.difference(&ledger.group).count();
    if lost_durable + lost_group > 0 {
        failures.push(format!(
            "confirmed QoS 1 messages missing: {lost_durable} at the durable subscription, {lost_group} at the queue group"
        ));
    }
    let summary = format!(
        "{:.0} s; RSS {:.1} MB after warm-up, {:.1} MB at the end; fds {warm_fds} -> {fds_end}; \
         peak CPU {:.0}%; worst per-second p99 Ping {:.1} ms; {} QoS 0 deliveries, {} QoS 1 confirmed, all delivered to both",
        duration.as_secs_f64(),
        warm_rss as f64 / 1e6,
        rss_end as f64 / 1e6,
        peak_cpu * 100.0,
        worst_p99.as_secs_f64() * 1e3,
        fanned.load(Ordering::Relaxed),
        ledger.confirmed.len(),
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{}; {summary}", failures.join("; ")))
    }
}

type TaskResult = Result<(), String>;

async fn fan_publisher(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> TaskResult {
    let mut conn = Conn::ready(addr, None).await?;
    let payload = [0x42_u8; 256];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // 20 a tick: 2,000 messages a second, each to four subscribers.
        for _ in 0..20 {
            n += 1;
            conn.push_publish(0, &format!("fan.{}", n % 8), &payload, 0);
        }
        conn.flush()
            .await
            .map_err(|e| format!("fan publisher: {e}"))?;
    }
    Ok(())
}

async fn fan_subscriber(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> TaskResult {
    let mut conn = Conn::ready(addr, None).await?;
    conn.push_subscribe(1, "fan.>", 0);
    conn.flush().await.map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        match conn.recv_within(Duration::from_millis(200)).await {
            Ok(Reply::Delivery { .. }) => {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            // A subscriber that only reads is silent: the broker's
            // keepalive pings it (LIMIT-30), and a client answers.
            Ok(Reply::Ping { nonce }) => pong(&mut conn, nonce).await?,
            Ok(Reply::Error { code, message, .. }) => {
                return Err(format!("fan subscriber: error {code:?}: {message}"))
            }
            Ok(_) => {}
            Err(e) if e.starts_with("no frame") => {}
            Err(e) => return Err(format!("fan subscriber: {e}")),
        }
    }
    Ok(())
}

async fn qos1_publisher(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    ledger: Shared,
) -> TaskResult {
    let mut conn = Conn::ready(addr, None).await?;
    let mut next = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // Windows of 16, ~320 a second.
        let first = next + 1;
        for _ in 0..16 {
            next += 1;
            let mut payload = next.to_le_bytes().to_vec();
            payload.resize(512, 0);
            conn.push_publish(next, &format!("jobs.{}", next % 4), &payload, 1);
        }
        conn.flush().await.map_err(|e| e.to_string())?;
        let mut pending = 16;
        while pending > 0 {
            match conn.recv_within(Duration::from_secs(30)).await? {
                Reply::Confirm { publish_id } if (first..=next).contains(&publish_id) => {
                    ledger.lock().unwrap().confirmed.insert(publish_id);
                    pending -= 1;
                }
                Reply::Error {
                    code,
                    message,
                    request_id,
                } => {
                    return Err(format!(
                        "QoS 1 publish {request_id} refused: {code:?}: {message}"
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Durable,
    Group,
}

/// A QoS 1 consumer acking everything; it keeps reading for a while after
/// `stop`, so that every confirmed message can arrive.
async fn qos1_consumer(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    ledger: Shared,
    kind: Kind,
) -> TaskResult {
    let mut conn = Conn::ready(addr, None).await?;
    match kind {
        Kind::Durable => conn.push_subscribe_with(1, "jobs.*", 1, Some("soak"), None),
        Kind::Group => conn.push_subscribe_with(1, "jobs.*", 1, None, Some("workers")),
    }
    conn.flush().await.map_err(|e| e.to_string())?;
    let mut quiet_since: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                return Ok(());
            }
        }
        match conn.recv_within(Duration::from_millis(200)).await {
            Ok(Reply::Delivery {
                subscription_id,
                delivery_id,
                head,
                ..
            }) => {
                conn.push_ack(subscription_id, delivery_id);
                conn.flush().await.map_err(|e| e.to_string())?;
                let mut ledger = ledger.lock().unwrap();
                match kind {
                    Kind::Durable => ledger.durable.insert(head),
                    Kind::Group => ledger.group.insert(head),
                };
                if stop.load(Ordering::Relaxed) {
                    quiet_since = Some(Instant::now());
                }
            }
            Ok(Reply::Ping { nonce }) => pong(&mut conn, nonce).await?,
            Ok(Reply::Error { code, message, .. }) => {
                return Err(format!("QoS 1 consumer: error {code:?}: {message}"))
            }
            Ok(_) => {}
            Err(e) if e.starts_with("no frame") => {}
            Err(e) => return Err(format!("QoS 1 consumer: {e}")),
        }
    }
}

/// Answer the broker's keepalive `Ping`, as every client does.
async fn pong(conn: &mut Conn, nonce: u64) -> TaskResult {
    conn.send(&blipmq_protocol::Frame::Pong { nonce })
        .await
        .map_err(|e| format!("Pong: {e}"))
}

/// Ten clients a second connect, subscribe and leave.
async fn churn(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> TaskResult {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut conn = Conn::ready(addr, None).await?;
        conn.push_subscribe(1, &format!("churn.{}.>", n % 100), 0);
        conn.flush().await.map_err(|e| e.to_string())?;
        conn.recv_within(Duration::from_secs(10)).await?;
        drop(conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// WebSocket clients, one at a time: connect, handshake, subscribe to the
/// fan-out, read for half a second, leave.
/// How many frames a WebSocket message carries (whole frames: WS-1).
fn count_frames(mut message: &[u8]) -> usize {
    use blipmq_protocol::LENGTH_PREFIX_LEN;
    let mut frames = 0;
    while let Some(prefix) = message.get(..LENGTH_PREFIX_LEN) {
        let len = LENGTH_PREFIX_LEN + u32::from_le_bytes(prefix.try_into().unwrap()) as usize;
        message = message.get(len..).unwrap_or_default();
        frames += 1;
    }
    frames
}

async fn websocket_churn(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> TaskResult {
    use blipmq_protocol::{Encoder, Frame, Hello, Subscribe, PROTOCOL_VERSION};
    let mut encoder = Encoder::new();
    let hello = encoder.encode_to_bytes(&Frame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: Some("soak-ws"),
        api_key: None,
        drop_notices: false,
    }));
    let subscribe = encoder.encode_to_bytes(&Frame::Subscribe(Subscribe {
        request_id: 1,
        pattern: "fan.>",
        qos: 0,
        durable_name: None,
        queue_group: None,
        ..Default::default()
    }));
    while !stop.load(Ordering::Relaxed) {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("websocket connect: {e}"))?;
        let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
            .await
            .map_err(|e| format!("websocket upgrade: {e}"))?;
        socket
            .send(Message::binary(hello.to_vec()))
            .await
            .map_err(|e| format!("websocket send: {e}"))?;
        socket
            .send(Message::binary(subscribe.to_vec()))
            .await
            .map_err(|e| format!("websocket send: {e}"))?;
        let until = Instant::now() + Duration::from_millis(500);
        // Frames, not messages: a message may carry several (WS-1).
        let mut frames = 0;
        while let Ok(Some(message)) = tokio::time::timeout_at(until.into(), socket.next()).await {
            if let Message::Binary(data) = message.map_err(|e| format!("websocket read: {e}"))? {
                frames += count_frames(&data);
            }
        }
        if frames < 2 {
            return Err(format!("a WebSocket client got {frames} frames in 500 ms"));
        }
        let _ = socket.close(None).await;
    }
    Ok(())
}
