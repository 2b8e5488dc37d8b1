//! Message header rules (SPEC.md HDR-1 to HDR-5) and W3C trace context.
//!
//! Headers are ordered key -> value pairs; keys are text, values are bytes,
//! and keys may repeat. Broker and clients check them with the same code.

use crate::frame::Header;
use crate::ErrorCode;

/// The header limits a broker enforces (and announces in its Welcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Most headers on one message.
    pub max_headers: usize,
    /// Longest key, in bytes.
    pub max_key_size: usize,
    /// Most header bytes (keys plus values) on one message.
    pub max_total_size: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_headers: 64,
            max_key_size: 256,
            max_total_size: 16 * 1024,
        }
    }
}

impl HeaderLimits {
    /// Frame bytes the headers may take beyond their keys and values
    /// (FlatBuffers tables, offsets, padding), for the frame-size limit.
    pub fn frame_overhead(&self) -> usize {
        self.max_total_size + self.max_headers * 32
    }
}

/// Why headers were refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header {index} has an empty key")]
    EmptyKey { index: usize },
    #[error("header key {key:?} contains whitespace or a control character")]
    BadKey { key: String },
    #[error("{count} headers; the limit is {max}")]
    TooMany { count: usize, max: usize },
    #[error("header key of {len} bytes; the limit is {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("{size} header bytes (keys plus values); the limit is {max}")]
    TooLarge { size: usize, max: usize },
}

impl HeaderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            HeaderError::EmptyKey { .. } | HeaderError::BadKey { .. } => ErrorCode::InvalidHeader,
            _ => ErrorCode::HeadersTooLarge,
        }
    }
}

/// Check a key against HDR-2 (not its length, which is a limit).
pub fn validate_key(key: &str, index: usize) -> Result<(), HeaderError> {
    if key.is_empty() {
        return Err(HeaderError::EmptyKey { index });
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(HeaderError::BadKey {
            key: key.to_string(),
        });
    }
    Ok(())
}

/// Check a message's headers against the rules and `limits`.
pub fn validate_headers<'a, I>(headers: I, limits: &HeaderLimits) -> Result<(), HeaderError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut count = 0;
    let mut total = 0;
    for (index, (key, value)) in headers.into_iter().enumerate() {
        validate_key(key, index)?;
        if key.len() > limits.max_key_size {
            return Err(HeaderError::KeyTooLong {
                len: key.len(),
                max: limits.max_key_size,
            });
        }
        count += 1;
        total += key.len() + value.len();
    }
    if count > limits.max_headers {
        return Err(HeaderError::TooMany {
            count,
            max: limits.max_headers,
        });
    }
    if total > limits.max_total_size {
        return Err(HeaderError::TooLarge {
            size: total,
            max: limits.max_total_size,
        });
    }
    Ok(())
}

/// The header that carries W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The header that carries vendor trace state next to `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// The trace id of a valid W3C `traceparent` value
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), as 32 lowercase
/// hex characters. `None` for anything malformed or an all-zero id.
pub fn trace_id(traceparent: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(traceparent).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then_some(trace)
}

/// The trace id carried by a message's `traceparent` header, if any.
pub fn trace_id_of<'a>(headers: &[Header<'a>]) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(TRACEPARENT))
        .and_then(|h| trace_id(h.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(headers: &[(&str, &[u8])], limits: &HeaderLimits) -> Result<(), HeaderError> {
        validate_headers(headers.iter().copied(), limits)
    }

    #[test]
    fn rules_and_limits() {
        let limits = HeaderLimits {
            max_headers: 3,
            max_key_size: 8,
            max_total_size: 20,
        };
        assert_eq!(check(&[], &limits), Ok(()));
        assert_eq!(
            check(&[("a", b"1"), ("a", b"2"), ("b", b"")], &limits),
            Ok(())
        );
        assert_eq!(
            check(&[("", b"x")], &limits),
            Err(HeaderError::EmptyKey { index: 0 })
        );
        assert!(matches!(
            check(&[("a b", b"x")], &limits),
            Err(HeaderError::BadKey { .. })
        ));
        assert!(matches!(
            check(&[("a\n", b"x")], &limits),
            Err(HeaderError::BadKey { .. })
        ));
        assert_eq!(
            check(&[("a", b""), ("b", b""), ("c", b""), ("d", b"")], &limits),
            Err(HeaderError::TooMany { count: 4, max: 3 })
        );
        assert_eq!(
            check(&[("123456789", b"")], &limits),
            Err(HeaderError::KeyTooLong { len: 9, max: 8 })
        );
        assert_eq!(
            check(&[("k", &[0u8; 20])], &limits),
            Err(HeaderError::TooLarge { size: 21, max: 20 })
        );
        assert_eq!(
            HeaderError::TooMany { count: 4, max: 3 }.code(),
            ErrorCode::HeadersTooLarge
        );
        assert_eq!(
            HeaderError::EmptyKey { index: 0 }.code(),
            ErrorCode::InvalidHeader
        );
    }

    #[test]
    fn traceparent() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(good), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
        assert_eq!(
            trace_id(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id(b"garbage"), None);
        let headers = [
            Header {
                key: "x",
                value: b"y",
            },
            Header {
                key: "traceparent",
                value: good,
            },
        ];
        assert_eq!(
            trace_id_of(&headers),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
