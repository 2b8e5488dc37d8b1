//! The WebSocket listener's transport, for clients that cannot open TCP
//! sockets (browsers). The protocol is the same as over TCP: the upgrade is
//! followed by the same handshake, auth, limits and metrics, because the
//! connection logic (`connection.rs`) runs unchanged on a byte stream that
//! this module makes out of WebSocket messages:
//!
//! - **in**: each binary message must be one or more whole length-prefixed
//!   frames (WS-1); its bytes are handed to the connection's reader as they
//!   are, which applies every limit it applies over TCP.
//! - **out**: the writer's batches are cut at frame boundaries into
//!   messages of whole frames, at most `WS_BATCH_LIMIT` bytes each unless
//!   one frame is larger: one message per batch, the way the writer's
//!   batches are one write over TCP.
//! - **close**: the close code tells why (see [`close_code`]): `4000 + code`
//!   for a protocol error code (after the Error frame that explains it, or
//!   instead of one for a message that is not whole frames), 1003 for a text
//!   message, 1000 for a plain close.
//!
//! The upgrade itself is tokio-tungstenite's; the listener checks the
//! page's `Origin` against `websocket.allowed_origins` there.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use blipmq_protocol::websocket::{check_message, next_message, WS_BATCH_LIMIT};
use blipmq_protocol::{decode, ErrorCode, Frame, LENGTH_PREFIX_LEN};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::{Admission, ReadBudget};
use crate::connection;
use crate::metrics::{add, inc, Metrics};
use crate::server::Shared;
use crate::throttle::clip;
use crate::tls::{self, MaybeTls};

/// Frames buffered by the outgoing adapter before a write waits for the
/// socket; the writer's own batches are bounded by `max_batch_bytes`.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// How long a closed connection waits for the peer's close reply, so that
/// the peer reads the close frame before the socket goes away.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The close code that reports protocol error `code`: 4000 + code, in the
/// range RFC 6455 leaves to applications (every code in the table is < 1000).
pub fn close_code(code: ErrorCode) -> u16 {
    4000 + code.0
}

type Socket = WebSocketStream<Metered>;

/// The most bytes of HTTP upgrade request the broker reads. Browsers send
/// the page's cookies with it, so it is given more room than the metrics
/// port's requests (as much as Node's default header limit).
const MAX_UPGRADE_REQUEST: usize = 16 * 1024;

/// The most bytes read after the upgrade until the Hello is accepted: a
/// Hello as large as one over TCP may be (`MAX_HANDSHAKE_FRAME` and its
/// prefix), and room for its WebSocket framing (a frame header is at most
/// 14 bytes; a fragmented Hello or a few pings fit).
const MAX_PRE_AUTH_BYTES: usize = connection::MAX_HANDSHAKE_FRAME + LENGTH_PREFIX_LEN + 256;

/// tungstenite's read chunk: it zero-fills this much of its buffer for each
/// read, so it is also what an idle connection's buffer costs. Larger
/// messages are read in several chunks.
const READ_CHUNK: usize = 16 * 1024;

/// Upgrade `stream` and serve it as a client connection until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    mut admission: Admission,
) {
    // wss: the TLS handshake first, by the same deadline as the upgrade.
    let stream = match tls {
        Some(acceptor) => {
            let secured = tls::handshake(
                acceptor,
                stream,
                admission.deadline,
                &shutdown,
                &shared.metrics,
                peer,
            );
            match secured.await {
                Some(stream) => stream,
                None => return,
            }
        }
        None => MaybeTls::Plain(stream),
    };
    let budget = ReadBudget::new(AtomicUsize::new(MAX_UPGRADE_REQUEST));
    let stream = Metered {
        stream,
        budget: budget.clone(),
        request_end: Some(0),
        held: Vec::new(),
    };
    let Some(socket) = upgrade(stream, peer, &shared, &shutdown, admission.deadline).await else {
        return;
    };
    admission.lift_on_admit(budget);
    let (reader, writer, returned) = split(socket, shared.metrics.clone());
    connection::serve(reader, writer, peer, shared, shutdown, admission).await;
    linger(returned).await;
}

