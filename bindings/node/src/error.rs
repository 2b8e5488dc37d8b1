//! The one conversion from the client crate's errors to JavaScript.
//!
//! A failed call throws or rejects with a JavaScript `Error` that carries its
//! wire code as properties of the object itself: `code` (a number, e.g. 300)
//! and `codeName` (e.g. `'InvalidTopic'`), the message being the detail.
//! `@blipmq/core` turns it into the `BlipMQError` subclass for that code (the
//! browser SDK's wasm module rejects with the same shape). The object is made
//! on the JavaScript thread: a Promise rejects with it through
//! [`promise`], whose settling callback runs there.

use std::fmt::Debug;
use std::future::Future;

use blipmq::error::Error;
use napi::bindgen_prelude::JsObjectValue;
use napi::bindgen_prelude::{PromiseRaw, ToNapiValue};
use napi::{Env, JsValue, Status};

/// A failed call, before it becomes a JavaScript error: plain data, so that
/// it can leave the runtime's threads.
pub struct Failure {
    code: u16,
    code_name: &'static str,
    message: String,
}

impl<K: Copy + Debug> From<Error<K>> for Failure {
    fn from(error: Error<K>) -> Failure {
        Failure {
            code: error.code().0,
            code_name: error.code_name(),
            message: error.message().to_owned(),
        }
    }
}

impl Failure {
    /// 301 InvalidArgument, for an argument this layer cannot pass on.
    pub fn invalid_argument(message: impl Into<String>) -> Failure {
        Failure {
            code: 301,
            code_name: "InvalidArgument",
            message: message.into(),
        }
    }

    /// The JavaScript error, as a `napi::Error` that throws or rejects with
    /// exactly that object.
    pub fn into_js(self, env: &Env) -> napi::Error {
        let coded = || -> napi::Result<napi::Error> {
            let mut error =
                env.create_error(napi::Error::new(Status::GenericFailure, &self.message))?;
            error.set_named_property("code", u32::from(self.code))?;
            error.set_named_property("codeName", self.code_name)?;
            Ok(napi::Error::from(error.to_unknown()))
        };
        // Making the object failed (an exception is pending, or the process
        // is exiting): the plain error still names the code in its text.
        coded().unwrap_or_else(|_| {
            napi::Error::new(
                Status::GenericFailure,
                format!("{} ({}): {}", self.code_name, self.code, self.message),
            )
        })
    }
}

/// `work` as a Promise: its value, or its failure as a coded error.
pub fn promise<'env, T, F>(env: &'env Env, work: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(work.await) }, |env, result| {
        result.map_err(|failure| failure.into_js(env))
    })
}
