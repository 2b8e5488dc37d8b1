//! Hands the results of Rust futures to the asyncio event loop that awaits
//! them, without a Rust thread ever taking the GIL.
//!
//! pyo3-async-runtimes completes each future from a blocking-pool thread
//! that takes the GIL and calls `loop.call_soon_threadsafe`: every result
//! moves the GIL between threads, and on a busy machine a thread preempted
//! while it holds the GIL stalls the event loop (the SDK benchmark saw p99
//! latencies of tens of milliseconds at 5,000 msgs/s). Here a finished
//! future's result waits in a queue, one byte on a socket pair wakes the
//! loop (`loop.add_reader`), and the loop thread, which holds the GIL
//! anyway, sets every waiting result in one go.
//!
//! One `LoopWaker` per event loop, found through a `WeakKeyDictionary`
//! keyed by the loop. Loops without `add_reader` (or that cannot be weakly
//! referenced) get `None`, and the caller falls back to pyo3-async-runtimes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::prelude::AsRawFd;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyNone;

/// Turns a future's output into the Python value of its awaitable; runs on
/// the loop thread, with the GIL.
pub type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// The queue and the wake-up socket shared by a loop and the tasks
/// finishing futures for it.
pub struct Handoff {
    /// Finished futures: the `asyncio.Future` and how to make its result.
    finished: Mutex<Vec<(Py<PyAny>, Convert)>>,
    /// Written by Rust threads when `finished` stops being empty.
    wake: UnixStream,
    /// Watched by the loop.
    woken: UnixStream,
}

impl Handoff {
    /// Queue `future`'s result and wake the loop if it was not woken yet.
    pub fn finish(&self, future: Py<PyAny>, convert: Convert) {
        let was_empty = {
            let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
            finished.push((future, convert));
            finished.len() == 1
        };
        if was_empty {
            // Non-blocking: a full socket means a wake-up is pending anyway.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The event loop's side: `drain` is registered with `loop.add_reader`.
#[pyclass(module = "blipmq._native", frozen)]
pub struct LoopWaker {
    handoff: Arc<Handoff>,
    /// The process that made it: a child after `fork()` makes its own, so
    /// that parent and child never read each other's wake-ups.
    pid: u32,
}

#[pymethods]
impl LoopWaker {
    /// Set the result of every finished future (called by the event loop
    /// when the wake-up socket is readable).
    fn drain(&self, py: Python<'_>) {
        // Empty the socket first: a result queued after this wakes it again.
        let mut sink = [0u8; 64];
        while matches!((&self.handoff.woken).read(&mut sink), Ok(n) if n == sink.len()) {}
        let finished = std::mem::take(
            &mut *self
                .handoff
                .finished
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (future, convert) in finished {
            if let Err(e) = complete(py, future.bind(py), convert) {
                e.write_unraisable(py, Some(future.bind(py)));
            }
        }
    }
}

/// Set `future`'s result or exception, unless it was cancelled meanwhile.
fn complete(py: Python<'_>, future: &Bound<'_, PyAny>, convert: Convert) -> PyResult<()> {
    if future
        .call_method0(pyo3::intern!(py, "done"))?
        .is_truthy()?
    {
        return Ok(());
    }
    match convert(py) {
        Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,))?,
        Err(e) => future.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?,
    };
    Ok(())
}

/// `weakref.WeakKeyDictionary()`: event loop → `LoopWaker`, or `None` for
/// a loop that cannot have one.
static WAKERS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The hand-off to `event_loop` (made and registered on first use), or
/// `None` when that loop cannot watch a socket.
pub fn handoff_for(event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Handoff>>> {
    let py = event_loop.py();
    let wakers = WAKERS
        .get_or_try_init(py, || {
            py.import("weakref")?
                .getattr("WeakKeyDictionary")?
                .call0()
                .map(Bound::unbind)
        })?
        .bind(py);
    let known = wakers.call_method1(pyo3::intern!(py, "get"), (event_loop,))?;
    if known.is_none() {
        if wakers.contains(event_loop)? {
            return Ok(None); // tried before: no `add_reader`
        }
    } else if let Ok(waker) = known.cast::<LoopWaker>() {
        let waker = waker.get();
        if waker.pid == std::process::id() {
            return Ok(Some(waker.handoff.clone()));
        }
    }
    let made = register(event_loop);
    let entry = match &made {
        Some(waker) => waker.clone().into_any(),
        None => PyNone::get(py).to_owned().into_any(),
    };
    if wakers.set_item(event_loop, entry).is_err() {
        // Not weakly referenceable: nowhere to keep it, so no hand-off.
        if let Some(waker) = &made {
            let _ = event_loop.call_method1(
                pyo3::intern!(py, "remove_reader"),
                (waker.get().handoff.woken.as_raw_fd(),),
            );
        }
        return Ok(None);
    }
    Ok(made.map(|waker| waker.get().handoff.clone()))
}

/// A new `LoopWaker` watched by `event_loop`, or `None` when the loop does
/// not support `add_reader` (e.g. the Windows proactor loop).
fn register<'py>(event_loop: &Bound<'py, PyAny>) -> Option<Bound<'py, LoopWaker>> {
    let (wake, woken) = UnixStream::pair().ok()?;
    wake.set_nonblocking(true).ok()?;
    woken.set_nonblocking(true).ok()?;
    let fd = woken.as_raw_fd();
    let waker = Bound::new(
        event_loop.py(),
        LoopWaker {
            handoff: Arc::new(Handoff {
                finished: Mutex::new(Vec::new()),
                wake,
                woken,
            }),
            pid: std::process::id(),
        },
    )
    .ok()?;
    let drain = waker.getattr("drain").ok()?;
    event_loop
        .call_method1(pyo3::intern!(event_loop.py(), "add_reader"), (fd, drain))
        .ok()?;
    Some(waker)
}
