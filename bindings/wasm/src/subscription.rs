//! A subscription: batches of messages for `index.js`'s async iterator,
//! acks (and naks, terms, in-progress), unsubscribe and detach.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use blipmq::foreign::{nak_delay_ms, SharedSubscription};
use js_sys::{Array, BigInt, Object, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::{invalid_argument, to_js};

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
            // Each string made from wasm memory is decoded anew: a topic is
            // made once for the messages in a row that share it.
            let mut topic = None;
            let messages: Array = received
                .messages
                .into_iter()
                .map(|message| state.to_js(message, &mut topic))
                .collect();
            let batch: PlainBatch = Object::new().unchecked_into();
            batch.set_messages(&messages);
            batch.set_dropped_after(received.dropped_after as f64);
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

    /// Nak (`kind` 1, redelivered after `delayMs`), term (2, moved to the
    /// dead-letter topic) or mark in progress (3, its ack timeout restarts)
    /// the message with this delivery id; resolves once queued. One export
    /// for the three keeps the .wasm small; `index.js` names them.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn settle(
        &self,
        #[wasm_bindgen(js_name = deliveryId)] delivery_id: u64,
        kind: u8,
        #[wasm_bindgen(js_name = delayMs)] delay_ms: f64,
    ) -> Promise {
        let delay = match nak_delay_ms(delay_ms) {
            Ok(delay) => delay,
            Err(error) => return Promise::reject(&invalid_argument(error.message())),
        };
        // After a nak or a term the message is settled here (a redelivery
        // comes back as a message of its own); in progress, it is not.
        let message = match kind {
            3 => self.state.unacked.borrow().get(&delivery_id).cloned(),
            _ => self.state.unacked.borrow_mut().remove(&delivery_id),
        };
        future_to_promise(async move {
            if let Some(message) = message {
                match kind {
                    1 => message.nak_with_delay(delay).await,
                    2 => message.term().await,
                    _ => message.in_progress().await,
                }
                .map_err(to_js)?;
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

#[wasm_bindgen]
extern "C" {
    /// A message as a plain object. Each property has its own setter, so
    /// each store site sees one property of one shape (what a JavaScript
    /// engine makes fast), where `Reflect.set` stores any key anywhere.
    #[wasm_bindgen(extends = Object)]
    type PlainMessage;
    #[wasm_bindgen(method, setter)]
    fn set_topic(this: &PlainMessage, value: &JsValue);
    #[wasm_bindgen(method, setter)]
    fn set_payload(this: &PlainMessage, value: &Uint8Array);
    #[wasm_bindgen(method, setter)]
    fn set_headers(this: &PlainMessage, value: &Array);
    #[wasm_bindgen(method, setter)]
    fn set_id(this: &PlainMessage, value: &BigInt);
    #[wasm_bindgen(method, setter = timestampMs)]
    fn set_timestamp_ms(this: &PlainMessage, value: f64);
    #[wasm_bindgen(method, setter = deliveryCount)]
    fn set_delivery_count(this: &PlainMessage, value: u32);
    #[wasm_bindgen(method, setter = deliveryId)]
    fn set_delivery_id(this: &PlainMessage, value: &BigInt);
    #[wasm_bindgen(method, setter = droppedBefore)]
    fn set_dropped_before(this: &PlainMessage, value: f64);

    /// A batch as a plain object.
    #[wasm_bindgen(extends = Object)]
    type PlainBatch;
    #[wasm_bindgen(method, setter)]
    fn set_messages(this: &PlainBatch, value: &Array);
    #[wasm_bindgen(method, setter = droppedAfter)]
    fn set_dropped_after(this: &PlainBatch, value: f64);
}

impl State {
    /// A message as a plain object (no wasm object per message to free):
    /// `{ topic, payload, headers, id, timestampMs, deliveryCount,
    /// deliveryId, droppedBefore }`. `last_topic` is the previous
    /// message's topic, as text and as a string.
    fn to_js(
        &self,
        message: blipmq::Message,
        last_topic: &mut Option<(String, JsValue)>,
    ) -> JsValue {
        let topic = match last_topic {
            Some((text, value)) if text == message.topic() => value.clone(),
            _ => {
                let value = JsValue::from_str(message.topic());
                *last_topic = Some((message.topic().to_owned(), value.clone()));
                value
            }
        };
        let headers: Array = message
            .headers()
            .iter()
            .map(|(key, value)| Array::of2(&JsValue::from_str(key), &Uint8Array::from(&value[..])))
            .collect();
        let delivery_id = message.delivery_id();
        let object: PlainMessage = Object::new().unchecked_into();
        object.set_topic(&topic);
        object.set_payload(&Uint8Array::from(&message.payload()[..]));
        object.set_headers(&headers);
        object.set_id(&BigInt::from(message.id()));
        object.set_timestamp_ms(message.timestamp_ms() as f64);
        object.set_delivery_count(message.delivery_count());
        object.set_delivery_id(&BigInt::from(delivery_id));
        object.set_dropped_before(message.dropped_before() as f64);
        if delivery_id != 0 {
            self.unacked.borrow_mut().insert(delivery_id, message);
        }
        object.into()
    }
}
