//! A received message: its fields as a record (one crossing for a whole
//! batch), and a handle for `ack`.

use std::sync::Arc;

use crate::error::NativeError;
use crate::runtime::on_runtime;

/// One header: a text key and a byte value.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

/// A message delivered to a subscription.
#[derive(uniffi::Record)]
pub struct ReceivedMessage {
    /// The topic it was published to (not the pattern that matched).
    pub topic: String,
    pub payload: Vec<u8>,
    /// The publisher's headers, in order; empty when it sent none.
    pub headers: Vec<Header>,
    /// The broker-assigned id (increasing over a broker run).
    pub id: u64,
    /// When the broker accepted it, in ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// 1 on first delivery, higher when the broker redelivers.
    pub delivery_count: u32,
    /// What an ack names: non-zero for a durable (QoS 1) delivery.
    pub delivery_id: u64,
    /// How many messages the broker discarded for the subscription just
    /// before this one (full queue, expired TTL, memory budget): 0 when
    /// none were.
    pub dropped_before: u64,
    /// The message on the client, to ack it; only for a QoS 1 delivery
    /// (a handle is an object with a cleaner on the foreign side: one per
    /// QoS 0 message was a large share of the receive cost).
    pub handle: Option<Arc<NativeMessage>>,
}

impl ReceivedMessage {
    pub fn new(message: blipmq::Message) -> ReceivedMessage {
        ReceivedMessage {
            topic: message.topic().to_owned(),
            payload: message.payload().to_vec(),
            headers: message
                .headers()
                .iter()
                .map(|(key, value)| Header {
                    key: key.to_owned(),
                    value: value.to_vec(),
                })
                .collect(),
            id: message.id(),
            timestamp_ms: message.timestamp_ms(),
            delivery_count: message.delivery_count(),
            delivery_id: message.delivery_id(),
            dropped_before: message.dropped_before(),
            handle: (message.delivery_id() != 0)
                .then(|| Arc::new(NativeMessage { inner: message })),
        }
    }
}

/// Wraps `blipmq::Message`.
#[derive(uniffi::Object)]
pub struct NativeMessage {
    inner: blipmq::Message,
}

#[uniffi::export]
impl NativeMessage {
    /// Returns at once for a QoS 0 delivery, which needs no ack; at QoS 1
    /// queues the ack to the broker in order with the client's other frames.
    pub async fn ack(&self) -> Result<(), NativeError> {
        Ok(on_runtime(self.inner.ack()).await?)
    }
}
