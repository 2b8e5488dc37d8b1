//! Connect, publish, subscribe, flush, close: one adapter per client crate
//! call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blipmq::foreign::SubscribeRequest;
use blipmq::{Client, PublishBatch};

use crate::batch::unpack;
use crate::error::NativeError;
use crate::events::NativeEvents;
use crate::message::Header;
use crate::runtime::on_runtime;
use crate::subscription::NativeSubscription;

/// Delivery guarantee of a publish or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Qos {
    /// Fire and forget.
    AtMostOnce,
    /// Publishes are confirmed once stored; durable subscriptions keep
    /// messages until acked.
    AtLeastOnce,
}

impl From<Qos> for blipmq::Qos {
    fn from(qos: Qos) -> blipmq::Qos {
        match qos {
            Qos::AtMostOnce => blipmq::Qos::AtMostOnce,
            Qos::AtLeastOnce => blipmq::Qos::AtLeastOnce,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionStatus {
    Connected,
    /// The connection dropped; the client is reconnecting with backoff.
    Reconnecting,
    /// Closed by the user, or reconnecting gave up (or is disabled).
    Closed,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct ConnectOptions {
    /// Required when the broker has API keys configured.
    #[uniffi(default = None)]
    pub api_key: Option<String>,
    /// Sent in the handshake; the broker logs it.
    #[uniffi(default = None)]
    pub name: Option<String>,
    /// Reconnect with backoff after a lost connection.
    #[uniffi(default = true)]
    pub reconnect: bool,
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<u32>,
    #[uniffi(default = None)]
    pub request_timeout_ms: Option<u32>,
    /// Messages buffered per subscription before the client stops reading.
    #[uniffi(default = None)]
    pub subscription_capacity: Option<u32>,
    /// TLS with these options (also without a `tls://` address).
    #[uniffi(default = None)]
    pub tls: Option<TlsOptions>,
}

/// TLS to the broker: the CA to trust (a PEM file or PEM text; the system's
/// roots when neither), a client certificate and key for mutual TLS, and
/// the name the broker's certificate must be for when it is not the
/// address's host.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct TlsOptions {
    #[uniffi(default = None)]
    pub ca_file: Option<String>,
    #[uniffi(default = None)]
    pub ca_pem: Option<String>,
    #[uniffi(default = None)]
    pub cert_file: Option<String>,
    #[uniffi(default = None)]
    pub key_file: Option<String>,
    #[uniffi(default = None)]
    pub server_name: Option<String>,
}

impl TlsOptions {
    fn into_client(self) -> blipmq::tls::TlsOptions {
        use blipmq::tls::Pem;
        let file = |path: String| Pem::File(path.into());
        blipmq::tls::TlsOptions {
            ca: self
                .ca_file
                .map(file)
                .or(self.ca_pem.map(|text| Pem::Text(text.into_bytes()))),
            client_cert: self.cert_file.map(file),
            client_key: self.key_file.map(file),
            server_name: self.server_name,
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct PublishOptions {
    /// How long the message may wait for delivery, in ms; 0 = the broker's default.
    #[uniffi(default = 0)]
    pub ttl_ms: u32,
    pub qos: Qos,
    /// Delivered with the message, in order; keys may repeat.
    #[uniffi(default = [])]
    pub headers: Vec<Header>,
}

impl From<PublishOptions> for blipmq::PublishOptions {
    fn from(options: PublishOptions) -> blipmq::PublishOptions {
        blipmq::PublishOptions {
            ttl_ms: options.ttl_ms,
            qos: options.qos.into(),
            headers: options
                .headers
                .into_iter()
                .map(|h| (h.key, h.value))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct SubscribeOptions {
    pub qos: Qos,
    /// The name of a durable subscription (QoS 1), which outlives the connection.
    #[uniffi(default = None)]
    pub durable: Option<String>,
    /// A queue group: members sharing a name share the messages.
    #[uniffi(default = None)]
    pub group: Option<String>,
    /// QoS 1: this subscription's ack timeout in ms (the broker's default
    /// when absent).
    #[uniffi(default = None)]
    pub ack_timeout_ms: Option<f64>,
    /// QoS 1: deliveries before the dead-letter topic (the broker's default
    /// when absent).
    #[uniffi(default = None)]
    pub max_deliveries: Option<u32>,
}

/// Connect to the first of the broker addresses that answers, tried in
/// order (after a lost connection, in turn from the one it was connected
/// to); returns once the handshake is done.
#[uniffi::export]
pub async fn connect(
    addresses: Vec<String>,
    options: ConnectOptions,
) -> Result<Arc<NativeClient>, NativeError> {
    let millis = |ms: u32| Duration::from_millis(ms.into());
    let options = blipmq::foreign::ConnectOptions {
        api_key: options.api_key,
        name: options.name,
        reconnect: Some(options.reconnect),
        connect_timeout: options.connect_timeout_ms.map(millis),
        request_timeout: options.request_timeout_ms.map(millis),
        subscription_capacity: options.subscription_capacity.map(|c| c as usize),
        outgoing_capacity: None,
        tls: options.tls.map(TlsOptions::into_client),
    };
    let builder = options.apply(Client::builder());
    let client = on_runtime(builder.connect(addresses)).await?;
    Ok(Arc::new(NativeClient {
        kept: Mutex::new(Kept {
            batch: client.batch(),
            refused: None,
        }),
        client,
    }))
}

/// Wraps `blipmq::Client`. Dropping the last reference (the foreign
/// object's `close()`/`destroy()` or its cleaner) closes the connection.
#[derive(uniffi::Object)]
pub struct NativeClient {
    client: Client,
    /// What `try_publish_packed` encodes into, kept between calls so that
    /// its buffer is reused, and kept for `publish_kept` when the outgoing
    /// queue was full.
    kept: Mutex<Kept>,
}

struct Kept {
    batch: PublishBatch,
    /// The first entry of `batch`'s packing that the client refused.
    refused: Option<NativeError>,
}

/// `len` bytes at `address` in the foreign caller's memory.
fn foreign_bytes<'a>(address: u64, len: u32) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the one caller, the Kotlin layer, passes the address of its
    // own direct buffer holding `len` packed bytes, which it neither
    // changes nor frees until the call that reads them has returned; the
    // slice does not outlive that call.
    unsafe { std::slice::from_raw_parts(address as usize as *const u8, len as usize) }
}

#[uniffi::export]
impl NativeClient {
    /// At QoS 1 returns the broker's message id once the broker has stored
    /// the message; at QoS 0 returns `None` once the message is queued.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<Option<u64>, NativeError> {
        let options = options.into();
        Ok(on_runtime(self.client.publish_with(&topic, payload, options)).await?)
    }

    /// Queue a QoS 0 message now, without waiting: `true` once queued,
    /// `false` (nothing sent) when the outgoing queue is full, and the
    /// caller then waits with `publish`. One plain call instead of an async
    /// one (several crossings of the foreign boundary each).
    pub fn try_publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<bool, NativeError> {
        match self
            .client
            .try_publish_with(&topic, payload, options.into())
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == blipmq::PublishErrorKind::QueueFull => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Queue QoS 0 messages packed as `batch.rs` describes, in order, now:
    /// `true` once queued; `false` when the outgoing queue is full, and
    /// then they are kept for `publish_kept`, which the caller must call
    /// next. Fails with ClientClosed (603), nothing sent, on a closed
    /// client; with the first refusal (e.g. InvalidTopic) when the client
    /// refused some entries and queued the others.
    ///
    /// The bytes are read from the caller's memory, `len` bytes at
    /// `address`, which must stay readable and unchanged until this
    /// returns (the Kotlin layer's direct buffer): a byte array lowered by
    /// uniffi is read one byte at a time, several times the cost of
    /// everything else a batch takes. Nothing is read after the call.
    pub fn try_publish_packed(&self, address: u64, len: u32) -> Result<bool, NativeError> {
        let packed = foreign_bytes(address, len);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        // Whatever a failed call left behind.
        kept.batch.clear();
        kept.refused = unpack(&mut kept.batch, packed)?;
        match self.client.try_publish_batch(&mut kept.batch) {
            Ok(()) => kept.refused.take().map_or(Ok(true), Err),
            Err(e) if e.kind() == blipmq::PublishErrorKind::QueueFull => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Queue what `try_publish_packed` kept when the outgoing queue was
    /// full, waiting for room; then fails as that call would have.
    pub async fn publish_kept(&self) -> Result<(), NativeError> {
        let (batch, refused) = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let batch = std::mem::replace(&mut kept.batch, self.client.batch());
            (batch, kept.refused.take())
        };
        on_runtime(self.client.publish_batch(batch)).await?;
        refused.map_or(Ok(()), Err)
    }

    /// Returns once the broker has confirmed the subscription.
    pub async fn subscribe(
        &self,
        pattern: String,
        options: SubscribeOptions,
    ) -> Result<Arc<NativeSubscription>, NativeError> {
        let request = SubscribeRequest {
            qos: Some(blipmq::Qos::from(options.qos).as_wire()),
            durable: options.durable,
            group: options.group,
            ack_timeout_ms: options.ack_timeout_ms,
            max_deliveries: options.max_deliveries,
        };
        let options = request
            .options()
            .map_err(|e| NativeError::from_code(e.code(), e.message()))?;
        let subscription = on_runtime(self.client.subscribe_with(&pattern, options)).await?;
        Ok(Arc::new(NativeSubscription::new(subscription)))
    }

    /// Returns once the broker has handled everything sent before.
    pub async fn flush(&self) -> Result<(), NativeError> {
        Ok(on_runtime(self.client.flush()).await?)
    }

    /// Send what is queued, close the connection and wait for the client's
    /// task to finish; subscriptions end, later calls fail with ClientClosed
    /// (603). (Not `close`: uniffi gives every object a `close()` that frees
    /// the handle.)
    pub async fn shutdown(&self) {
        on_runtime(self.client.close()).await
    }

    pub fn status(&self) -> ConnectionStatus {
        match self.client.status() {
            blipmq::ConnectionStatus::Connected => ConnectionStatus::Connected,
            blipmq::ConnectionStatus::Reconnecting => ConnectionStatus::Reconnecting,
            blipmq::ConnectionStatus::Closed => ConnectionStatus::Closed,
        }
    }

    /// The connection's changes from this call on (see `events.rs`).
    pub fn events(&self) -> Arc<NativeEvents> {
        Arc::new(NativeEvents::new(blipmq::foreign::events(&self.client)))
    }

    /// The largest payload the broker accepts (from its handshake).
    pub fn max_message_size(&self) -> u64 {
        self.client.max_message_size() as u64
    }
}
