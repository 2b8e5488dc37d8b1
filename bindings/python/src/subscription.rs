//! `Subscription`: `next_batch`, `dropped` and `unsubscribe` over
//! `blipmq::Subscription`. The Python layer (`_client.py`) builds `next`
//! and iteration on `next_batch` and tells the application of discards.

use std::time::Duration;

use blipmq::foreign::{Claimable, SharedSubscription};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::error::{client_closed, to_py};
use crate::message::Message;
use crate::runtime::{awaitable, Nothing};

/// A subscription, over `blipmq::foreign::SharedSubscription` (which holds
/// the logic every binding shares): one receive at a time, and
/// `unsubscribe` or `detach` end a pending one.
#[pyclass(module = "blipmq._native", frozen)]
pub struct Subscription {
    inner: SharedSubscription,
}

impl Subscription {
    pub fn new(subscription: blipmq::Subscription) -> Subscription {
        Subscription {
            inner: subscription.into(),
        }
    }
}

fn ended() -> PyErr {
    client_closed("the subscription has ended")
}

#[pymethods]
impl Subscription {
    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    /// How many messages the broker has reported discarded for this
    /// subscription so far, including gaps not handed to the application yet.
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Waits up to `timeout` seconds (forever when `None`) for the first
    /// message, then takes what is buffered, up to `max_messages`. Resolves
    /// to `(messages, dropped_within, dropped_after)`: the sum of the
    /// messages' `dropped_before` (so that Python looks at each message only
    /// when a batch has a gap) and the discards after the last message that
    /// nothing follows yet. No messages with `dropped_after > 0` is an early
    /// return to report a gap; a timeout is `([], 0, 0)`.
    #[pyo3(signature = (max_messages, timeout=None))]
    fn next_batch<'py>(
        &self,
        py: Python<'py>,
        max_messages: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = duration(timeout)?;
        let inner = self.inner.clone();
        awaitable(py, async move {
            let claimable = inner
                .next_batch_claimable(max_messages, timeout)
                .await
                .ok_or_else(ended)?;
            Ok(Batch(claimable))
        })
    }

    /// Stop the subscription and wait for the broker to confirm. A pending
    /// receive ends with `ClientClosed`; calling it again does nothing.
    fn unsubscribe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            inner.unsubscribe().await.map_err(to_py)?;
            Ok(Nothing)
        })
    }

    /// Stop receiving without deleting anything: a plain subscription ends,
    /// a durable one keeps its unacked messages for the next subscribe with
    /// its name (what dropping the Rust `Subscription` does).
    fn detach<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner.detach();
        awaitable(py, async move { Ok(Nothing) })
    }
}

/// What `next_batch` resolves to, claimed only when it becomes a Python
/// value on the event loop: an `asyncio.Future` cancelled after the Rust
/// side took the messages never gets that far, and the messages go back
/// to the subscription for the next receive instead of being lost.
pub struct Batch(Claimable);

impl<'py> IntoPyObject<'py> for Batch {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let received = self.0.claim();
        let dropped_within: u64 = received.messages.iter().map(|m| m.dropped_before()).sum();
        let messages: Vec<Message> = received.messages.into_iter().map(Message).collect();
        (messages, dropped_within, received.dropped_after).into_pyobject(py)
    }
}

/// `Some(output)`, or `None` when `timeout` passes first.
pub async fn within<F: std::future::Future>(
    timeout: Option<Duration>,
    future: F,
) -> Option<F::Output> {
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, future).await.ok(),
        None => Some(future.await),
    }
}

/// A timeout in seconds, as Python APIs take it.
pub fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                crate::error::invalid_argument(&format!(
                    "timeout must be a non-negative number of seconds, not {s}"
                ))
            })
        })
        .transpose()
}
