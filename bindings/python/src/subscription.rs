//! `Subscription`: `next`, `next_batch` and `unsubscribe` over
//! `blipmq::Subscription`.

use std::time::Duration;

use blipmq::foreign::SharedSubscription;
use pyo3::prelude::*;

use crate::error::{client_closed, timed_out, to_py};
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

    /// The next message; raises `TimeoutError` (601) after `timeout`
    /// seconds and `ClientClosed` (603) once the subscription has ended.
    #[pyo3(signature = (timeout=None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = duration(timeout)?;
        let inner = self.inner.clone();
        awaitable(py, async move {
            let batch = inner.next_batch(1, timeout).await.ok_or_else(ended)?;
            match batch.messages.into_iter().next() {
                Some(message) => Ok(Message(message)),
                None => Err(timed_out("no message within the timeout")),
            }
        })
    }

    /// Up to `max_messages` messages: waits up to `timeout` seconds for the
    /// first (forever when `None`), then takes what is buffered without
    /// waiting. An empty list means the timeout passed.
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
            let batch = inner
                .next_batch(max_messages, timeout)
                .await
                .ok_or_else(ended)?;
            Ok(batch.messages.into_iter().map(Message).collect::<Vec<_>>())
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
