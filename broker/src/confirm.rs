//! A connection's QoS 1 pipeline. The reader queues each QoS 1 message for
//! the write-ahead log and hands it here; this task waits for the messages
//! to become durable, in order, then confirms each to its publisher and
//! delivers it. The reader never waits for an fsync, so a publisher can
//! have many QoS 1 messages in flight, and the log batches their fsyncs.
//!
//! A QoS 0 message published while QoS 1 messages of the same connection
//! are still in here queues behind them, so that a connection's messages
//! reach each subscriber in the order it published them (PUB-6) whatever
//! their QoS; once the pipeline is empty, QoS 0 goes straight out again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use blipmq_protocol::{Confirm, Encoder, ErrorCode, ErrorFrame, Frame};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::durable::LogHold;
use crate::outbox::Outbox;
use crate::registry::Matches;
use crate::server::Shared;
use crate::subscription::MessageRef;
use crate::wal::{Pending, WalError};

/// QoS 1 messages a connection may have waiting for the log before its
/// reader stops reading (backpressure on the publisher).
const IN_FLIGHT: usize = 4096;

pub struct StoredPublish {
    pub pending: Pending,
    /// Keeps the record from retention until its queues own it.
    pub hold: LogHold,
    pub publish_id: u64,
    pub topic: String,
    /// When the publish was read, for the confirm latency histogram.
    pub read_at: std::time::Instant,
    pub message: MessageRef,
    /// Live subscriptions matching the topic when it was published.
    pub matches: Matches,
}

/// What the pipeline delivers, in the order it was handed over.
enum InOrder {
    /// A QoS 1 message: confirmed and delivered once it is durable.
    Stored(StoredPublish),
    /// A QoS 0 message that came after QoS 1 ones still in the pipeline:
    /// delivered right after them.
    Behind {
        message: MessageRef,
        matches: Matches,
    },
}

pub struct ConfirmPipeline {
    queue: mpsc::Sender<InOrder>,
    /// Entries handed over and not yet delivered.
    in_flight: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ConfirmPipeline {
    /// `close` stops the connection's reader: cancelled when the publisher
    /// lets its answers pile up past the control backlog (LIMIT-2).
    pub fn start(
        shared: Arc<Shared>,
        outbox: Arc<Outbox>,
        close: CancellationToken,
    ) -> ConfirmPipeline {
        let (queue, receiver) = mpsc::channel(IN_FLIGHT);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let answers = Answers {
            outbox,
            close,
            closing: false,
        };
        let task = tokio::spawn(confirm_in_order(
            shared,
            answers,
            receiver,
            in_flight.clone(),
        ));
        ConfirmPipeline {
            queue,
            in_flight,
            task,
        }
    }

    /// Whether anything handed over is not delivered yet: a QoS 0 message
    /// must then go [`ConfirmPipeline::push_behind`] it. When this says no,
    /// everything handed over has been delivered.
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Hand over a submitted message; waits while the pipeline is full.
    pub async fn push(&self, stored: StoredPublish) {
        self.hand_over(InOrder::Stored(stored)).await;
    }

    /// Hand over a QoS 0 message to deliver after what is in flight.
    pub async fn push_behind(&self, message: MessageRef, matches: Matches) {
        self.hand_over(InOrder::Behind { message, matches }).await;
    }

    async fn hand_over(&self, entry: InOrder) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // The task only ends after this sender is dropped, so this succeeds.
        let _ = self.queue.send(entry).await;
    }

    /// Confirm what is still in flight, then stop.
    pub async fn finish(self) {
        drop(self.queue);
        let _ = self.task.await;
    }
}

/// The wire code for a log failure.
pub fn storage_error_code(error: &WalError) -> ErrorCode {
    match error {
        // The cap, or the disk itself (ENOSPC): both clear once space is
        // freed, which is what StorageFull tells the publisher.
        error if error.is_storage_full() => ErrorCode::StorageFull,
        WalError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::StorageFailed,
    }
}

/// Where the pipeline's confirms and errors go.
struct Answers {
    outbox: Arc<Outbox>,
    close: CancellationToken,
    /// The backlog overflowed and the connection is closing: later answers
    /// are not queued (nor warned about) any more.
    closing: bool,
}

impl Answers {
    /// Queue an answer for the publisher. Past the control backlog the
    /// connection is closed, as LIMIT-2 says and as the reader does for its
    /// own answers: dropping the answer and going on would leave a
    /// publisher waiting for a confirm that never comes, and logged a
    /// warning per confirm (a 10 MB log in 4 s). The messages already in
    /// the pipeline are stored all the same; the publisher learns nothing
    /// of them, so it publishes them again when it reconnects
    /// (at-least-once).
    fn push(&mut self, encoder: &mut Encoder, frame: &Frame<'_>) {
        if self.closing {
            return;
        }
        if self
            .outbox
            .push_control(|out| encoder.encode(frame, out))
            .is_err()
        {
            warn!("publisher does not read its confirms; closing");
            self.closing = true;
            self.close.cancel();
        }
    }
}

