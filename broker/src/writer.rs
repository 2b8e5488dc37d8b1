//! A connection's writer: drains control frames and subscription queues into
//! batches and writes each batch with one vectored write.
//!
//! Reactive: it sleeps on the outbox's `Notify` and runs only when there is
//! something to send. A timer exists only while a partial batch lingers under
//! `flush_interval_ms > 0`.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::{Dropped, Encoder, Frame, Route, SharedDelivery};
use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::{add, inc, Metrics};
use crate::outbox::Outbox;
use crate::subscription::{MessageRef, Queued, Subscription};

/// Frames up to this size are copied into one contiguous buffer (cheaper than
/// three iovecs each); larger ones are written straight from the shared
/// encoding with only their route in between.
const COPY_THRESHOLD: usize = 2048;

/// Messages a batch takes from one subscription before the next one's
/// turn: enough that a lone busy subscription is drained in runs (its queue
/// released once per run, not once per message), few enough that others
/// wait at most a few dozen deliveries.
const BURST: usize = 32;

/// How long a closing connection may take to flush its last control frames
/// (such as the error that explains the close).
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub max_batch_bytes: usize,
    pub flush_interval: Duration,
}

enum Segment {
    /// A range of `Batch::copied`.
    Copied(usize, usize),
    /// A large delivery written from its shared bytes; index into `Batch::large`.
    Large(usize),
}

#[derive(Default)]
struct Batch {
    control: BytesMut,
    copied: BytesMut,
    large: Vec<(MessageRef, [u8; blipmq_protocol::codec::ROUTE_LEN])>,
    segments: Vec<Segment>,
    deliveries: usize,
    bytes: usize,
    /// When the earliest-published first delivery in the batch was read:
    /// one delivery-latency sample per socket write, the batch's longest
    /// wait (a sample per copy would cost the hot path two atomic adds per
    /// subscriber).
    oldest_published: Option<std::time::Instant>,
    /// For Dropped notices, the one frame the writer encodes itself.
    encoder: Encoder,
}

impl Batch {
    fn is_empty(&self) -> bool {
        // Segments hold deliveries and Dropped notices.
        self.control.is_empty() && self.segments.is_empty()
    }

    /// Append a Dropped notice in line with the subscription's deliveries
    /// (QUEUE-6): `count` messages it lost since the previous notice.
    fn push_drop_notice(&mut self, subscription_id: u64, count: u64) {
        let start = self.copied.len();
        let notice = Frame::Dropped(Dropped {
            subscription_id,
            count,
        });
        self.encoder.encode(&notice, &mut self.copied);
        self.extend_copied(start);
        self.bytes += self.copied.len() - start;
    }

    /// Make `copied[start..]` the next segment, merged with the last one
    /// when that ends where it starts.
    fn extend_copied(&mut self, start: usize) {
        match self.segments.last_mut() {
            Some(Segment::Copied(_, end)) if *end == start => *end = self.copied.len(),
            _ => self
                .segments
                .push(Segment::Copied(start, self.copied.len())),
        }
    }

    fn is_full(&self, config: &WriterConfig) -> bool {
        self.deliveries >= config.max_batch || self.bytes >= config.max_batch_bytes
    }

    fn push_delivery(&mut self, queued: Queued, subscription_id: u64) {
        let Queued {
            message,
            delivery_id,
            delivery_count,
            ..
        } = queued;
        let route = Route {
            subscription_id,
            delivery_id,
            delivery_count,
        };
        if let Some(trace_id) = &message.trace_id {
            tracing::debug_span!(
                "deliver",
                trace_id = &**trace_id,
                message_id = message.message_id
            )
            .in_scope(|| tracing::debug!(subscription_id, "delivered"));
        }
        if delivery_count == 1 {
            let published = message.published_at;
            self.oldest_published = Some(
                self.oldest_published
                    .map_or(published, |oldest| oldest.min(published)),
            );
        }
        let len = message.delivery.len();
        if len <= COPY_THRESHOLD {
            let start = self.copied.len();
            message.delivery.write_to(route, &mut self.copied);
            self.extend_copied(start);
        } else {
            self.segments.push(Segment::Large(self.large.len()));
            self.large
                .push((message, SharedDelivery::route_bytes(route)));
        }
        self.deliveries += 1;
        self.bytes += len;
    }

