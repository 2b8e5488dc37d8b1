//! The transport and runtime for wasm32 hosts with a JavaScript event loop
//! (browsers, Node, Deno): a `WebSocket` from web-sys to the broker's
//! WebSocket listener, binary messages of whole frames (WS-1); tasks on the
//! event loop (`spawn_local`) and timers on `setTimeout`. No tokio, no
//! threads.
//!
//! A host's WebSocket costs far more per message than per byte, so each
//! batch the client's writer hands over goes out as few messages as
//! `WS_BATCH_LIMIT` allows, and while the host still holds unsent bytes a
//! small batch waits for the end of the current JavaScript task (a
//! zero-delay timer), so that what is published meanwhile gathers into the
//! next batch. After a quiet spell a batch goes out at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use blipmq_protocol::websocket::{next_message, WS_BATCH_LIMIT};
use bytes::BytesMut;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Function, Reflect, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

use super::{BoxFuture, Connector, Runtime, TransportReader, TransportWriter};
use crate::disconnect::ClosedByBroker;

/// Bytes the host may hold unsent before a write waits for them to drain,
/// so a fast publisher cannot grow the host's send buffer without bound.
const SEND_HIGH_WATER: u32 = 4 * 1024 * 1024;

/// How often a write waiting for the send buffer to drain looks again. The
/// WebSocket API has no drain event, so this is the one timer; it runs only
/// while the buffer is over the high-water mark.
const DRAIN_CHECK: Duration = Duration::from_millis(2);

/// Received bytes handed to the client core per read at most.
const READ_CHUNK: usize = 256 * 1024;

/// Opens WebSocket connections; `addr` is a `ws://` or `wss://` URL, or
/// `host:port` (taken as `ws://host:port`).
#[derive(Debug, Clone, Default)]
pub struct WebSocketConnector {
    constructor: Option<Function>,
}

impl WebSocketConnector {
    /// Use the host's global `WebSocket`.
    pub fn new() -> WebSocketConnector {
        WebSocketConnector::default()
    }

    /// Use this WebSocket class instead of the global one (for hosts
    /// without one, such as Node 20 with the `ws` package).
    pub fn with_constructor(constructor: Function) -> WebSocketConnector {
        WebSocketConnector {
            constructor: Some(constructor),
        }
    }
}

impl Connector for WebSocketConnector {
    fn connect(
        &self,
        addr: &str,
    ) -> BoxFuture<'static, io::Result<(Box<dyn TransportReader>, Box<dyn TransportWriter>)>> {
        let opened = websocket_url(addr).and_then(|url| {
            let socket = open(&url, self.constructor.as_ref())?;
            Ok((url, socket))
        });
        Box::pin(async move {
            let (url, socket) = opened?;
            socket.opened(&url).await?;
            Ok((
                Box::new(WsReader(socket.clone())) as Box<dyn TransportReader>,
                Box::new(WsWriter(socket)) as Box<dyn TransportWriter>,
            ))
        })
    }
}

fn websocket_url(addr: &str) -> io::Result<String> {
    if addr.starts_with("ws://") || addr.starts_with("wss://") {
        Ok(addr.to_string())
    } else if addr.contains("://") {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr}: a WebSocket address starts with ws:// or wss://"),
        ))
    } else {
        Ok(format!("ws://{addr}"))
    }
}

/// What the socket's event handlers report.
#[derive(Default)]
struct State {
    opened: bool,
    received: VecDeque<Vec<u8>>,
    /// A text message arrived: the broker never sends one.
    text_received: bool,
    /// The close code and reason, once closed.
    closed: Option<(u16, String)>,
    /// The one task waiting on the socket: the connect, then the reader.
    waker: Option<Waker>,
}

impl State {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A WebSocket with its handlers; closed when the reader and the writer
/// are both gone.
struct Socket {
    ws: WebSocket,
    state: Rc<RefCell<State>>,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

fn open(url: &str, constructor: Option<&Function>) -> io::Result<Rc<Socket>> {
    let ws: WebSocket = match constructor {
        Some(class) => Reflect::construct(class, &Array::of1(&JsValue::from_str(url)))
            .map_err(|e| js_error(url, e))?
            .unchecked_into(),
        None => {
            // Checked first: the call below would throw a ReferenceError.
            let global = js_sys::global();
            if !Reflect::has(&global, &JsValue::from_str("WebSocket")).unwrap_or(false) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this JavaScript host has no global WebSocket (on Node 20, pass the `ws` package's)",
                ));
            }
            WebSocket::new(url).map_err(|e| js_error(url, e))?
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);
    let state = Rc::new(RefCell::new(State::default()));
    let on_open = {
        let state = state.clone();
        Closure::<dyn FnMut(Event)>::new(move |_| {
            let mut state = state.borrow_mut();
            state.opened = true;
            state.wake();
        })
    };
    let on_message = {
        let state = state.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let mut state = state.borrow_mut();
            if data.is_string() {
                state.text_received = true;
            } else {
                let bytes = Uint8Array::new(&data).to_vec();
                if !bytes.is_empty() {
                    state.received.push_back(bytes);
                }
            }
            state.wake();
        })
    };
    let on_close = {
        let state = state.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            let mut state = state.borrow_mut();
            state.closed = Some((event.code(), event.reason()));
            state.wake();
        })
    };
    // An error is always followed by a close, which carries what there is to
    // know. The handler is there because some hosts (Node's `ws`) throw an
    // error event nobody listens to, even one after `close()`: so it is
    // handed to JavaScript for good (a no-op, nothing to free), and outlives
    // this socket's Rust side.
    let on_error = Closure::<dyn FnMut(Event)>::new(|_: Event| {}).into_js_value();
    ws.set_onerror(Some(on_error.unchecked_ref()));
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    Ok(Rc::new(Socket {
        ws,
        state,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    }))
}

