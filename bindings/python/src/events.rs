//! `Client.events()`: the changes of a client's connection (client-rs's
//! `ClientEvent`s, as `blipmq::foreign::ForeignEvent`s), one awaitable at a
//! time. `blipmq/_events.py` turns each into its public class.

use std::pin::Pin;
use std::sync::Arc;

use blipmq::foreign::{EventKind, ForeignDisconnect, ForeignEvent};
use futures::{Stream, StreamExt};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use tokio::sync::Mutex;

use crate::error::{client_closed, timed_out};
use crate::subscription::{duration, within};

type EventStream = Pin<Box<dyn Stream<Item = ForeignEvent> + Send>>;

/// The events of one client from the moment `Client.events()` was called;
/// ends after the client's `Closed` event. Each call of `events()` gets
/// every event, whatever other listeners there are.
#[pyclass(module = "blipmq._native", frozen)]
pub struct Events {
    /// Ends after `Closed` (the client crate's stream does).
    stream: Arc<Mutex<EventStream>>,
}

impl Events {
    pub fn new(stream: impl Stream<Item = ForeignEvent> + Send + 'static) -> Events {
        Events {
            stream: Arc::new(Mutex::new(Box::pin(stream))),
        }
    }
}

fn ended() -> PyErr {
    client_closed("the client has closed: no more events")
}

#[pymethods]
impl Events {
    /// The next event as a tuple `(kind, *fields)`; raises `TimeoutError`
    /// (601) after `timeout` seconds and `ClientClosed` (603) after the
    /// `closed` event. A wait that is cancelled or times out loses no event.
    #[pyo3(signature = (timeout=None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = duration(timeout)?;
        let stream = self.stream.clone();
        crate::runtime::awaitable(py, async move {
            let mut events = stream.lock().await;
            match within(timeout, events.next()).await {
                None => Err(timed_out("no event within the timeout")),
                Some(None) => Err(ended()),
                Some(Some(event)) => to_tuple(event),
            }
        })
    }
}

/// `(kind, *fields)`: `("connected", connection_id, address)`,
/// `("disconnected", reason, disconnect_kind, code, io_kind)`,
/// `("reconnect_failed", attempt, error)`,
/// `("server_error", code, code_name, message)`, `("closed",)`.
fn to_tuple(event: ForeignEvent) -> PyResult<Py<PyAny>> {
    let kind = event.kind.name();
    Python::attach(|py| match event.kind {
        EventKind::Connected => (kind, event.connection_id, event.address).into_py_any(py),
        EventKind::Disconnected => {
            let disconnect = event.disconnect.as_ref();
            (
                kind,
                event.message,
                disconnect.map(ForeignDisconnect::kind_name),
                event.code.map(|code| code.0),
                disconnect.and_then(ForeignDisconnect::io_kind_name),
            )
                .into_py_any(py)
        }
        EventKind::ReconnectFailed => (kind, event.attempt, event.message).into_py_any(py),
        EventKind::ServerError => (
            kind,
            event.code.map(|code| code.0),
            event.code_name(),
            event.message,
        )
            .into_py_any(py),
        EventKind::Closed => (kind,).into_py_any(py),
    })
}
