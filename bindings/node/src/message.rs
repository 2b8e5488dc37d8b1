//! Headers as they cross the boundary, and the handle that acks a QoS 1
//! delivery. A message's other fields cross in columns (see
//! `subscription::NativeBatch`).

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::error::to_napi;

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
    /// Queue the ack to the broker, in order with the client's other frames.
    #[napi]
    pub async fn ack(&self) -> napi::Result<()> {
        self.inner.ack().await.map_err(to_napi)
    }
}
