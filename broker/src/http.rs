//! The broker's HTTP port: `GET /metrics` in the Prometheus text format,
//! `GET /livez` (the process answers: liveness; `/healthz` is its old
//! name), `GET /readyz` (200 only when the broker serves everything it
//! should: the write-ahead log is recovered and takes appends, and it is
//! not shutting down; otherwise 503 with one line per problem), and the
//! introspection API under `/v1/` (`introspection/`), over HTTP/1.1.
//!
//! Written by hand rather than with an HTTP library: paths without request
//! bodies need only the request line and a few headers, and a general HTTP
//! stack was a tenth of the binary. Keep-alive is honoured (scrapers reuse
//! connections); anything with a body, a malformed request or an oversized
//! head gets an error and the connection closes.
//!
//! No client can hold the port (see [`Limits`]): connections are capped,
//! a request head must arrive within a timeout, and a response that cannot
//! be written in time ends its connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::MetricsConfig;
use crate::introspection::{self, AdminRequest};
use crate::metrics::{inc, Metrics};
use crate::server::Shared;
use crate::tls::{MaybeTls, Tls};
use crate::wal::WalHealth;

/// The most bytes of request line and headers one request may have.
const MAX_HEAD: usize = 8 * 1024;

/// What one client of the metrics port may hold (LIMIT-24, LIMIT-25): a
/// connection slot, a request head of at most `MAX_HEAD` bytes for at most
/// `request_timeout`, and one response for at most `write_timeout`.
pub(crate) struct Limits {
    slots: Arc<Semaphore>,
    max_connections: usize,
    request_timeout: Duration,
    write_timeout: Duration,
    metrics: Arc<Metrics>,
    /// HTTPS when set (`metrics.tls`).
    tls: Option<Arc<Tls>>,
}

impl Limits {
    pub fn new(
        config: &MetricsConfig,
        metrics: Arc<Metrics>,
        tls: Option<Arc<Tls>>,
    ) -> Arc<Limits> {
        Arc::new(Limits {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            metrics,
            tls,
        })
    }

    /// The connection's byte stream: over HTTPS, once its TLS handshake is
    /// done, which must be within the request timeout like a request head.
    async fn secure(&self, stream: TcpStream) -> Option<MaybeTls> {
        let Some(tls) = &self.tls else {
            return Some(MaybeTls::Plain(stream));
        };
        match tokio::time::timeout(self.request_timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => Some(MaybeTls::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                debug!(%error, "metrics TLS handshake failed");
                None
            }
            Err(_) => {
                inc(&self.metrics.http_request_timeouts);
                None
            }
        }
    }

    /// A slot for a connection just accepted; without one it is answered
    /// 503 (if its send buffer takes that at once) and closed.
    fn admit(self: &Arc<Self>, stream: &TcpStream) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                inc(&self.metrics.http_connections);
                Some(Slot {
                    permit: Some(permit),
                    limits: self.clone(),
                })
            }
            Err(_) => {
                inc(&self.metrics.http_rejected);
                if self.tls.is_some() {
                    // No plaintext answer on an HTTPS port: closed at once.
                    return None;
                }
                let body = format!(
                    "too many connections: metrics.max_connections is {}\n",
                    self.max_connections
                );
                let _ = stream.try_write(
                    format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                None
            }
        }
    }

    /// Read a request head within the request timeout; a timeout is `None`.
    async fn read_head(
        &self,
        stream: &mut MaybeTls,
        buffer: &mut Vec<u8>,
    ) -> Option<Result<Option<usize>, HeadError>> {
        let read = tokio::time::timeout(self.request_timeout, read_head(stream, buffer)).await;
        if read.is_err() {
            inc(&self.metrics.http_request_timeouts);
        }
        read.ok()
    }

    /// Write a response within the write timeout; a timeout is an error.
    async fn write(
        &self,
        stream: &mut MaybeTls,
        response: &Response,
        keep_alive: bool,
        head_only: bool,
    ) -> std::io::Result<()> {
        let written = tokio::time::timeout(
            self.write_timeout,
            write(stream, response, keep_alive, head_only),
        )
        .await;
        written.unwrap_or_else(|_| {
            inc(&self.metrics.http_write_timeouts);
            Err(std::io::ErrorKind::TimedOut.into())
        })
    }
}

