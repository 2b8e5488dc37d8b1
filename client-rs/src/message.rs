//! A received message and its acknowledgement.

use bytes::Bytes;

use crate::error::{Failure, RequestError};
use crate::headers::Headers;
use crate::state::encode_frame_into;
use blipmq_protocol::{Ack, Frame};

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

    /// Acknowledge the message. QoS 0 deliveries need no ack and this returns
    /// at once; for QoS 1 the ack is queued to the broker in order with the
    /// client's other frames.
    pub async fn ack(&self) -> Result<(), RequestError> {
        let Some(acks) = &self.acks else {
            return Ok(());
        };
        let frame = Frame::Ack(Ack {
            subscription_id: self.subscription_id,
            delivery_id: self.delivery_id,
        });
        acks.push_with(|out| encode_frame_into(&frame, out))
            .await
            .map_err(|_| Failure::Closed.error("the client is closed").into())
    }
}
