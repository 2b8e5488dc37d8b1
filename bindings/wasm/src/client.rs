//! Connect, publish, subscribe, flush, close: one adapter per client crate
//! call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use blipmq::foreign::{queue_stopped, CallQueue, ForeignEvent, Publishing, SubscribeRequest};
use blipmq::transport::{WebRuntime, WebSocketConnector};
use blipmq::{Client, ConnectionStatus, Headers, PublishConfirm, Qos};
use bytes::Bytes;
use futures::StreamExt;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

use crate::error::{invalid_argument, to_js};
use crate::subscription::NativeSubscription;

/// Connect to the first of the brokers' WebSocket listeners
/// (`ws://host:port`) that answers, tried in order; resolves once the
/// handshake is done. `webSocket` replaces the host's global WebSocket
/// class (Node 20 has none).
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen]
pub async fn connect(
    addr: Vec<String>,
    #[wasm_bindgen(js_name = apiKey)] api_key: Option<String>,
    name: Option<String>,
    reconnect: bool,
    #[wasm_bindgen(js_name = connectTimeoutMs)] connect_timeout_ms: Option<u32>,
    #[wasm_bindgen(js_name = requestTimeoutMs)] request_timeout_ms: Option<u32>,
    #[wasm_bindgen(js_name = subscriptionCapacity)] subscription_capacity: Option<u32>,
    #[wasm_bindgen(js_name = webSocket)] web_socket: Option<Function>,
) -> Result<NativeClient, JsValue> {
    let millis = |ms: u32| Duration::from_millis(ms.into());
    let options = blipmq::foreign::ConnectOptions {
        api_key,
        name,
        reconnect: Some(reconnect),
        connect_timeout: connect_timeout_ms.map(millis),
        request_timeout: request_timeout_ms.map(millis),
        subscription_capacity: subscription_capacity.map(|c| c as usize),
        outgoing_capacity: None,
    };
    let builder = options.apply(Client::builder());
    let connector = match web_socket {
        Some(class) => WebSocketConnector::with_constructor(class),
        None => WebSocketConnector::new(),
    };
    let client = builder
        .connect_with(addr, Arc::new(connector), Arc::new(WebRuntime))
        .await
        .map_err(to_js)?;
    Ok(NativeClient {
        calls: CallQueue::new(client),
    })
}

/// Wraps `blipmq::Client`; freeing it (when JavaScript collects it) closes
/// the connection.
#[wasm_bindgen]
pub struct NativeClient {
    /// The client, and its calls in call order: JavaScript publishes many
    /// times without awaiting and expects the messages to go out in that
    /// order, and `flush` or `close` after them (see `blipmq::foreign`).
    calls: CallQueue,
}

impl NativeClient {
    fn client(&self) -> &Client {
        self.calls.client()
    }

    /// Queue `work` behind the calls before it; a Promise of its result.
    fn in_order<F, Fut>(&self, work: F) -> Promise
    where
        F: FnOnce(Client) -> Fut + 'static,
        Fut: Future<Output = Result<JsValue, JsValue>> + 'static,
    {
        let done = self.calls.in_order(work);
        future_to_promise(async move { done.await.unwrap_or_else(|| Err(to_js(queue_stopped()))) })
    }
}

#[wasm_bindgen]
impl NativeClient {
    /// A QoS 0 publish queued on the spot returns `null` (done: no Promise
    /// to make and settle); otherwise a Promise of the broker's message id
    /// at QoS 1, of `undefined` at QoS 0 (once queued). The payload and
    /// header values are copied here, so the caller may reuse its buffers
    /// at once.
    #[wasm_bindgen(unchecked_return_type = "Promise<bigint | undefined> | null")]
    pub fn publish(
        &self,
        topic: String,
        payload: &[u8],
        #[wasm_bindgen(js_name = ttlMs)] ttl_ms: u32,
        qos: u8,
        #[wasm_bindgen(unchecked_param_type = "Array<[string, Uint8Array]>")] headers: Array,
    ) -> JsValue {
        let options = match publish_options(ttl_ms, qos, &headers) {
            Ok(options) => options,
            Err(error) => return Promise::reject(&error).into(),
        };
        let payload = Bytes::copy_from_slice(payload);
        let confirm = |submitted: PublishConfirm| async move {
            let id = submitted.confirmed().await.map_err(to_js)?;
            Ok(id.map_or(JsValue::UNDEFINED, JsValue::from))
        };
        match self.calls.publish(topic, payload, options) {
            Ok(Publishing::Queued(submitted)) if !submitted.is_qos1() => JsValue::NULL,
            Ok(Publishing::Queued(submitted)) => future_to_promise(confirm(submitted)).into(),
            Ok(Publishing::InOrder(queued)) => {
                future_to_promise(async move { confirm(queued.await.map_err(to_js)?).await }).into()
            }
            Err(e) => Promise::reject(&to_js(e)).into(),
        }
    }

