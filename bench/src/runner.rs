//! One measured run ("cell") of one workload against one system: subscribers
//! first, each confirmed, then one publisher. Only messages that a
//! subscriber received count.
//!
//! A run ends when every expected delivery has arrived; or, once publishing
//! is over, when nothing has arrived for [`QUIET`] (the rest is lost); or at
//! the time cap: publishing stops there, and a publisher still blocked
//! [`QUIET`] later is abandoned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::systems::{new_histogram, Publisher, Shared, Sink, Subscriber, Target, STAMP};

/// After publishing ends, how long without a delivery before the rest is
/// counted lost.
const QUIET: Duration = Duration::from_secs(2);

/// What one run does.
pub struct CellSpec {
    /// One entry per subscriber connection: the topics it subscribes to.
    pub subscribers: Vec<Vec<String>>,
    /// Topics the publisher cycles through, one message each in turn.
    pub topics: Vec<String>,
    /// Subscriptions each published message is delivered to.
    pub fanout: u64,
    pub size: usize,
    pub count: u64,
    /// Messages per second; `None` is as fast as the publisher goes.
    pub rate: Option<f64>,
    pub record_latency: bool,
    /// Publishing stops here.
    pub time_cap: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct CellResult {
    pub published: u64,
    pub expected: u64,
    pub delivered: u64,
    /// From the first publish to the last delivery.
    pub secs: f64,
    pub msgs_per_sec: f64,
    pub lost_pct: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// "complete", "quiet" (deliveries stopped short), "time cap".
    pub ended: &'static str,
    /// Errors seen by subscribers or the publisher (the run still counts
    /// what was delivered).
    pub errors: Vec<String>,
}

pub async fn run_cell(target: &Target, spec: &CellSpec) -> Result<CellResult, String> {
    let epoch = Instant::now();
    let shared = Arc::new(Shared::default());
    let (stop_subscribers, stop_rx) = watch::channel(false);

    let mut subscribers: Vec<Subscriber> = Vec::new();
    let mut setup_error = None;
    for (i, topics) in spec.subscribers.iter().enumerate() {
        let name = format!("blipmq-bench-sub-{i}");
        let sink = || Sink::new(epoch, shared.clone(), spec.record_latency);
        match crate::systems::subscribe(target, &name, topics, sink, stop_rx.clone()).await {
            Ok(s) => subscribers.push(s),
            Err(e) => {
                setup_error = Some(e);
                break;
            }
        }
    }
    let publisher = match setup_error {
        Some(e) => Err(e),
        None => Publisher::connect(target, "blipmq-bench-pub").await,
    };
    let mut publisher = match publisher {
        Ok(p) => p,
        Err(e) => {
            let _ = stop_subscribers.send(true);
            for s in subscribers {
                s.close().await;
            }
            return Err(e);
        }
    };

    let published = Arc::new(AtomicU64::new(0));
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let template = payload_template(spec.size);
    let start = Instant::now();
    let t0_ns = (start - epoch).as_nanos() as u64;
    let publish_task = {
        let published = published.clone();
        let stop = stop_publishing.clone();
        let topics = spec.topics.clone();
        let count = spec.count;
        let interval = spec.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        let stamp = spec.record_latency;
        tokio::spawn(async move {
            let mut result = Ok(());
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
                let payload = if stamp {
                    stamped(&template, epoch)
                } else {
                    template.clone()
                };
                let topic = &topics[i as usize % topics.len()];
                if let Err(e) = publisher.publish(topic, payload).await {
                    result = Err(e);
                    break;
                }
                published.fetch_add(1, Ordering::Relaxed);
            }
            if result.is_ok() {
                result = publisher.finish(published.load(Ordering::Relaxed)).await;
            }
            publisher.close().await;
            result
        })
    };

    let mut errors = Vec::new();
    let mut ended = "complete";
    let mut publish_done = false;
    let mut quiet_since = Instant::now();
    let mut last_delivered = 0;
    let cap = start + spec.time_cap;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = Instant::now();
        if !publish_done {
            if publish_task.is_finished() {
                publish_done = true;
                quiet_since = now;
            } else if now >= cap + QUIET {
                publish_task.abort();
                errors.push("publisher still blocked after the time cap; abandoned".into());
                publish_done = true;
                quiet_since = now;
            } else if now >= cap && !stop_publishing.load(Ordering::Relaxed) {
                stop_publishing.store(true, Ordering::Relaxed);
                ended = "time cap";
            }
        }
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last_delivered {
            last_delivered = delivered;
            quiet_since = now;
        }
        if publish_done {
            let expected = published.load(Ordering::Relaxed) * spec.fanout;
            if delivered >= expected {
                break;
            }
            if now - quiet_since >= QUIET {
                if ended == "complete" {
                    ended = "quiet";
                }
                break;
            }
        }
    }
    match publish_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(format!("publisher: {e}")),
        Err(e) if e.is_cancelled() => {}
        Err(e) => errors.push(format!("publisher task: {e}")),
    }

    let _ = stop_subscribers.send(true);
    let mut latency = new_histogram();
    let mut delivered = 0;
    for mut subscriber in subscribers {
        for task in std::mem::take(&mut subscriber.tasks) {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(outcome)) => {
                    delivered += outcome.received;
                    if let Some(h) = &outcome.latency {
                        latency.add(h).expect("histograms of equal bounds add");
                    }
                    if let Some(e) = outcome.error {
                        errors.push(format!("subscriber: {e}"));
                    }
                }
                Ok(Err(e)) => errors.push(format!("subscriber task: {e}")),
                Err(_) => {
                    abort.abort();
                    errors.push("a subscriber did not stop".into());
                }
            }
        }
        subscriber.close().await;
    }
    errors.dedup();

    let published = published.load(Ordering::Relaxed);
    let expected = published * spec.fanout;
    let last_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    let secs = last_ns.saturating_sub(t0_ns) as f64 / 1e9;
    let us = |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1e3);
    Ok(CellResult {
        published,
        expected,
        delivered,
        secs,
        msgs_per_sec: if secs > 0.0 {
            delivered as f64 / secs
        } else {
            0.0
        },
        lost_pct: if expected > 0 {
            100.0 * expected.saturating_sub(delivered) as f64 / expected as f64
        } else {
            0.0
        },
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        ended,
        errors,
    })
}

fn payload_template(size: usize) -> Bytes {
    let mut payload = vec![0u8; size];
    for (i, byte) in payload.iter_mut().enumerate().skip(STAMP) {
        *byte = i as u8;
    }
    Bytes::from(payload)
}

/// The template with the send time (ns since `epoch`) in its first bytes.
fn stamped(template: &Bytes, epoch: Instant) -> Bytes {
    let mut payload = template.to_vec();
    let now = epoch.elapsed().as_nanos() as u64;
    payload[..STAMP].copy_from_slice(&now.to_le_bytes());
    Bytes::from(payload)
}
