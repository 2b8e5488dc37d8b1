//! The one conversion from the client crate's errors to the foreign
//! languages: an error enum whose variant is chosen by the wire code from the
//! schema's error table, each carrying that code, its stable name and the
//! detail. Kotlin sees a sealed `BlipMqException` class (mapped to the
//! public `BlipMQException` hierarchy by the Kotlin layer), Swift an `enum
//! BlipMqError: Error`.

use std::fmt::Debug;

use blipmq::ErrorCode;
use blipmq_protocol::error_code_name;

/// A failed operation. The variant follows the wire code; codes without a
/// variant of their own (e.g. 305 DurableInUse, 405 StorageFull) are `Other`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum BlipMqError {
    /// 200: the broker refused the API key.
    #[error("{code_name} ({code}): {detail}")]
    AuthFailed {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 300: a topic or pattern breaks the topic rules.
    #[error("{code_name} ({code}): {detail}")]
    InvalidTopic {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 301: an argument is out of range.
    #[error("{code_name} ({code}): {detail}")]
    InvalidArgument {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 303: the broker does not offer this QoS (e.g. QoS 1 without a durable name).
    #[error("{code_name} ({code}): {detail}")]
    UnsupportedQos {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 304: a header key breaks the header rules.
    #[error("{code_name} ({code}): {detail}")]
    InvalidHeader {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 400: the payload is over the broker's limit.
    #[error("{code_name} ({code}): {detail}")]
    MessageTooLarge {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 404: too many headers or header bytes.
    #[error("{code_name} ({code}): {detail}")]
    HeadersTooLarge {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 600: the broker could not be reached.
    #[error("{code_name} ({code}): {detail}")]
    ConnectFailed {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 601: no answer in time.
    #[error("{code_name} ({code}): {detail}")]
    Timeout {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 602: the connection closed before the answer came.
    #[error("{code_name} ({code}): {detail}")]
    ConnectionClosed {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// 603: the client (or the subscription) is closed.
    #[error("{code_name} ({code}): {detail}")]
    ClientClosed {
        code: u16,
        code_name: String,
        detail: String,
    },
    /// Any other code from the table, e.g. 305 DurableInUse or 405 StorageFull.
    #[error("{code_name} ({code}): {detail}")]
    Other {
        code: u16,
        code_name: String,
        detail: String,
    },
}

impl BlipMqError {
    /// The error for a wire code.
    pub fn from_code(code: ErrorCode, detail: impl Into<String>) -> BlipMqError {
        let (code_name, detail) = (error_code_name(code).to_owned(), detail.into());
        let code = code.0;
        match code {
            200 => BlipMqError::AuthFailed {
                code,
                code_name,
                detail,
            },
            300 => BlipMqError::InvalidTopic {
                code,
                code_name,
                detail,
            },
            301 => BlipMqError::InvalidArgument {
                code,
                code_name,
                detail,
            },
            303 => BlipMqError::UnsupportedQos {
                code,
                code_name,
                detail,
            },
            304 => BlipMqError::InvalidHeader {
                code,
                code_name,
                detail,
            },
            400 => BlipMqError::MessageTooLarge {
                code,
                code_name,
                detail,
            },
            404 => BlipMqError::HeadersTooLarge {
                code,
                code_name,
                detail,
            },
            600 => BlipMqError::ConnectFailed {
                code,
                code_name,
                detail,
            },
            601 => BlipMqError::Timeout {
                code,
                code_name,
                detail,
            },
            602 => BlipMqError::ConnectionClosed {
                code,
                code_name,
                detail,
            },
            603 => BlipMqError::ClientClosed {
                code,
                code_name,
                detail,
            },
            _ => BlipMqError::Other {
                code,
                code_name,
                detail,
            },
        }
    }

    /// The wire code.
    pub fn code(&self) -> u16 {
        match self {
            BlipMqError::AuthFailed { code, .. }
            | BlipMqError::InvalidTopic { code, .. }
            | BlipMqError::InvalidArgument { code, .. }
            | BlipMqError::UnsupportedQos { code, .. }
            | BlipMqError::InvalidHeader { code, .. }
            | BlipMqError::MessageTooLarge { code, .. }
            | BlipMqError::HeadersTooLarge { code, .. }
            | BlipMqError::ConnectFailed { code, .. }
            | BlipMqError::Timeout { code, .. }
            | BlipMqError::ConnectionClosed { code, .. }
            | BlipMqError::ClientClosed { code, .. }
            | BlipMqError::Other { code, .. } => *code,
        }
    }
}

impl<K: Copy + Debug> From<blipmq::error::Error<K>> for BlipMqError {
    fn from(error: blipmq::error::Error<K>) -> BlipMqError {
        BlipMqError::from_code(error.code(), error.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_follows_the_code_and_keeps_it() {
        let error = BlipMqError::from_code(ErrorCode::InvalidTopic, "empty token");
        assert_eq!(
            error,
            BlipMqError::InvalidTopic {
                code: 300,
                code_name: "InvalidTopic".into(),
                detail: "empty token".into()
            }
        );
        assert_eq!(error.to_string(), "InvalidTopic (300): empty token");
        assert_eq!(
            BlipMqError::from_code(ErrorCode::ClientClosed, "x").code(),
            603
        );
    }

    #[test]
    fn codes_without_a_variant_are_other_with_their_code() {
        let error = BlipMqError::from_code(ErrorCode(305), "attached elsewhere");
        assert!(matches!(error, BlipMqError::Other { code: 305, .. }));
        assert_eq!(error.to_string(), "DurableInUse (305): attached elsewhere");
    }
}
