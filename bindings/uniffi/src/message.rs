//! A received message: its fields as a record (one crossing for a whole
//! batch), and a handle for `ack`.

use std::sync::Arc;

use blipmq::foreign::nak_delay_ms;

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

/// Messages packed into bytes, for a layer that reads them itself (the
/// Kotlin SDK): lifting a list of records costs the JVM several calls and
/// objects per field, reading bytes a few loads.
///
/// Per message, little-endian: `topic_len: u16`, the topic in UTF-8,
/// `payload_len: u32`, the payload, `id: u64`, `timestamp_ms: u64`,
/// `delivery_count: u32`, `delivery_id: u64`, `dropped_before: u64`,
/// `header_count: u16`, then per header `key_len: u16`, the key in UTF-8,
/// `value_len: u32`, the value. A message with a non-zero `delivery_id`
/// (a QoS 1 delivery) takes the next of `handles`, in order.
///
/// The bytes stay in this library's memory, `len` bytes at `address`, for
/// as long as `bytes` lives: the foreign layer reads them there (a byte
/// array lifted by uniffi is written one byte at a time, several times the
/// cost of the rest of a batch), then frees `bytes`.
#[derive(uniffi::Record)]
pub struct PackedMessages {
    /// Messages in the bytes.
    pub count: u32,
    pub address: u64,
    pub len: u32,
    /// Owns the bytes.
    pub bytes: Arc<NativeBytes>,
    /// One per QoS 1 delivery, in order: what its ack goes through.
    pub handles: Vec<Arc<NativeMessage>>,
    /// As `ReceivedBatch::dropped_after`.
    pub dropped_after: u64,
}

impl PackedMessages {
    pub fn new(messages: Vec<blipmq::Message>, dropped_after: u64) -> PackedMessages {
        let size: usize = messages
            .iter()
            .map(|m| 48 + m.topic().len() + m.payload().len())
            .sum();
        let mut packed = Vec::with_capacity(size);
        let mut handles = Vec::new();
        let count = messages.len() as u32;
        for message in messages {
            // Topics, keys and values are bounded far below these widths by
            // the protocol's limits (checked by the broker before delivery).
            put_str16(&mut packed, message.topic());
            put_bytes32(&mut packed, message.payload());
            packed.extend_from_slice(&message.id().to_le_bytes());
            packed.extend_from_slice(&message.timestamp_ms().to_le_bytes());
            packed.extend_from_slice(&message.delivery_count().to_le_bytes());
            packed.extend_from_slice(&message.delivery_id().to_le_bytes());
            packed.extend_from_slice(&message.dropped_before().to_le_bytes());
            let headers = message.headers();
            packed.extend_from_slice(&(headers.len() as u16).to_le_bytes());
            for (key, value) in headers.iter() {
                put_str16(&mut packed, key);
                put_bytes32(&mut packed, value);
            }
            if message.delivery_id() != 0 {
                handles.push(Arc::new(NativeMessage { inner: message }));
            }
        }
        // A boxed slice does not move when its owner does.
        let packed = packed.into_boxed_slice();
        PackedMessages {
            count,
            address: packed.as_ptr() as usize as u64,
            len: packed.len() as u32,
            bytes: Arc::new(NativeBytes { _bytes: packed }),
            handles,
            dropped_after,
        }
    }
}

/// Bytes a foreign layer reads in place (see `PackedMessages`); freed with
/// the object.
#[derive(uniffi::Object)]
pub struct NativeBytes {
    _bytes: Box<[u8]>,
}

fn put_str16(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
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

    /// Processing failed: the broker delivers the message again after
    /// `delay_ms` (0 = at once). A negative or non-finite delay is an
    /// InvalidArgument error.
    pub async fn nak(&self, delay_ms: f64) -> Result<(), NativeError> {
        let delay =
            nak_delay_ms(delay_ms).map_err(|e| NativeError::from_code(e.code(), e.message()))?;
        Ok(on_runtime(self.inner.nak_with_delay(delay)).await?)
    }

    /// The message can never be processed: the broker moves it to the
    /// dead-letter topic now.
    pub async fn term(&self) -> Result<(), NativeError> {
        Ok(on_runtime(self.inner.term()).await?)
    }

    /// Still working: the broker restarts the delivery's ack timeout.
    pub async fn in_progress(&self) -> Result<(), NativeError> {
        Ok(on_runtime(self.inner.in_progress()).await?)
    }
}
