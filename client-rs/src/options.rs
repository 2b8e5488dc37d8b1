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

/// Reconnection with exponential backoff and full jitter. Attempt `n`
/// (from 1) waits a random time in `[0, min(max_delay, initial_delay ×
/// 2^(n−1))]`: the ceiling doubles after each failed attempt, and the
/// random wait spreads clients that lost the same broker at the same
/// instant, so they do not all come back in the same millisecond.
/// Subscriptions are re-established after each reconnect.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    pub enabled: bool,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Give up (and close the client) after this many failed attempts in a
    /// row; `None` keeps trying. An attempt tries every address once.
    pub max_attempts: Option<u32>,
    /// Wait a random part of the backoff ("full jitter"); `false` waits
    /// the whole ceiling, as every other client that lost the broker does.
    pub jitter: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
            jitter: true,
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

    /// The longest wait before attempt number `attempt` (1-based):
    /// `initial_delay` doubled per earlier attempt, capped at `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// The wait before attempt number `attempt` (1-based), given `random`,
    /// a uniformly random `u64` (the client draws it; a test passes its
    /// own): with jitter, `random / 2^64` of the [`ceiling`](Self::ceiling)
    /// (from zero to within a nanosecond of it); without, the ceiling itself.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        // `random / 2^64` of the ceiling: a multiply and a shift, no
        // 128-bit division (which would add a kilobyte of compiler
        // builtins to the browser SDK's size-budgeted .wasm). A ceiling
        // past u64::MAX ns (584 years) is clamped to it.
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let nanos = (u128::from(ceiling_nanos) * u128::from(random)) >> 64;
        Duration::from_nanos(nanos as u64)
    }
}

/// A duration in whole milliseconds, for error messages: `Duration`'s
/// `Debug` (`1.5s`) would add its decimal formatting, and `as_millis`'s
/// `u128` its printing, to the browser SDK's size-budgeted .wasm.
pub(crate) fn whole_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
    /// QoS 1: how long a delivery may stay unacked (or without
    /// [`Message::in_progress`](crate::Message::in_progress)) before the
    /// broker sends it again; `None` = the broker's `delivery.ack_timeout_ms`.
    /// The broker takes 10 ms to 1 hour and refuses other values with
    /// `InvalidArgument`.
    pub ack_timeout: Option<std::time::Duration>,
    /// QoS 1: deliveries of a message to this subscription before the broker
    /// moves it to the dead-letter topic instead; 0 = the broker's
    /// `delivery.max_deliveries`. The broker takes up to 10000.
    pub max_deliveries: u32,
}

impl SubscribeOptions {
    /// `ack_timeout` as the wire has it: 0 for the broker's default; a
    /// duration is rounded up to whole ms (never to 0, which would mean the
    /// default) and saturates, so the broker judges what was asked.
    pub(crate) fn ack_timeout_ms(&self) -> u32 {
        self.ack_timeout.map_or(0, |timeout| {
            // In u64, not `as_millis`' u128: 128-bit division would grow the
            // browser SDK's .wasm.
            let whole = timeout.as_secs().saturating_mul(1000);
            let part = u64::from(timeout.subsec_nanos().div_ceil(1_000_000));
            let ms = whole.saturating_add(part).max(1);
            u32::try_from(ms).unwrap_or(u32::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_and_caps() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        let ceilings: Vec<u64> = (1..=6)
            .map(|a| policy.ceiling(a).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_jittered_delay_spans_zero_to_the_ceiling() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        for attempt in [1, 2, 3, 5, 40] {
            let ceiling = policy.ceiling(attempt);
            assert_eq!(policy.delay(attempt, 0), Duration::ZERO);
            let most = policy.delay(attempt, u64::MAX);
            assert!(
                ceiling - most <= Duration::from_nanos(1),
                "{most:?} vs {ceiling:?}"
            );
            let half = policy.delay(attempt, u64::MAX / 2);
            let off = half.abs_diff(ceiling / 2);
            assert!(off <= Duration::from_nanos(1), "{half:?} vs {ceiling:?}");
            for random in [1, 12_345, u64::MAX / 3, u64::MAX - 1] {
                assert!(policy.delay(attempt, random) <= ceiling);
            }
        }
    }

    #[test]
    fn without_jitter_the_delay_is_the_ceiling() {
        let policy = ReconnectPolicy {
            jitter: false,
            ..Default::default()
        };
        for random in [0, 7, u64::MAX] {
            assert_eq!(policy.delay(3, random), Duration::from_millis(200));
        }
    }
}
