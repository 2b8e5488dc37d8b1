//! Jepsen-style checking of BlipMQ's QoS 1 durability.
//!
//! A run of the `blipmq-history` runner records a [history](event) of what
//! its publishers, consumers and nemesis did and saw against the real broker;
//! [`checker::check`] then decides, from the history alone, whether the
//! broker kept its promise. Both this library and its payload format are
//! pure (no I/O), so histories can be made by hand in tests.

pub mod checker;
pub mod event;
pub mod payload;
pub mod topic;

pub use checker::{check, Report, Stats, Violation};
pub use event::{Content, Corruption, Detach, Event, Key, QueueKind, Record};
