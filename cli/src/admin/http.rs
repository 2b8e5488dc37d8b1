//! The smallest HTTP/1.1 client the admin commands need: one GET or DELETE
//! per connection, over plain TCP or TLS (`https://`, or any `--tls-*`
//! option), the answer read to its end. The broker's HTTP port closes each
//! connection we ask it to, so no chunked bodies or keep-alive are involved.

use std::time::Duration;

use blipmq::tls::TlsOptions;
use blipmq::transport::TlsConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::CliError;

/// How long connecting, and then the whole exchange, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: a full page of the largest list is a few MB.
const MAX_ANSWER: u64 = 64 << 20;

pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `method target` on the broker's HTTP port at `addr` (`host:port`,
/// `http://host:port` or `https://host:port`), with `key` as a bearer token
/// when given. TLS when the address says `https://` or `tls` is given; the
/// broker's certificate is checked against `tls`'s CA, else the system's.
pub async fn call(
    addr: &str,
    method: &str,
    target: &str,
    key: Option<&str>,
    tls: Option<&TlsOptions>,
) -> Result<Answer, CliError> {
    let (https, host) = host_port(addr)?;
    let unreachable = |why: String| {
        CliError::runtime(format!(
            "cannot reach the broker's HTTP port at {host}: {why} (is the broker running? --http or BLIPMQ_HTTP sets the address)"
        ))
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(host)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(unreachable(error.to_string())),
        Err(_) => return Err(unreachable("timed out connecting".into())),
    };
    let authorization = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: blipmq-cli\r\n{authorization}Connection: close\r\n\r\n"
    );
    let answer = if https || tls.is_some() {
        let options = tls.cloned().unwrap_or_default();
        let tls_failed = |error: std::io::Error| {
            CliError::runtime(format!("TLS to the broker's HTTP port at {host}: {error}"))
        };
        let connector = TlsConnector::new(&options).map_err(tls_failed)?;
        let handshake = connector.secure(stream, host);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(tls_failed(error)),
            Err(_) => return Err(unreachable("no TLS handshake in time".into())),
        };
        exchange(stream, &request).await
    } else {
        exchange(stream, &request).await
    };
    let answer = answer.map_err(unreachable)?;
    parse(&answer).ok_or_else(|| {
        CliError::runtime(format!(
            "{host} did not answer in HTTP/1.1 (is --http the broker's HTTP port, not its client port?)"
        ))
    })
}

/// Send `request` and read the answer to its end (or to the limits).
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &str,
) -> Result<Vec<u8>, String> {
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..read]);
            // Not HTTP (the broker's client port answers in frames and
            // keeps the socket open): no point waiting for the end.
            let prefix = answer.len().min(5);
            if !b"HTTP/".starts_with(&answer[..prefix]) || answer.len() as u64 > MAX_ANSWER {
                break;
            }
        }
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        // A TLS peer that closes without close_notify after a whole answer.
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// Whether `--http` asks for HTTPS, and its `host:port`.
fn host_port(addr: &str) -> Result<(bool, &str), CliError> {
    let (https, host) = match addr.strip_prefix("https://") {
        Some(host) => (true, host),
        None => (false, addr.strip_prefix("http://").unwrap_or(addr)),
    };
    let host = host.strip_suffix('/').unwrap_or(host);
    if host.is_empty() || host.contains('/') {
        return Err(CliError::usage(format!(
            "--http {addr:?}: expected host:port"
        )));
    }
    Ok((https, host))
}

/// The status code and body of a whole answer.
fn parse(answer: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()?;
    Some(Answer {
        status,
        body: body.to_string(),
    })
}

/// A path segment with everything but unreserved characters %-escaped
/// (queue names may hold `/`, `?`, `%`, spaces).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_status_and_body() {
        let answer = parse(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (404, "{}"));
        assert!(parse(b"\x00\x00\x00\x10garbage").is_none());
    }

    #[test]
    fn addresses_and_names_are_checked_and_encoded() {
        assert_eq!(
            host_port("http://127.0.0.1:9090/").unwrap(),
            (false, "127.0.0.1:9090")
        );
        assert_eq!(
            host_port("localhost:9090").unwrap(),
            (false, "localhost:9090")
        );
        assert_eq!(host_port("https://h:1").unwrap(), (true, "h:1"));
        assert!(host_port("h:1/x").is_err());
        assert_eq!(encode_segment("a/b c%é"), "a%2Fb%20c%25%C3%A9");
        assert_eq!(encode_segment("orders-1.x_y~"), "orders-1.x_y~");
    }
}