impl Socket {
    /// Wait until the socket is open (or fails to open).
    async fn opened(&self, url: &str) -> io::Result<()> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.opened {
                return Poll::Ready(Ok(()));
            }
            if let Some((code, reason)) = &state.closed {
                // Browsers report every failure to open (refused, an HTTP
                // error such as a refused Origin) as 1006, without details.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "the WebSocket to {url} did not open ({})",
                        describe(*code, reason)
                    ),
                )));
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

fn describe(code: u16, reason: &str) -> String {
    let mut text = match code {
        4000..=4999 => format!("close code {code}: protocol error {}", code - 4000),
        1006 => "close code 1006: no connection, or it was lost".to_string(),
        _ => format!("close code {code}"),
    };
    if !reason.is_empty() {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}

fn js_error(url: &str, error: JsValue) -> io::Error {
    let text = error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"));
    io::Error::other(format!("WebSocket {url}: {text}"))
}

struct WsReader(Rc<Socket>);

impl TransportReader for WsReader {
    fn read<'a>(&'a mut self, buf: &'a mut BytesMut) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(poll_fn(move |cx| {
            let mut state = self.0.state.borrow_mut();
            if !state.received.is_empty() {
                let mut read = 0;
                while read < READ_CHUNK {
                    let Some(message) = state.received.pop_front() else {
                        break;
                    };
                    buf.extend_from_slice(&message);
                    read += message.len();
                }
                return Poll::Ready(Ok(read));
            }
            if state.text_received {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the broker sent a text message",
                )));
            }
            match &state.closed {
                // A plain close is the end of the stream; any other code
                // says why (an Error frame, when there was one, came first).
                // 1006 and 1015 are the host's: no close frame came, the
                // connection was lost; any other is the broker's close.
                Some((1000, _)) => Poll::Ready(Ok(0)),
                Some((code @ (1006 | 1015), reason)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    describe(*code, reason),
                ))),
                Some((code, reason)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    ClosedByBroker(describe(*code, reason)),
                ))),
                None => {
                    state.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }))
    }
}

struct WsWriter(Rc<Socket>);

impl TransportWriter for WsWriter {
    fn write_frames<'a>(&'a mut self, frames: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let ws = &self.0.ws;
            while ws.buffered_amount() > SEND_HIGH_WATER && ws.ready_state() == WebSocket::OPEN {
                sleep(DRAIN_CHECK).await;
            }
            if ws.buffered_amount() > 0 && frames.len() < WS_BATCH_LIMIT {
                // The host is still sending: let the frames written
                // meanwhile gather for the next message.
                sleep(Duration::ZERO).await;
            }
            if ws.ready_state() != WebSocket::OPEN {
                // Closing or closed by the broker: as with a TCP socket the
                // peer has closed, the bytes go nowhere and the reader
                // reports why (the Error frame and close code that came
                // first), which a write error here would hide.
                return Ok(());
            }
            let mut rest = frames;
            while let Some((len, _)) = next_message(rest) {
                // A copy the host owns: some hosts send later, after the
                // wasm memory behind `rest` has been reused.
                let message = Uint8Array::new_with_length(len as u32);
                message.copy_from(&rest[..len]);
                ws.send_with_js_u8_array(&message)
                    .map_err(|e| js_error(&ws.url(), e))?;
                rest = &rest[len..];
            }
            debug_assert!(rest.is_empty(), "the writer writes whole frames");
            Ok(())
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.0.ws.close_with_code(1000);
        })
    }
}

/// Runs the client's task on the JavaScript event loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebRuntime;

impl Runtime for WebRuntime {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        wasm_bindgen_futures::spawn_local(task);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(sleep(duration))
    }

    /// `Math.random()`: std's hash keys are fixed on wasm32, so every
    /// browser would otherwise draw the same reconnect waits.
    fn random_seed(&self) -> u64 {
        let high = (js_sys::Math::random() * 4_294_967_296.0) as u64;
        let low = (js_sys::Math::random() * 4_294_967_296.0) as u64;
        (high << 32) ^ low ^ crate::jitter::default_seed()
    }
}

/// `setTimeout`, which takes at most 2^31 - 1 ms (longer fires at once).
fn sleep(duration: Duration) -> TimeoutFuture {
    TimeoutFuture::new(duration.as_millis().min(i32::MAX as u128) as u32)
}
