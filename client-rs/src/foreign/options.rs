//! The flat options record every binding takes.

use std::time::Duration;

use crate::client::ClientBuilder;
use crate::options::ReconnectPolicy;

/// How a binding connects: every field optional, as a foreign caller gives
/// them (a keyword argument, a JS options object, a Kotlin data class).
/// `None` keeps [`crate::ClientOptions`]' default.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub api_key: Option<String>,
    pub name: Option<String>,
    /// `Some(false)` turns reconnecting off; the default reconnects.
    pub reconnect: Option<bool>,
    pub connect_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub subscription_capacity: Option<usize>,
    pub outgoing_capacity: Option<usize>,
    /// TLS with these options (a CA, a client certificate, a server name);
    /// a `tls://` address alone speaks TLS with the system's roots.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsOptions>,
}

impl ConnectOptions {
    /// `builder` with these options applied (a binding starts from
    /// [`crate::Client::builder`] and connects with its own transport).
    pub fn apply(self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(key) = self.api_key {
            builder = builder.api_key(key);
        }
        if let Some(name) = self.name {
            builder = builder.name(name);
        }
        if self.reconnect == Some(false) {
            builder = builder.reconnect(ReconnectPolicy::disabled());
        }
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            builder = builder.request_timeout(timeout);
        }
        if let Some(capacity) = self.subscription_capacity {
            builder = builder.subscription_capacity(capacity);
        }
        if let Some(capacity) = self.outgoing_capacity {
            builder = builder.outgoing_capacity(capacity);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls {
            builder = builder.tls(tls);
        }
        builder
    }
}
