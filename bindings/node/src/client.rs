//! Connect, publish, subscribe, flush, close: one adapter per client crate
//! call.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use blipmq::foreign::{queue_stopped, CallQueue, ForeignEvent, Publishing, SubscribeRequest};
use blipmq::{Client, PublishBatch, PublishConfirm, Qos};
use bytes::Bytes;
use futures::StreamExt;
use napi::bindgen_prelude::{
    BigInt, Buffer, BufferSlice, Function, PromiseRaw, ToNapiValue, Uint32ArraySlice,
};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Env;
use napi_derive::napi;

use crate::error::{promise, Failure};
use crate::message::Header;
use crate::subscription::NativeSubscription;

#[napi(object)]
pub struct ConnectOptions {
    pub api_key: Option<String>,
    pub name: Option<String>,
    /// Reconnect with backoff after a lost connection (default true).
    pub reconnect: Option<bool>,
    pub connect_timeout_ms: Option<u32>,
    pub request_timeout_ms: Option<u32>,
    /// Messages buffered per subscription before the client stops reading.
    pub subscription_capacity: Option<u32>,
    /// Sends queued before publishing waits for room (a batch is one).
    pub outgoing_capacity: Option<u32>,
    /// Speak TLS with these options, whatever the address says.
    pub tls: Option<TlsOptions>,
}

/// TLS as `index.js` hands it over: PEM contents (as Node's `tls.connect`
/// takes them), every field optional (`{}`: the system's roots).
#[napi(object)]
pub struct TlsOptions {
    /// CA certificates to trust instead of the system's roots.
    pub ca: Option<Buffer>,
    /// The client certificate chain, for mutual TLS; goes with `key`.
    pub cert: Option<Buffer>,
    pub key: Option<Buffer>,
    /// The name the broker's certificate must be for, if not the address's host.
    pub server_name: Option<String>,
}

impl From<TlsOptions> for blipmq::tls::TlsOptions {
    fn from(o: TlsOptions) -> Self {
        let pem = |buffer: Buffer| blipmq::tls::Pem::Text(buffer.to_vec());
        blipmq::tls::TlsOptions {
            ca: o.ca.map(pem),
            client_cert: o.cert.map(pem),
            client_key: o.key.map(pem),
            server_name: o.server_name,
        }
    }
}

#[napi(object)]
pub struct PublishOptions {
    pub ttl_ms: Option<u32>,
    pub qos: Option<u8>,
    pub headers: Option<Vec<Header>>,
}

#[napi(object)]
pub struct SubscribeOptions {
    pub qos: Option<u8>,
    pub durable: Option<String>,
    pub group: Option<String>,
    pub ack_timeout_ms: Option<f64>,
    pub max_deliveries: Option<u32>,
}

/// Connect to the first of the broker addresses that answers, tried in
/// order; resolves once the handshake is done.
#[napi(ts_return_type = "Promise<NativeClient>")]
pub fn connect(
    env: &Env,
    addr: Vec<String>,
    options: Option<ConnectOptions>,
) -> napi::Result<PromiseRaw<'_, NativeClient>> {
    let options = options.map_or_else(Default::default, |o| {
        let millis = |ms: u32| Duration::from_millis(ms.into());
        blipmq::foreign::ConnectOptions {
            api_key: o.api_key,
            name: o.name,
            reconnect: o.reconnect,
            connect_timeout: o.connect_timeout_ms.map(millis),
            request_timeout: o.request_timeout_ms.map(millis),
            subscription_capacity: o.subscription_capacity.map(|c| c as usize),
            outgoing_capacity: o.outgoing_capacity.map(|c| c as usize),
            tls: o.tls.map(Into::into),
        }
    });
    let builder = options.apply(Client::builder());
    promise(env, async move {
        let client = builder.connect(addr).await?;
        Ok(NativeClient {
            batch: Mutex::new(client.batch()),
            calls: CallQueue::new(client),
        })
    })
}

/// Wraps `blipmq::Client`; dropping it (when JavaScript collects it)
/// closes the connection.
#[napi]
pub struct NativeClient {
    /// The client, and its calls in call order: JavaScript publishes many
    /// times without awaiting and expects the messages to go out in that
    /// order, and `flush` or `close` after them (see `blipmq::foreign`).
    calls: CallQueue,
    /// The batch `publish_batch` encodes into, kept between calls: a new
    /// one per call grew its buffer by doubling to its ~120 KiB, copying it
    /// and faulting in fresh pages each time (about a twentieth of a 16 B
    /// publisher's time).
    batch: Mutex<PublishBatch>,
}