async fn confirm_in_order(
    shared: Arc<Shared>,
    mut answers: Answers,
    mut queue: mpsc::Receiver<InOrder>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut encoder = Encoder::new();
    while let Some(entry) = queue.recv().await {
        match entry {
            InOrder::Stored(stored) => confirm(&shared, &mut answers, &mut encoder, stored).await,
            InOrder::Behind { message, matches } => {
                for subscription in matches.targets() {
                    subscription.enqueue(message.clone(), &shared.metrics).await;
                }
            }
        }
        // After the delivery: a reader that sees the count at 0 may send
        // straight out, behind everything delivered here.
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wait for `stored` to be durable, then confirm it and deliver it (or
/// answer the publisher with the log's error).
async fn confirm(
    shared: &Shared,
    answers: &mut Answers,
    encoder: &mut Encoder,
    stored: StoredPublish,
) {
    let lsn = match stored.pending.await {
        Ok(lsn) => lsn,
        Err(error) => {
            warn!(%error, "QoS 1 message not stored");
            let code = storage_error_code(&error);
            shared.metrics.error_sent(code);
            let frame = Frame::Error(ErrorFrame {
                code,
                message: &error.to_string(),
                request_id: stored.publish_id,
            });
            answers.push(encoder, &frame);
            return;
        }
    };
    // Owned by its queues before it is confirmed (and before the hold that
    // kept retention off it goes).
    shared
        .durable
        .stored(lsn, &stored.topic, stored.message.clone(), stored.hold);
    let confirm = Frame::Confirm(Confirm {
        publish_id: stored.publish_id,
        message_id: stored.message.message_id,
    });
    answers.push(encoder, &confirm);
    shared
        .metrics
        .confirm_latency
        .observe(stored.read_at.elapsed());
    deliver_at_qos0(shared, &stored.matches, &stored.message).await;
}

/// A stored QoS 1 message reaches live, non-durable subscriptions as at QoS
/// 0; durable ones get it from the store, with a delivery id to ack.
pub async fn deliver_at_qos0(shared: &Shared, matches: &Matches, message: &MessageRef) {
    for subscription in matches.targets().filter(|s| s.durable.is_none()) {
        subscription.enqueue(message.clone(), &shared.metrics).await;
    }
}

#[cfg(test)]
mod tests {

    use bytes::BytesMut;

    use super::*;
    use crate::config::Config;
    use crate::durable::{DeliverySettings, Durable};
    use crate::outbox::MAX_PENDING_CONTROL_BYTES;
    use crate::subscription::QueuedMessage;

    #[tokio::test]
    async fn a_publisher_that_does_not_read_its_confirms_is_disconnected() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.wal.dir = dir.path().join("wal");
        let settings = DeliverySettings::from_config(&config);
        let (durable, _dead) = Durable::open(config.wal.clone(), settings).await.unwrap();
        let users = crate::auth::Users::from_config(&config.auth);
        let auth = Arc::new(crate::auth::AuthState::new(users));
        let mut shared = Shared::new(config, durable, Arc::default(), 1, auth);
        shared.memory = crate::memory::MemoryBudget::leak(usize::MAX);
        shared.control_memory = crate::memory::MemoryBudget::leak(usize::MAX);
        let shared = Arc::new(shared);
        let outbox = Outbox::new();
        // The publisher has read nothing for a while: its backlog is full.
        outbox
            .push_control(|out| out.resize(MAX_PENDING_CONTROL_BYTES + 1, 0))
            .unwrap();
        let close = CancellationToken::new();
        let pipeline = ConfirmPipeline::start(shared.clone(), outbox.clone(), close.clone());
        for id in 1..=3 {
            let message = Arc::new(QueuedMessage {
                delivery: Encoder::new().shared_delivery("t", b"x", &[], id, 0),
                published_at: std::time::Instant::now(),
                expires_at: None,
                message_id: id,
                trace_id: None,
                charge: Default::default(),
            });
            let (pending, hold) = shared.durable.submit(&message).await.unwrap();
            pipeline
                .push(StoredPublish {
                    pending,
                    hold,
                    publish_id: id,
                    topic: "t".into(),
                    read_at: std::time::Instant::now(),
                    message,
                    matches: shared.registry.matching("t"),
                })
                .await;
        }
        pipeline.finish().await;
        assert!(close.is_cancelled(), "the connection is closed (LIMIT-2)");
        let mut backlog = BytesMut::new();
        outbox.take_control(&mut backlog);
        assert_eq!(
            backlog.len(),
            MAX_PENDING_CONTROL_BYTES + 1,
            "nothing more queued"
        );
    }
}