    /// Take control frames, then deliveries round-robin across subscriptions
    /// (up to [`BURST`] messages from each in turn, so one busy subscription
    /// cannot starve the others) until the batch is full or every queue is
    /// empty.
    fn fill(
        &mut self,
        outbox: &Outbox,
        subscriptions: &[Arc<Subscription>],
        next_start: &mut usize,
        config: &WriterConfig,
        metrics: &Metrics,
    ) {
        let control_before = self.control.len();
        outbox.take_control(&mut self.control);
        self.bytes += self.control.len() - control_before;
        let n = subscriptions.len();
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let start = *next_start % n;
        *next_start = next_start.wrapping_add(1);
        while !self.is_full(config) {
            let mut took_any = false;
            for i in 0..n {
                let subscription = &subscriptions[(start + i) % n];
                // Discards noted since the last pass come before what is
                // queued now; a queue with nothing left still reports them.
                let earlier = subscription.take_unreported_drops();
                if earlier > 0 {
                    self.push_drop_notice(subscription.id, earlier);
                }
                let reports_drops = subscription.reports_drops();
                // Expired messages are reported just before the next
                // delivery, so the count sits where they would have been.
                let mut expired = 0u64;
                let taken = subscription.pop_some(BURST, |queued| {
                    if queued.message.expires_at.is_some_and(|at| at <= now) {
                        inc(&metrics.dropped_ttl);
                        // What drop_new lost before it is lost before the next.
                        expired += u64::from(reports_drops) + queued.dropped_before;
                    } else {
                        let before = std::mem::take(&mut expired) + queued.dropped_before;
                        if before > 0 {
                            self.push_drop_notice(subscription.id, before);
                        }
                        self.push_delivery(queued, subscription.id);
                    }
                    !self.is_full(config)
                });
                if subscription.depth() == 0 {
                    // Nothing queued will carry what drop_new lost last.
                    expired += subscription.take_dropped_behind();
                }
                if expired > 0 {
                    self.push_drop_notice(subscription.id, expired);
                }
                took_any |= taken > 0;
                if self.is_full(config) {
                    return;
                }
            }
            if !took_any {
                return;
            }
        }
    }

    async fn write_to(&mut self, socket: &mut (impl AsyncWrite + Unpin)) -> io::Result<usize> {
        let mut slices: Vec<IoSlice<'_>> =
            Vec::with_capacity(1 + self.segments.len() + 2 * self.large.len());
        if !self.control.is_empty() {
            slices.push(IoSlice::new(&self.control));
        }
        for segment in &self.segments {
            match segment {
                Segment::Copied(start, end) => {
                    slices.push(IoSlice::new(&self.copied[*start..*end]))
                }
                Segment::Large(index) => {
                    let (message, route) = &self.large[*index];
                    let (head, tail) = message.delivery.head_and_tail();
                    slices.push(IoSlice::new(head));
                    slices.push(IoSlice::new(route));
                    slices.push(IoSlice::new(tail));
                }
            }
        }
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let mut remaining = &mut slices[..];
        while !remaining.is_empty() {
            let written = socket.write_vectored(remaining).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut remaining, written);
        }
        // A no-op on TCP; a WebSocket sends its buffered messages now.
        socket.flush().await?;
        Ok(total)
    }

    fn clear(&mut self) {
        self.control.clear();
        self.copied.clear();
        self.large.clear();
        self.segments.clear();
        self.deliveries = 0;
        self.bytes = 0;
        self.oldest_published = None;
    }
}

