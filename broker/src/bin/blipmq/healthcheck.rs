//! `blipmq healthcheck`: ask a running broker's `/readyz` and exit 0 when
//! it answers 200, 1 otherwise, with one line saying why. For container
//! images without curl (`HEALTHCHECK CMD ["blipmq", "healthcheck"]`); a
//! blocking std socket is all it needs, so no runtime is started.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use blipmq_broker::config::Listener;
use blipmq_broker::Config;

use crate::args::HealthcheckOptions;

/// How long each of connect, send and the answer may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read: `/readyz` says a few lines.
const MAX_ANSWER: u64 = 64 * 1024;

pub fn run(options: &HealthcheckOptions) -> ExitCode {
    let addr = match target(options) {
        Ok(addr) => addr,
        Err(problem) => {
            println!("not ready: {problem}");
            return ExitCode::FAILURE;
        }
    };
    match probe(addr) {
        Ok((200, _)) => {
            println!("ready: http://{addr}/readyz answered 200");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let why = body.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("not ready: http://{addr}/readyz answered {status}: {why}");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("not ready: cannot ask http://{addr}/readyz: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--http`, else the HTTP port the broker's config (file and `BLIPMQ_*`
/// variables, as the broker reads them) names.
fn target(options: &HealthcheckOptions) -> Result<SocketAddr, String> {
    if let Some(http) = &options.http {
        return http
            .to_socket_addrs()
            .map_err(|e| format!("--http {http}: {e}"))?
            .next()
            .ok_or_else(|| format!("--http {http}: no address"));
    }
    let config = Config::load(options.config.as_deref(), std::env::vars())
        .map_err(|e| format!("cannot read the config to find the HTTP port: {e}"))?;
    if !config.metrics.enabled {
        return Err("the HTTP port is off (metrics.enabled = false); pass --http".into());
    }
    if config.tls_on(Listener::Metrics) {
        return Err("the HTTP port speaks HTTPS (metrics.tls), which healthcheck does not; probe /readyz with an HTTPS client".into());
    }
    let mut addr = config.metrics.bind_addr;
    // Bound to every address: this host answers on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// GET /readyz: the status code and the body.
fn probe(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.take(MAX_ANSWER).read_to_string(&mut answer)?;
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| answer.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")
        })?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}
