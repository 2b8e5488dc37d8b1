//! A received message and its acknowledgement (ack, nak, term, in progress).

use std::time::Duration;

use bytes::Bytes;

use crate::error::{Failure, RequestError};
use crate::headers::Headers;
use crate::state::encode_frame_into;
use blipmq_protocol::{Ack, AckKind, Frame};

/// A message delivered to a [`crate::Subscription`].
#[derive(Debug, Clone)]
pub struct Message {
    /// Shared between consecutive messages on the same topic.
    pub(crate) topic: std::sync::Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    pub(crate) id: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) delivery_count: u32,
    pub(crate) subscription_id: u64,
    pub(crate) delivery_id: u64,
    /// Messages the broker discarded for the subscription just before this
    /// one (QUEUE-6).
    pub(crate) dropped_before: u64,
    /// Where an ack goes; `None` for QoS 0 deliveries, which need none.
    pub(crate) acks: Option<std::sync::Arc<crate::outbox::Outbox>>,
}

impl Message {
    /// The topic the message was published to (not the pattern that matched).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload, byte for byte as published. Cheap to clone.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The publisher's headers, in order (empty when it sent none).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The broker-assigned message id (increasing over a broker run).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When the broker accepted the message, in ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// 1 on first delivery, higher when the broker redelivers.
    pub fn delivery_count(&self) -> u32 {
        self.delivery_count
    }

    /// What an ack names: non-zero for a durable (QoS 1) delivery, 0 for a
    /// QoS 0 one, which needs no ack.
    pub fn delivery_id(&self) -> u64 {
        self.delivery_id
    }

    /// How many messages the broker discarded for this subscription just
    /// before this one (its queue was full, or they outlived their TTL):
    /// 0 when none were. Nothing is lost silently — see also
    /// [`Subscription::dropped`](crate::Subscription::dropped).
    pub fn dropped_before(&self) -> u64 {
        self.dropped_before
    }

    /// Acknowledge the message: the broker releases it. QoS 0 deliveries
    /// need no ack and this returns at once; for QoS 1 the ack is queued to
    /// the broker in order with the client's other frames.
    pub async fn ack(&self) -> Result<(), RequestError> {
        self.settle(AckKind::Ack, Duration::ZERO).await
    }

    /// Negative acknowledgement: processing failed, deliver the message
    /// again now (to this consumer or, in a queue group, another). The
    /// redelivery has a higher [`delivery_count`](Message::delivery_count)
    /// and counts toward `max_deliveries`. Same errors as [`Message::ack`].
    pub async fn nak(&self) -> Result<(), RequestError> {
        self.settle(AckKind::Nak, Duration::ZERO).await
    }

    /// [`Message::nak`], redelivered no sooner than `delay` from now (whole
    /// ms; at most about 49 days). A delay does not survive a broker
    /// restart: after one the message is delivered again at once.
    pub async fn nak_with_delay(&self, delay: Duration) -> Result<(), RequestError> {
        self.settle(AckKind::Nak, delay).await
    }

    /// Terminate: the message can never be processed. The broker moves it
    /// to the dead-letter topic now (header `blipmq-dead-letter-reason:
    /// terminated`) and never delivers it here again. Same errors as
    /// [`Message::ack`].
    pub async fn term(&self) -> Result<(), RequestError> {
        self.settle(AckKind::Term, Duration::ZERO).await
    }

    /// Still working: the broker restarts this delivery's ack timeout, so a
    /// job that runs longer than it is not sent to another consumer. Send
    /// it more often than the ack timeout; any number of times. Same errors
    /// as [`Message::ack`].
    pub async fn in_progress(&self) -> Result<(), RequestError> {
        self.settle(AckKind::InProgress, Duration::ZERO).await
    }

    async fn settle(&self, kind: AckKind, delay: Duration) -> Result<(), RequestError> {
        let Some(acks) = &self.acks else {
            return Ok(());
        };
        let frame = Frame::Ack(Ack {
            subscription_id: self.subscription_id,
            delivery_id: self.delivery_id,
            kind: kind.as_wire(),
            delay_ms: whole_millis(delay),
        });
        acks.push_with(|out| encode_frame_into(&frame, out))
            .await
            .map_err(|_| Failure::Closed.error("the client is closed").into())
    }
}

/// `delay` in whole ms, saturating at the wire's `u32` (about 49 days).
fn whole_millis(delay: Duration) -> u32 {
    let ms = delay
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(delay.subsec_millis()));
    u32::try_from(ms).unwrap_or(u32::MAX)
}
