//! A subscription: batches of messages for `index.js`'s async iterator, and
//! unsubscribe.
//!
//! Messages cross into JavaScript a batch at a time and column by column
//! (see `NativeBatch`): building one native object per message, read through
//! half a dozen getters, cost more than everything else on the receive path.

use std::time::Duration;

use blipmq::foreign::SharedSubscription;
use napi::bindgen_prelude::{BigUint64Array, Buffer, Float64Array, PromiseRaw, Uint32Array};
use napi::Env;
use napi_derive::napi;

use crate::error::{promise, Failure};
use crate::message::{Header, NativeMessage};

/// Wraps `blipmq::foreign::SharedSubscription`, which holds the logic every
/// binding shares.
#[napi]
pub struct NativeSubscription {
    inner: SharedSubscription,
}

/// Messages taken in one crossing, as columns: message `i` has the payload
/// `payloads[payloadEnds[i - 1] ?? 0 .. payloadEnds[i]]`, the topic
/// `topics[topicOf[i]]`, `ids[i]`, `timestampsMs[i]` and
/// `deliveryCounts[i]`; `extras` lists only the messages that carry headers,
/// need an ack or had discards just before them.
#[napi(object, object_from_js = false)]
pub struct NativeBatch {
    pub payloads: Buffer,
    pub payload_ends: Uint32Array,
    /// The distinct topics of the batch, in order of first appearance.
    pub topics: Vec<String>,
    pub topic_of: Uint32Array,
    pub ids: BigUint64Array,
    /// Milliseconds since the Unix epoch; exact in a double until the year
    /// 287396.
    pub timestamps_ms: Float64Array,
    pub delivery_counts: Uint32Array,
    pub extras: Vec<NativeExtra>,
    /// Messages the broker discarded after the last message of the batch,
    /// none following yet (QUEUE-6); a batch of no messages with a count
    /// here came early, just to report them.
    pub dropped_after: f64,
}

/// What only some messages have.
#[napi(object, object_from_js = false)]
pub struct NativeExtra {
    /// The message's position in its batch.
    pub index: u32,
    /// The publisher's headers, in order (empty when it sent none).
    pub headers: Vec<Header>,
    /// The handle to ack a QoS 1 delivery with; absent at QoS 0.
    pub message: Option<NativeMessage>,
    /// Messages the broker discarded just before this one.
    pub dropped_before: f64,
}

impl NativeBatch {
    fn new(messages: Vec<blipmq::Message>, dropped_after: u64) -> NativeBatch {
        let count = messages.len();
        let mut payloads = Vec::with_capacity(messages.iter().map(|m| m.payload().len()).sum());
        let mut payload_ends = Vec::with_capacity(count);
        let mut topics: Vec<String> = Vec::new();
        let mut topic_of = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        let mut timestamps_ms = Vec::with_capacity(count);
        let mut delivery_counts = Vec::with_capacity(count);
        let mut extras = Vec::new();
        for (index, message) in messages.into_iter().enumerate() {
            payloads.extend_from_slice(message.payload());
            // Payloads are at most the broker's message limit, far below 4 GiB,
            // and a batch holds at most a few thousand of them.
            payload_ends.push(payloads.len() as u32);
            // Batches are mostly of one topic: look back from the end.
            let topic = match topics.iter().rposition(|t| t == message.topic()) {
                Some(known) => known,
                None => {
                    topics.push(message.topic().to_owned());
                    topics.len() - 1
                }
            };
            topic_of.push(topic as u32);
            ids.push(message.id());
            timestamps_ms.push(message.timestamp_ms() as f64);
            delivery_counts.push(message.delivery_count());
            let needs_ack = message.delivery_id() != 0;
            let dropped_before = message.dropped_before();
            if needs_ack || !message.headers().is_empty() || dropped_before > 0 {
                extras.push(NativeExtra {
                    index: index as u32,
                    headers: message
                        .headers()
                        .iter()
                        .map(|(key, value)| Header {
                            key: key.to_owned(),
                            value: value.to_vec().into(),
                        })
                        .collect(),
                    message: needs_ack.then(|| NativeMessage::new(message)),
                    // Exact in a double up to 2^53 discards.
                    dropped_before: dropped_before as f64,
                });
            }
        }
        NativeBatch {
            payloads: payloads.into(),
            payload_ends: Uint32Array::new(payload_ends),
            topics,
            topic_of: Uint32Array::new(topic_of),
            ids: BigUint64Array::new(ids),
            timestamps_ms: Float64Array::new(timestamps_ms),
            delivery_counts: Uint32Array::new(delivery_counts),
            extras,
            dropped_after: dropped_after as f64,
        }
    }
}

impl NativeSubscription {
    pub fn new(subscription: blipmq::Subscription) -> NativeSubscription {
        NativeSubscription {
            inner: subscription.into(),
        }
    }
}

#[napi]
impl NativeSubscription {
    #[napi(getter)]
    pub fn pattern(&self) -> String {
        self.inner.pattern().to_owned()
    }

    /// Up to `max` messages that are buffered now, without waiting; `null`
    /// when there are none (or another read is in progress, or the
    /// subscription has ended: `nextBatch` tells which). Saves the trip
    /// through the runtime and back while messages stream in.
    #[napi(catch_unwind)]
    pub fn try_next_batch(&self, max: u32) -> Option<NativeBatch> {
        let messages = self.inner.try_next_batch(max as usize);
        (!messages.is_empty()).then(|| NativeBatch::new(messages, 0))
    }

    /// Wait for one message (at most `timeout_ms` when given), then take up
    /// to `max` in all from what is buffered; or resolve early with no
    /// messages and `droppedAfter` when the broker reports discards that no
    /// message follows. Resolves an empty batch (no messages, nothing
    /// dropped) on timeout and `null` once the subscription has ended
    /// (unsubscribed, or the client closed and the buffer is drained).
    #[napi]
    pub async fn next_batch(&self, max: u32, timeout_ms: Option<u32>) -> Option<NativeBatch> {
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let received = self.inner.next_batch(max as usize, timeout).await?;
        Some(NativeBatch::new(received.messages, received.dropped_after))
    }

    /// How many messages the broker has reported discarded for this
    /// subscription so far.
    #[napi(getter)]
    pub fn dropped(&self) -> f64 {
        self.inner.dropped() as f64
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded. A second call does nothing.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn unsubscribe<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let subscription = self.inner.clone();
        promise(env, async move {
            subscription.unsubscribe().await.map_err(Failure::from)
        })
    }

    /// Stop receiving without deleting anything: a plain subscription ends,
    /// a durable one keeps its unacked messages for the next subscribe with
    /// its name (what dropping the Rust `Subscription` does).
    #[napi]
    pub async fn detach(&self) -> napi::Result<()> {
        self.inner.detach();
        Ok(())
    }
}
