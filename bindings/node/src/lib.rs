//! The native half of the npm package `blipmq`: napi-rs adapters over the
//! `blipmq` client crate. Each method converts arguments, calls the crate and
//! converts the result or the error; the idiomatic API (async iteration,
//! error classes, payload and header coercion) is the hand-written
//! JavaScript in `index.js`, on top of this module.
//!
//! The client core runs on napi's tokio runtime: exported `async fn`s return
//! Promises, and the client's background task is spawned there, off the
//! JavaScript thread, so an open connection never holds Node's event loop
//! open by itself. Panics are caught at the boundary: napi rejects the
//! Promise of a panicking future, and synchronous methods are marked
//! `catch_unwind`.
//!
//! Modules mirror the client crate's: `client`, `subscription`, `message`,
//! `error`.

// napi registers exports only outside `cfg(test)`, so `cargo clippy
// --all-targets` sees the exported items of a test build as unused.
#![cfg_attr(test, allow(dead_code))]
#![deny(clippy::all)]

// The addon's own Rust allocations (read buffers, batches handed to
// JavaScript) come from mimalloc; Node's heap stays on its own allocator.
// Under glibc malloc a subscriber of 1 KiB messages spent about a third of
// its CPU in page faults and heap trimming: each batch's payload memory
// (up to 1 MiB) was returned to the system when JavaScript let it go and
// faulted in again for the next one. Interleaved runs of the SDK bench's
// subscribe and publish roles: subscriber CPU 1.32 -> 0.82 us/msg at
// 1 KiB; no change at 16 B, nor for a publisher.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod error;
mod message;
mod subscription;