    /// Resolves once the broker has confirmed the subscription.
    #[wasm_bindgen(unchecked_return_type = "Promise<NativeSubscription>")]
    pub fn subscribe(
        &self,
        pattern: String,
        qos: u8,
        durable: Option<String>,
        group: Option<String>,
        #[wasm_bindgen(js_name = ackTimeoutMs)] ack_timeout_ms: Option<f64>,
        #[wasm_bindgen(js_name = maxDeliveries)] max_deliveries: Option<u32>,
    ) -> Promise {
        let request = SubscribeRequest {
            qos: Some(qos),
            durable,
            group,
            ack_timeout_ms,
            max_deliveries,
        };
        let options = match request.options() {
            Ok(options) => options,
            Err(error) => return Promise::reject(&invalid_argument(error.message())),
        };
        let client = self.client().clone();
        future_to_promise(async move {
            let subscription = client
                .subscribe_with(&pattern, options)
                .await
                .map_err(to_js)?;
            Ok(NativeSubscription::new(subscription).into())
        })
    }

    /// Resolves once the broker has handled everything sent before.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn flush(&self) -> Promise {
        self.in_order(|client| async move {
            client.flush().await.map_err(to_js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Send what is queued and close; subscriptions end.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        self.in_order(|client| async move {
            client.close().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Call `callback` with every change of the connection from now on
    /// (`{ kind, ... }`: see `event_to_js`), until the client has closed.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, callback: Function) {
        let mut events = Box::pin(blipmq::foreign::events(self.client()));
        // The stream ends after `Closed`.
        spawn_local(async move {
            while let Some(event) = events.next().await {
                // What the listener throws is the listener's: the host
                // reports it, and the events go on.
                let _ = callback.call1(&JsValue::NULL, &event_to_js(event));
            }
        });
    }

    /// `connected`, `reconnecting` or `closed`.
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> String {
        match self.client().status() {
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::Reconnecting => "reconnecting",
            ConnectionStatus::Closed => "closed",
        }
        .to_string()
    }

    /// The largest payload the broker accepts.
    #[wasm_bindgen(getter, js_name = maxMessageSize)]
    pub fn max_message_size(&self) -> u32 {
        u32::try_from(self.client().max_message_size()).unwrap_or(u32::MAX)
    }
}

fn publish_options(
    ttl_ms: u32,
    qos: u8,
    headers: &Array,
) -> Result<blipmq::PublishOptions, JsValue> {
    let mut pairs = Headers::new();
    for entry in headers.iter() {
        let pair = Array::from(&entry);
        let key = pair.get(0).as_string();
        let value = pair.get(1).dyn_into::<Uint8Array>().ok();
        match (key, value) {
            (Some(key), Some(value)) => {
                pairs.append(key, value.to_vec());
            }
            _ => return Err(invalid_argument("a header is a [string, Uint8Array] pair")),
        }
    }
    Ok(blipmq::PublishOptions {
        ttl_ms,
        qos: qos_of(qos)?,
        headers: pairs,
    })
}

fn qos_of(value: u8) -> Result<Qos, JsValue> {
    Qos::from_wire(value).ok_or_else(|| invalid_argument(format!("qos {value} is not 0 or 1")))
}

/// A `ForeignEvent` as a plain object for `@blipmq/core`'s client.js:
/// `kind` is `connected` (`connectionId`, `address`), `disconnected` (`message`,
/// `code`, `codeName`, `disconnectKind`, and `ioKind` for an I/O failure),
/// `reconnect_failed` (`attempt`, `message`), `server_error` (`code`,
/// `codeName`, `message`) or `closed`: the fields Node's `NativeEvent` has.
fn event_to_js(event: ForeignEvent) -> JsValue {
    let object = Object::new();
    let set = |key: &str, value: Option<JsValue>| {
        if let Some(value) = value {
            // Setting a property on a fresh plain object cannot fail.
            let _ = Reflect::set(&object, &JsValue::from_str(key), &value);
        }
    };
    set("kind", Some(JsValue::from(event.kind.name())));
    set("connectionId", event.connection_id.map(JsValue::from));
    set("address", event.address.as_deref().map(JsValue::from));
    set("attempt", event.attempt.map(JsValue::from));
    set("code", event.code.map(|code| JsValue::from(code.0)));
    set("codeName", event.code_name().map(JsValue::from));
    if let Some(disconnect) = &event.disconnect {
        set(
            "disconnectKind",
            Some(JsValue::from(disconnect.kind_name())),
        );
        set("ioKind", disconnect.io_kind_name().map(JsValue::from));
    }
    set("message", event.message.map(JsValue::from));
    object.into()
}
