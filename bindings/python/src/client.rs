//! `connect` and `Client`: short adapters over `blipmq::Client`.

use std::path::PathBuf;

use blipmq::foreign::{queue_stopped, CallQueue, Publishing, SubscribeRequest};
use blipmq::tls::{Pem, TlsOptions};
use blipmq::{ConnectionStatus, Headers, PublishOptions, Qos};
use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyDict, PyString};

use crate::error::{invalid_argument, to_py};
use crate::events::Events;
use crate::runtime::{awaitable, Nothing};
use crate::subscription::{duration, Subscription};

/// Connect to a broker; resolves to a `Client`. `addr` is one address or a
/// list of them, tried in turn. Timeouts are in seconds; `tls` is a
/// `blipmq.TLS` (TLS with its options, whatever the address).
#[pyfunction]
#[pyo3(signature = (addr, api_key=None, name=None, connect_timeout=None, request_timeout=None, reconnect=true, subscription_capacity=None, tls=None))]
#[allow(clippy::too_many_arguments)]
pub fn connect<'py>(
    py: Python<'py>,
    addr: Addresses,
    api_key: Option<String>,
    name: Option<String>,
    connect_timeout: Option<f64>,
    request_timeout: Option<f64>,
    reconnect: bool,
    subscription_capacity: Option<usize>,
    tls: Option<Tls>,
) -> PyResult<Bound<'py, PyAny>> {
    let options = blipmq::foreign::ConnectOptions {
        api_key,
        name,
        reconnect: Some(reconnect),
        connect_timeout: duration(connect_timeout)?,
        request_timeout: duration(request_timeout)?,
        subscription_capacity,
        outgoing_capacity: None,
        tls: tls.map(Tls::into_options),
    };
    let builder = options.apply(blipmq::Client::builder());
    awaitable(py, async move {
        let client = match addr {
            Addresses::One(address) => builder.connect(address).await,
            Addresses::Many(list) => builder.connect(list).await,
        }
        .map_err(to_py)?;
        Ok(Client {
            calls: CallQueue::new(client),
        })
    })
}

/// One broker address (`str`, which may list several separated by commas)
/// or a list of them.
#[derive(FromPyObject)]
pub enum Addresses {
    One(String),
    Many(Vec<String>),
}

/// `blipmq.TLS`, read by attribute: its fields are named as Python's `ssl`
/// module names them (`cafile`, `cadata`, `certfile`, `keyfile`,
/// `server_hostname`), and mean the same.
#[derive(FromPyObject)]
pub struct Tls {
    cafile: Option<PathBuf>,
    cadata: Option<PemText>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    server_hostname: Option<String>,
}

/// PEM as `str`, or as `bytes` of its text.
#[derive(FromPyObject)]
enum PemText {
    Str(String),
    Bytes(PyBackedBytes),
}

impl Tls {
    fn into_options(self) -> TlsOptions {
        let ca = match (self.cafile, self.cadata) {
            (Some(path), _) => Some(Pem::File(path)),
            (None, Some(PemText::Str(text))) => Some(Pem::Text(text.into_bytes())),
            (None, Some(PemText::Bytes(bytes))) => Some(Pem::Text(bytes.to_vec())),
            (None, None) => None,
        };
        TlsOptions {
            ca,
            // As `ssl.SSLContext.load_cert_chain`: without a keyfile, the
            // key is in the certfile.
            client_key: self
                .keyfile
                .or_else(|| self.certfile.clone())
                .map(Pem::File),
            client_cert: self.certfile.map(Pem::File),
            server_name: self.server_hostname,
        }
    }
}

/// A connection to a broker (see `blipmq.Client` for the public API).
#[pyclass(module = "blipmq._native", frozen)]
pub struct Client {
    /// The client, and its calls in call order: publishes made without
    /// awaiting each go out in that order, and `flush` and `close` after
    /// them (see `blipmq::foreign`).
    calls: CallQueue,
}

impl Client {
    fn client(&self) -> &blipmq::Client {
        self.calls.client()
    }
}

#[pymethods]
impl Client {
    /// The largest payload the broker accepts.
    #[getter]
    fn max_message_size(&self) -> usize {
        self.client().max_message_size()
    }

