//! The Rust client for the BlipMQ message broker: async, on tokio by default,
//! and the core every BlipMQ SDK (Python, Node, browsers, Kotlin, Swift) is
//! built on.
//!
//! ```
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A broker on a free port, in the background, for this example.
//! # let clients = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = clients.local_addr()?.to_string();
//! # let listeners = blipmq_broker::Listeners { clients, websocket: None, metrics: None, tls: None, auth: None };
//! # tokio::spawn(blipmq_broker::run(listeners, Default::default(), std::future::pending()));
//! // `addr` is where the broker listens, e.g. "127.0.0.1:7878".
//! let client = blipmq::Client::connect(addr).await?;
//! let mut orders = client.subscribe("orders.*").await?;
//! client.publish("orders.created", "order #1").await?;
//!
//! let message = orders.next().await.expect("a message");
//! assert_eq!(message.topic(), "orders.created");
//! assert_eq!(&message.payload()[..], b"order #1");
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Semantics
//!
//! - **Publishing** at QoS 0 returns once the frame is queued; many publishes
//!   are written in few syscalls. The queue is bounded
//!   ([`ClientBuilder::outgoing_capacity`]): a fast publisher waits rather than
//!   growing memory. [`Client::flush`] waits until the broker has handled
//!   everything sent before it. Topics and sizes are checked locally first.
//! - **Subscriptions** are [`futures::Stream`]s of [`Message`]s. Each buffers
//!   up to [`ClientBuilder::subscription_capacity`] messages; when one is full
//!   the client stops reading from the broker, so the broker's overflow policy
//!   decides what happens to a slow consumer. Dropping a subscription
//!   unsubscribes.
//! - **Addresses**: `connect` takes one broker address or several
//!   ([`ToBrokerAddresses`]), tried in turn.
//! - **Reconnect** is on by default: after a lost connection the client
//!   retries with exponential backoff and full jitter ([`ReconnectPolicy`]),
//!   to the addresses in turn, and subscribes again. Requests in flight fail with `Disconnected`; QoS 0 messages in
//!   flight may be lost. Watch [`Client::status`] and [`Client::events`].
//! - **Errors** are one type per operation ([`PublishError`],
//!   [`SubscribeError`], ...) with a kind to match on and the wire code from
//!   the protocol's error table.
//! - **Headers** ([`Headers`]) travel with a message, in order. With the
//!   `opentelemetry` feature the current span's W3C trace context is added as
//!   `traceparent`/`tracestate` on publish, and `Message::trace_context()`
//!   hands a subscriber the publisher's span to continue the trace.
//! - **Transports**: the core speaks to a [`transport::Connector`] and a
//!   [`transport::Runtime`]. The `tokio` feature (default) provides TCP;
//!   without it the crate builds for wasm32 and takes both from the caller.

mod addresses;
mod batch;
mod client;
mod confirm;
mod connection;
mod disconnect;
pub mod error;
pub mod foreign;
mod headers;
mod jitter;
mod mailbox;
mod message;
mod options;
mod outbox;
mod state;
mod subscription;
#[cfg(feature = "tls")]
pub mod tls;
mod trace;
pub mod transport;

pub use addresses::ToBrokerAddresses;
pub use batch::PublishBatch;
pub use blipmq_protocol::Qos;
pub use client::{Client, ClientBuilder};
pub use confirm::PublishConfirm;
pub use disconnect::{DisconnectKind, DisconnectReason};
pub use error::{
    ConnectError, ConnectErrorKind, ErrorCode, PublishError, PublishErrorKind, RequestError,
    RequestErrorKind, SubscribeError, SubscribeErrorKind,
};
pub use headers::Headers;
pub use message::Message;
pub use options::{ClientOptions, PublishOptions, ReconnectPolicy, SubscribeOptions};
pub use state::{ClientEvent, ConnectionStatus};
pub use subscription::{Subscription, SubscriptionEvent};
