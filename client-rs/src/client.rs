//! The client handle: connect, publish, subscribe, flush, close.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blipmq_protocol::{headers, topic, ErrorCode, Frame, Header, Publish, Qos, Subscribe};
use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;

use crate::addresses::{self, Endpoint, ToBrokerAddresses};
use crate::batch::PublishBatch;
use crate::confirm::PublishConfirm;
use crate::connection;
use crate::error::{
    ConnectError, Error, Failure, PublishError, PublishErrorKind, RequestError, SubscribeError,
};
use crate::mailbox::mailbox;
use crate::options::{ClientOptions, PublishOptions, ReconnectPolicy, SubscribeOptions};
use crate::outbox::{Outbox, PushError};
use crate::state::{
    encode_frame_into, ClientEvent, ConnectionStatus, Inner, Pending, SubscriptionEntry,
};
use crate::subscription::Subscription;
use crate::trace;
use crate::transport::{Connector, Runtime};

/// A connection to a BlipMQ broker. Cheap to clone; all clones share one
/// connection. The connection closes when [`Client::close`] is called or the
/// last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _lifetime: Arc<CloseOnDrop>,
}

/// Closes the connection when the last `Client` clone goes away.
struct CloseOnDrop {
    inner: Arc<Inner>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.close();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &self.status())
            .finish()
    }
}

/// Builds a [`Client`] with options; see [`Client::builder`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    options: ClientOptions,
}

impl ClientBuilder {
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.options.api_key = Some(key.into());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.options.name = Some(name.into());
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.options.reconnect = policy;
        self
    }

    pub fn outgoing_capacity(mut self, frames: usize) -> Self {
        self.options.outgoing_capacity = frames.max(1);
        self
    }

    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.options.subscription_capacity = messages.max(1);
        self
    }

    /// Speak TLS with these options (a `tls://` address does too, with the
    /// defaults: the system's roots, the address's host as the name).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, options: crate::tls::TlsOptions) -> Self {
        self.options.tls = Some(options);
        self
    }

    /// Replace all options at once.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Connect over TCP on the ambient tokio runtime to one broker address
    /// or several ([`ToBrokerAddresses`]): `host:port` (or
    /// `tcp://host:port`), or `tls://host:port` for TLS, in any mix. The
    /// addresses are tried in turn until one completes the handshake; when
    /// none does, the error names each one's failure. After a lost
    /// connection the client reconnects to them in turn, starting with the
    /// one it was connected to.
    #[cfg(feature = "tokio")]
    pub async fn connect(self, addresses: impl ToBrokerAddresses) -> Result<Client, ConnectError> {
        let endpoints = self.native_endpoints(addresses::parse(&addresses)?)?;
        self.connect_to(endpoints, Arc::new(crate::transport::TokioRuntime))
            .await
    }

    /// Each address with what dials it: TLS for a `tls://` address or
    /// when TLS options are set (one TLS configuration, read once, for
    /// all of them), else plain TCP.
    #[cfg(feature = "tls")]
    fn native_endpoints(&self, addresses: Vec<String>) -> Result<Vec<Endpoint>, ConnectError> {
        let mut tls: Option<Arc<dyn Connector>> = None;
        let mut endpoints = Vec::with_capacity(addresses.len());
        for address in addresses {
            let (wants_tls, host_port) = crate::tls::parse_address(&address);
            let connector = if wants_tls || self.options.tls.is_some() {
                match &tls {
                    Some(connector) => connector.clone(),
                    None => tls.insert(self.tls_connector()?).clone(),
                }
            } else {
                Arc::new(crate::transport::TcpConnector)
            };
            endpoints.push(Endpoint {
                dial: host_port.to_string(),
                address,
                connector,
            });
        }
        Ok(endpoints)
    }

    #[cfg(feature = "tls")]
    fn tls_connector(&self) -> Result<Arc<dyn Connector>, ConnectError> {
        let options = self.options.tls.clone().unwrap_or_default();
        let connector = crate::transport::TlsConnector::new(&options).map_err(|e| {
            Error::new(
                crate::error::ConnectErrorKind::Tls,
                ErrorCode::ConnectFailed,
                e.to_string(),
            )
        })?;
        Ok(Arc::new(connector))
    }

    #[cfg(all(feature = "tokio", not(feature = "tls")))]
    fn native_endpoints(&self, addresses: Vec<String>) -> Result<Vec<Endpoint>, ConnectError> {
        let tcp: Arc<dyn Connector> = Arc::new(crate::transport::TcpConnector);
        Ok(addresses
            .into_iter()
            .map(|address| Endpoint {
                dial: address.clone(),
                address,
                connector: tcp.clone(),
            })
            .collect())
    }

    /// Connect through a custom transport and runtime (e.g. a WebSocket in
    /// a browser), to one address or several, tried in turn as with
    /// [`ClientBuilder::connect`]; the connector gets each address as
    /// given. When no address completes the handshake, the error names
    /// each one's failure; later disconnects are handled by the reconnect
    /// policy.
    pub async fn connect_with(
        self,
        addresses: impl ToBrokerAddresses,
        connector: Arc<dyn Connector>,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Client, ConnectError> {
        let endpoints = addresses::parse(&addresses)?
            .into_iter()
            .map(|address| Endpoint {
                dial: address.clone(),
                address,
                connector: connector.clone(),
            })
            .collect();
        self.connect_to(endpoints, runtime).await
    }

    /// Connect to the first of `endpoints` that answers and start the
    /// connection task.
    // On wasm32 the runtime (and so the client's state) is neither Send nor
    // Sync (`MaybeSend`): browsers run it on one thread, and the `Arc`s that
    // share it across threads natively are only shared handles there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    async fn connect_to(
        self,
        endpoints: Vec<Endpoint>,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Client, ConnectError> {
        let outgoing = Arc::new(Outbox::new(self.options.outgoing_capacity));
        let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
        let inner = Arc::new(Inner::new(
            self.options,
            runtime.clone(),
            outgoing,
            shutdown_tx,
        ));
        let connected = connection::connect_any(&inner, &endpoints, 0).await?;
        let (done_tx, done_rx) = oneshot::channel();
        runtime.spawn(Box::pin(connection::run(
            inner.clone(),
            endpoints,
            connected,
            shutdown_rx,
            done_tx,
        )));
        Ok(Client {
            _lifetime: Arc::new(CloseOnDrop {
                inner: inner.clone(),
                done: Mutex::new(Some(done_rx)),
            }),
            inner,
        })
    }
}

