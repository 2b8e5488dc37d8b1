//! Borrowed, plain-Rust views of every frame. Decoding borrows from the input
//! buffer (no copies of topics or payloads); encoding takes the same structs.

use crate::ErrorCode;

/// Quality of service. QoS 0 is at most once; QoS 1 is at least once with
/// publisher confirms and consumer acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
}

impl Qos {
    pub fn from_wire(value: u8) -> Option<Qos> {
        match value {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            _ => None,
        }
    }

    pub fn as_wire(self) -> u8 {
        self as u8
    }
}

/// What an `Ack` frame says about a QoS 1 delivery (QOS-20..QOS-23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckKind {
    /// Done: release the message.
    #[default]
    Ack = 0,
    /// Not done: deliver it again, no sooner than the ack's `delay_ms`.
    Nak = 1,
    /// Never going to be done: dead-letter it now.
    Term = 2,
    /// Still working: restart the ack deadline.
    InProgress = 3,
}

impl AckKind {
    pub fn from_wire(value: u8) -> Option<AckKind> {
        match value {
            0 => Some(AckKind::Ack),
            1 => Some(AckKind::Nak),
            2 => Some(AckKind::Term),
            3 => Some(AckKind::InProgress),
            _ => None,
        }
    }

    pub fn as_wire(self) -> u8 {
        self as u8
    }
}

/// One message header, borrowed. Keys follow HDR-2; values are any bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello<'a> {
    pub protocol_version: u16,
    pub client_name: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// The client understands [`Dropped`] notices (QUEUE-6).
    pub drop_notices: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Welcome<'a> {
    pub protocol_version: u16,
    pub server_name: &'a str,
    pub server_version: &'a str,
    pub max_message_size: u32,
    pub connection_id: u64,
    pub max_headers: u16,
    pub max_header_key_size: u16,
    pub max_headers_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish<'a> {
    pub publish_id: u64,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub ttl_ms: u32,
    /// The raw QoS byte; the broker validates it (see [`Qos::from_wire`]).
    pub qos: u8,
    /// In order; empty when the message has none.
    pub headers: Vec<Header<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Confirm {
    pub publish_id: u64,
    pub message_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe<'a> {
    pub request_id: u64,
    pub pattern: &'a str,
    pub qos: u8,
    pub durable_name: Option<&'a str>,
    pub queue_group: Option<&'a str>,
    /// QoS 1 ack timeout of this subscription; 0 = the broker's default.
    pub ack_timeout_ms: u32,
    /// QoS 1 deliveries before dead-lettering; 0 = the broker's default.
    pub max_deliveries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Subscribed {
    pub request_id: u64,
    pub subscription_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    pub request_id: u64,
    pub subscription_id: u64,
    /// Detach a durable subscription instead of deleting it (QOS-8).
    pub keep_durable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unsubscribed {
    pub request_id: u64,
    pub subscription_id: u64,
}

/// The per-subscriber part of a delivery (see `DeliveryRoute` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    pub subscription_id: u64,
    pub delivery_id: u64,
    pub delivery_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivery<'a> {
    pub route: Route,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub message_id: u64,
    pub timestamp_ms: u64,
    pub headers: Vec<Header<'a>>,
}

/// `count` messages were discarded for the subscription since its previous
/// notice (QUEUE-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    pub subscription_id: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    pub subscription_id: u64,
    pub delivery_id: u64,
    /// The raw kind byte; the broker validates it (see [`AckKind::from_wire`]).
    pub kind: u8,
    /// For a nak: no redelivery sooner than this (0 = at once).
    pub delay_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    /// The publish_id or request_id this error answers; 0 for none.
    pub request_id: u64,
}

/// One frame of either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello(Hello<'a>),
    Welcome(Welcome<'a>),
    Publish(Publish<'a>),
    Confirm(Confirm),
    Subscribe(Subscribe<'a>),
    Subscribed(Subscribed),
    Unsubscribe(Unsubscribe),
    Unsubscribed(Unsubscribed),
    Delivery(Delivery<'a>),
    Ack(Ack),
    Ping { nonce: u64 },
    Pong { nonce: u64 },
    Error(ErrorFrame<'a>),
    Dropped(Dropped),
}

impl Frame<'_> {
    /// The frame type's name as in the schema, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Publish(_) => "Publish",
            Frame::Confirm(_) => "Confirm",
            Frame::Subscribe(_) => "Subscribe",
            Frame::Subscribed(_) => "Subscribed",
            Frame::Unsubscribe(_) => "Unsubscribe",
            Frame::Unsubscribed(_) => "Unsubscribed",
            Frame::Delivery(_) => "Delivery",
            Frame::Ack(_) => "Ack",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Error(_) => "Error",
            Frame::Dropped(_) => "Dropped",
        }
    }
}
