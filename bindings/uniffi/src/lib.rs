//! The native library under the Kotlin (JVM, Android) and Swift SDKs:
//! uniffi adapters over the `blipmq` client crate, declared with uniffi's
//! proc macros (no UDL). Each exported method converts arguments, calls the
//! client crate and converts the result or the error; client behaviour stays
//! in `client-rs`. The idiomatic Kotlin API (`Flow`s, `Closeable`, a sealed
//! exception hierarchy) is hand-written Kotlin on top of the generated
//! bindings, in `kotlin/`; Swift uses the generated bindings directly.
//!
//! Async methods become `suspend` functions in Kotlin and `async` ones in
//! Swift. The foreign language drives each future; every poll runs inside
//! the binding's own tokio runtime (`src/runtime.rs`), where the client's
//! background task, its timers and its sockets live.
//!
//! Modules mirror the client crate's: `client`, `batch` (QoS 0 publishes
//! packed by the Kotlin layer, many per call), `subscription`, `message`
//! (including received messages packed into bytes), `error`.

mod batch;
mod client;
mod error;
mod events;
mod message;
mod runtime;
mod subscription;

pub use client::{
    connect, ConnectOptions, ConnectionStatus, NativeClient, PublishOptions, Qos, SubscribeOptions,
};
pub use error::NativeError;
pub use message::{Header, NativeBytes, NativeMessage, PackedMessages, ReceivedMessage};
pub use subscription::{NativeSubscription, ReceivedBatch};

uniffi::setup_scaffolding!();
