//! What every consumer does with a message it receives: judge its content,
//! record the delivery, and record an ack once it is handed to the
//! connection.

use blipmq::Message;
use blipmq_history::{payload, Content, Event, Key};

use crate::recorder::Recorder;

/// Record the delivery; the key when the message is intact. A corrupt one
/// is recorded as such, and its acks are not: an ack of a corrupt copy must
/// not count as the message having arrived.
pub fn record(
    recorder: &Recorder,
    consumer: &'static str,
    queue: &'static str,
    message: &Message,
) -> Option<Key> {
    let headers = message.headers();
    // Exactly the one header the publisher sent.
    let key_header = if headers.len() == 1 {
        headers.get(payload::KEY_HEADER).map(|v| &v[..])
    } else {
        None
    };
    let (key, content) = payload::verify(message.topic(), message.payload(), key_header);
    let intact = content == Content::Intact;
    recorder.record(Event::Delivered {
        consumer,
        queue,
        key,
        message_id: message.id(),
        delivery_id: message.delivery_id(),
        delivery_count: message.delivery_count(),
        content,
    });
    key.filter(|_| intact)
}

/// Ack, and record it if the ack reached the connection and the message
/// was intact.
pub async fn ack(
    recorder: &Recorder,
    consumer: &'static str,
    queue: &'static str,
    key: Option<Key>,
    message: &Message,
) {
    if message.ack().await.is_err() {
        return;
    }
    if let Some(key) = key {
        recorder.record(Event::Acked {
            consumer,
            queue,
            key,
            delivery_id: message.delivery_id(),
        });
    }
}
