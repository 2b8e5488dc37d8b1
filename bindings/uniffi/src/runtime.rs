//! The binding's own tokio runtime.
//!
//! uniffi lets the foreign language drive Rust futures: Kotlin's coroutines
//! and Swift's tasks poll them on their own threads. The client crate needs
//! a tokio context for its socket, its timers and its background task, so
//! every exported future is wrapped in [`OnRuntime`], which enters this
//! runtime for the duration of each poll. Futures are polled where the
//! caller is (no hop to another thread per call); what they spawn and the
//! I/O they wait on belong to this runtime, whose worker threads live as long
//! as the process.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use tokio::runtime::{Builder, Runtime};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .thread_name("blipmq")
        .enable_all()
        .build()
        // Only fails when the OS refuses threads or an epoll instance: no
        // client could work then, and uniffi turns the panic into an error.
        .expect("the blipmq runtime could not start")
});

/// `future`, polled inside the binding's runtime.
pub fn on_runtime<F: Future>(future: F) -> OnRuntime<F> {
    OnRuntime {
        future: Box::pin(future),
    }
}

/// A future that enters the runtime each time it is polled. Dropping it
/// (when the caller's coroutine or task is cancelled) drops the inner future.
pub struct OnRuntime<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Future for OnRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _context = RUNTIME.enter();
        self.future.as_mut().poll(cx)
    }
}