impl Client {
    /// Connect with default options to one broker address or several, e.g.
    /// `"127.0.0.1:7878"`, `"a:7878,b:7878"` or `["a:7878", "tls://b:7879"]`
    /// (see [`ClientBuilder::connect`]; [`ClientBuilder`] for options).
    #[cfg(feature = "tokio")]
    pub async fn connect(addresses: impl ToBrokerAddresses) -> Result<Client, ConnectError> {
        ClientBuilder::default().connect(addresses).await
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The runtime the client's task runs on (tokio's, or the browser's).
    pub(crate) fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }

    pub fn status(&self) -> ConnectionStatus {
        self.inner.status()
    }

    /// The broker address of the current connection, as given to connect
    /// (while reconnecting, of the connection that was lost).
    pub fn address(&self) -> String {
        self.inner.address.lock().unwrap().clone()
    }

    /// A stream of connection events from now on (connected, disconnected,
    /// reconnect failures, errors the broker sent unprompted, closed). It
    /// ends after `Closed`; made after the client has closed, it is empty.
    pub fn events(&self) -> impl futures::Stream<Item = ClientEvent> + use<> {
        self.inner.subscribe_events()
    }

    /// The largest payload the broker accepts (from its handshake).
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size.load(Ordering::Relaxed) as usize
    }

    /// Publish at QoS 0. Returns once the message is queued for sending;
    /// waits while the outgoing queue is full.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.publish_with(topic, payload, PublishOptions::default())
            .await
            .map(|_| ())
    }

    /// Publish with options. At QoS 1 this resolves with the broker-assigned
    /// message id once the broker confirms; at QoS 0 with `None` once queued.
    pub async fn publish_with(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<Option<u64>, PublishError> {
        self.submit_publish(topic, payload, options)
            .await?
            .confirmed()
            .await
    }

    /// The first half of [`Client::publish_with`]: resolves once the message
    /// is queued for sending (waiting while the outgoing queue is full), to
    /// a [`PublishConfirm`] that resolves when the broker confirms it (at
    /// once at QoS 0). Messages go out in the order their submits were
    /// queued, so a caller can have many QoS 1 publishes in flight and
    /// still keep their order: queue each, then await the confirms.
    pub async fn submit_publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        mut options: PublishOptions,
    ) -> Result<PublishConfirm, PublishError> {
        let payload = payload.into();
        let publish_id = self.check_publish(topic, &payload, &mut options)?;
        let encode =
            |out: &mut BytesMut| encode_publish(out, publish_id, topic, &payload, &options);
        if options.qos == Qos::AtMostOnce {
            self.inner
                .outgoing
                .push_with(encode)
                .await
                .map_err(|_| closed())?;
            return Ok(PublishConfirm::queued());
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .request_with(publish_id, Pending::Confirm(tx), encode)
            .await?;
        Ok(PublishConfirm::awaiting(&self.inner, publish_id, rx))
    }

    /// [`Client::submit_publish`] without waiting, at either QoS: the
    /// message is queued now, or, when the outgoing queue is full, nothing
    /// is sent and this fails with `QueueFull` (402). For a binding that
    /// must keep the order of calls made on a thread that cannot wait
    /// (JavaScript's): queue here, and fall back to waiting in order only
    /// when the queue is full.
    pub fn try_submit_publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        mut options: PublishOptions,
    ) -> Result<PublishConfirm, PublishError> {
        let payload = payload.into();
        let publish_id = self.check_publish(topic, &payload, &mut options)?;
        let encode =
            |out: &mut BytesMut| encode_publish(out, publish_id, topic, &payload, &options);
        let push_error = |e| match e {
            PushError::Full => queue_full(),
            PushError::Closed => closed(),
        };
        if options.qos == Qos::AtMostOnce {
            self.inner
                .outgoing
                .try_push_with(encode)
                .map_err(push_error)?;
            return Ok(PublishConfirm::queued());
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .try_request_with(publish_id, Pending::Confirm(tx), encode)
            .map_err(push_error)?;
        Ok(PublishConfirm::awaiting(&self.inner, publish_id, rx))
    }

    /// Publish at QoS 0 without waiting: the message is queued for sending
    /// if the outgoing queue has room, and otherwise nothing is sent and this
    /// fails with `QueueFull` (402). For callers that must not wait, such as
    /// a binding answering a call from another language's thread;
    /// [`Client::publish_with`] waits for room instead. `options.qos` must be
    /// `AtMostOnce` (a QoS 1 publish waits for its confirm by nature):
    /// anything else fails with `InvalidArgument` (301).
    pub fn try_publish_with(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        if options.qos != Qos::AtMostOnce {
            return Err(Error::new(
                PublishErrorKind::InvalidArgument,
                ErrorCode::InvalidArgument,
                "try_publish_with publishes at QoS 0 only; use publish_with for QoS 1",
            ));
        }
        // At QoS 0 the confirm is only that it was queued.
        self.try_submit_publish(topic, payload, options).map(drop)
    }

    /// An empty batch of QoS 0 messages for [`Client::try_publish_batch`] or
    /// [`Client::publish_batch`], checked against this client's broker.
    pub fn batch(&self) -> PublishBatch {
        PublishBatch::new(self.max_message_size())
    }

    /// Queue every message of `batch` without waiting, in push order, and
    /// empty it. When the outgoing queue is full this fails with `QueueFull`
    /// (402) and leaves the batch as it was, so the caller can wait with
    /// [`Client::publish_batch`] instead. An empty batch sends nothing.
    pub fn try_publish_batch(&self, batch: &mut PublishBatch) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_open().map_err(PublishError::from)?;
        match self.inner.outgoing.try_push(batch.frames()) {
            Ok(()) => {
                batch.clear();
                Ok(())
            }
            Err(PushError::Full) => Err(queue_full()),
            Err(PushError::Closed) => Err(closed()),
        }
    }

    /// Queue every message of `batch` in push order, waiting while the
    /// outgoing queue is full. The batch takes one slot of that queue
    /// whatever its size.
    pub async fn publish_batch(&self, batch: PublishBatch) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_open().map_err(PublishError::from)?;
        self.inner
            .outgoing
            .push(batch.frames())
            .await
            .map_err(|_| closed())
    }

    /// Check a publish as the broker would (topic, size, headers), add the
    /// current trace context to its headers, and give it its publish id (0
    /// at QoS 0).
    fn check_publish(
        &self,
        topic: &str,
        payload: &[u8],
        options: &mut PublishOptions,
    ) -> Result<u64, PublishError> {
        trace::inject_current(&mut options.headers);
        self.check_open().map_err(PublishError::from)?;
        check_topic(topic)?;
        check_payload_size(payload.len(), self.max_message_size())?;
        if !options.headers.is_empty() {
            let limits = *self.inner.header_limits.lock().unwrap();
            let pairs = options.headers.iter().map(|(k, v)| (k, &v[..]));
            if let Err(e) = headers::validate_headers(pairs, &limits) {
                let kind = match e.code() {
                    ErrorCode::InvalidHeader => PublishErrorKind::InvalidHeader,
                    _ => PublishErrorKind::HeadersTooLarge,
                };
                return Err(Error::new(kind, e.code(), e.to_string()));
            }
        }
        Ok(match options.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => self.inner.next_id(),
        })
    }

    /// Subscribe to a topic or pattern (`*` = one token, `>` = the rest).
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(pattern, SubscribeOptions::default())
            .await
    }

    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, SubscribeError> {
        self.check_open().map_err(SubscribeError::from)?;
        if let Err(e) = topic::validate_pattern(pattern) {
            return Err(SubscribeError::from(Error::new(
                Failure::Rejected,
                ErrorCode::InvalidTopic,
                format!("{e}: {pattern:?}"),
            )));
        }
        let local_id = self.inner.next_id();
        let (sender, receiver) = mailbox(self.inner.options.subscription_capacity);
        self.inner.subscriptions.lock().unwrap().by_local.insert(
            local_id,
            SubscriptionEntry {
                pattern: pattern.to_string(),
                options: options.clone(),
                sender,
                server_id: None,
                confirmed: false,
            },
        );
        let request_id = self.inner.next_id();
        let frame = Frame::Subscribe(Subscribe {
            request_id,
            pattern,
            qos: options.qos.as_wire(),
            durable_name: options.durable.as_deref(),
            queue_group: options.group.as_deref(),
            ack_timeout_ms: options.ack_timeout_ms(),
            max_deliveries: options.max_deliveries,
        });
        let (tx, rx) = oneshot::channel();
        let result = match self
            .inner
            .request(
                request_id,
                Pending::Subscribe {
                    local_id,
                    reply: tx,
                },
                &frame,
            )
            .await
        {
            Ok(()) => self.inner.await_reply(request_id, rx).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => Ok(Subscription::new(
                self.inner.clone(),
                local_id,
                pattern.to_string(),
                receiver,
            )),
            Err(e) => {
                self.inner.subscriptions.lock().unwrap().remove(local_id);
                Err(e.into())
            }
        }
    }

    /// Wait until the broker has handled every frame this client sent
    /// before (a Ping/Pong round trip behind them).
    pub async fn flush(&self) -> Result<(), RequestError> {
        self.check_open()?;
        let nonce = self.inner.next_id();
        let (tx, rx) = oneshot::channel();
        self.inner
            .request(nonce, Pending::Request(tx), &Frame::Ping { nonce })
            .await?;
        self.inner.await_reply(nonce, rx).await?;
        Ok(())
    }

    /// Send what is queued, close the connection and wait for the client's
    /// task to finish. Subscriptions end; later calls fail with `Closed`.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.close();
        let done = self._lifetime.done.lock().unwrap().take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    fn check_open(&self) -> Result<(), Error<Failure>> {
        if self.inner.is_closed() {
            return Err(Failure::Closed.error("the client is closed"));
        }
        Ok(())
    }
}

