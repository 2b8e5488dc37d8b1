//! Subscriptions and matching (issue 23, findings 1 and 2): one client that
//! subscribes without end, one that holds very many subscriptions and
//! leaves, wildcard patterns that match nothing in front of a publisher to
//! ever new topics, and very many subscriptions across many connections.
//! The broker must refuse past its per-connection limit (LIMIT-10), and
//! publishing and cleaning up must cost what LIMIT-11 says, so that the
//! bystander's Ping is answered promptly throughout.

use std::time::{Duration, Instant};

use blipmq_protocol::{ErrorCode, Frame, Unsubscribe};

use super::{ensure, metric, Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::{mb, Bounds};
use crate::wire::{Conn, Reply};

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "subscriptions-over-the-limit",
            what: "one connection subscribes past max_subscriptions_per_connection: TooManyTopics from the limit on, RSS bounded",
            run: |ctx| Box::pin(over_the_limit(ctx)),
        },
        Case {
            name: "subscriptions-disconnect",
            what: "one connection with 100k subscriptions to one pattern (limit raised) disconnects: removed within 2 s, the bystander's Ping under 200 ms",
            run: |ctx| Box::pin(disconnect(ctx)),
        },
        Case {
            name: "subscriptions-wildcards-vs-new-topics",
            what: "20k wildcard patterns matching nothing, then 20k publishes to distinct topics: done within 2 s, bystander under 300 ms",
            run: |ctx| Box::pin(wildcards_vs_new_topics(ctx)),
        },
        Case {
            name: "subscriptions-many-connections",
            what: "1M subscriptions across 1,000 connections, a publish reaching them, then all disconnect: RSS per subscription and the bystander bounded",
            run: |ctx| Box::pin(many_connections(ctx)),
        },
        Case {
            name: "subscriptions-distinct-topics",
            what: "one publisher to 1M distinct topics: the match cache stays bounded (RSS), the bystander is unharmed",
            run: |ctx| Box::pin(distinct_topics(ctx)),
        },
    ]
}

const WAIT: Duration = Duration::from_secs(60);
/// Subscribes or publishes written before their answers are read: a client
/// must read its answers (LIMIT-2), so a batch is well under 8 MiB of them.
const BATCH: usize = 1000;

/// Send what `conn` has queued, then let the harness's other tasks run: a
/// write into a socket with room does not yield, and an attacker that never
/// yields would delay the bystander's Ping in this process, not the broker.
async fn flush(conn: &mut Conn) -> Result<(), String> {
    conn.flush().await.map_err(io)?;
    tokio::task::yield_now().await;
    Ok(())
}

fn io(error: std::io::Error) -> String {
    error.to_string()
}

/// What a run of subscribes got.
#[derive(Debug, Default)]
struct Subscribed {
    ids: Vec<u64>,
    /// (request id, code) of each refusal.
    refused: Vec<(u64, ErrorCode)>,
}

/// Subscribe to each of `patterns` at QoS 0 on `conn`, `BATCH` at a time,
/// reading one answer per Subscribe (deliveries on the way are skipped).
/// Request ids count from 1.
async fn subscribe_all(
    conn: &mut Conn,
    patterns: impl IntoIterator<Item = String>,
) -> Result<Subscribed, String> {
    let mut got = Subscribed::default();
    let mut patterns = patterns.into_iter().peekable();
    let mut request_id = 0u64;
    while patterns.peek().is_some() {
        let mut sent = 0;
        for pattern in patterns.by_ref().take(BATCH) {
            request_id += 1;
            conn.push_subscribe(request_id, &pattern, 0);
            sent += 1;
        }
        flush(conn).await?;
        let mut answered = 0;
        while answered < sent {
            match conn.recv_within(WAIT).await? {
                Reply::Subscribed {
                    subscription_id, ..
                } => got.ids.push(subscription_id),
                Reply::Error {
                    code, request_id, ..
                } => got.refused.push((request_id, code)),
                Reply::Delivery { .. } => continue,
                other => return Err(format!("expected Subscribed or Error, got {other:?}")),
            }
            answered += 1;
        }
    }
    Ok(got)
}

