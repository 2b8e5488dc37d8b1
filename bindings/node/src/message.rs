//! Headers as they cross the boundary, and the handle that acks (naks,
//! terms, marks in progress) a QoS 1 delivery. A message's other fields cross in columns (see
//! `subscription::NativeBatch`).

use napi::bindgen_prelude::{BigInt, Buffer, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use blipmq::foreign::nak_delay_ms;

use crate::error::{promise, Failure};

/// One header as it crosses the boundary; `index.js` turns lists of these
/// into and out of its `Headers` class.
#[napi(object)]
pub struct Header {
    pub key: String,
    pub value: Buffer,
}

/// A delivered QoS 1 message, kept to acknowledge it (wraps
/// `blipmq::Message`).
#[napi]
pub struct NativeMessage {
    inner: blipmq::Message,
}

impl NativeMessage {
    pub fn new(inner: blipmq::Message) -> NativeMessage {
        NativeMessage { inner }
    }
}

#[napi]
impl NativeMessage {
    /// The delivery's id within its durable queue or subscription, to ack
    /// it by (never 0: QoS 0 deliveries have no `NativeMessage`).
    #[napi(getter)]
    pub fn delivery_id(&self) -> BigInt {
        BigInt::from(self.inner.delivery_id())
    }

    /// Queue the ack to the broker, in order with the client's other frames.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn ack<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let message = self.inner.clone();
        promise(
            env,
            async move { message.ack().await.map_err(Failure::from) },
        )
    }

    /// Queue a nak: the broker delivers the message again after `delay_ms`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn nak<'env>(&self, env: &'env Env, delay_ms: f64) -> napi::Result<PromiseRaw<'env, ()>> {
        let delay = nak_delay_ms(delay_ms);
        let message = self.inner.clone();
        promise(env, async move {
            let delay = delay.map_err(|e| Failure::invalid_argument(e.message()))?;
            message.nak_with_delay(delay).await.map_err(Failure::from)
        })
    }

    /// Queue a term: the broker moves the message to its dead-letter topic.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn term<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let message = self.inner.clone();
        promise(
            env,
            async move { message.term().await.map_err(Failure::from) },
        )
    }

    /// Queue an in-progress: the broker restarts the delivery's ack timeout.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn in_progress<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let message = self.inner.clone();
        promise(env, async move {
            message.in_progress().await.map_err(Failure::from)
        })
    }
}