/// The socket under tungstenite. Until the Hello is accepted it lets
/// tungstenite read only a budget of bytes: the upgrade request (up to
/// `MAX_UPGRADE_REQUEST`, and never past its end), then `MAX_PRE_AUTH_BYTES`
/// of WebSocket frames. So what tungstenite can buffer for an
/// unauthenticated peer is bounded as over TCP (LIMIT-22), while after the
/// Hello messages up to the largest frame are read. (tokio-tungstenite
/// offers no way to change a live stream's `max_message_size`; the budget
/// caps the bytes instead, whatever the framing: one frame, fragments, or
/// control frames.)
struct Metered {
    stream: MaybeTls,
    /// Bytes tungstenite may still take; `usize::MAX` once the Hello is
    /// accepted.
    budget: ReadBudget,
    /// While the upgrade request is read: how many bytes of its end
    /// (`\r\n\r\n`) the bytes so far end with. `None` after it.
    request_end: Option<usize>,
    /// Bytes read from the socket past the request's end, passed on first
    /// (and counted against the frame budget).
    held: Vec<u8>,
}

/// The error a read past the pre-authentication budget fails with.
#[derive(Debug)]
struct OverBudget {
    limit: usize,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than {} bytes before the handshake completed",
            self.limit
        )
    }
}

impl std::error::Error for OverBudget {}

fn is_over_budget(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<OverBudget>())
}

/// Where the HTTP request head ends in `data`, given that the bytes before
/// it ended with `matched` bytes of `\r\n\r\n`: `Ok(index past the end)`,
/// or `Err(matched)` at the end of `data`.
fn find_request_end(data: &[u8], mut matched: usize) -> Result<usize, usize> {
    const END: &[u8; 4] = b"\r\n\r\n";
    for (i, &byte) in data.iter().enumerate() {
        matched = if byte == END[matched] {
            matched + 1
        } else {
            usize::from(byte == b'\r')
        };
        if matched == END.len() {
            return Ok(i + 1);
        }
    }
    Err(matched)
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let allowed = this.budget.load(Ordering::Relaxed);
        if allowed == usize::MAX && this.held.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        if allowed == 0 {
            let limit = match this.request_end {
                Some(_) => MAX_UPGRADE_REQUEST,
                None => MAX_PRE_AUTH_BYTES,
            };
            let error = OverBudget { limit };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
        }
        // Before the handshake only: read into a small buffer of our own so
        // that no more than the budget is taken from the socket.
        let mut chunk = [0u8; 2048];
        let limit = allowed.min(buf.remaining()).min(chunk.len());
        let mut n = if this.held.is_empty() {
            let mut limited = ReadBuf::new(&mut chunk[..limit]);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut limited))?;
            limited.filled().len()
        } else {
            let n = limit.min(this.held.len());
            chunk[..n].copy_from_slice(&this.held[..n]);
            this.held.drain(..n);
            n
        };
        let mut next_budget = None;
        if let Some(matched) = this.request_end {
            match find_request_end(&chunk[..n], matched) {
                Ok(end) => {
                    // The request is whole: tungstenite gets it and nothing
                    // more; what follows waits under the frame budget.
                    this.held.extend_from_slice(&chunk[end..n]);
                    n = end;
                    this.request_end = None;
                    next_budget = Some(MAX_PRE_AUTH_BYTES);
                }
                Err(matched) => this.request_end = Some(matched),
            }
        }
        buf.put_slice(&chunk[..n]);
        let _ = this
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left != usize::MAX).then(|| next_budget.unwrap_or(left.saturating_sub(n)))
            });
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The HTTP upgrade, with the Origin check, by the handshake deadline.
async fn upgrade(
    stream: Metered,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Option<Socket> {
    let config = &shared.config;
    // A message may hold one frame of the largest size the broker reads, or
    // a batch of frames up to WS_BATCH_LIMIT (a client packs without knowing
    // the broker's limit); a bigger one is refused by tungstenite before it
    // is buffered whole. What it carries reaches the connection's reader,
    // which applies its limits as over TCP.
    let largest = (config.max_frame_size() + LENGTH_PREFIX_LEN).max(WS_BATCH_LIMIT);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .max_message_size(Some(largest))
        .max_frame_size(Some(largest));
    let refused_origin = Arc::new(Mutex::new(None));
    // The signature is tungstenite's `Callback`; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let check_origin = {
        let refused_origin = refused_origin.clone();
        move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            let Some(origin) = request.headers().get("origin") else {
                return Ok(response);
            };
            let origin = origin.to_str().unwrap_or("");
            if config.websocket.origin_allowed(origin) {
                return Ok(response);
            }
            *refused_origin.lock() = Some(origin.to_string());
            let mut refusal = ErrorResponse::new(Some(format!(
                "origin {origin:?} is not in websocket.allowed_origins"
            )));
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            Err(refusal)
        }
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_origin, Some(ws_config));
    let result = tokio::select! {
        result = tokio::time::timeout_at(deadline, upgrade) => result,
        _ = shutdown.cancelled() => return None,
    };
    match result {
        Ok(Ok(socket)) => Some(socket),
        Ok(Err(error)) => {
            if let Some(origin) = refused_origin.lock().take() {
                inc(&shared.metrics.websocket_origin_rejections);
                if let Some(suppressed) = shared.refusal_log.admit(std::time::Instant::now()) {
                    add(&shared.metrics.log_lines_suppressed, suppressed);
                    let origin = clip(&origin, 128);
                    warn!(%peer, %origin, suppressed, "WebSocket refused: origin not allowed");
                }
            } else {
                inc(&shared.metrics.websocket_upgrade_failures);
                debug!(%peer, %error, "WebSocket upgrade failed");
            }
            None
        }
        Err(_) => {
            inc(&shared.metrics.websocket_upgrade_failures);
            debug!(%peer, "no WebSocket upgrade within the handshake timeout");
            None
        }
    }
}