/// Wait until `sample` reads `value`; how long that took.
async fn wait_for_metric(broker: &Broker, sample: &str, value: u64) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let now = metric(broker, sample).await?;
        if now == value {
            return Ok(start.elapsed());
        }
        if start.elapsed() > WAIT {
            return Err(format!("{sample} is {now}, not {value}, after {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn over_the_limit(ctx: &Ctx) -> CaseResult {
    // The default limit (10,000); --full tries ten times past it.
    let limit = 10_000;
    let attempts = ctx.count(limit + 2_000, 10 * limit);
    let broker = Broker::start(&ctx.bin, "", "")?;
    let addr = broker.clients;
    let watched = Watched::start(broker, None).await?;
    let mut greedy = Conn::ready(addr, None).await?;
    let cpu_before = watched.broker.cpu_time();
    let patterns = (0..attempts).map(|n| format!("greedy.{}.*", n % 100));
    let got = subscribe_all(&mut greedy, patterns).await?;
    let cpu = watched.broker.cpu_time().saturating_sub(cpu_before);
    ensure(got.ids.len() == limit, || {
        format!(
            "{} subscriptions accepted on one connection, the limit is {limit}",
            got.ids.len()
        )
    })?;
    let refused_right = got
        .refused
        .iter()
        .enumerate()
        .all(|(i, &(request_id, code))| {
            code == ErrorCode::TooManyTopics && request_id == (limit + 1 + i) as u64
        });
    ensure(
        got.refused.len() == attempts - limit && refused_right,
        || {
            format!(
                "expected TooManyTopics for each of the {} subscribes past the limit, got {:?}…",
                attempts - limit,
                &got.refused[..got.refused.len().min(3)]
            )
        },
    )?;
    let counted = metric(
        &watched.broker,
        "blipmq_subscriptions_refused_total{limit=\"max_subscriptions_per_connection\"}",
    )
    .await?;
    ensure(counted == (attempts - limit) as u64, || {
        format!("{counted} refusals counted in /metrics")
    })?;
    // The connection still works: unsubscribing one makes room for one.
    greedy
        .send(&Frame::Unsubscribe(Unsubscribe {
            request_id: 1_000_000_000,
            subscription_id: got.ids[0],
            keep_durable: false,
        }))
        .await
        .map_err(io)?;
    match greedy.recv_within(WAIT).await? {
        Reply::Unsubscribed { .. } => {}
        other => return Err(format!("expected Unsubscribed, got {other:?}")),
    }
    let again = subscribe_all(&mut greedy, ["greedy.again".to_string()]).await?;
    ensure(again.ids.len() == 1, || {
        format!("no room after an unsubscribe: {again:?}")
    })?;
    let fds = watched.broker.fds();
    let (outcome, _broker) = watched.finish().await?;
    let summary = outcome.check(&Bounds {
        // ~1 KB per subscription at the limit, with room for a debug build.
        rss_growth: 64 << 20,
        fds: fds + 16,
        bystander_rtt: Duration::from_millis(200),
    })?;
    Ok(format!(
        "{limit} accepted, {} refused with TooManyTopics, broker CPU {:.2} s; {summary}",
        attempts - limit,
        secs(cpu)
    ))
}

async fn disconnect(ctx: &Ctx) -> CaseResult {
    let count = ctx.count(20_000, 100_000);
    // A broker from before LIMIT-10 refuses the unknown key, and has no
    // limit to raise: it runs as it is, so the case can measure it too.
    let broker = Broker::start(
        &ctx.bin,
        "",
        "[queues]\nmax_subscriptions_per_connection = 1000000",
    )
    .or_else(|_| Broker::start(&ctx.bin, "", ""))?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let mut holder = Conn::ready(addr, None).await?;
    let start = Instant::now();
    let got = subscribe_all(&mut holder, (0..count).map(|_| "flood.one".to_string())).await?;
    let subscribe_time = start.elapsed();
    ensure(got.ids.len() == count && got.refused.is_empty(), || {
        format!(
            "{} subscribed, {} refused of {count}",
            got.ids.len(),
            got.refused.len()
        )
    })?;
    let rss_held = watched.broker.rss();
    let cpu_before = watched.broker.cpu_time();
    drop(holder);
    let cleanup = wait_for_metric(&watched.broker, "blipmq_subscriptions", 0).await?;
    let cpu = watched.broker.cpu_time().saturating_sub(cpu_before);
    // Pings for a little longer, in case the broker is still busy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (outcome, broker) = watched.finish().await?;
    // With a runtime thread to spare the bystander may not notice a slow
    // cleanup; its cost is bounded as well (LIMIT-11).
    ensure(cleanup <= Duration::from_secs(2), || {
        format!(
            "{count} subscriptions took {:.2} s and {:.2} s of broker CPU to remove (bound 2 s); {}",
            secs(cleanup),
            secs(cpu),
            outcome.summary()
        )
    })?;
    let summary = outcome.check(&Bounds {
        rss_growth: (count as u64) * 4096 + (32 << 20),
        fds: fds_before + 16,
        bystander_rtt: Duration::from_millis(200),
    })?;
    super::frames::settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{count} subscriptions in {:.2} s (RSS {:.1} MB held), removed in {:.2} s on close \
         using {:.2} s of broker CPU; {summary}",
        secs(subscribe_time),
        mb(rss_held),
        secs(cleanup),
        secs(cpu)
    ))
}

