//! A subscription: batches of messages for `index.js`'s async iterator,
//! acks, unsubscribe and detach.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use blipmq::foreign::SharedSubscription;
use js_sys::{Array, BigInt, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::to_js;

/// Wraps `blipmq::foreign::SharedSubscription` (which holds the logic every
/// binding shares), and keeps the QoS 1 messages until JavaScript acks them.
#[wasm_bindgen]
pub struct NativeSubscription {
    state: Rc<State>,
}

struct State {
    subscription: SharedSubscription,
    /// Messages that need an ack (QoS 1), by delivery id, until acked. The
    /// broker sends at most `subscriber_capacity` unacked, which bounds it.
    unacked: RefCell<HashMap<u64, blipmq::Message>>,
}

impl NativeSubscription {
    pub fn new(subscription: blipmq::Subscription) -> NativeSubscription {
        NativeSubscription {
            state: Rc::new(State {
                subscription: subscription.into(),
                unacked: RefCell::default(),
            }),
        }
    }
}

#[wasm_bindgen]
impl NativeSubscription {
    #[wasm_bindgen(getter)]
    pub fn pattern(&self) -> String {
        self.state.subscription.pattern().to_owned()
    }

    /// Wait for one message (at most `timeoutMs` when given), then take up
    /// to `max` in all from what is buffered, as plain objects, with the
    /// discards the broker reported after the last of them (QUEUE-6); a
    /// result with no messages and `droppedAfter > 0` came early, just to
    /// report them. Resolves `{ messages: [], droppedAfter: 0 }` on timeout
    /// and `null` once the subscription has ended.
    #[wasm_bindgen(
        js_name = nextBatch,
        unchecked_return_type = "Promise<{ messages: Array<{ topic: string, payload: Uint8Array, headers: Array<[string, Uint8Array]>, id: bigint, timestampMs: number, deliveryCount: number, deliveryId: bigint, droppedBefore: number }>, droppedAfter: number } | null>"
    )]
    pub fn next_batch(
        &self,
        max: u32,
        #[wasm_bindgen(js_name = timeoutMs)] timeout_ms: Option<u32>,
    ) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
            let Some(received) = state.subscription.next_batch(max as usize, timeout).await else {
                return Ok(JsValue::NULL);
            };
            let messages: Array = received
                .messages
                .into_iter()
                .map(|message| state.to_js(message))
                .collect();
            let batch = Object::new();
            // Setting a property on a fresh plain object cannot fail.
            let _ = Reflect::set(&batch, &JsValue::from_str("messages"), &messages);
            let _ = Reflect::set(
                &batch,
                &JsValue::from_str("droppedAfter"),
                &JsValue::from_f64(received.dropped_after as f64),
            );
            Ok(batch.into())
        })
    }

    /// How many messages the broker has reported discarded for this
    /// subscription so far.
    #[wasm_bindgen(getter)]
    pub fn dropped(&self) -> f64 {
        self.state.subscription.dropped() as f64
    }

    /// Ack the message with this delivery id (QoS 1); resolves once queued.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn ack(&self, #[wasm_bindgen(js_name = deliveryId)] delivery_id: u64) -> Promise {
        let message = self.state.unacked.borrow_mut().remove(&delivery_id);
        future_to_promise(async move {
            if let Some(message) = message {
                message.ack().await.map_err(to_js)?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded. A second call does nothing.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn unsubscribe(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            state.unacked.borrow_mut().clear();
            state.subscription.unsubscribe().await.map_err(to_js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Stop receiving without deleting anything: a plain subscription ends,
    /// a durable one keeps its unacked messages for the next subscribe with
    /// its name (what dropping the Rust `Subscription` does).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn detach(&self) -> Promise {
        self.state.subscription.detach();
        self.state.unacked.borrow_mut().clear();
        future_to_promise(async { Ok(JsValue::UNDEFINED) })
    }
}

impl State {
    /// A message as a plain object (no wasm object per message to free):
    /// `{ topic, payload, headers, id, timestampMs, deliveryCount,
    /// deliveryId, droppedBefore }`.
    fn to_js(&self, message: blipmq::Message) -> JsValue {
        let object = Object::new();
        let set = |key: &str, value: &JsValue| {
            // Setting a property on a fresh plain object cannot fail.
            let _ = Reflect::set(&object, &JsValue::from_str(key), value);
        };
        set("topic", &JsValue::from_str(message.topic()));
        set("payload", &Uint8Array::from(&message.payload()[..]));
        let headers: Array = message
            .headers()
            .iter()
            .map(|(key, value)| Array::of2(&JsValue::from_str(key), &Uint8Array::from(&value[..])))
            .collect();
        set("headers", &headers);
        set("id", &BigInt::from(message.id()));
        set(
            "timestampMs",
            &JsValue::from_f64(message.timestamp_ms() as f64),
        );
        set("deliveryCount", &JsValue::from(message.delivery_count()));
        let delivery_id = message.delivery_id();
        set("deliveryId", &BigInt::from(delivery_id));
        set(
            "droppedBefore",
            &JsValue::from_f64(message.dropped_before() as f64),
        );
        if delivery_id != 0 {
            self.unacked.borrow_mut().insert(delivery_id, message);
        }
        object.into()
    }
}
