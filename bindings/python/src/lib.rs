//! `blipmq._native`: the pyo3 extension under the `blipmq` Python package.
//! Each module adapts one part of the `blipmq` client crate; the Python
//! layer (`python/blipmq/`) adds the public classes, the exceptions and the
//! synchronous API.

use pyo3::prelude::*;

// The extension's own Rust allocations (read buffers, messages, publish
// batches) come from mimalloc; Python objects stay on Python's allocator.
// Under glibc malloc the memory of freed read buffers went back to the
// system and was faulted in again (a 1 KiB subscriber of 300,000 messages:
// 97k page faults, 74k with mimalloc). Interleaved runs of the SDK bench's
// roles, 3 each: subscriber CPU 1.57 -> 1.34 us/msg at 1 KiB, publisher
// 1.71 -> 1.54; 16 B about the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod completion;
mod error;
mod events;
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
    module.add_class::<events::Events>()?;
    module.add_class::<message::Message>()?;
    module.add_class::<runtime::Ready>()?;
    Ok(())
}
