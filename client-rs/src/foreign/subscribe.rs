//! The flat subscribe options every binding takes, and the checks of the
//! numbers a foreign caller passes for them and for a nak's delay: a
//! negative or non-finite number (which Python and JavaScript both allow)
//! is refused here once, with the same words in every language.

use std::fmt;
use std::time::Duration;

use crate::{ErrorCode, Qos, SubscribeOptions};

/// How a binding subscribes: every field optional, as a foreign caller
/// gives them. `None` keeps [`SubscribeOptions`]' default (QoS 0, the
/// broker's ack timeout and `max_deliveries`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeRequest {
    /// 0 or 1.
    pub qos: Option<u8>,
    pub durable: Option<String>,
    pub group: Option<String>,
    /// QoS 1: this subscription's ack timeout, in ms (QOS-22).
    pub ack_timeout_ms: Option<f64>,
    /// QoS 1: deliveries before the dead-letter topic (QOS-22).
    pub max_deliveries: Option<u32>,
}

/// A value no request can carry. Each binding raises it as its
/// `InvalidArgument` error (code 301) before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentError(String);

impl ArgumentError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArgumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgumentError {}

impl SubscribeRequest {
    /// The options for [`crate::Client::subscribe_with`]. Only what the
    /// caller's language lets through and the wire cannot carry is refused
    /// here; the broker judges the bounds (and answers `InvalidArgument`).
    pub fn options(self) -> Result<SubscribeOptions, ArgumentError> {
        let qos = match self.qos {
            None => Qos::default(),
            Some(value) => Qos::from_wire(value)
                .ok_or_else(|| ArgumentError(format!("qos must be 0 or 1, not {value}")))?,
        };
        let ack_timeout = self
            .ack_timeout_ms
            .map(|ms| millis(ms, "ack timeout"))
            .transpose()?;
        Ok(SubscribeOptions {
            qos,
            durable: self.durable,
            group: self.group,
            ack_timeout,
            max_deliveries: self.max_deliveries.unwrap_or(0),
        })
    }
}

/// A nak's delay given in ms (JavaScript, Kotlin).
pub fn nak_delay_ms(ms: f64) -> Result<Duration, ArgumentError> {
    millis(ms, "nak delay")
}

/// A nak's delay given in seconds (Python).
pub fn nak_delay_secs(seconds: f64) -> Result<Duration, ArgumentError> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        ArgumentError("nak delay must be a finite, non-negative number of seconds".into())
    })
}

// Whole microseconds, by a saturating cast rather than
// `Duration::try_from_secs_f64`, and refusals that do not repeat the
// number: both keep float code out of the browser SDK's .wasm, which has a
// size budget.
fn millis(ms: f64, what: &str) -> Result<Duration, ArgumentError> {
    if ms.is_finite() && ms >= 0.0 {
        Ok(Duration::from_micros((ms * 1000.0) as u64))
    } else {
        Err(ArgumentError(format!(
            "{what} must be a finite, non-negative number of milliseconds"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_options_and_absent_fields_keep_the_defaults() {
        assert_eq!(
            SubscribeRequest::default().options(),
            Ok(SubscribeOptions::default())
        );
        let options = SubscribeRequest {
            qos: Some(1),
            durable: Some("worker".into()),
            ack_timeout_ms: Some(1500.0),
            max_deliveries: Some(3),
            ..Default::default()
        }
        .options()
        .unwrap();
        assert_eq!(options.qos, Qos::AtLeastOnce);
        assert_eq!(options.ack_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(options.max_deliveries, 3);
    }

    #[test]
    fn numbers_no_request_can_carry_are_refused_naming_the_option() {
        let bad_qos = SubscribeRequest {
            qos: Some(2),
            ..Default::default()
        };
        assert_eq!(
            bad_qos.options().unwrap_err().message(),
            "qos must be 0 or 1, not 2"
        );
        for ms in [-1.0, f64::NAN, f64::INFINITY] {
            let request = SubscribeRequest {
                ack_timeout_ms: Some(ms),
                ..Default::default()
            };
            let error = request.options().unwrap_err();
            assert!(
                error.message().starts_with("ack timeout must be"),
                "{error}"
            );
            assert_eq!(error.code(), ErrorCode::InvalidArgument);
            assert!(nak_delay_ms(ms).is_err());
            assert!(nak_delay_secs(ms).is_err());
        }
        assert_eq!(nak_delay_ms(250.0), Ok(Duration::from_millis(250)));
        assert_eq!(nak_delay_secs(0.5), Ok(Duration::from_millis(500)));
    }
}
