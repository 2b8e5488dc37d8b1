//! What a history is made of: one [`Record`] per thing a client saw or the
//! nemesis did, in the order the runner recorded them.
//!
//! Names (queues, consumers, patterns) are `&'static str`: a run has a
//! handful of them, and a long run records millions of events, so events
//! stay small and allocation-free.

use std::fmt;

use serde::Serialize;

/// Which message: the publisher that made it and its sequence number there.
/// Every payload carries its key (see [`crate::payload`]), and a key is
/// published at most once, so a key names one message for the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub publisher: u16,
    pub seq: u32,
}

impl Key {
    pub const fn new(publisher: u16, seq: u32) -> Key {
        Key { publisher, seq }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}-s{}", self.publisher, self.seq)
    }
}

/// How a stored queue is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum QueueKind {
    /// A named durable subscription: one consumer at a time.
    Durable,
    /// A queue group: every message to one member.
    Group,
}

/// Why a delivered message is not what was published.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Corruption {
    /// The payload does not even parse as one of the runner's payloads.
    Unreadable,
    /// It parses, but its bytes differ from what its key's publisher sent.
    Altered,
    /// Intact, but delivered under another topic than it was published to.
    WrongTopic { delivered: String },
    /// Intact, but the key header that travels with it is missing or wrong.
    WrongHeader,
}

/// The runner's verdict on a delivery's content (payload, topic, headers).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Content {
    Intact,
    Corrupt(Corruption),
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Event {
    /// A stored queue exists from here on: only messages published after
    /// this are owed to it (QOS-4).
    QueueCreated {
        queue: &'static str,
        pattern: &'static str,
        kind: QueueKind,
    },
    /// A QoS 1 publish is about to be sent. Recorded before the send, so a
    /// delivery can never come before its publish in the history.
    Publish { key: Key, topic: &'static str },
    /// The broker confirmed the publish: the message is owed to every queue
    /// whose pattern matches its topic.
    Confirmed { key: Key, message_id: u64 },
    /// The broker refused it with an error code: it must never be delivered.
    PublishFailed { key: Key, code: u16 },
    /// No answer (the connection dropped or the request timed out): the
    /// message may or may not have been stored, and either is fine.
    Indeterminate { key: Key },
    /// A consumer received a message. `key` is `None` when the payload is
    /// unreadable.
    Delivered {
        consumer: &'static str,
        queue: &'static str,
        key: Option<Key>,
        message_id: u64,
        delivery_id: u64,
        delivery_count: u32,
        content: Content,
    },
    /// A consumer acked a delivery (the ack was handed to its connection;
    /// whether the broker got it is unknown, which only ever lets the
    /// checker demand less).
    Acked {
        consumer: &'static str,
        queue: &'static str,
        key: Key,
        delivery_id: u64,
    },
    ConsumerAttached {
        consumer: &'static str,
        queue: &'static str,
    },
    ConsumerDetached {
        consumer: &'static str,
        queue: &'static str,
        why: Detach,
    },
    /// The broker is running (first start or a restart) with this pid.
    BrokerStarted { pid: u32 },
    /// SIGKILL: no shutdown path ran.
    BrokerKilled,
    /// SIGTERM, and the broker exited.
    BrokerTerminated,
    /// SIGSTOP: the broker is frozen, its sockets open.
    BrokerStopped,
    /// SIGCONT after a SIGSTOP.
    BrokerContinued,
    /// The faults are over and the broker was restarted cleanly: from here
    /// on every queue is drained (and everything it gets is acked) until it
    /// goes quiet, so a message still owed must arrive after this.
    DrainStarted,
}

impl Event {
    /// The message this event is about, if it is about one.
    pub fn key(&self) -> Option<Key> {
        match self {
            Event::Publish { key, .. }
            | Event::Confirmed { key, .. }
            | Event::PublishFailed { key, .. }
            | Event::Indeterminate { key }
            | Event::Acked { key, .. } => Some(*key),
            Event::Delivered { key, .. } => *key,
            _ => None,
        }
    }
}

/// Why a consumer stopped consuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Detach {
    /// It dropped its subscription (the queue keeps its messages).
    Unsubscribed,
    /// It closed its connection.
    Closed,
    /// Its connection was lost.
    ConnectionLost,
}

/// An event and when it was recorded (microseconds since the run began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub at_us: u64,
    pub event: Event,
}

impl Record {
    pub fn new(at_us: u64, event: Event) -> Record {
        Record { at_us, event }
    }
}
