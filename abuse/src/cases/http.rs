//! The metrics port (issue 23, finding 6): idle connections, a scraper that
//! never reads its answers, and a slowloris, each bounded by the port's own
//! limits, while the client port goes on serving QoS 1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::frames::settle_fds;
use super::handshakes::closed_within;
use super::{ensure, Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::{Conn, Reply};

/// The broker's default `metrics.max_connections`, `request_timeout_ms`
/// and `write_timeout_ms`: the cases run on the defaults.
const MAX_CONNECTIONS: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "metrics-idle-connections",
            what: "300 idle connections to the metrics port: those beyond metrics.max_connections closed at once, fds bounded, QoS 1 publishes still confirmed",
            run: |ctx| Box::pin(metrics_idle_connections(ctx)),
        },
        Case {
            name: "metrics-scraper-never-reads",
            what: "a scraper that pipelines requests and never reads the answers: disconnected at the write timeout, memory bounded",
            run: |ctx| Box::pin(scraper_never_reads(ctx)),
        },
        Case {
            name: "slowloris-metrics",
            what: "peers dribbling a request head one byte per 200 ms on the metrics port: closed at the request timeout, the excess at once",
            run: |ctx| Box::pin(slowloris_metrics(ctx)),
        },
    ]
}

fn metrics_addr(broker: &Broker) -> Result<SocketAddr, String> {
    broker
        .metrics
        .ok_or_else(|| "the broker has no metrics listener".to_string())
}

/// Publish `n` QoS 1 messages and wait for every Confirm.
async fn publish_confirmed(addr: SocketAddr, n: u64) -> Result<(), String> {
    let mut conn = Conn::ready(addr, None).await?;
    for id in 1..=n {
        conn.push_publish(id, "abuse.qos1", b"durable", 1);
    }
    conn.flush().await.map_err(|e| e.to_string())?;
    let mut confirmed = 0;
    while confirmed < n {
        match conn.recv_within(Duration::from_secs(10)).await? {
            Reply::Confirm { .. } => confirmed += 1,
            other => return Err(format!("a QoS 1 publish got {other:?}")),
        }
    }
    Ok(())
}

async fn metrics_idle_connections(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "", "")?;
    let (metrics, clients) = (metrics_addr(&broker)?, broker.clients);
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let count = ctx.count(300, 1000);
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(
            TcpStream::connect(metrics)
                .await
                .map_err(|e| format!("connect to the metrics port: {e}"))?,
        );
    }
    publish_confirmed(clients, 20)
        .await
        .map_err(|e| format!("QoS 1 on the client port failed: {e}"))?;
    let tasks: Vec<_> = idle
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { (closed_within(&mut s, Duration::from_secs(1)).await, s) })
        })
        .collect();
    let mut closed = 0;
    let mut still_open = Vec::new();
    for task in tasks {
        let (was_closed, stream) = task.await.map_err(|e| e.to_string())?;
        if was_closed {
            closed += 1;
        } else {
            still_open.push(stream);
        }
    }
    let bounds = Bounds {
        rss_growth: 16 << 20,
        fds: fds_before + MAX_CONNECTIONS + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(closed + MAX_CONNECTIONS >= count, || {
        format!("only {closed} of {count} idle connections were closed at once; {summary}")
    })?;
    drop(still_open);
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{count} idle connections, {closed} closed at once, QoS 1 confirmed; {summary}"
    ))
}

async fn scraper_never_reads(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "", "")?;
    let metrics = metrics_addr(&broker)?;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    // A small receive window, so that the answers back up into the broker.
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .set_recv_buffer_size(4096)
        .map_err(|e| e.to_string())?;
    let mut stream = socket
        .connect(metrics)
        .await
        .map_err(|e| format!("connect to the metrics port: {e}"))?;
    let requests = ctx.count(3000, 10_000);
    let pipelined = b"GET /metrics HTTP/1.1\r\nHost: abuse\r\n\r\n".repeat(requests);
    // The broker stops reading requests while its answer cannot be written.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&pipelined)).await;
    tokio::time::sleep(WRITE_TIMEOUT + Duration::from_secs(2)).await;
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
    let bounds = Bounds {
        rss_growth: 16 << 20,
        fds: fds_before + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(closed, || {
        format!("the scraper that never reads was still connected after {WRITE_TIMEOUT:?} and more; {summary}")
    })?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!("the scraper was disconnected; {summary}"))
}

async fn slowloris_metrics(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "", "")?;
    let metrics = metrics_addr(&broker)?;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let peers = ctx.count(100, 500);
    let mut tasks = Vec::new();
    for _ in 0..peers {
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut stream = TcpStream::connect(metrics)
                .await
                .map_err(|e| e.to_string())?;
            let head = b"GET /metrics HTTP/1.1\r\n";
            let mut buf = [0u8; 1024];
            // A header line without end, a byte every 200 ms, until closed.
            for byte in head
                .iter()
                .chain(b"X-a: ".iter())
                .chain(std::iter::repeat(&b'b'))
            {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Ok::<_, String>(start.elapsed());
                }
                let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf));
                if read.await.is_ok() {
                    // An answer (503) or the close: either way, done with us.
                    return Ok(start.elapsed());
                }
                if start.elapsed() > Duration::from_secs(45) {
                    break;
                }
            }
            Ok(start.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.map_err(|e| e.to_string())??);
    }
    let bounds = Bounds {
        rss_growth: 16 << 20,
        fds: fds_before + MAX_CONNECTIONS + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(slowest <= REQUEST_TIMEOUT + Duration::from_secs(2), || {
        format!(
            "a slow peer was closed only after {slowest:?} (request timeout {REQUEST_TIMEOUT:?}); {summary}"
        )
    })?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{peers} peers, the last closed after {:.1} s; {summary}",
        slowest.as_secs_f64()
    ))
}
