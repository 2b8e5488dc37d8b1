//! The BlipMQ broker as a library: [`run`] serves bound [`Listeners`] with a
//! [`Config`] until a shutdown future completes. The `blipmq` binary is a thin
//! wrapper around it; tests bind `127.0.0.1:0` and call it directly.

mod admission;
pub mod auth;
mod bounded_queue;
pub mod config;
mod confirm;
mod connection;
mod connections;
mod dead_letter;
mod durable;
mod http;
mod introspection;
mod memory;
pub mod metrics;
mod outbox;
mod queue_manifest;
mod registry;
mod server;
mod subscription;
mod throttle;
pub mod tls;
pub mod wal;
mod websocket;
mod writer;

pub use config::{Config, ConfigError, OverflowPolicy, WebSocketConfig};
pub use tls::{Tls, TlsError};

/// Internals the criterion benchmarks (`benches/`) drive directly. Not a
/// stable API.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::metrics::Metrics;
    pub use crate::outbox::Outbox;
    pub use crate::registry::Registry;
    pub use crate::subscription::{QueuedMessage, Subscription};
}

/// Internals the fuzz targets (`fuzz/`) drive directly. Not a stable API.
#[doc(hidden)]
pub mod fuzz_api {
    pub use crate::queue_manifest::{parse, render, QueueDefinition};
}
pub use server::{run, run_and_notify, Listeners};
