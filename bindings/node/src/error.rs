//! The one conversion from the client crate's errors to JavaScript.
//!
//! napi turns a rejected `napi::Error` into a JavaScript `Error` whose
//! message is the reason. The reason starts with a fixed tag carrying the
//! wire code and its name, `blipmq[300 InvalidTopic] <detail>`, which
//! `index.js` parses into a `BlipMQError` subclass with `.code`, keeping the
//! native error as its `cause`. Nothing but this tag crosses as text.

use std::fmt::Debug;

use blipmq::error::Error;
use napi::Status;

/// A client crate error as a napi error carrying its code.
pub fn to_napi<K: Copy + Debug>(error: Error<K>) -> napi::Error {
    coded(error.code().0, error.code_name(), error.message())
}

/// 301 InvalidArgument, for an argument this layer cannot pass on.
pub fn invalid_argument(message: impl AsRef<str>) -> napi::Error {
    coded(301, "InvalidArgument", message.as_ref())
}

fn coded(code: u16, name: &str, message: &str) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!("blipmq[{code} {name}] {message}"),
    )
}