/// A metrics connection's slot, freed (and the gauge lowered) on drop.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limits: Arc<Limits>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Free the slot before the gauge says it is free.
        self.permit = None;
        self.limits
            .metrics
            .http_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "metrics accept failed");
                    // Out of file descriptors and the like: back off.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = limits.admit(&stream) else {
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = serve_connection(stream, &shared, &limits) => {
                    if let Err(error) = result {
                        debug!(%error, "metrics connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
            drop(slot);
        });
    }
}

/// Answer requests on one connection until the client closes it, asks to,
/// or sends something this endpoint does not take.
async fn serve_connection(
    stream: TcpStream,
    shared: &Shared,
    limits: &Limits,
) -> std::io::Result<()> {
    let Some(mut stream) = limits.secure(stream).await else {
        return Ok(());
    };
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let head_len = match limits.read_head(&mut stream, &mut buffer).await {
            Some(Ok(Some(len))) => len,
            // The client closed between requests, or went quiet.
            Some(Ok(None)) | None => return Ok(()),
            Some(Err(HeadError::TooLarge)) => {
                let response = Response::plain(431, "request head too large\n");
                return limits.write(&mut stream, &response, false, false).await;
            }
            Some(Err(HeadError::Io(error))) => return Err(error),
        };
        let (response, keep_alive, head_only) = match parse_request(&buffer[..head_len]) {
            Ok(request) => {
                let response = respond(&request, shared).await;
                // A body would have to be read and skipped; none of these
                // paths takes one, so the connection ends after the answer.
                let keep_alive = request.keep_alive && !request.has_body;
                (response, keep_alive, request.method == "HEAD")
            }
            Err(reason) => (Response::plain(400, reason), false, false),
        };
        // Pipelined requests after this one stay for the next round.
        buffer.drain(..head_len);
        limits
            .write(&mut stream, &response, keep_alive, head_only)
            .await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

enum HeadError {
    TooLarge,
    Io(std::io::Error),
}

/// Read until `buffer` holds a whole request head (through the blank line);
/// its length, or `None` if the peer closed before sending anything more.
async fn read_head(
    stream: &mut MaybeTls,
    buffer: &mut Vec<u8>,
) -> Result<Option<usize>, HeadError> {
    let mut searched = 0;
    loop {
        if let Some(end) = find_head_end(buffer, searched) {
            return Ok(Some(end));
        }
        if buffer.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // The terminator may straddle two reads: look again from 3 back.
        searched = buffer.len().saturating_sub(3);
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if read == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// The length of the head through its `\r\n\r\n`, searching from `from`.
fn find_head_end(buffer: &[u8], from: usize) -> Option<usize> {
    buffer[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

#[derive(Debug, PartialEq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    /// After the `?` ("" when none).
    query: &'a str,
    /// The `Authorization` header (introspection needs an admin's key).
    authorization: Option<&'a str>,
    keep_alive: bool,
    has_body: bool,
}

/// Parse a request head: the request line and the headers that matter here.
fn parse_request(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8\n")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line\n");
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported HTTP version\n"),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method\n");
    }
    // The path decides; only the introspection lists read the query.
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err("the request target must be a path\n");
    }
    let mut keep_alive = http11;
    let mut has_body = false;
    let mut authorization = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err("malformed header line\n");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            has_body |= value != "0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value);
        }
    }
    Ok(Request {
        method,
        path,
        query,
        authorization,
        keep_alive,
        has_body,
    })
}

struct Response {
    status: u16,
    content_type: &'static str,
    allow: Option<&'static str>,
    body: String,
}

impl Response {
    fn plain(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            body: body.to_string(),
        }
    }
}

