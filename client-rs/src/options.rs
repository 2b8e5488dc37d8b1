//! Options for the client, for publishing and for subscribing.

use std::time::Duration;

use blipmq_protocol::Qos;

use crate::headers::Headers;

/// How the client connects and behaves. Build it with
/// [`crate::Client::builder`]; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent in the handshake; the broker logs it.
    pub name: Option<String>,
    /// Required when the broker has API keys configured.
    pub api_key: Option<String>,
    /// Limit for reaching the broker and completing the handshake.
    pub connect_timeout: Duration,
    /// Limit for an answer to a request (subscribe, unsubscribe, QoS 1
    /// confirm, flush).
    pub request_timeout: Duration,
    pub reconnect: ReconnectPolicy,
    /// Frames that may wait to be sent (a batch of publishes counts as one,
    /// and 4 MiB of them is the most); publishing waits when it is full.
    pub outgoing_capacity: usize,
    /// Messages a subscription buffers for its consumer. When it is full the
    /// client stops reading from the broker, so the broker's overflow policy
    /// applies rather than client memory growing.
    pub subscription_capacity: usize,
    /// TLS to the broker, also without a `tls://` address; `None` = TLS
    /// only for a `tls://` address, with the system's roots.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsOptions>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: None,
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            outgoing_capacity: 8192,
            subscription_capacity: 8192,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Reconnection with exponential backoff: the delay starts at
/// `initial_delay`, doubles after each failed attempt, and is capped at
/// `max_delay`. Subscriptions are re-established after each reconnect.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    pub enabled: bool,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Give up (and close the client) after this many failed attempts in a
    /// row; `None` keeps trying.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// No reconnection: a lost connection closes the client.
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..Default::default()
        }
    }

    /// The wait before attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// Options for one publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// How long the message may wait for delivery, in ms; 0 = the broker's default.
    pub ttl_ms: u32,
    /// At QoS 1 the publish resolves once the broker confirms it.
    pub qos: Qos,
    /// Metadata delivered with the message, in order.
    pub headers: Headers,
}

/// Options for one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    pub qos: Qos,
    /// Name of a durable subscription that outlives the connection.
    pub durable: Option<String>,
    /// Queue group: members sharing a name share the messages.
    pub group: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        let delays: Vec<u64> = (1..=6)
            .map(|a| policy.delay(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
    }
}
