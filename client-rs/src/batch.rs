//! Many QoS 0 messages checked and encoded together, then queued in one
//! step: for callers whose cost per call dominates (a binding crossing from
//! JavaScript, Python or the JVM), one crossing and one queue slot carry a
//! whole batch.

use blipmq_protocol::Publish;
use bytes::BytesMut;

use crate::client::{check_payload_size, check_topic};
use crate::error::PublishError;
use crate::state::encode_frame_into;

/// QoS 0 messages for [`Client::try_publish_batch`](crate::Client::try_publish_batch)
/// and [`Client::publish_batch`](crate::Client::publish_batch), made by
/// [`Client::batch`](crate::Client::batch). Each [`PublishBatch::push`] checks
/// its message as `publish` would (topic, size), so a batch that was built
/// is sent whole or not at all. The messages go out in push order, as one
/// item of the outgoing queue.
#[derive(Debug)]
pub struct PublishBatch {
    frames: BytesMut,
    count: usize,
    max_message_size: usize,
    /// The topic of the last push, already checked: consecutive messages
    /// usually share one.
    last_topic: String,
}

impl PublishBatch {
    pub(crate) fn new(max_message_size: usize) -> PublishBatch {
        PublishBatch {
            frames: BytesMut::new(),
            count: 0,
            max_message_size,
            last_topic: String::new(),
        }
    }

    /// Add a message (`ttl_ms` 0: it never expires). Fails, adding nothing,
    /// on an invalid topic or a payload over the broker's limit.
    pub fn push(&mut self, topic: &str, payload: &[u8], ttl_ms: u32) -> Result<(), PublishError> {
        if topic != self.last_topic {
            check_topic(topic)?;
            self.last_topic.clear();
            self.last_topic.push_str(topic);
        }
        check_payload_size(payload.len(), self.max_message_size)?;
        encode_frame_into(
            &blipmq_protocol::Frame::Publish(Publish {
                publish_id: 0,
                topic,
                payload,
                ttl_ms,
                qos: 0,
                headers: Vec::new(),
            }),
            &mut self.frames,
        );
        self.count += 1;
        Ok(())
    }

    /// Messages pushed and not sent yet.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded bytes pushed and not sent yet.
    pub fn encoded_len(&self) -> usize {
        self.frames.len()
    }

    /// The encoded frames, in push order.
    pub(crate) fn frames(&self) -> &[u8] {
        &self.frames
    }

    /// Empty the batch, keeping its buffer for reuse (a queued batch is
    /// emptied by the call that queued it).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.count = 0;
    }
}