async fn respond(request: &Request<'_>, shared: &Shared) -> Response {
    if introspection::owns(request.path) {
        let reply = introspection::answer(
            &AdminRequest {
                method: request.method,
                path: request.path,
                query: request.query,
                authorization: request.authorization,
            },
            shared,
        )
        .await;
        return Response {
            status: reply.status,
            content_type: "application/json",
            allow: reply.allow,
            body: reply.body,
        };
    }
    let readable = matches!(request.method, "GET" | "HEAD");
    match request.path {
        "/metrics" | "/livez" | "/healthz" | "/readyz" if !readable => Response {
            allow: Some("GET, HEAD"),
            ..Response::plain(405, "method not allowed; use GET\n")
        },
        "/metrics" => Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..Response::plain(200, &shared.metrics.render(&shared.gauges()))
        },
        "/livez" | "/healthz" => Response::plain(200, "ok\n"),
        "/readyz" => readiness(shared),
        _ => Response::plain(
            404,
            "not found; try /metrics, /livez, /readyz or /v1/server\n",
        ),
    }
}

/// `/readyz`: what keeps the broker from serving QoS 1, if anything.
fn readiness(shared: &Shared) -> Response {
    if shared.draining.load(Ordering::Relaxed) {
        return Response::plain(503, "not ready\ndraining: the broker is shutting down\n");
    }
    let problem = match shared.durable.health() {
        WalHealth::Ok => return Response::plain(200, "ready\n"),
        WalHealth::Full => "log full: wal.max_bytes reached; QoS 1 publishes are refused until durable subscriptions catch up".to_string(),
        WalHealth::NoSpace(reason) => format!("disk full: QoS 1 publishes are refused until space is freed: {reason}"),
        WalHealth::Failing(reason) => format!("log failing: QoS 1 publishes are refused while it is retried: {reason}"),
        WalHealth::Stopped(reason) => format!("log stopped: {reason}"),
    };
    Response::plain(503, &format!("not ready\n{problem}\n"))
}

/// Answers every request with 503 while the write-ahead log is replayed at
/// start (before there is anything else to serve), so a readiness probe
/// hears "recovering" rather than nothing.
pub(crate) async fn serve_while_recovering(listener: &TcpListener, limits: &Arc<Limits>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(slot) = limits.admit(&stream) else {
            continue;
        };
        let limits = limits.clone();
        tokio::spawn(async move {
            let Some(mut stream) = limits.secure(stream).await else {
                return;
            };
            let mut buffer = Vec::with_capacity(1024);
            if let Some(Ok(Some(head_len))) = limits.read_head(&mut stream, &mut buffer).await {
                let head_only =
                    parse_request(&buffer[..head_len]).is_ok_and(|r| r.method == "HEAD");
                let response = Response::plain(
                    503,
                    "not ready\nrecovering: replaying the write-ahead log\n",
                );
                let _ = limits.write(&mut stream, &response, false, head_only).await;
            }
            drop(slot);
        });
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn write(
    stream: &mut MaybeTls,
    response: &Response,
    keep_alive: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if let Some(allow) = response.allow {
        out.push_str(&format!("allow: {allow}\r\n"));
    }
    if !keep_alive {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    if !keep_alive {
        stream.shutdown().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_ends_at_the_first_blank_line_even_across_reads() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        assert_eq!(find_head_end(head, 0), Some(34));
        // Searching from just before a terminator split over two reads.
        assert_eq!(find_head_end(head, 30), Some(34));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
    }

    #[test]
    fn requests_parse_with_their_keep_alive_and_body() {
        fn parse(head: &str) -> Result<Request<'_>, &'static str> {
            parse_request(head.as_bytes())
        }
        assert_eq!(
            parse("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Request {
                method: "GET",
                path: "/metrics",
                query: "x=1",
                authorization: None,
                keep_alive: true,
                has_body: false
            })
        );
        let r = parse("GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive, "HTTP/1.0 closes by default");
        let r = parse("GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\nconnection: upgrade, close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert!(r.has_body);
        let r = parse("POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(r.has_body);
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        for head in [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/2\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        ] {
            assert!(parse_request(head.as_bytes()).is_err(), "{head:?}");
        }
        assert!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
    }
}
