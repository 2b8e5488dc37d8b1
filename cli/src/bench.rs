//! `bench`: publishers and subscribers, each on its own connection, on one
//! topic. Every payload starts with the send time (ns since a start instant
//! the whole process shares, little-endian u64), so subscribers measure
//! end-to-end latency into an HDR histogram.
//!
//! The run ends when every subscriber has received everything published,
//! or when publishing is over (count reached or --duration passed) and no
//! message has arrived for [`QUIET`]; what did not arrive is reported lost.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq::{Client, Headers, PublishOptions, Qos, SubscribeOptions, Subscription};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{describe, CliError};
use crate::{connect, BenchArgs, Global};

/// After publishing ends, how long without a delivery before the rest is
/// counted lost.
const QUIET: Duration = Duration::from_secs(5);
/// QoS 1 publishes awaiting their confirm, per publisher.
const CONFIRM_WINDOW: usize = 256;
/// Bytes at the start of each payload that carry the send time.
const STAMP: usize = 8;
/// Latencies above this are recorded as this (ns).
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

pub async fn run(global: &Global, args: BenchArgs) -> Result<(), CliError> {
    validate(&args)?;
    let topic: Arc<str> = args.topic.clone().unwrap_or_else(random_topic).into();

    // Subscribers first, each confirmed by the broker, so nothing published
    // can be missed for want of a subscription.
    let mut clients = Vec::new();
    let mut subscriptions = Vec::new();
    for i in 0..args.subscribers {
        let client = connect(global, &format!("blipmq-cli bench sub {i}")).await?;
        let options = SubscribeOptions {
            qos: args.qos,
            ..Default::default()
        };
        let subscription = client.subscribe_with(&topic, options).await.map_err(|e| {
            CliError::runtime(format!("cannot subscribe to {topic:?}: {}", describe(&e)))
        })?;
        clients.push(client);
        subscriptions.push(subscription);
    }
    let mut publishers = Vec::new();
    for i in 0..args.publishers {
        let client = connect(global, &format!("blipmq-cli bench pub {i}")).await?;
        publishers.push(client.clone());
        clients.push(client);
    }
    let max = publishers[0].max_message_size();
    if args.size > max {
        return Err(CliError::runtime(format!(
            "MessageTooLarge: --size {} bytes exceeds the broker's limit of {max} bytes",
            args.size
        )));
    }

    let result = measure(&args, topic.clone(), subscriptions, publishers).await;
    for client in &clients {
        client.close().await;
    }
    let report = result?;
    if report.lost > 0 {
        eprintln!(
            "bench: {} of {} expected deliveries lost (none arrived for {} s after publishing ended)",
            report.lost,
            report.expected,
            QUIET.as_secs()
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serializes")
        );
    } else {
        print_text(&report);
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> Result<(), CliError> {
    if args.size < STAMP {
        return Err(CliError::usage(format!(
            "--size must be at least {STAMP} bytes (the send time travels in the payload), got {}",
            args.size
        )));
    }
    if args.count == 0 {
        return Err(CliError::usage("--count must be at least 1"));
    }
    if let Some(duration) = args.duration {
        if !(duration > 0.0 && duration.is_finite()) {
            return Err(CliError::usage(
                "--duration must be a positive number of seconds",
            ));
        }
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(CliError::usage(
                "--rate must be a positive number of messages per second",
            ));
        }
    }
    Ok(())
}

fn random_topic() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    format!("bench.{:016x}", hasher.finish())
}

/// What one subscriber saw.
struct SubscriberResult {
    latency: Histogram<u64>,
    received: u64,
    bytes: u64,
}

/// Counters the coordinator reads while the run goes on.
#[derive(Default)]
struct Progress {
    published: AtomicU64,
    delivered: AtomicU64,
    /// ns since start of the latest delivery to any subscriber.
    last_delivery_ns: AtomicU64,
    /// ns since start when the last publisher's messages had all been
    /// handled by the broker.
    publish_done_ns: AtomicU64,
}

