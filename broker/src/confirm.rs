//! A connection's QoS 1 pipeline. The reader queues each QoS 1 message for
//! the write-ahead log and hands it here; this task waits for the messages
//! to become durable, in order, then confirms each to its publisher and
//! delivers it. The reader never waits for an fsync, so a publisher can
//! have many QoS 1 messages in flight, and the log batches their fsyncs.

use std::sync::Arc;

use blipmq_protocol::{Confirm, Encoder, ErrorCode, ErrorFrame, Frame};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

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
    pub publish_id: u64,
    pub topic: String,
    pub message: MessageRef,
    /// Live subscriptions matching the topic when it was published.
    pub matches: Matches,
}

pub struct ConfirmPipeline {
    queue: mpsc::Sender<StoredPublish>,
    task: JoinHandle<()>,
}

impl ConfirmPipeline {
    pub fn start(shared: Arc<Shared>, outbox: Arc<Outbox>) -> ConfirmPipeline {
        let (queue, receiver) = mpsc::channel(IN_FLIGHT);
        let task = tokio::spawn(confirm_in_order(shared, outbox, receiver));
        ConfirmPipeline { queue, task }
    }

    /// Hand over a submitted message; waits while the pipeline is full.
    pub async fn push(&self, stored: StoredPublish) {
        // The task only ends after this sender is dropped, so this succeeds.
        let _ = self.queue.send(stored).await;
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
        WalError::Full { .. } => ErrorCode::StorageFull,
        WalError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::StorageFailed,
    }
}

async fn confirm_in_order(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    mut queue: mpsc::Receiver<StoredPublish>,
) {
    let mut encoder = Encoder::new();
    while let Some(stored) = queue.recv().await {
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
                let _ = outbox.push_control(|out| encoder.encode(&frame, out));
                continue;
            }
        };
        let confirm = Frame::Confirm(Confirm {
            publish_id: stored.publish_id,
            message_id: stored.message.message_id,
        });
        if outbox
            .push_control(|out| encoder.encode(&confirm, out))
            .is_err()
        {
            warn!("publisher does not read its confirms");
        }
        shared
            .durable
            .stored(lsn, &stored.topic, stored.message.clone());
        deliver_at_qos0(&shared, &stored.matches, &stored.message).await;
    }
}

/// A stored QoS 1 message reaches live, non-durable subscriptions as at QoS
/// 0; durable ones get it from the store, with a delivery id to ack.
pub async fn deliver_at_qos0(shared: &Shared, matches: &Matches, message: &MessageRef) {
    for subscription in matches.targets().filter(|s| s.durable.is_none()) {
        subscription.enqueue(message.clone(), &shared.metrics).await;
    }
}