/// Why the broker closes a connection, when the reader found out first.
type CloseReason = Arc<Mutex<Option<CloseFrame>>>;

/// The two halves as a byte stream, and the receiving half back once the
/// connection is done with it (for [`linger`]).
fn split(
    socket: Socket,
    metrics: Arc<Metrics>,
) -> (WsReader, WsWriter, oneshot::Receiver<SplitStream<Socket>>) {
    let (sink, stream) = socket.split();
    let reason = CloseReason::default();
    let (give_back, returned) = oneshot::channel();
    let reader = WsReader {
        stream: Some(stream),
        give_back: Some(give_back),
        current: Bytes::new(),
        ended: false,
        reason: reason.clone(),
        metrics,
    };
    let writer = WsWriter {
        sink,
        pending: BytesMut::new(),
        last_frame: None,
        reason,
        close_sent: false,
    };
    (reader, writer, returned)
}

/// After our close frame: read until the peer's reply (or a timeout), so
/// the socket is not reset under a close frame the peer has yet to read.
async fn linger(returned: oneshot::Receiver<SplitStream<Socket>>) {
    let Ok(mut stream) = returned.await else {
        return;
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Incoming messages as the protocol's byte stream.
struct WsReader {
    stream: Option<SplitStream<Socket>>,
    give_back: Option<oneshot::Sender<SplitStream<Socket>>>,
    /// The rest of the message being read.
    current: Bytes,
    ended: bool,
    reason: CloseReason,
    metrics: Arc<Metrics>,
}

impl WsReader {
    /// A message that breaks the transport's rules: remember the close code
    /// and fail the read, which ends the connection.
    fn violation(&mut self, code: CloseCode, message: String) -> io::Error {
        inc(&self.metrics.protocol_errors);
        if let CloseCode::Library(n) = code {
            self.metrics.error_sent(ErrorCode(n - 4000));
        }
        debug!(%message, "WebSocket message refused");
        let mut reason = message.clone();
        truncate_reason(&mut reason);
        *self.reason.lock() = Some(CloseFrame {
            code,
            reason: reason.into(),
        });
        self.ended = true;
        io::Error::new(io::ErrorKind::InvalidData, message)
    }
}

impl Drop for WsReader {
    fn drop(&mut self) {
        if let (Some(stream), Some(give_back)) = (self.stream.take(), self.give_back.take()) {
            let _ = give_back.send(stream);
        }
    }
}

impl AsyncRead for WsReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current[..n]);
                this.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            let Some(stream) = this.stream.as_mut().filter(|_| !this.ended) else {
                return Poll::Ready(Ok(()));
            };
            let message = match ready!(Pin::new(stream).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => {
                    this.ended = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Ok(message)) => message,
                Some(Err(WsError::Io(error))) if is_over_budget(&error) => {
                    inc(&this.metrics.handshake_too_large);
                    let code = CloseCode::Library(close_code(ErrorCode::MessageTooLarge));
                    return Poll::Ready(Err(this.violation(code, error.to_string())));
                }
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    let message =
                        format!("a message of {size} bytes exceeds the limit of {max_size} bytes");
                    let code = CloseCode::Library(close_code(ErrorCode::MessageTooLarge));
                    return Poll::Ready(Err(this.violation(code, message)));
                }
                Some(Err(error)) => {
                    this.ended = true;
                    return Poll::Ready(Err(io::Error::other(error)));
                }
            };
            match message {
                Message::Binary(data) => match check_message(&data) {
                    Ok(()) => this.current = data,
                    Err(problem) => {
                        let code = CloseCode::Library(close_code(ErrorCode::MalformedFrame));
                        return Poll::Ready(Err(this.violation(code, problem)));
                    }
                },
                Message::Text(_) => {
                    let problem =
                        "text message: BlipMQ speaks binary messages of whole frames".to_string();
                    return Poll::Ready(Err(this.violation(CloseCode::Unsupported, problem)));
                }
                // Pings are answered by tungstenite; nothing else reaches here.
                _ => {}
            }
        }
    }
}