    /// `"connected"`, `"reconnecting"` or `"closed"`.
    #[getter]
    fn status(&self) -> &'static str {
        match self.client().status() {
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::Reconnecting => "reconnecting",
            ConnectionStatus::Closed => "closed",
        }
    }

    /// The connection's changes from now on (see `events.rs`).
    fn events(&self) -> Events {
        Events::new(blipmq::foreign::events(self.client()))
    }

    /// Publish; resolves to `None` at QoS 0 and to the message id at QoS 1.
    #[pyo3(signature = (topic, payload, ttl_ms=0, qos=0, headers=None))]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        topic: String,
        payload: PyBackedBytes,
        ttl_ms: u32,
        qos: u8,
        headers: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = PublishOptions {
            ttl_ms,
            qos: qos_from(qos)?,
            headers: headers.map(headers_from).transpose()?.unwrap_or_default(),
        };
        // Queued now (or given its place in line) so that call order holds;
        // an error is raised when the awaitable is awaited, as before.
        let published = self
            .calls
            .publish(topic, Bytes::from_owner(payload), options);
        awaitable(py, async move {
            let confirm = match published.map_err(to_py)? {
                Publishing::Queued(confirm) => confirm,
                Publishing::InOrder(queued) => queued.await.map_err(to_py)?,
            };
            confirm.confirmed().await.map_err(to_py)
        })
    }

    /// Queue a QoS 0 message without waiting and without an awaitable:
    /// raises `QueueFull` (402) when the outgoing queue is full.
    #[pyo3(signature = (topic, payload, ttl_ms=0, headers=None))]
    fn publish_nowait(
        &self,
        topic: PyBackedStr,
        payload: PyBackedBytes,
        ttl_ms: u32,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let options = PublishOptions {
            ttl_ms,
            qos: Qos::AtMostOnce,
            headers: headers.map(headers_from).transpose()?.unwrap_or_default(),
        };
        self.calls
            .try_publish_now(&topic, Bytes::from_owner(payload), options)
            .map(drop)
            .map_err(to_py)
    }

    /// Subscribe to a topic or pattern; resolves once the broker confirms.
    /// `ack_timeout` is in seconds (QoS 1; `None` = the broker's default).
    #[pyo3(signature = (pattern, qos=0, durable=None, group=None, ack_timeout=None, max_deliveries=None))]
    #[allow(clippy::too_many_arguments)]
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        pattern: String,
        qos: u8,
        durable: Option<String>,
        group: Option<String>,
        ack_timeout: Option<f64>,
        max_deliveries: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = SubscribeRequest {
            qos: Some(qos),
            durable,
            group,
            ack_timeout_ms: ack_timeout.map(|seconds| seconds * 1000.0),
            max_deliveries,
        }
        .options()
        .map_err(|e| invalid_argument(e.message()))?;
        let client = self.client().clone();
        awaitable(py, async move {
            let subscription = client
                .subscribe_with(&pattern, options)
                .await
                .map_err(to_py)?;
            Ok(Subscription::new(subscription))
        })
    }

    /// Resolves once the broker has handled everything sent before.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let flushed = self
            .calls
            .in_order(|client| async move { client.flush().await });
        awaitable(py, async move {
            flushed
                .await
                .unwrap_or_else(|| Err(queue_stopped()))
                .map_err(to_py)?;
            Ok(Nothing)
        })
    }

    /// Send what is queued, then close; subscriptions end.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let closed = self
            .calls
            .in_order(|client| async move { client.close().await });
        let client = self.client().clone();
        awaitable(py, async move {
            if closed.await.is_none() {
                // The queue stopped first: close anyway.
                client.close().await;
            }
            Ok(Nothing)
        })
    }
}

fn qos_from(qos: u8) -> PyResult<Qos> {
    Qos::from_wire(qos).ok_or_else(|| invalid_argument(&format!("qos must be 0 or 1, not {qos}")))
}

/// Headers from a mapping or an iterable of `(key, value)` pairs; values
/// are `bytes` or `str` (sent as UTF-8).
fn headers_from(value: &Bound<'_, PyAny>) -> PyResult<Headers> {
    let pairs = match value.cast::<PyDict>() {
        Ok(dict) => dict.items().into_any(),
        Err(_) if value.hasattr("items")? => value.call_method0("items")?,
        Err(_) => value.clone(),
    };
    pairs
        .try_iter()?
        .map(|pair| {
            let (key, value): (String, Bound<'_, PyAny>) = pair?.extract()?;
            let value = match value.cast::<PyString>() {
                Ok(text) => Bytes::copy_from_slice(text.to_cow()?.as_bytes()),
                Err(_) => Bytes::from_owner(value.extract::<PyBackedBytes>()?),
            };
            Ok((key, value))
        })
        .collect()
}
