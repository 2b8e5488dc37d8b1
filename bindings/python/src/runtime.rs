//! The extension's own tokio runtime, and the bridge from Rust futures to
//! Python awaitables.
//!
//! The runtime is created on first use, rebuilt in a child after `fork()`
//! (the parent's worker threads do not exist there), and shut down by
//! [`shutdown`], which the Python package registers with `atexit`: worker
//! threads that outlive the interpreter would crash the process at exit.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyNone;
use pyo3::IntoPyObjectExt;
use pyo3_async_runtimes::generic::{ContextExt, Runtime as GenericRuntime};
use pyo3_async_runtimes::TaskLocals;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;

use crate::completion::{handoff_for, Handoff};
use crate::error::client_closed;

/// How long interpreter exit waits for tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

enum State {
    NotStarted,
    /// A runtime, and the process that built it.
    Running {
        pid: u32,
        runtime: Runtime,
    },
    /// Shut down at interpreter exit; nothing may start another.
    ShutDown,
}

static STATE: Mutex<State> = Mutex::new(State::NotStarted);

/// The handle of this process's runtime, built on first use.
pub fn handle() -> PyResult<Handle> {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match &*state {
        State::Running {
            pid: owner,
            runtime,
        } if *owner == pid => return Ok(runtime.handle().clone()),
        State::ShutDown => return Err(client_closed("the blipmq runtime has shut down")),
        _ => {}
    }
    if let State::Running { runtime, .. } = std::mem::replace(&mut *state, State::NotStarted) {
        // Inherited through fork(): its threads live only in the parent, so
        // dropping it here would wait for them forever.
        std::mem::forget(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("blipmq")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let handle = runtime.handle().clone();
    *state = State::Running { pid, runtime };
    Ok(handle)
}

/// Stop the runtime (registered with `atexit`): running tasks get a short
/// grace period, then are dropped. Later calls raise `ClientClosed`.
#[pyfunction]
pub fn shutdown(py: Python<'_>) {
    let state = std::mem::replace(
        &mut *STATE.lock().unwrap_or_else(|e| e.into_inner()),
        State::ShutDown,
    );
    if let State::Running { pid, runtime } = state {
        if pid == std::process::id() {
            // Detached: tasks finishing now may need the GIL.
            py.detach(|| runtime.shutdown_timeout(SHUTDOWN_GRACE));
        } else {
            std::mem::forget(runtime);
        }
    }
}

/// Turn a Rust future into a Python awaitable. The future is polled once
/// right away: when it is already done (a QoS 0 publish with room in the
/// queue, a buffered message) the result is returned without a trip through
/// the runtime; otherwise it is spawned and an `asyncio.Future` of the
/// running loop is returned, completed through that loop's hand-off (see
/// `completion`), or by pyo3-async-runtimes for a loop that cannot have one.
pub fn awaitable<'py, F, T>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let handle = handle()?;
    let mut future = Box::pin(future);
    let polled = {
        let _context = handle.enter();
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    };
    match polled {
        Poll::Ready(result) => {
            let result = result.and_then(|value| value.into_py_any(py));
            Bound::new(py, Ready(Some(result))).map(Bound::into_any)
        }
        Poll::Pending => {
            let event_loop = running_loop(py)?;
            match handoff_for(&event_loop)? {
                Some(handoff) => spawn_for_loop(&event_loop, &handle, future, handoff),
                None => pyo3_async_runtimes::generic::future_into_py::<Tokio, _, _>(py, future),
            }
        }
    }
}

/// `asyncio.get_running_loop()`: raises `RuntimeError` outside a coroutine.
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET_RUNNING_LOOP
        .get_or_try_init(py, || {
            py.import("asyncio")?
                .getattr("get_running_loop")
                .map(Bound::unbind)
        })?
        .bind(py)
        .call0()
}

/// Run `future` on the runtime; its result reaches the returned
/// `asyncio.Future` through `handoff`. Cancelling that future drops
/// `future` (a pending receive then loses nothing).
fn spawn_for_loop<'py, F, T>(
    event_loop: &Bound<'py, PyAny>,
    handle: &Handle,
    future: Pin<Box<F>>,
    handoff: std::sync::Arc<Handoff>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let py = event_loop.py();
    let awaited = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let stop = CancellationToken::new();
    awaited.call_method1(
        pyo3::intern!(py, "add_done_callback"),
        (StopOnDone(stop.clone()),),
    )?;
    let target = awaited.clone().unbind();
    handle.spawn(async move {
        let output = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            output = future => output,
        };
        handoff.finish(
            target,
            Box::new(move |py| output.and_then(|value| value.into_py_any(py))),
        );
    });
    Ok(awaited)
}

/// The done callback of an awaitable's `asyncio.Future`: once it is done,
/// by its result or by cancellation, the Rust future is not needed.
#[pyclass(module = "blipmq._native", frozen)]
struct StopOnDone(CancellationToken);

#[pymethods]
impl StopOnDone {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.0.cancel();
    }
}

/// An awaitable that is already complete.
#[pyclass(module = "blipmq._native")]
pub struct Ready(Option<PyResult<Py<PyAny>>>);

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Finish at once: the value travels in `StopIteration`, as a
    /// coroutine's return value does.
    fn __next__(&mut self) -> PyResult<Py<PyAny>> {
        match self.0.take() {
            Some(Ok(value)) => Err(PyStopIteration::new_err((value,))),
            Some(Err(e)) => Err(e),
            None => Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited result",
            )),
        }
    }
}

tokio::task_local! {
    static TASK_LOCALS: TaskLocals;
}

/// The runtime as pyo3-async-runtimes sees it.
struct Tokio;

impl GenericRuntime for Tokio {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        current().spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        current().spawn_blocking(f)
    }
}

impl ContextExt for Tokio {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        Box::pin(TASK_LOCALS.scope(locals, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(Clone::clone).ok()
    }
}

/// The runtime of the calling task, or this process's runtime.
fn current() -> Handle {
    Handle::try_current()
        .ok()
        .or_else(|| handle().ok())
        .expect("awaitable() checked that the runtime is running")
}

/// The result of an operation that returns nothing: Python's `None` (a
/// Rust `()` would become an empty tuple).
pub struct Nothing;

impl<'py> IntoPyObject<'py> for Nothing {
    type Target = PyNone;
    type Output = Borrowed<'py, 'py, PyNone>;
    type Error = Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Infallible> {
        Ok(PyNone::get(py))
    }
}
