//! The three durable workloads, each one bounded run against one system:
//! windowed publishing until the last confirm, one-at-a-time confirm
//! latency, and publishing while a durable consumer receives and acks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::durable_clients::{consume, DurablePublisher, DurableTarget, Place};
use crate::runner::CellResult;
use crate::systems::{new_histogram, Shared};

/// After publishing ends, how long without a delivery (or confirm) before
/// the rest is counted missing.
const QUIET: Duration = Duration::from_secs(2);

/// Payload of the confirm-latency runs.
pub const LATENCY_SIZE: usize = 16;

fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>())
}

/// What a windowed publisher achieved.
struct Published {
    sent: u64,
    confirmed: u64,
    /// When the last confirm arrived.
    last_confirm: Instant,
    ended: &'static str,
    errors: Vec<String>,
}

/// Publish `count` copies of `payload` keeping at most `window` unconfirmed;
/// stop sending at `deadline`, and wait at most [`QUIET`] after it for the
/// last confirms.
async fn publish_window(
    publisher: &DurablePublisher,
    payload: Bytes,
    count: u64,
    window: usize,
    deadline: Instant,
) -> Published {
    let mut out = Published {
        sent: 0,
        confirmed: 0,
        last_confirm: Instant::now(),
        ended: "complete",
        errors: Vec::new(),
    };
    let mut in_flight = FuturesUnordered::new();
    // Clock reads are kept out of the per-message path: the deadline is
    // checked every `CHECK_EVERY` messages, and the time of the last confirm
    // is taken once per group of confirms handled together.
    const CHECK_EVERY: u64 = 64;
    let confirmed = |result: Result<(), String>, out: &mut Published| match result {
        Ok(()) => {
            out.confirmed += 1;
            true
        }
        Err(e) => {
            out.errors.push(e);
            false
        }
    };
    'send: while out.sent < count {
        if out.sent.is_multiple_of(CHECK_EVERY) && Instant::now() >= deadline {
            out.ended = "time cap";
            break;
        }
        let before = out.confirmed;
        if in_flight.len() >= window {
            if let Some(result) = in_flight.next().await {
                if !confirmed(result, &mut out) {
                    break 'send;
                }
            }
        }
        in_flight.push(publisher.send(payload.clone()));
        out.sent += 1;
        // Poll the new publish so that it is sent now, and take the confirms
        // that have arrived.
        while let Some(Some(result)) = in_flight.next().now_or_never() {
            if !confirmed(result, &mut out) {
                break 'send;
            }
        }
        if out.confirmed != before {
            out.last_confirm = Instant::now();
        }
    }
    let drain_until = deadline.max(Instant::now()) + QUIET;
    loop {
        match tokio::time::timeout_at(drain_until.into(), in_flight.next()).await {
            Ok(Some(result)) => {
                if confirmed(result, &mut out) {
                    out.last_confirm = Instant::now();
                }
            }
            Ok(None) => break,
            Err(_) => {
                out.errors
                    .push(format!("{} confirms never arrived", in_flight.len()));
                out.ended = "time cap";
                break;
            }
        }
    }
    out.errors.dedup();
    out
}

pub async fn publish_run(
    target: &DurableTarget,
    place: &Place,
    count: u64,
    size: usize,
    window: usize,
    cap: Duration,
) -> Result<CellResult, String> {
    let publisher = DurablePublisher::connect(target, place).await?;
    let start = Instant::now();
    let published = publish_window(&publisher, payload(size), count, window, start + cap).await;
    publisher.close().await;
    let secs = published.last_confirm.duration_since(start).as_secs_f64();
    Ok(CellResult {
        published: published.sent,
        expected: count,
        delivered: published.confirmed,
        secs,
        msgs_per_sec: rate(published.confirmed, secs),
        lost_pct: missing_pct(published.sent, published.confirmed),
        p50_us: None,
        p99_us: None,
        p999_us: None,
        ended: published.ended,
        errors: published.errors,
    })
}