/// Run until `stop` is cancelled or the socket fails, then flush pending
/// control frames and shut the socket down. Cancels `stop` itself on a
/// write error so that the reader ends too.
pub async fn run(
    mut socket: impl AsyncWrite + Unpin,
    outbox: Arc<Outbox>,
    config: WriterConfig,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut batch = Batch::default();
    let mut subscriptions = Vec::new();
    let mut seen_version = u64::MAX;
    let mut next_start = 0usize;
    loop {
        outbox.refresh_subscriptions(&mut seen_version, &mut subscriptions);
        batch.fill(&outbox, &subscriptions, &mut next_start, &config, &metrics);
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = outbox.wait() => continue,
            }
        }
        if !config.flush_interval.is_zero() && !batch.is_full(&config) {
            let deadline = tokio::time::Instant::now() + config.flush_interval;
            while !batch.is_full(&config) {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = outbox.wait() => {
                        outbox.refresh_subscriptions(&mut seen_version, &mut subscriptions);
                        batch.fill(&outbox, &subscriptions, &mut next_start, &config, &metrics);
                    }
                }
            }
        }
        let deliveries = batch.deliveries as u64;
        // Write first: `fill` has already moved the pending control frames
        // into `batch`, and the final flush below only sees what is still in
        // the outbox. A reader that queued an error and stopped before this
        // writer first ran would otherwise lose that error half the time.
        // `stop` still wins whenever the write cannot complete right away.
        let result = tokio::select! {
            biased;
            result = batch.write_to(&mut socket) => result,
            _ = stop.cancelled() => {
                // A frame may be half written: anything appended now would
                // be garbage to the peer, so just close.
                let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, socket.shutdown()).await;
                return;
            }
        };
        match result {
            Ok(bytes) => {
                add(&metrics.delivered, deliveries);
                if let Some(published) = batch.oldest_published {
                    metrics.delivery_latency.observe(published.elapsed());
                }
                add(&metrics.flush_bytes, bytes as u64);
                inc(&metrics.flush_batches);
                outbox.traffic.sent(bytes as u64, deliveries);
                outbox.control_written(batch.control.len());
                batch.clear();
            }
            Err(error) => {
                tracing::debug!(%error, "write failed; closing connection");
                stop.cancel();
                return;
            }
        }
    }
    // Deliveries still queued are dropped with the connection, but the
    // control frames (an error explaining the close) are worth sending.
    batch.clear();
    outbox.take_control(&mut batch.control);
    let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, async {
        if !batch.control.is_empty() {
            socket.write_all(&batch.control).await?;
        }
        socket.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OverflowPolicy;
    use crate::subscription::QueuedMessage;

    fn subscription(id: u64, messages: u64, metrics: &Metrics) -> Arc<Subscription> {
        let subscription = Arc::new(Subscription::new(
            id,
            "t".into(),
            1000,
            OverflowPolicy::DropNew,
            Outbox::new(),
            None,
            None,
        ));
        for message_id in 0..messages {
            let delivery =
                blipmq_protocol::Encoder::new().shared_delivery("t", b"x", &[], message_id, 0);
            let message = Arc::new(QueuedMessage {
                delivery,
                published_at: std::time::Instant::now(),
                expires_at: None,
                message_id,
                trace_id: None,
                charge: Default::default(),
            });
            assert!(subscription.try_enqueue(message, metrics).is_ok());
        }
        subscription
    }

    #[test]
    fn a_busy_subscription_takes_turns_with_the_others() {
        let metrics = Metrics::default();
        let busy = subscription(1, 100, &metrics);
        let quiet = subscription(2, 3, &metrics);
        let config = WriterConfig {
            max_batch: 40,
            max_batch_bytes: usize::MAX,
            flush_interval: Duration::from_millis(1),
        };
        let mut batch = Batch::default();
        let mut next_start = 0;
        batch.fill(
            &Outbox::new(),
            &[busy.clone(), quiet.clone()],
            &mut next_start,
            &config,
            &metrics,
        );
        assert_eq!(batch.deliveries, 40, "filled to its limit");
        assert_eq!(
            quiet.depth(),
            0,
            "the quiet one had its turn within a burst"
        );
        assert_eq!(busy.depth(), 100 - 37);
    }
}
