//! The one conversion from the client's errors to Python exceptions. The
//! exception classes live in `blipmq/_errors.py`; each error keeps its wire
//! code and the code's name, and the class is chosen by the code.

use blipmq::error::{Error, ErrorCode};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `blipmq._errors.error_from_code(code, name, message)`.
static FACTORY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Any error of the client crate as its `BlipMQError` subclass.
pub fn to_py<K: Copy>(error: Error<K>) -> PyErr {
    from_code(error.code(), error.message())
}

/// 603 ClientClosed, raised by the binding itself.
pub fn client_closed(message: &str) -> PyErr {
    from_code(ErrorCode::ClientClosed, message)
}

/// 601 Timeout, raised by the binding itself.
pub fn timed_out(message: &str) -> PyErr {
    from_code(ErrorCode::Timeout, message)
}

/// 301 InvalidArgument, raised by the binding itself.
pub fn invalid_argument(message: &str) -> PyErr {
    from_code(ErrorCode::InvalidArgument, message)
}

fn from_code(code: ErrorCode, message: &str) -> PyErr {
    // Errors are built where they happen, often on a runtime thread.
    Python::attach(|py| {
        let name = code.variant_name().unwrap_or("Unknown");
        let made = FACTORY
            .get_or_try_init(py, || {
                py.import("blipmq._errors")?
                    .getattr("error_from_code")
                    .map(Bound::unbind)
            })
            .and_then(|factory| factory.bind(py).call1((code.0, name, message)));
        match made {
            Ok(exception) => PyErr::from_value(exception),
            Err(e) => e,
        }
    })
}
