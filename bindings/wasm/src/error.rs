//! The one conversion from the client crate's errors to JavaScript: an
//! `Error` whose `code` is the wire code and `codeName` its name, which
//! `index.js` turns into a `BlipMQError` subclass keeping this one as its
//! `cause`.

use std::fmt::Debug;

use blipmq::error::Error;
use js_sys::Reflect;
use wasm_bindgen::JsValue;

/// A client crate error as a JavaScript error carrying its code.
pub fn to_js<K: Copy + Debug>(error: Error<K>) -> JsValue {
    coded(error.code().0, error.code_name(), error.message())
}

/// 301 InvalidArgument, for an argument this layer cannot pass on.
pub fn invalid_argument(message: impl AsRef<str>) -> JsValue {
    coded(301, "InvalidArgument", message.as_ref())
}

fn coded(code: u16, name: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh Error cannot fail.
    let _ = Reflect::set(&error, &"code".into(), &code.into());
    let _ = Reflect::set(&error, &"codeName".into(), &name.into());
    error.into()
}