async fn wildcards_vs_new_topics(ctx: &Ctx) -> CaseResult {
    let patterns = 20_000;
    let topics = 20_000;
    let broker = Broker::start(&ctx.bin, "", "")?;
    let addr = broker.clients;
    let watched = Watched::start(broker, None).await?;
    // Within the default per-connection limit: 5,000 per connection.
    let mut holders = Vec::new();
    for chunk in 0..patterns / 5_000 {
        let mut conn = Conn::ready(addr, None).await?;
        let got = subscribe_all(
            &mut conn,
            (0..5_000).map(move |n| format!("w.{chunk}.{n}.*")),
        )
        .await?;
        ensure(got.refused.is_empty(), || format!("refused: {got:?}"))?;
        holders.push(conn);
    }
    let mut publisher = Conn::ready(addr, None).await?;
    let cpu_before = watched.broker.cpu_time();
    let start = Instant::now();
    for batch in 0..topics / BATCH {
        for n in 0..BATCH {
            publisher.push_publish(0, &format!("p.{}.{n}", batch), b"x", 0);
        }
        flush(&mut publisher).await?;
    }
    // The Pong comes after every publish before it was handled.
    publisher.ping(1, WAIT).await?;
    let took = start.elapsed();
    let cpu = watched.broker.cpu_time().saturating_sub(cpu_before);
    let fds = watched.broker.fds();
    let (outcome, _broker) = watched.finish().await?;
    ensure(took <= Duration::from_secs(2), || {
        format!(
            "{topics} publishes to new topics past {patterns} wildcard patterns took {:.2} s \
             (bound 2 s); {}",
            secs(took),
            outcome.summary()
        )
    })?;
    let summary = outcome.check(&Bounds {
        rss_growth: 128 << 20,
        fds: fds + 16,
        bystander_rtt: Duration::from_millis(300),
    })?;
    drop(holders);
    Ok(format!(
        "{topics} publishes past {patterns} patterns in {:.2} s, broker CPU {:.2} s; {summary}",
        secs(took),
        secs(cpu)
    ))
}