/// One message at a time: publish, wait for the confirm, record the time.
pub async fn latency_run(
    target: &DurableTarget,
    place: &Place,
    max_count: u64,
    length: Duration,
) -> Result<CellResult, String> {
    let publisher = DurablePublisher::connect(target, place).await?;
    let payload = payload(LATENCY_SIZE);
    let mut histogram = new_histogram();
    let mut errors = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    while sent < max_count && start.elapsed() < length {
        let t0 = Instant::now();
        sent += 1;
        let confirm = tokio::time::timeout(QUIET + length, publisher.send(payload.clone()));
        match confirm.await {
            Ok(Ok(())) => histogram.saturating_record(t0.elapsed().as_nanos().max(1) as u64),
            Ok(Err(e)) => {
                errors.push(e);
                break;
            }
            Err(_) => {
                errors.push("a confirm never arrived".into());
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    publisher.close().await;
    let confirmed = histogram.len();
    let us = |q: f64| (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1e3);
    Ok(CellResult {
        published: sent,
        expected: sent,
        delivered: confirmed,
        secs,
        msgs_per_sec: rate(confirmed, secs),
        lost_pct: missing_pct(sent, confirmed),
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        ended: if errors.is_empty() {
            "complete"
        } else {
            "error"
        },
        errors,
    })
}

/// A durable consumer acks every message while the publisher runs.
pub async fn end_to_end_run(
    target: &DurableTarget,
    place: &Place,
    count: u64,
    size: usize,
    window: usize,
    cap: Duration,
) -> Result<CellResult, String> {
    let epoch = Instant::now();
    let shared = Arc::new(Shared::default());
    let (stop, stop_rx) = watch::channel(false);
    let consumer = consume(target, place, shared.clone(), epoch, stop_rx).await?;
    let publisher = match DurablePublisher::connect(target, place).await {
        Ok(p) => p,
        Err(e) => {
            let _ = stop.send(true);
            let _ = consumer.task.await;
            return Err(e);
        }
    };
    let start = Instant::now();
    let published = publish_window(&publisher, payload(size), count, window, start + cap).await;
    publisher.close().await;

    // Wait for the consumer to catch up with what was confirmed.
    let mut ended = published.ended;
    let mut last_seen = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered >= published.confirmed {
            break;
        }
        if delivered != last_seen.0 {
            last_seen = (delivered, Instant::now());
        } else if last_seen.1.elapsed() >= QUIET {
            ended = "quiet";
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);
    let mut errors = published.errors;
    let abort = consumer.task.abort_handle();
    let received = match tokio::time::timeout(Duration::from_secs(10), consumer.task).await {
        Ok(Ok(outcome)) => {
            errors.extend(outcome.error.map(|e| format!("consumer: {e}")));
            outcome.received
        }
        Ok(Err(e)) => {
            errors.push(format!("consumer task: {e}"));
            shared.delivered.load(Ordering::Relaxed)
        }
        Err(_) => {
            abort.abort();
            errors.push("the consumer did not stop".into());
            shared.delivered.load(Ordering::Relaxed)
        }
    };
    let t0_ns = start.duration_since(epoch).as_nanos() as u64;
    let secs = shared
        .last_delivery_ns
        .load(Ordering::Relaxed)
        .saturating_sub(t0_ns) as f64
        / 1e9;
    Ok(CellResult {
        published: published.sent,
        expected: published.confirmed,
        delivered: received,
        secs,
        msgs_per_sec: rate(received, secs),
        lost_pct: missing_pct(published.confirmed, received),
        p50_us: None,
        p99_us: None,
        p999_us: None,
        ended,
        errors,
    })
}

fn rate(messages: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        messages as f64 / secs
    } else {
        0.0
    }
}

/// Percentage of `expected` that did not arrive.
fn missing_pct(expected: u64, arrived: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        100.0 * expected.saturating_sub(arrived) as f64 / expected as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_a_percentage_of_what_was_expected() {
        assert_eq!(missing_pct(0, 0), 0.0);
        assert_eq!(missing_pct(200, 150), 25.0);
        assert_eq!(missing_pct(10, 12), 0.0);
        assert_eq!(rate(100, 0.0), 0.0);
        assert_eq!(rate(100, 2.0), 50.0);
    }
}
