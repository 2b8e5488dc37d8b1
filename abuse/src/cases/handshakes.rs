//! Sockets that never authenticate (issue 23, findings 4 and 5): what they
//! may make the broker hold before their Hello is accepted, and that they
//! cannot take the room of a client with the right key.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blipmq_protocol::{Encoder, Frame, Hello, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frames::settle_fds;
use super::{ensure, Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::{ws_binary_header, ws_upgrade, ws_upgrade_request, Conn};

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "ws-unfinished-messages",
            what: "unauthenticated WebSocket peers each sending all but the last byte of a 1 MB message: refused at the 16 KiB handshake budget, RSS bounded",
            run: |ctx| Box::pin(ws_unfinished_messages(ctx)),
        },
        Case {
            name: "idle-sockets-lockout-tcp",
            what: "max_connections = 50 and more idle unauthenticated TCP sockets than that: a client with the right key is still served",
            run: |ctx| Box::pin(idle_sockets_lockout_tcp(ctx)),
        },
        Case {
            name: "ws-silent-sockets",
            what: "silent sockets on the WebSocket port beyond max_connections = 5 and max_handshakes = 50: the excess closed at once, fds bounded",
            run: |ctx| Box::pin(ws_silent_sockets(ctx)),
        },
        Case {
            name: "slowloris-websocket",
            what: "WebSocket peers dribbling the upgrade, then a Hello: closed when the one handshake timeout (upgrade and Hello together) runs out",
            run: |ctx| Box::pin(slowloris_websocket(ctx)),
        },
    ]
}

/// Whether the broker closes `stream` within `limit` (what it sends before
/// closing is read and dropped).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// How many of `streams` the broker closes within `limit` (all waited on
/// together).
async fn count_closed(streams: Vec<TcpStream>, limit: Duration) -> usize {
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { closed_within(&mut s, limit).await }))
        .collect();
    let mut closed = 0;
    for task in tasks {
        if task.await.unwrap_or(false) {
            closed += 1;
        }
    }
    closed
}

/// `n` sockets connected to `addr` that send nothing.
async fn idle_sockets(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(
            TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect to {addr}: {e}"))?,
        );
    }
    Ok(sockets)
}

async fn ws_unfinished_messages(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "", "")?;
    let ws = broker
        .websocket
        .ok_or("the broker has no WebSocket listener")?;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let peers = ctx.count(100, 100);
    const MESSAGE: usize = 1 << 20;
    let mut tasks = Vec::new();
    for _ in 0..peers {
        tasks.push(tokio::spawn(async move {
            let mut stream = ws_upgrade(ws).await?;
            // All of the message but its last byte, as fast as the broker
            // takes it. A broker that stops reading fails the write (it
            // closed) or leaves it in the socket buffers.
            let _ = stream.write_all(&ws_binary_header(MESSAGE as u64)).await;
            let body = vec![0u8; MESSAGE - 1];
            let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&body)).await;
            Ok::<_, String>(stream)
        }));
    }
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.map_err(|e| e.to_string())??);
    }
    // What the broker buffers for the peers, it holds now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = count_closed(streams, Duration::from_secs(2)).await;
    let bounds = Bounds {
        rss_growth: 24 << 20,
        fds: fds_before + peers + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(closed == peers, || {
        format!(
            "{} of {peers} peers were left open with their unfinished message; {summary}",
            peers - closed
        )
    })?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!("{peers} peers refused; {summary}"))
}

async fn idle_sockets_lockout_tcp(ctx: &Ctx) -> CaseResult {
    let key = "right-key";
    let broker = Broker::start(
        &ctx.bin,
        "max_connections = 50",
        &format!("[auth]\napi_keys = [{key:?}]"),
    )?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, Some(key)).await?;
    let idle = idle_sockets(addr, ctx.count(60, 200)).await?;
    // Let the broker accept every one of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let mut client = Conn::ready(addr, Some(key))
        .await
        .map_err(|e| format!("the client with the right key was not served: {e}"))?;
    client.ping(1, Duration::from_secs(5)).await?;
    let served_in = start.elapsed();
    let bounds = Bounds {
        rss_growth: 16 << 20,
        fds: fds_before + idle.len() + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(served_in < Duration::from_secs(1), || {
        format!("the client with the right key waited {served_in:?}; {summary}")
    })?;
    let count = idle.len();
    drop(idle);
    drop(client);
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{count} idle sockets; the right key served in {:.1} ms; {summary}",
        served_in.as_secs_f64() * 1e3
    ))
}

async fn ws_silent_sockets(ctx: &Ctx) -> CaseResult {
    let max_handshakes = 50;
    let broker = Broker::start(
        &ctx.bin,
        &format!("max_connections = 5\nmax_handshakes = {max_handshakes}"),
        "",
    )?;
    let ws = broker
        .websocket
        .ok_or("the broker has no WebSocket listener")?;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let count = ctx.count(200, 1000);
    let silent = idle_sockets(ws, count).await?;
    let closed = count_closed(silent, Duration::from_secs(1)).await;
    let bounds = Bounds {
        rss_growth: 16 << 20,
        fds: fds_before + max_handshakes + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(closed + max_handshakes >= count, || {
        format!("only {closed} of {count} silent sockets were closed within 1 s; {summary}")
    })?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{count} silent sockets, {closed} closed at once; {summary}"
    ))
}

async fn slowloris_websocket(ctx: &Ctx) -> CaseResult {
    let timeout = Duration::from_millis(2000);
    let broker = Broker::start(
        &ctx.bin,
        &format!("handshake_timeout_ms = {}", timeout.as_millis()),
        "",
    )?;
    let ws = broker
        .websocket
        .ok_or("the broker has no WebSocket listener")?;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let peers = ctx.count(100, 500);
    let hello = Encoder::new().encode_to_bytes(&Frame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: Some("slow"),
        api_key: None,
        drop_notices: false,
    }));
    let mut tasks = Vec::new();
    for _ in 0..peers {
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut stream = TcpStream::connect(ws).await.map_err(|e| e.to_string())?;
            // The upgrade request in ten pieces over 1.8 s: just inside
            // the handshake timeout.
            let request = ws_upgrade_request(ws).into_bytes();
            let piece = request.len().div_ceil(10);
            for chunk in request.chunks(piece) {
                if stream.write_all(chunk).await.is_err() {
                    return Ok::<_, String>(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(180)).await;
            }
            // Then the Hello in one WebSocket frame, a byte every 200 ms,
            // until the broker answers (the 101, then what closes it).
            let mut frame = ws_binary_header(hello.len() as u64);
            frame.extend_from_slice(&hello);
            let mut buf = vec![0u8; 4096];
            let mut answer = Vec::new();
            for byte in frame.iter().take(frame.len() - 1) {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Ok(start.elapsed());
                }
                let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf));
                match read.await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()),
                    Ok(Ok(n)) => {
                        answer.extend_from_slice(&buf[..n]);
                        // Anything after the 101's head is the broker's
                        // goodbye (an Error frame, a close frame).
                        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                            if answer.len() > end + 4 {
                                return Ok(start.elapsed());
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
            Err("the whole Hello but one byte went unanswered".to_string())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.map_err(|e| e.to_string())??);
    }
    let bounds = Bounds {
        rss_growth: 32 << 20,
        fds: fds_before + peers + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    ensure(slowest <= timeout + Duration::from_secs(1), || {
        format!(
            "a slow peer was answered only after {slowest:?} (handshake timeout {timeout:?}); {summary}"
        )
    })?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{peers} peers, the last closed after {:.1} s; {summary}",
        slowest.as_secs_f64()
    ))
}