impl NativeClient {
    fn client(&self) -> &Client {
        self.calls.client()
    }

    /// `work` after the calls before it; a Promise of its result.
    fn in_order<'env, T, F, Fut>(
        &self,
        env: &'env Env,
        work: F,
    ) -> napi::Result<PromiseRaw<'env, T>>
    where
        T: ToNapiValue + Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let done = self.calls.in_order(work);
        promise(env, async move {
            done.await.unwrap_or_else(|| Err(queue_stopped().into()))
        })
    }
}

#[napi]
impl NativeClient {
    /// Publish. A message that fits in the client's outgoing queue, with no
    /// call waiting before it, is queued right here, on the JavaScript
    /// thread; at QoS 0 this then returns `null`: no Promise and no trip
    /// through the runtime, which is what makes publishing fast. Otherwise
    /// it returns a Promise of the broker's message id (QoS 1, once
    /// confirmed; the next publish does not wait for it) or of `null`
    /// (QoS 0, once queued). The payload and header values are copied here,
    /// so the caller may reuse its buffers at once.
    #[napi(catch_unwind, ts_return_type = "Promise<bigint | null> | null")]
    pub fn publish<'env>(
        &self,
        env: &'env Env,
        topic: String,
        payload: BufferSlice,
        options: Option<PublishOptions>,
    ) -> napi::Result<Option<PromiseRaw<'env, Option<BigInt>>>> {
        let options = match options {
            None => blipmq::PublishOptions::default(),
            Some(o) => blipmq::PublishOptions {
                ttl_ms: o.ttl_ms.unwrap_or(0),
                qos: qos(o.qos).map_err(|failure| failure.into_js(env))?,
                headers: o
                    .headers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| (h.key, Bytes::copy_from_slice(&h.value)))
                    .collect(),
            },
        };
        let payload = Bytes::copy_from_slice(&payload);
        let confirmed = |confirm: PublishConfirm| async move {
            let id = confirm.confirmed().await?;
            Ok(id.map(BigInt::from))
        };
        match self
            .calls
            .publish(topic, payload, options)
            .map_err(|error| Failure::from(error).into_js(env))?
        {
            Publishing::Queued(confirm) if !confirm.is_qos1() => Ok(None),
            Publishing::Queued(confirm) => promise(env, confirmed(confirm)).map(Some),
            Publishing::InOrder(queued) => {
                promise(env, async move { confirmed(queued.await?).await }).map(Some)
            }
        }
    }

    /// Publish many QoS 0 messages, packed by `index.js`: message `i` goes
    /// to `topics[columns[3i]]` with the payload
    /// `payloads[columns[3i - 2] ?? 0 .. columns[3i + 1]]` (the previous
    /// message's end to its own) and the TTL `columns[3i + 2]` ms. Checked
    /// whole before anything is sent; then queued on the spot (`null`) or, when
    /// the outgoing queue is full or calls are queued before it, a Promise
    /// that resolves once queued, in call order. One crossing for the whole
    /// batch is what makes publishing from JavaScript cheap.
    #[napi(catch_unwind, ts_return_type = "Promise<void> | null")]
    pub fn publish_batch<'env>(
        &self,
        env: &'env Env,
        topics: Vec<String>,
        columns: Uint32ArraySlice,
        payloads: BufferSlice,
    ) -> napi::Result<Option<PromiseRaw<'env, ()>>> {
        let invalid = |message: String| Failure::invalid_argument(message).into_js(env);
        if columns.len() % 3 != 0 {
            return Err(invalid("batch columns come in threes".to_owned()));
        }
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        // Whatever a failed call left behind.
        batch.clear();
        let mut start = 0usize;
        for message in columns.chunks_exact(3) {
            let (topic, end, ttl_ms) = (message[0] as usize, message[1] as usize, message[2]);
            let topic = topics
                .get(topic)
                .ok_or_else(|| invalid(format!("batch topic {topic} is missing")))?;
            let payload = payloads
                .get(start..end)
                .ok_or_else(|| invalid(format!("batch payload {start}..{end} is out of bounds")))?;
            batch
                .push(topic, payload, ttl_ms)
                .map_err(|error| Failure::from(error).into_js(env))?;
            start = end;
        }
        match self
            .calls
            .publish_batch(&mut batch)
            .map_err(|error| Failure::from(error).into_js(env))?
        {
            None => Ok(None),
            // The queue is full: this batch waits its turn, and the next
            // call got a new one.
            Some(queued) => promise(env, async move { Ok(queued.await?) }).map(Some),
        }
    }

    /// Resolves once the broker has confirmed the subscription.
    #[napi(ts_return_type = "Promise<NativeSubscription>")]
    pub fn subscribe<'env>(
        &self,
        env: &'env Env,
        pattern: String,
        options: Option<SubscribeOptions>,
    ) -> napi::Result<PromiseRaw<'env, NativeSubscription>> {
        let client = self.client().clone();
        promise(env, async move {
            let request = options.map_or_else(Default::default, |o| SubscribeRequest {
                qos: o.qos,
                durable: o.durable,
                group: o.group,
                ack_timeout_ms: o.ack_timeout_ms,
                max_deliveries: o.max_deliveries,
            });
            let options = request
                .options()
                .map_err(|e| Failure::invalid_argument(e.message()))?;
            let subscription = client.subscribe_with(&pattern, options).await?;
            Ok(NativeSubscription::new(subscription))
        })
    }

    /// Resolves once the broker has handled everything sent before.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn flush<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.in_order(env, |client| async move { Ok(client.flush().await?) })
    }

    /// Send what is queued and close; subscriptions end.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.in_order(env, |client| async move {
            client.close().await;
            Ok(())
        })
    }

    /// Call `callback` with every change of the connection from now on,
    /// until the client has closed. The callback never keeps the process
    /// alive by itself.
    #[napi]
    pub fn on_event(&self, callback: Function<NativeEvent, ()>) -> napi::Result<()> {
        let callback = callback
            .build_threadsafe_function::<NativeEvent>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let mut events = Box::pin(blipmq::foreign::events(self.client()));
        // The stream ends after `Closed`.
        napi::bindgen_prelude::spawn(async move {
            while let Some(event) = events.next().await {
                callback.call(
                    NativeEvent::from(event),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        });
        Ok(())
    }

    /// `connected`, `reconnecting` or `closed`.
    #[napi(getter)]
    pub fn status(&self) -> String {
        format!("{:?}", self.client().status()).to_lowercase()
    }

    /// The largest payload the broker accepts.
    #[napi(getter)]
    pub fn max_message_size(&self) -> u32 {
        u32::try_from(self.client().max_message_size()).unwrap_or(u32::MAX)
    }
}

fn qos(value: Option<u8>) -> Result<Qos, Failure> {
    match value {
        None => Ok(Qos::default()),
        Some(v) => Qos::from_wire(v)
            .ok_or_else(|| Failure::invalid_argument(format!("qos {v} is not 0 or 1"))),
    }
}

/// A change of the client's connection (`blipmq::foreign::ForeignEvent`),
/// as `@blipmq/core`'s client.js turns it into a `Client` event: `kind` is
/// `connected`, `disconnected`, `reconnect_failed`, `server_error` or
/// `closed`, and the fields of that kind are set.
#[napi(object, object_from_js = false)]
pub struct NativeEvent {
    pub kind: String,
    /// `connected`: the broker's id for the new connection.
    pub connection_id: Option<BigInt>,
    /// `connected`: the broker address of the new connection, as given to
    /// connect.
    pub address: Option<String>,
    /// `reconnect_failed`: which attempt failed (from 1).
    pub attempt: Option<u32>,
    /// Why the connection ended (`disconnected`), why the attempt failed
    /// (`reconnect_failed`), the broker's words (`server_error`).
    pub message: Option<String>,
    /// `server_error`: the error frame's code; `disconnected`: the code that
    /// goes with the reason. With the code's name.
    pub code: Option<u32>,
    pub code_name: Option<String>,
    /// `disconnected`: `broker_closed`, `io` or `protocol`, and for `io`
    /// the I/O error's kind (`connection_reset`, ...).
    pub disconnect_kind: Option<String>,
    pub io_kind: Option<String>,
}

impl From<ForeignEvent> for NativeEvent {
    fn from(event: ForeignEvent) -> NativeEvent {
        NativeEvent {
            kind: event.kind.name().to_string(),
            connection_id: event.connection_id.map(BigInt::from),
            attempt: event.attempt,
            code: event.code.map(|code| u32::from(code.0)),
            code_name: event.code_name().map(str::to_string),
            disconnect_kind: event.disconnect.as_ref().map(|d| d.kind_name().to_string()),
            io_kind: event.disconnect.as_ref().and_then(|d| d.io_kind_name()),
            address: event.address,
            message: event.message,
        }
    }
}
