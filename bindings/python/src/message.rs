//! `Message`: a received message, read-only, with `ack()`, `nak()`,
//! `term()` and `in_progress()`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use blipmq::foreign::nak_delay_secs;

use crate::error::{invalid_argument, to_py};
use crate::runtime::{awaitable, Nothing};

/// A message delivered to a subscription.
#[pyclass(module = "blipmq._native", frozen)]
pub struct Message(pub blipmq::Message);

#[pymethods]
impl Message {
    /// The topic the message was published to (not the pattern that matched).
    #[getter]
    fn topic(&self) -> &str {
        self.0.topic()
    }

    /// The payload, byte for byte as published.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.payload())
    }

    /// The publisher's headers as `(key, value)` pairs, in order; keys may repeat.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.0
                .headers()
                .iter()
                .map(|(key, value)| (key, PyBytes::new(py, value))),
        )
    }

    /// The broker-assigned message id.
    #[getter]
    fn id(&self) -> u64 {
        self.0.id()
    }

    /// When the broker accepted the message, in ms since the Unix epoch.
    #[getter]
    fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }

    /// 1 on first delivery, higher when the broker redelivers.
    #[getter]
    fn delivery_count(&self) -> u32 {
        self.0.delivery_count()
    }

    /// What the broker acks this delivery by: unique among the
    /// subscription's unacked deliveries at QoS 1; 0 at QoS 0.
    #[getter]
    fn delivery_id(&self) -> u64 {
        self.0.delivery_id()
    }

    /// How many messages the broker discarded for this subscription just
    /// before this one (a full queue, an expired TTL, the memory budget):
    /// 0 when none were. The subscription's `on_drop` is told of them
    /// before this message is returned.
    #[getter]
    fn dropped_before(&self) -> u64 {
        self.0.dropped_before()
    }

    /// Acknowledge the message (returns at once for QoS 0 deliveries).
    fn ack<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let message = self.0.clone();
        awaitable(py, async move {
            message.ack().await.map_err(to_py)?;
            Ok(Nothing)
        })
    }

    /// Processing failed: deliver the message again, after `delay`
    /// seconds (0 = at once).
    #[pyo3(signature = (delay=0.0))]
    fn nak<'py>(&self, py: Python<'py>, delay: f64) -> PyResult<Bound<'py, PyAny>> {
        let delay = nak_delay_secs(delay).map_err(|e| invalid_argument(e.message()))?;
        let message = self.0.clone();
        awaitable(py, async move {
            message.nak_with_delay(delay).await.map_err(to_py)?;
            Ok(Nothing)
        })
    }

    /// The message can never be processed: the broker moves it to the
    /// dead-letter topic now.
    fn term<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let message = self.0.clone();
        awaitable(py, async move {
            message.term().await.map_err(to_py)?;
            Ok(Nothing)
        })
    }

    /// Still working: the broker restarts the delivery's ack timeout.
    fn in_progress<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let message = self.0.clone();
        awaitable(py, async move {
            message.in_progress().await.map_err(to_py)?;
            Ok(Nothing)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Message(topic={:?}, id={}, payload=<{} bytes>, headers=<{}>, delivery_count={})",
            self.0.topic(),
            self.0.id(),
            self.0.payload().len(),
            self.0.headers().len(),
            self.0.delivery_count()
        )
    }
}