#[derive(Serialize)]
struct Report {
    topic: String,
    publishers: u32,
    subscribers: u32,
    size: usize,
    qos: u8,
    /// Why the run ended: "complete", "quiet" (the rest is lost) or
    /// "duration" (publishing was cut short, then everything arrived).
    ended: &'static str,
    published: u64,
    /// Messages received, summed over subscribers.
    delivered: u64,
    /// published × subscribers.
    expected: u64,
    lost: u64,
    /// From the start until the last publisher's messages were handled by
    /// the broker.
    publish_secs: f64,
    publish_msgs_per_sec: f64,
    /// From the start until the last delivery.
    elapsed_secs: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    latency_us: Latency,
}

#[derive(Serialize)]
struct Latency {
    min: f64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
}

async fn measure(
    args: &BenchArgs,
    topic: Arc<str>,
    subscriptions: Vec<Subscription>,
    publishers: Vec<Client>,
) -> Result<Report, CliError> {
    let progress = Arc::new(Progress::default());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let (stop_subscribers, stop_rx) = watch::channel(false);
    let per_subscriber = u64::from(args.publishers) * args.count;
    let template = payload_template(args.size);
    // Each publisher sends at its share of the total rate.
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(f64::from(args.publishers) / rate));
    let start = Instant::now();

    // A failing task sends its error here, and the run ends with it.
    let (errors, mut first_error) = tokio::sync::mpsc::unbounded_channel::<CliError>();
    let publishing = Arc::new(AtomicU64::new(u64::from(args.publishers)));

    let subscriber_tasks: Vec<JoinHandle<Option<SubscriberResult>>> = subscriptions
        .into_iter()
        .map(|subscription| {
            let task = subscribe_loop(
                subscription,
                args.qos,
                start,
                per_subscriber,
                progress.clone(),
                stop_rx.clone(),
            );
            let errors = errors.clone();
            tokio::spawn(async move {
                task.await
                    .map_err(|error| {
                        let _ = errors.send(error);
                    })
                    .ok()
            })
        })
        .collect();
    let publisher_tasks: Vec<JoinHandle<()>> = publishers
        .into_iter()
        .map(|client| {
            let task = publish_loop(
                client,
                topic.clone(),
                template.clone(),
                bench_headers(args.headers),
                args.count,
                args.qos,
                interval,
                start,
                progress.clone(),
                stop_publishing.clone(),
            );
            let errors = errors.clone();
            let publishing = publishing.clone();
            tokio::spawn(async move {
                match task.await {
                    Ok(()) => {
                        publishing.fetch_sub(1, Ordering::Release);
                    }
                    Err(error) => {
                        let _ = errors.send(error);
                    }
                }
            })
        })
        .collect();
    drop(errors);

    let duration = args.duration.map(Duration::from_secs_f64);
    let mut ended = "complete";
    let mut publish_done = false;
    // When --duration stopped publishing; publishers blocked on a full
    // connection past QUIET after that are given up on.
    let mut stopped_at: Option<Instant> = None;
    let mut quiet_since = Instant::now();
    let mut last_delivered = 0;
    let mut report_at = start + Duration::from_secs(1);
    let mut last_report = (start, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let failure = loop {
        tick.tick().await;
        if let Ok(error) = first_error.try_recv() {
            break Some(error);
        }
        let now = Instant::now();
        if let Some(limit) = duration {
            if !publish_done && stopped_at.is_none() && now - start >= limit {
                stop_publishing.store(true, Ordering::Relaxed);
                stopped_at = Some(now);
                ended = "duration";
            }
        }
        if !publish_done {
            let stalled = stopped_at.is_some_and(|at| now - at >= QUIET);
            if stalled {
                for task in &publisher_tasks {
                    task.abort();
                }
                eprintln!(
                    "bench: publishers still blocked {} s after --duration; stopped them",
                    QUIET.as_secs()
                );
            }
            if stalled || publishing.load(Ordering::Acquire) == 0 {
                publish_done = true;
                quiet_since = now;
            }
        }
        let published = progress.published.load(Ordering::Relaxed);
        let delivered = progress.delivered.load(Ordering::Relaxed);
        if delivered != last_delivered {
            last_delivered = delivered;
            quiet_since = now;
        }
        if publish_done {
            if delivered >= published * u64::from(args.subscribers) {
                break None;
            }
            if now - quiet_since >= QUIET {
                ended = "quiet";
                break None;
            }
        }
        if now >= report_at {
            let (then, published_then, delivered_then) = last_report;
            let secs = (now - then).as_secs_f64();
            eprintln!(
                "bench: {:>5.1}s published {published} ({:.0}/s) delivered {delivered} ({:.0}/s)",
                (now - start).as_secs_f64(),
                (published - published_then) as f64 / secs,
                (delivered - delivered_then) as f64 / secs,
            );
            last_report = (now, published, delivered);
            report_at += Duration::from_secs(1);
        }
    };
    stop_publishing.store(true, Ordering::Relaxed);
    let _ = stop_subscribers.send(true);
    if let Some(error) = failure {
        for task in publisher_tasks.iter() {
            task.abort();
        }
        for task in subscriber_tasks.iter() {
            task.abort();
        }
        return Err(error);
    }
    for task in publisher_tasks {
        let _ = task.await;
    }
    let mut latency = new_histogram();
    let mut delivered = 0;
    let mut bytes = 0;
    for task in subscriber_tasks {
        let result = match task.await {
            Ok(Some(result)) => result,
            _ => {
                return Err(first_error
                    .try_recv()
                    .unwrap_or_else(|_| CliError::runtime("a subscriber failed")))
            }
        };
        latency
            .add(&result.latency)
            .expect("histograms of equal bounds add");
        delivered += result.received;
        bytes += result.bytes;
    }

    let published = progress.published.load(Ordering::Relaxed);
    let expected = published * u64::from(args.subscribers);
    let publish_secs =
        Duration::from_nanos(progress.publish_done_ns.load(Ordering::Relaxed)).as_secs_f64();
    let elapsed_secs =
        Duration::from_nanos(progress.last_delivery_ns.load(Ordering::Relaxed)).as_secs_f64();
    let per_sec = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let us = |ns: u64| ns as f64 / 1000.0;
    let empty = latency.is_empty();
    Ok(Report {
        topic: topic.to_string(),
        publishers: args.publishers,
        subscribers: args.subscribers,
        size: args.size,
        qos: args.qos.as_wire(),
        ended,
        published,
        delivered,
        expected,
        lost: expected.saturating_sub(delivered),
        publish_secs,
        publish_msgs_per_sec: per_sec(published as f64, publish_secs),
        elapsed_secs,
        msgs_per_sec: per_sec(delivered as f64, elapsed_secs),
        mb_per_sec: per_sec(bytes as f64 / 1e6, elapsed_secs),
        latency_us: Latency {
            min: if empty { 0.0 } else { us(latency.min()) },
            mean: latency.mean() / 1000.0,
            p50: us(latency.value_at_quantile(0.5)),
            p90: us(latency.value_at_quantile(0.9)),
            p99: us(latency.value_at_quantile(0.99)),
            p99_9: us(latency.value_at_quantile(0.999)),
            max: us(latency.max()),
        },
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

fn payload_template(size: usize) -> Bytes {
    let mut payload = vec![0u8; size];
    for (i, byte) in payload.iter_mut().enumerate().skip(STAMP) {
        *byte = i as u8;
    }
    Bytes::from(payload)
}

fn stamped(template: &Bytes, start: Instant) -> Bytes {
    let mut payload = template.to_vec();
    let now = start.elapsed().as_nanos() as u64;
    payload[..STAMP].copy_from_slice(&now.to_le_bytes());
    Bytes::from(payload)
}

/// `n` headers like a traced, typed message carries (`traceparent`,
/// `content-type`, ...), for measuring what headers cost.
fn bench_headers(n: u16) -> Headers {
    let samples = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("content-type", "application/octet-stream"),
        ("x-tenant", "bench"),
    ];
    (0..n as usize)
        .map(|i| match samples.get(i) {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (format!("x-bench-{i}"), format!("value-{i}")),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    client: Client,
    topic: Arc<str>,
    template: Bytes,
    headers: Headers,
    count: u64,
    qos: Qos,
    interval: Option<Duration>,
    start: Instant,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<(), CliError> {
    let failed = |e: blipmq::PublishError| {
        CliError::runtime(format!("cannot publish to {topic:?}: {}", describe(&e)))
    };
    let mut confirms: JoinSet<Result<Option<u64>, blipmq::PublishError>> = JoinSet::new();
    for i in 0..count {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(interval) = interval {
            let due = start + interval.mul_f64(i as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let payload = stamped(&template, start);
        match qos {
            Qos::AtMostOnce if headers.is_empty() => {
                client.publish(&topic, payload).await.map_err(&failed)?;
                progress.published.fetch_add(1, Ordering::Relaxed);
            }
            Qos::AtMostOnce => {
                let options = PublishOptions {
                    ttl_ms: 0,
                    qos,
                    headers: headers.clone(),
                };
                client
                    .publish_with(&topic, payload, options)
                    .await
                    .map_err(&failed)?;
                progress.published.fetch_add(1, Ordering::Relaxed);
            }
            Qos::AtLeastOnce => {
                if confirms.len() >= CONFIRM_WINDOW {
                    confirmed(&mut confirms, &progress).await.map_err(&failed)?;
                }
                let client = client.clone();
                let topic = topic.clone();
                let options = PublishOptions {
                    ttl_ms: 0,
                    qos,
                    headers: headers.clone(),
                };
                confirms.spawn(async move { client.publish_with(&topic, payload, options).await });
            }
        }
    }
    while !confirms.is_empty() {
        confirmed(&mut confirms, &progress).await.map_err(&failed)?;
    }
    // Everything sent has been handled by the broker once this returns.
    client.flush().await.map_err(|e| {
        CliError::runtime(format!(
            "the broker did not confirm receipt: {}",
            describe(&e)
        ))
    })?;
    progress
        .publish_done_ns
        .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

async fn confirmed(
    confirms: &mut JoinSet<Result<Option<u64>, blipmq::PublishError>>,
    progress: &Progress,
) -> Result<(), blipmq::PublishError> {
    if let Some(joined) = confirms.join_next().await {
        if let Ok(result) = joined {
            result?;
        }
        progress.published.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn subscribe_loop(
    mut subscription: Subscription,
    qos: Qos,
    start: Instant,
    expected: u64,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Result<SubscriberResult, CliError> {
    let mut result = SubscriberResult {
        latency: new_histogram(),
        received: 0,
        bytes: 0,
    };
    while result.received < expected {
        let first = tokio::select! {
            message = subscription.next_message() => message,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(first) = first else {
            return Err(CliError::runtime(
                "a subscriber's connection to the broker was lost",
            ));
        };
        let rest = subscription.try_next_batch((expected - result.received - 1) as usize);
        let now = start.elapsed().as_nanos() as u64;
        for message in std::iter::once(first).chain(rest) {
            let payload = message.payload();
            if payload.len() >= STAMP {
                let sent = u64::from_le_bytes(payload[..STAMP].try_into().expect("8 bytes"));
                result
                    .latency
                    .saturating_record(now.saturating_sub(sent).max(1));
            }
            result.received += 1;
            result.bytes += payload.len() as u64;
            if qos == Qos::AtLeastOnce {
                message.ack().await.map_err(|e| {
                    CliError::runtime(format!("cannot acknowledge: {}", describe(&e)))
                })?;
            }
            progress.delivered.fetch_add(1, Ordering::Relaxed);
        }
        progress.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
    }
    Ok(result)
}

fn print_text(report: &Report) {
    let l = &report.latency_us;
    println!(
        "topic {}: {} publisher(s) -> {} subscriber(s), {} B payloads, QoS {}",
        report.topic, report.publishers, report.subscribers, report.size, report.qos
    );
    println!(
        "published {} in {:.3} s ({:.0} msg/s)",
        report.published, report.publish_secs, report.publish_msgs_per_sec
    );
    println!(
        "delivered {} of {} in {:.3} s: {:.0} msg/s, {:.2} MB/s (lost {})",
        report.delivered,
        report.expected,
        report.elapsed_secs,
        report.msgs_per_sec,
        report.mb_per_sec,
        report.lost
    );
    println!(
        "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.p50, l.p90, l.p99, l.p99_9, l.max
    );
}
