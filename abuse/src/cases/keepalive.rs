//! A durable QoS 1 consumer that hangs without closing (issue 23, finding
//! 7): it stops reading and writing, and its socket stays open. Keepalive
//! must close it within `keepalive_interval_ms × (keepalive_missed + 1)`,
//! so that a replacement with the same durable name can attach (not
//! `DurableInUse`) and receives the messages the hung one never acked.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blipmq_protocol::{ErrorCode, Frame};

use super::frames::settle_fds;
use super::{ensure, Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::{Conn, Reply};

const INTERVAL_MS: u64 = 300;
const MISSED: u64 = 2;

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "keepalive-hung-durable-consumer",
        what: "a durable QoS 1 consumer that stops reading and writing without closing: closed by keepalive, and a replacement with its name attaches and gets its unacked messages",
        run: |ctx| Box::pin(hung_durable_consumer(ctx)),
    }]
}

/// Subscribe to `name` and wait for the answer, answering broker Pings on
/// the way: the subscription id, or the error code.
async fn subscribe(
    conn: &mut Conn,
    request_id: u64,
    name: &str,
) -> Result<Result<u64, ErrorCode>, String> {
    conn.push_subscribe_durable(request_id, "jobs", name);
    conn.flush()
        .await
        .map_err(|e| format!("send Subscribe: {e}"))?;
    loop {
        match conn.recv_within(Duration::from_secs(10)).await? {
            Reply::Subscribed {
                request_id: r,
                subscription_id,
            } if r == request_id => return Ok(Ok(subscription_id)),
            Reply::Error {
                code,
                request_id: r,
                ..
            } if r == request_id => return Ok(Err(code)),
            Reply::Ping { nonce } => pong(conn, nonce).await?,
            other => return Err(format!("expected Subscribed, got {other:?}")),
        }
    }
}

async fn pong(conn: &mut Conn, nonce: u64) -> Result<(), String> {
    conn.send(&Frame::Pong { nonce })
        .await
        .map_err(|e| format!("send Pong: {e}"))
}

/// Publish `count` QoS 1 messages and wait for their confirms.
async fn publish(addr: SocketAddr, count: usize) -> Result<(), String> {
    let mut producer = Conn::ready(addr, None).await?;
    for i in 0..count {
        producer.push_publish(i as u64 + 1, "jobs", b"a job", 1);
    }
    producer
        .flush()
        .await
        .map_err(|e| format!("publish: {e}"))?;
    let mut confirmed = 0;
    while confirmed < count {
        match producer.recv_within(Duration::from_secs(30)).await? {
            Reply::Confirm { .. } => confirmed += 1,
            Reply::Ping { nonce } => pong(&mut producer, nonce).await?,
            other => return Err(format!("expected Confirm, got {other:?}")),
        }
    }
    Ok(())
}

async fn hung_durable_consumer(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(
        &ctx.bin,
        &format!("keepalive_interval_ms = {INTERVAL_MS}\nkeepalive_missed = {MISSED}"),
        "",
    )?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let messages = ctx.count(200, 5000);

    let mut hung = Conn::ready(addr, None).await?;
    subscribe(&mut hung, 1, "worker")
        .await?
        .map_err(|code| format!("the first consumer was refused: {code:?}"))?;
    // Its last frame: from here on it neither reads nor writes.
    let silent_since = Instant::now();
    publish(addr, messages).await?;

    let mut replacement = Conn::ready(addr, None).await?;
    let first = subscribe(&mut replacement, 1, "worker").await?;
    ensure(first == Err(ErrorCode::DurableInUse), || {
        format!("while the first consumer is open, a second one is refused with DurableInUse, not {first:?}")
    })?;
    // Closed at interval × (missed + 1) after its last frame; a second of
    // slack for a debug build on a busy machine.
    let bound = Duration::from_millis(INTERVAL_MS * (MISSED + 1)) + Duration::from_secs(1);
    let mut request_id = 1;
    let subscription = loop {
        request_id += 1;
        match subscribe(&mut replacement, request_id, "worker").await? {
            Ok(id) => break id,
            Err(ErrorCode::DurableInUse) if silent_since.elapsed() <= bound => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(code) => {
                return Err(format!(
                    "the replacement is still refused ({code:?}) {:.1} s after the first consumer went silent (bound {:.1} s)",
                    silent_since.elapsed().as_secs_f64(),
                    bound.as_secs_f64()
                ))
            }
        }
    };
    let attached_after = silent_since.elapsed();

    // Every message the hung consumer held or never got, acked as it comes.
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < messages {
        if Instant::now() > deadline {
            return Err(format!(
                "the replacement got {} of {messages} messages",
                got.len()
            ));
        }
        match replacement.recv_within(Duration::from_secs(10)).await? {
            Reply::Delivery {
                subscription_id,
                delivery_id,
                ..
            } if subscription_id == subscription => {
                got.insert(delivery_id);
                replacement.push_ack(subscription, delivery_id);
                replacement.flush().await.map_err(|e| format!("ack: {e}"))?;
            }
            Reply::Ping { nonce } => pong(&mut replacement, nonce).await?,
            other => return Err(format!("expected a delivery, got {other:?}")),
        }
    }
    drop(hung);
    drop(replacement);
    let bounds = Bounds {
        rss_growth: 32 << 20,
        fds: fds_before + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "replacement attached {:.0} ms after the consumer went silent (bound {:.0} ms) and got all {messages} messages; {summary}",
        attached_after.as_secs_f64() * 1e3,
        bound.as_secs_f64() * 1e3
    ))
}
