//! `blipmq._native`: the pyo3 extension under the `blipmq` Python package.
//! Each module adapts one part of the `blipmq` client crate; the Python
//! layer (`python/blipmq/`) adds the public classes, the exceptions and the
//! synchronous API.

use pyo3::prelude::*;

mod client;
mod completion;
mod error;
mod message;
mod runtime;
mod subscription;

#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(client::connect, module)?)?;
    module.add_function(wrap_pyfunction!(runtime::shutdown, module)?)?;
    module.add_class::<client::Client>()?;
    module.add_class::<subscription::Subscription>()?;
    module.add_class::<message::Message>()?;
    module.add_class::<runtime::Ready>()?;
    Ok(())
}
