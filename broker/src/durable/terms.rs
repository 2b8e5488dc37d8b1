//! What one consumer of a stored queue asks for in its Subscribe (QOS-22):
//! its own ack timeout and its own `max_deliveries`, checked against the
//! bounds here, the broker's `[delivery]` defaults filling in what it left
//! at 0.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::DeliverySettings;

/// Ack timeouts a subscription may ask for, in ms: the same bounds as
/// `delivery.ack_timeout_ms`. Shorter would have the sweep take back work
/// still on the wire; longer hides a dead consumer for over an hour.
pub const ACK_TIMEOUT_MS: RangeInclusive<u32> = 10..=3_600_000;

/// `max_deliveries` a subscription may ask for. A higher count is no
/// different from no limit at all, which is the operator's to choose
/// (`delivery.max_deliveries = 0`), not a consumer's.
pub const MAX_DELIVERIES: RangeInclusive<u32> = 1..=10_000;

/// A consumer's terms, the broker's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerTerms {
    /// How long a delivery to it may stay unacked before it is taken back.
    pub ack_timeout: Duration,
    /// Deliveries of one message before it is dead-lettered instead of
    /// sent to this consumer; 0 = unlimited.
    pub max_deliveries: u32,
}

/// A Subscribe asked for terms outside the bounds; the message says which
/// and what is allowed (answered with `InvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TermsRefused(pub String);

impl ConsumerTerms {
    /// The broker's `[delivery]` settings.
    pub fn defaults(settings: &DeliverySettings) -> ConsumerTerms {
        ConsumerTerms {
            ack_timeout: settings.ack_timeout,
            max_deliveries: settings.max_deliveries,
        }
    }

    /// The terms a Subscribe asked for: 0 keeps the default.
    pub fn requested(
        ack_timeout_ms: u32,
        max_deliveries: u32,
        defaults: ConsumerTerms,
    ) -> Result<ConsumerTerms, TermsRefused> {
        let mut terms = defaults;
        if ack_timeout_ms != 0 {
            if !ACK_TIMEOUT_MS.contains(&ack_timeout_ms) {
                return Err(TermsRefused(format!(
                    "ack_timeout_ms {ack_timeout_ms}: must be 0 (the broker's default) or {} to {}",
                    ACK_TIMEOUT_MS.start(),
                    ACK_TIMEOUT_MS.end()
                )));
            }
            terms.ack_timeout = Duration::from_millis(ack_timeout_ms.into());
        }
        if max_deliveries != 0 {
            if !MAX_DELIVERIES.contains(&max_deliveries) {
                return Err(TermsRefused(format!(
                    "max_deliveries {max_deliveries}: must be 0 (the broker's default) or {} to {}",
                    MAX_DELIVERIES.start(),
                    MAX_DELIVERIES.end()
                )));
            }
            terms.max_deliveries = max_deliveries;
        }
        Ok(terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: ConsumerTerms = ConsumerTerms {
        ack_timeout: Duration::from_secs(30),
        max_deliveries: 0,
    };

    #[test]
    fn zero_keeps_the_default_and_a_value_in_bounds_replaces_it() {
        assert_eq!(ConsumerTerms::requested(0, 0, DEFAULTS), Ok(DEFAULTS));
        let asked = ConsumerTerms::requested(250, 3, DEFAULTS).unwrap();
        assert_eq!(asked.ack_timeout, Duration::from_millis(250));
        assert_eq!(asked.max_deliveries, 3);
        let edges = ConsumerTerms::requested(3_600_000, 10_000, DEFAULTS).unwrap();
        assert_eq!(edges.ack_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn values_out_of_bounds_are_refused_naming_the_field() {
        for (timeout, max, field) in [
            (9, 0, "ack_timeout_ms 9"),
            (3_600_001, 0, "ack_timeout_ms 3600001"),
            (0, 10_001, "max_deliveries 10001"),
            (0, u32::MAX, "max_deliveries 4294967295"),
        ] {
            let refused = ConsumerTerms::requested(timeout, max, DEFAULTS).unwrap_err();
            assert!(refused.0.starts_with(field), "{refused}");
        }
    }
}
