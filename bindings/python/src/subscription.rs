//! `Subscription`: `next`, `next_batch` and `unsubscribe` over
//! `blipmq::Subscription`.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{client_closed, timed_out, to_py};
use crate::message::Message;
use crate::runtime::{awaitable, Nothing};

/// A subscription. Receiving takes a lock (one receive at a time);
/// `unsubscribe` cancels a pending receive through `stopped`.
#[pyclass(module = "blipmq._native", frozen)]
pub struct Subscription {
    pattern: String,
    inner: Arc<Mutex<Option<blipmq::Subscription>>>,
    stopped: CancellationToken,
}

impl Subscription {
    pub fn new(subscription: blipmq::Subscription) -> Subscription {
        Subscription {
            pattern: subscription.pattern().to_string(),
            inner: Arc::new(Mutex::new(Some(subscription))),
            stopped: CancellationToken::new(),
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
        &self.pattern
    }

    /// The next message; raises `TimeoutError` (601) after `timeout`
    /// seconds and `ClientClosed` (603) once the subscription has ended.
    #[pyo3(signature = (timeout=None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = duration(timeout)?;
        let (inner, stopped) = (self.inner.clone(), self.stopped.clone());
        awaitable(py, async move {
            let mut guard = inner.lock().await;
            let subscription = guard.as_mut().ok_or_else(ended)?;
            let next = subscription.next_message();
            let received = tokio::select! {
                message = within(timeout, next) => message,
                () = stopped.cancelled() => return Err(ended()),
            };
            match received {
                Some(Some(message)) => Ok(Message(message)),
                Some(None) => Err(ended()),
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
        let (inner, stopped) = (self.inner.clone(), self.stopped.clone());
        awaitable(py, async move {
            let mut guard = inner.lock().await;
            let subscription = guard.as_mut().ok_or_else(ended)?;
            let mut batch = subscription.try_next_batch(max_messages);
            if batch.is_empty() && max_messages > 0 {
                let next = subscription.next_message();
                let received = tokio::select! {
                    message = within(timeout, next) => message,
                    () = stopped.cancelled() => return Err(ended()),
                };
                match received {
                    Some(Some(first)) => {
                        batch.push(first);
                        batch.extend(subscription.try_next_batch(max_messages - 1));
                    }
                    Some(None) => return Err(ended()),
                    None => {}
                }
            }
            Ok(batch.into_iter().map(Message).collect::<Vec<_>>())
        })
    }

    /// Stop the subscription and wait for the broker to confirm. A pending
    /// receive ends with `ClientClosed`; calling it again does nothing.
    fn unsubscribe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.stopped.cancel();
        let inner = self.inner.clone();
        awaitable(py, async move {
            // Taken out: a second call finds nothing to undo.
            let taken = inner.lock().await.take();
            if let Some(subscription) = taken {
                subscription.unsubscribe().await.map_err(to_py)?;
            }
            Ok(Nothing)
        })
    }

    /// Stop receiving without deleting anything: a plain subscription ends,
    /// a durable one keeps its unacked messages for the next subscribe with
    /// its name (what dropping the Rust `Subscription` does).
    fn detach<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.stopped.cancel();
        let inner = self.inner.clone();
        awaitable(py, async move {
            drop(inner.lock().await.take());
            Ok(Nothing)
        })
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
