//! Address lists for `connect`: a scenario names them symbolically
//! (`addresses = ["dead", "broker"]`) and the runner turns each name into
//! the address the testee dials, in both forms (`addresses` for TCP or
//! TLS, `websocket_addresses` for SDKs that speak WebSocket), under the
//! run's TLS mode.

use serde_json::Value;

use crate::broker::Broker;

/// A port on 127.0.0.1 that nobody listens on: one the OS handed out and
/// took back. (Another process could take it meanwhile; on a test machine
/// within one scenario that does not happen in practice.)
pub fn dead_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    drop(listener);
    Ok(port)
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("", |(_, port)| port)
}

/// Replace `args["addresses"]`, a list of names, with the addresses they
/// stand for, and add `websocket_addresses`: `broker` is the broker under
/// test, `dead` an address nobody listens on.
pub fn expand(args: &mut Value, broker: &Broker, tls: bool, dead: u16) -> Result<(), String> {
    let Some(names) = args.get("addresses") else {
        return Ok(());
    };
    let names = names
        .as_array()
        .ok_or("`addresses` must be a list of names")?
        .iter()
        .map(|name| name.as_str().ok_or("`addresses` entries are strings"))
        .collect::<Result<Vec<&str>, _>>()?;
    let dead = dead.to_string();
    let (mut tcp, mut websocket) = (Vec::new(), Vec::new());
    for name in names {
        let (tcp_port, websocket_port) = match name {
            "broker" => (port(&broker.addr), port(&broker.websocket_addr)),
            "dead" => (dead.as_str(), dead.as_str()),
            other => return Err(format!("unknown address name {other:?} (broker, dead)")),
        };
        // Under TLS by name: the certificate is for localhost.
        if tls {
            tcp.push(format!("tls://localhost:{tcp_port}"));
            websocket.push(format!("wss://localhost:{websocket_port}"));
        } else {
            tcp.push(format!("127.0.0.1:{tcp_port}"));
            websocket.push(format!("ws://127.0.0.1:{websocket_port}"));
        }
    }
    args["addresses"] = Value::from(tcp);
    args["websocket_addresses"] = Value::from(websocket);
    Ok(())
}
