//! A received message: read-only accessors and `ack`.

use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;

use crate::error::to_napi;

/// One header as it crosses the boundary; `index.js` turns lists of these
/// into and out of its `Headers` class.
#[napi(object)]
pub struct Header {
    pub key: String,
    pub value: Buffer,
}

/// A message delivered to a subscription (wraps `blipmq::Message`).
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
    #[napi(getter)]
    pub fn topic(&self) -> String {
        self.inner.topic().to_owned()
    }

    /// A copy of the payload.
    #[napi(getter)]
    pub fn payload(&self) -> Buffer {
        self.inner.payload().to_vec().into()
    }

    /// The publisher's headers, in order; empty when it sent none.
    #[napi(getter)]
    pub fn headers(&self) -> Vec<Header> {
        self.inner
            .headers()
            .iter()
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.to_vec().into(),
            })
            .collect()
    }

    /// The broker-assigned id (a u64, hence a bigint).
    #[napi(getter)]
    pub fn id(&self) -> BigInt {
        BigInt::from(self.inner.id())
    }

    /// Milliseconds since the Unix epoch; exact in a double until the year
    /// 287396.
    #[napi(getter)]
    pub fn timestamp_ms(&self) -> f64 {
        self.inner.timestamp_ms() as f64
    }

    #[napi(getter)]
    pub fn delivery_count(&self) -> u32 {
        self.inner.delivery_count()
    }

    /// Resolves at once for QoS 0 deliveries; queues the ack at QoS 1.
    #[napi]
    pub async fn ack(&self) -> napi::Result<()> {
        self.inner.ack().await.map_err(to_napi)
    }
}
