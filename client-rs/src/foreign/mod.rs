//! What every foreign-language binding needs and a Rust user does not: the
//! logic the Python, Node, browser and Kotlin/Swift bindings share, so that
//! each of them is only an adapter to its runtime and its idiom.
//!
//! - [`ConnectOptions`]: the flat options record every binding takes, turned
//!   into a [`crate::ClientBuilder`] in one place.
//! - [`SubscribeRequest`]: the flat subscribe options (QoS, durable name,
//!   group, a QoS 1 subscription's ack timeout and max deliveries), and the
//!   check of a nak's delay ([`nak_delay_ms`], [`nak_delay_secs`]), so that
//!   every language refuses the same numbers with the same words.
//! - [`SharedSubscription`]: a subscription that many callers may hold at
//!   once (a foreign object is shared, never owned), with a cancel-safe
//!   `next_batch(max, timeout)`, `try_next_batch`, `unsubscribe` and
//!   `detach`. A foreign runtime may drop a pending call at any time (a
//!   Python task cancelled, a Kotlin coroutine cancelled, a JS promise
//!   nobody awaits): no message is lost when it does.
//! - [`CallQueue`]: calls made on a thread that cannot wait (JavaScript's)
//!   carried out in call order: a publish is queued on the spot when
//!   nothing waits before it, and otherwise behind the calls before it,
//!   waiting only for its place in the outgoing queue (never for a
//!   confirm), so QoS 1 publishes are in flight together.
//! - [`ForeignEvent`]: a [`crate::ClientEvent`] as one flat record (kind,
//!   text, code, the typed disconnect reason), from [`events`]: each binding
//!   copies its fields into its runtime's shape.
//!
//! Nothing here depends on a runtime: timeouts go through the client's own
//! [`crate::transport::Runtime`], so the same code serves tokio and the
//! browser.

mod calls;
mod events;
mod options;
mod subscribe;
mod subscription;
#[cfg(all(test, feature = "tokio"))]
mod tests;

pub use calls::{queue_stopped, CallQueue, Publishing};
pub use events::{EventKind, ForeignDisconnect, ForeignEvent};
pub use options::ConnectOptions;
pub use subscribe::{nak_delay_ms, nak_delay_secs, ArgumentError, SubscribeRequest};
pub use subscription::{Claimable, Received, SharedSubscription};

/// The events of `client` from now on as [`ForeignEvent`]s; the stream
/// ends after `Closed` (see [`crate::Client::events`]).
pub fn events(
    client: &crate::Client,
) -> impl futures::Stream<Item = ForeignEvent> + Send + 'static + use<> {
    futures::StreamExt::map(client.events(), ForeignEvent::from)
}