async fn many_connections(ctx: &Ctx) -> CaseResult {
    let connections = ctx.count(100, 1_000);
    let per_connection = ctx.count(500, 1_000);
    let total = connections * per_connection;
    let broker = Broker::start(&ctx.bin, "", "")?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let start = Instant::now();
    // 2,000 distinct patterns (within topic_capacity), half exact and half
    // wildcards, each shared by many connections.
    let mut holders = Vec::with_capacity(connections);
    for c in 0..connections {
        let mut conn = Conn::ready(addr, None).await?;
        let patterns = (0..per_connection).map(move |n| {
            let k = (c * per_connection + n) % 1_000;
            if n % 2 == 0 {
                format!("m.{k}.x")
            } else {
                format!("m.*.{k}")
            }
        });
        let got = subscribe_all(&mut conn, patterns).await?;
        ensure(got.refused.is_empty(), || {
            format!("connection {c}: {} refused", got.refused.len())
        })?;
        holders.push(conn);
    }
    let subscribe_time = start.elapsed();
    let rss_held = watched.broker.rss();
    // One publish reaching an exact and a wildcard pattern: every holder of
    // either gets it; its cost grows with those, not with the rest.
    let mut publisher = Conn::ready(addr, None).await?;
    let publish_start = Instant::now();
    publisher.push_publish(0, "m.8.x", b"x", 0);
    publisher.flush().await.map_err(io)?;
    publisher.ping(1, WAIT).await?;
    let publish_time = publish_start.elapsed();
    let cpu_before = watched.broker.cpu_time();
    drop(holders);
    let cleanup = wait_for_metric(&watched.broker, "blipmq_subscriptions", 0).await?;
    let cpu = watched.broker.cpu_time().saturating_sub(cpu_before);
    let (outcome, broker) = watched.finish().await?;
    ensure(cleanup <= Duration::from_secs(10), || {
        format!(
            "{total} subscriptions took {:.2} s to remove (bound 10 s); {}",
            secs(cleanup),
            outcome.summary()
        )
    })?;
    let summary = outcome.check(&Bounds {
        rss_growth: (total as u64) * 4096 + (64 << 20),
        fds: fds_before + connections + 16,
        bystander_rtt: Duration::from_millis(500),
    })?;
    super::frames::settle_fds(&broker, fds_before + 2).await?;
    Ok(format!(
        "{total} subscriptions on {connections} connections in {:.1} s (RSS {:.1} MB held, \
         {:.0} B each), a publish reaching {} of them handled in {:.1} ms, all removed in \
         {:.2} s using {:.2} s of broker CPU; {summary}",
        secs(subscribe_time),
        mb(rss_held),
        rss_held.saturating_sub(outcome.rss_before) as f64 / total as f64,
        total / 1_000,
        publish_time.as_secs_f64() * 1e3,
        secs(cleanup),
        secs(cpu)
    ))
}

async fn distinct_topics(ctx: &Ctx) -> CaseResult {
    let topics = ctx.count(100_000, 1_000_000);
    let broker = Broker::start(&ctx.bin, "", "")?;
    let addr = broker.clients;
    let watched = Watched::start(broker, None).await?;
    // A subscriber that 1 topic in 1,000 reaches; it never reads (its queue
    // is bounded), and a wildcard that matches nothing.
    let mut subscriber = Conn::ready(addr, None).await?;
    subscribe_all(
        &mut subscriber,
        ["d.*.7".to_string(), "other.>".to_string()],
    )
    .await?;
    let mut publisher = Conn::ready(addr, None).await?;
    let cpu_before = watched.broker.cpu_time();
    let start = Instant::now();
    let mut sent = 0;
    while sent < topics {
        for n in sent..(sent + BATCH).min(topics) {
            publisher.push_publish(0, &format!("d.{}.{}", n / 1_000, n % 1_000), b"x", 0);
        }
        sent = (sent + BATCH).min(topics);
        flush(&mut publisher).await?;
    }
    publisher.ping(1, WAIT).await?;
    let took = start.elapsed();
    let cpu = watched.broker.cpu_time().saturating_sub(cpu_before);
    let fds = watched.broker.fds();
    let (outcome, _broker) = watched.finish().await?;
    let summary = outcome.check(&Bounds {
        rss_growth: 64 << 20,
        fds: fds + 16,
        bystander_rtt: Duration::from_millis(300),
    })?;
    drop(subscriber);
    Ok(format!(
        "{topics} distinct topics in {:.2} s, broker CPU {:.2} s; {summary}",
        secs(took),
        secs(cpu)
    ))
}