/// The protocol's byte stream, sent as binary messages of whole frames.
struct WsWriter {
    sink: SplitSink<Socket, Message>,
    /// Written bytes not yet sent: whole frames, then maybe part of one.
    pending: BytesMut,
    /// The last frame sent: an Error frame there names the close code.
    last_frame: Option<Bytes>,
    reason: CloseReason,
    close_sent: bool,
}

impl WsWriter {
    /// Hand every whole frame in `pending` to the socket, packed into as
    /// few messages as `WS_BATCH_LIMIT` allows.
    fn send_whole_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((len, last)) = next_message(&self.pending) {
            ready!(self.sink.poll_ready_unpin(cx)).map_err(io::Error::other)?;
            let message = self.pending.split_to(len).freeze();
            self.last_frame = Some(message.slice(last..));
            self.sink
                .start_send_unpin(Message::Binary(message))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Why the connection closes: what the reader saw, else the Error frame
    /// sent last, else a normal close.
    fn close_frame(&self) -> CloseFrame {
        if let Some(frame) = self.reason.lock().clone() {
            return frame;
        }
        let error =
            self.last_frame
                .as_ref()
                .and_then(|frame| match decode(&frame[LENGTH_PREFIX_LEN..]) {
                    Ok(Frame::Error(e)) => Some((e.code, e.message.to_string())),
                    _ => None,
                });
        match error {
            Some((code, mut message)) => {
                truncate_reason(&mut message);
                CloseFrame {
                    code: CloseCode::Library(close_code(code)),
                    reason: message.into(),
                }
            }
            None => CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            },
        }
    }
}

impl AsyncWrite for WsWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Backpressure: past the high-water mark, wait until the socket takes
        // the whole frames (a partial frame must be completed first).
        if self.pending.len() >= OUT_HIGH_WATER {
            ready!(self.send_whole_frames(cx))?;
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.send_whole_frames(cx))?;
        self.sink.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        if !self.close_sent {
            // The peer may have closed first; then there is nothing to send.
            if ready!(self.sink.poll_ready_unpin(cx)).is_err() {
                return Poll::Ready(Ok(()));
            }
            let frame = self.close_frame();
            self.close_sent = true;
            if self
                .sink
                .start_send_unpin(Message::Close(Some(frame)))
                .is_err()
            {
                return Poll::Ready(Ok(()));
            }
        }
        // Errors here mean the peer is gone already, which is what we want.
        let _ = ready!(Pin::new(&mut self.sink).poll_close(cx));
        Poll::Ready(Ok(()))
    }
}

/// A close frame's reason has room for 123 bytes.
fn truncate_reason(reason: &mut String) {
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::find_request_end;

    #[test]
    fn the_request_head_ends_at_the_first_blank_line_even_across_reads() {
        assert_eq!(find_request_end(b"GET / HTTP/1.1\r\n\r\nframes", 0), Ok(18));
        assert_eq!(find_request_end(b"GET / HTTP/1.1\r\nHost: x\r", 0), Err(1));
        assert_eq!(find_request_end(b"\n\r\n\x82", 1), Ok(3));
        assert_eq!(find_request_end(b"\r\r\n\r\n", 0), Ok(5));
        assert_eq!(find_request_end(b"\r\n\rx", 0), Err(0));
    }
}
