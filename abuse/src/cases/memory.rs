//! Memory a peer can make the broker hold with messages (issue 23, finding
//! 3): a subscriber that never reads, alone (bounded by
//! `subscriber_capacity_bytes`) and many of them at once (bounded by the
//! memory budget, `max_memory_bytes`, at which QoS 1 is refused).

use std::time::Duration;

use blipmq_protocol::ErrorCode;

use super::{Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::{mb, Bounds};
use crate::wire::{Conn, Reply};

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "slow-subscriber-memory",
            what: "a subscriber that never reads, sent 1 MiB messages at the defaults: RSS bounded by subscriber_capacity_bytes",
            run: |ctx| Box::pin(slow_subscriber(ctx)),
        },
        Case {
            name: "memory-budget",
            what: "ten subscribers that never read, 1 MiB messages to each: RSS bounded by max_memory_bytes, then QoS 1 gets QueueFull",
            run: |ctx| Box::pin(memory_budget(ctx)),
        },
        Case {
            name: "unread-replies",
            what: "peers send 8 MiB of requests that each get an error reply and never read one: their backlogs together stay within a sixteenth of max_memory_bytes",
            run: |ctx| Box::pin(unread_replies(ctx)),
        },
    ]
}

const MIB: usize = 1024 * 1024;

/// Subscribe `topic` on a fresh connection that will never read again.
async fn stalled_subscriber(broker: &Broker, topic: &str) -> Result<Conn, String> {
    let mut conn = Conn::ready(broker.clients, None).await?;
    conn.push_subscribe(1, topic, 0);
    conn.flush().await.map_err(|e| e.to_string())?;
    match conn.recv_within(Duration::from_secs(10)).await? {
        Reply::Subscribed { .. } => Ok(conn),
        other => Err(format!("expected Subscribed, got {other:?}")),
    }
}

/// Publish `count` messages of 1 MiB to each of `topics`, then wait until
/// the broker has handled them (a Ping round trip).
async fn publish_megabytes(
    publisher: &mut Conn,
    topics: &[String],
    count: usize,
) -> Result<(), String> {
    let payload = vec![0x5a_u8; MIB - 4096];
    for _ in 0..count {
        for topic in topics {
            publisher.push_publish(0, topic, &payload, 0);
            publisher.flush().await.map_err(|e| e.to_string())?;
        }
    }
    publisher.ping(1, Duration::from_secs(60)).await.map(|_| ())
}

async fn slow_subscriber(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "", "")?;
    let subscriber = stalled_subscriber(&broker, "big").await?;
    let watched = Watched::start(broker, None).await?;
    let mut publisher = Conn::ready(watched.broker.clients, None).await?;
    let count = ctx.count(200, 1000);
    publish_megabytes(&mut publisher, &["big".to_string()], count).await?;
    // Queue (64 MiB at the defaults), the writer's batch and slack.
    let bounds = Bounds {
        rss_growth: 112 * MIB as u64,
        fds: 64,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, _broker) = watched.finish().await?;
    drop(subscriber);
    Ok(format!("{count} MiB sent; {}", outcome.check(&bounds)?))
}

async fn memory_budget(ctx: &Ctx) -> CaseResult {
    let budget = 32 * MIB;
    let broker = Broker::start(
        &ctx.bin,
        "",
        &format!("[queues]\nmax_memory_bytes = {budget}\n"),
    )?;
    let topics: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let mut subscribers = Vec::new();
    for topic in &topics {
        subscribers.push(stalled_subscriber(&broker, topic).await?);
    }
    let watched = Watched::start(broker, None).await?;
    let mut publisher = Conn::ready(watched.broker.clients, None).await?;
    let count = ctx.count(30, 100);
    publish_megabytes(&mut publisher, &topics, count).await?;
    // The budget is full: a QoS 1 publish is refused, not stored.
    publisher.push_publish(77, "q", &vec![1_u8; MIB - 4096], 1);
    publisher.flush().await.map_err(|e| e.to_string())?;
    let refusal = publisher.recv_within(Duration::from_secs(10)).await?;
    let refused = matches!(
        refusal,
        Reply::Error {
            code: ErrorCode::QueueFull,
            request_id: 77,
            ..
        }
    );
    let bounds = Bounds {
        rss_growth: (budget + 40 * MIB) as u64,
        fds: 64,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, _broker) = watched.finish().await?;
    drop(subscribers);
    let summary = outcome.check(&bounds)?;
    if !refused {
        return Err(format!(
            "a QoS 1 publish over a full budget got {refusal:?}, not QueueFull; {summary}"
        ));
    }
    Ok(format!(
        "{} MiB sent over a {:.0} MB budget, QoS 1 refused; {summary}",
        count * topics.len(),
        mb(budget as u64)
    ))
}

async fn unread_replies(ctx: &Ctx) -> CaseResult {
    // 64 MiB of messages, so 4 MiB of unread replies for all peers together.
    let broker = Broker::start(
        &ctx.bin,
        "",
        &format!("[queues]\nmax_memory_bytes = {}\n", 64 * MIB),
    )?;
    let watched = Watched::start(broker, None).await?;
    let addr = watched.broker.clients;
    let peers = ctx.count(10, 100);
    // An invalid topic of 250 bytes: each Publish earns an error of ~300.
    let topic = format!("a..{}", "x".repeat(247));
    let tasks: Vec<_> = (0..peers)
        .map(|_| {
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut conn = Conn::connect_unread(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.hello(None).await?;
                // 8 MiB of requests, never reading: either all of it is
                // answered into a backlog, or the broker closes the peer.
                for _ in 0..(8 * MIB / 300 / 64) {
                    for _ in 0..64 {
                        conn.push_publish(0, &topic, b"x", 0);
                    }
                    if conn.flush().await.is_err() {
                        return Ok::<bool, String>(true);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(false)
            })
        })
        .collect();
    let mut closed = 0;
    for task in tasks {
        if task.await.map_err(|e| e.to_string())?? {
            closed += 1;
        }
    }
    let bounds = Bounds {
        // The shared 4 MiB, the writers' batches and the allocator's slack.
        rss_growth: 40 * MIB as u64,
        fds: 64 + peers,
        // The peers keep a debug build's two workers busy with errors.
        bystander_rtt: Duration::from_millis(1500),
    };
    let (outcome, _broker) = watched.finish().await?;
    let closed = format!("{closed} of {peers} peers closed");
    match outcome.check(&bounds) {
        Ok(summary) => Ok(format!("{closed}; {summary}")),
        Err(failure) => Err(format!("{closed}; {failure}")),
    }
}
