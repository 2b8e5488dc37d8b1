//! Dead letters: a QoS 1 message delivered `max_deliveries` times without an
//! ack, or terminated by its consumer (QOS-21), is published again, as a
//! QoS 1 message, to the system topic `<dead_letter_prefix>.<queue name>`
//! (QOS-12), with headers saying where it came from and why. Only once that copy is stored does the queue let the original
//! go, so a crash in between means the original is redelivered, never lost.
//!
//! A dead letter is the last stop (QOS-19): one that runs out of deliveries
//! in turn — its consumer never acks — is dropped and counted, not
//! dead-lettered again. Otherwise a durable subscription to `$dlq.>` that
//! never acks moved its own messages to `$dlq.<its name>`, which it keeps
//! too: the same message forever, its headers growing by three each time
//! round. Dropping was chosen over replacing the headers, which would bound
//! them but not the loop (a log record and `max_deliveries` deliveries per
//! round, for good); nor is the loop limited to one queue (A's dead letters
//! consumed by B, B's by A), which one rule for every dead letter covers.

use std::sync::Arc;
use std::time::Duration;

use blipmq_protocol::{decode, topic, Encoder, Frame, Header, LENGTH_PREFIX_LEN};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::confirm::deliver_at_qos0;
use crate::durable::DeadLetter;
use crate::server::Shared;
use crate::subscription::{MessageRef, QueuedMessage};

/// Header naming the queue (durable subscription or group) that gave up.
pub const HEADER_QUEUE: &str = "blipmq-dead-letter-queue";
/// Header with the topic the message was first published to.
pub const HEADER_ORIGINAL_TOPIC: &str = "blipmq-original-topic";
/// Header with how many times it was delivered.
pub const HEADER_DELIVERIES: &str = "blipmq-deliveries";
/// Header saying why: `max_deliveries` (QOS-12) or `terminated` (its
/// consumer sent a term, QOS-21).
pub const HEADER_REASON: &str = "blipmq-dead-letter-reason";

/// How long to wait before trying again when the log refuses a dead letter.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The dead-letter topic for `queue`: `<prefix>.<queue>`, or the prefix
/// alone when the queue's name is not a valid topic token.
pub fn topic_for(prefix: &str, queue: &str) -> String {
    let candidate = format!("{prefix}.{queue}");
    let one_token = !queue.contains(['.', '*', '>']);
    if one_token && topic::validate_topic(&candidate).is_ok() {
        candidate
    } else {
        prefix.to_string()
    }
}

/// Move dead letters until the broker stops (the sender lives in `Shared`).
pub async fn run(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<DeadLetter>) {
    let mut encoder = Encoder::new();
    while let Some(dead) = queue.recv().await {
        let topic = topic_for(&shared.config.delivery.dead_letter_prefix, &dead.queue);
        let copy = match relabel(&mut encoder, &dead, &topic) {
            Ok(copy) => copy,
            Err(NotRelabeled::AlreadyDeadLetter) => {
                // Counted and warned about (rate-limited) with the drops.
                shared.durable.dead_letter_dropped(&dead.queue, dead.lsn);
                continue;
            }
            Err(NotRelabeled::Undecodable) => {
                warn!(
                    queue = dead.queue,
                    "a stored message does not decode; dropped"
                );
                shared.durable.dead_lettered(&dead.queue, dead.lsn);
                continue;
            }
        };
        let stored = match shared.durable.submit(&copy).await {
            Ok((pending, hold)) => pending.await.map(|lsn| (lsn, hold)),
            Err(error) => Err(error),
        };
        match stored {
            Ok((lsn, hold)) => {
                shared.durable.stored(lsn, &topic, copy.clone(), hold);
                let matches = shared.registry.matching(&topic);
                deliver_at_qos0(&shared, &matches, &copy).await;
                shared.durable.dead_lettered(&dead.queue, dead.lsn);
                info!(
                    queue = dead.queue,
                    topic,
                    deliveries = dead.deliveries,
                    reason = dead.reason.as_str(),
                    message_id = dead.message.message_id,
                    "moved a message to its dead-letter topic"
                );
            }
            Err(error) => {
                warn!(%error, queue = dead.queue, "could not store a dead letter; will retry");
                let shared = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY_AFTER).await;
                    shared.durable.dead_letter_failed(&dead.queue, dead.lsn);
                });
            }
        }
    }
}

