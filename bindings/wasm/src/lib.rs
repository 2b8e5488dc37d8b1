//! The native half of the npm package `@blipmq/web`: wasm-bindgen adapters
//! over the `blipmq` client crate, whose core (handshake, subscriptions,
//! acks, reconnect) runs here on the JavaScript event loop over a WebSocket
//! (client-rs's `web` feature). Each export converts arguments, calls the
//! crate and converts the result or the error; the idiomatic API (async
//! iteration, error classes, payload and header coercion) is the
//! hand-written JavaScript in `index.js`, on top of this module.
//!
//! Modules mirror the client crate's, as in the Node binding: `client`,
//! `subscription`, `error` (messages cross as plain objects).
//!
//! Only wasm32 builds have anything in them: on other targets the crate is
//! empty, so `cargo clippy --workspace` on the host still passes through.
#![cfg(target_arch = "wasm32")]

mod client;
mod error;
mod subscription;