/// A publish's topic is checked here before anything is queued.
pub(crate) fn check_topic(topic: &str) -> Result<(), PublishError> {
    topic::validate_topic(topic).map_err(|e| {
        Error::new(
            PublishErrorKind::InvalidTopic,
            ErrorCode::InvalidTopic,
            format!("{e}: {topic:?}"),
        )
    })
}

/// A payload over the broker's limit is refused here, before it is queued.
pub(crate) fn check_payload_size(len: usize, max: usize) -> Result<(), PublishError> {
    if len > max {
        return Err(Error::new(
            PublishErrorKind::MessageTooLarge,
            ErrorCode::MessageTooLarge,
            format!("payload of {len} bytes exceeds the broker's limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// Append a checked publish's frame to `out` (in place: straight into the
/// outbox).
fn encode_publish(
    out: &mut BytesMut,
    publish_id: u64,
    topic: &str,
    payload: &[u8],
    options: &PublishOptions,
) {
    encode_frame_into(
        &Frame::Publish(Publish {
            publish_id,
            topic,
            payload,
            ttl_ms: options.ttl_ms,
            qos: options.qos.as_wire(),
            headers: options
                .headers
                .iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
        }),
        out,
    );
}

/// A send the outgoing queue had no room for.
pub(crate) fn queue_full() -> PublishError {
    Error::new(
        PublishErrorKind::QueueFull,
        ErrorCode::QueueFull,
        "the outgoing queue is full; nothing was sent",
    )
}

/// A send after the outgoing queue closed.
fn closed() -> PublishError {
    PublishError::from(Failure::Closed.error("the client is closed"))
}