/// Why a message out of deliveries gets no dead letter.
#[derive(Debug, PartialEq, Eq)]
enum NotRelabeled {
    /// It is a dead letter already (it carries [`HEADER_QUEUE`]).
    AlreadyDeadLetter,
    /// Its stored frame does not decode.
    Undecodable,
}

/// The dead letter: same payload, id and timestamp, the original headers
/// followed by the dead-letter headers, on the dead-letter topic.
fn relabel(
    encoder: &mut Encoder,
    dead: &DeadLetter,
    topic: &str,
) -> Result<MessageRef, NotRelabeled> {
    let frame = dead.message.delivery.frame();
    let body = frame
        .get(LENGTH_PREFIX_LEN..)
        .ok_or(NotRelabeled::Undecodable)?;
    let Ok(Frame::Delivery(original)) = decode(body) else {
        return Err(NotRelabeled::Undecodable);
    };
    if original.headers.iter().any(|h| h.key == HEADER_QUEUE) {
        return Err(NotRelabeled::AlreadyDeadLetter);
    }
    let deliveries = dead.deliveries.to_string();
    let mut headers = original.headers.clone();
    headers.extend([
        Header {
            key: HEADER_QUEUE,
            value: dead.queue.as_bytes(),
        },
        Header {
            key: HEADER_ORIGINAL_TOPIC,
            value: original.topic.as_bytes(),
        },
        Header {
            key: HEADER_DELIVERIES,
            value: deliveries.as_bytes(),
        },
        Header {
            key: HEADER_REASON,
            value: dead.reason.as_str().as_bytes(),
        },
    ]);
    Ok(Arc::new(QueuedMessage {
        delivery: encoder.shared_delivery(
            topic,
            original.payload,
            &headers,
            original.message_id,
            original.timestamp_ms,
        ),
        published_at: std::time::Instant::now(),
        expires_at: None,
        message_id: original.message_id,
        trace_id: dead.message.trace_id.clone(),
        charge: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::DeadLetterReason;

    #[test]
    fn dead_letter_topics() {
        assert_eq!(topic_for("$dlq", "jobs"), "$dlq.jobs");
        assert_eq!(topic_for("$dlq", "orders.eu"), "$dlq");
        assert_eq!(topic_for("$dlq", "a*"), "$dlq");
        assert_eq!(topic_for("dead.letters", "w-1"), "dead.letters.w-1");
        let long = "x".repeat(255);
        assert_eq!(topic_for("$dlq", &long), "$dlq");
    }

    #[test]
    fn a_dead_letter_is_never_relabelled_again() {
        let mut encoder = Encoder::new();
        let original = Arc::new(QueuedMessage {
            delivery: encoder.shared_delivery("jobs", b"x", &[], 1, 0),
            published_at: std::time::Instant::now(),
            expires_at: None,
            message_id: 1,
            trace_id: None,
            charge: Default::default(),
        });
        let dead = |queue: &str, message| DeadLetter {
            queue: queue.into(),
            lsn: 1,
            message,
            deliveries: 2,
            reason: DeadLetterReason::MaxDeliveries,
        };
        let letter = relabel(&mut encoder, &dead("jobs", original), "$dlq.jobs").unwrap();
        assert_eq!(
            relabel(&mut encoder, &dead("watcher", letter), "$dlq.watcher").unwrap_err(),
            NotRelabeled::AlreadyDeadLetter
        );
    }
}
