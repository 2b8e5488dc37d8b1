//! The one conversion from the client crate's errors to the foreign
//! languages: every failure crosses as one record, the wire code from the
//! schema's error table, the code's stable name and the detail. The public
//! classes are generated from that table in each language
//! (scripts/lib/gen_errors.py): Kotlin's layer maps the generated
//! `NativeException` to a `BlipMQException` subclass by code, Swift's maps
//! `NativeError` to `BlipMQError`. So the code → class table lives once, in
//! schema/errors.toml, not here too.

use std::fmt::Debug;

use blipmq::ErrorCode;
use blipmq_protocol::error_code_name;

/// A failed operation, as the generated layer sees it (the public layers
/// wrap it in their own error classes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum NativeError {
    /// Any failure: `code` picks the public class.
    #[error("{code_name} ({code}): {detail}")]
    Failed {
        code: u16,
        code_name: String,
        detail: String,
    },
}

impl NativeError {
    /// The error for a wire code.
    pub fn from_code(code: ErrorCode, detail: impl Into<String>) -> NativeError {
        NativeError::Failed {
            code: code.0,
            code_name: error_code_name(code).to_owned(),
            detail: detail.into(),
        }
    }

    /// The wire code.
    pub fn code(&self) -> u16 {
        let NativeError::Failed { code, .. } = self;
        *code
    }
}

impl<K: Copy + Debug> From<blipmq::error::Error<K>> for NativeError {
    fn from(error: blipmq::error::Error<K>) -> NativeError {
        NativeError::from_code(error.code(), error.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_keeps_its_code_and_the_code_s_name() {
        let error = NativeError::from_code(ErrorCode::InvalidTopic, "empty token");
        assert_eq!(
            error,
            NativeError::Failed {
                code: 300,
                code_name: "InvalidTopic".into(),
                detail: "empty token".into()
            }
        );
        assert_eq!(error.to_string(), "InvalidTopic (300): empty token");
        assert_eq!(
            NativeError::from_code(ErrorCode::ClientClosed, "x").code(),
            603
        );
        let future = NativeError::from_code(ErrorCode(406), "newer broker");
        assert_eq!(future.to_string(), "Unknown (406): newer broker");
    }
}
