//! Why a connection ended: a kind to act on, the wire code that goes with
//! it, a message for people, and the I/O error underneath when there is one
//! (through `std::error::Error::source`).

use std::fmt;
use std::io;
use std::sync::Arc;

use blipmq_protocol::ErrorCode;

/// What ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectKind {
    /// The broker closed the connection (a restart, a limit, a keepalive
    /// that went unanswered, an administrator).
    BrokerClosed,
    /// Reading from or writing to the connection failed (reset, timed out,
    /// network down): [`DisconnectReason::io_kind`] says how.
    Io,
    /// The broker sent bytes the client cannot read as frames: the
    /// connection cannot go on.
    Protocol,
}

/// Why a connection ended, as [`crate::ClientEvent::Disconnected`] reports
/// it. Displays as the message; `source()` is the I/O error, for `Io`.
#[derive(Debug, Clone)]
pub struct DisconnectReason {
    kind: DisconnectKind,
    message: String,
    source: Option<Arc<io::Error>>,
}

impl DisconnectReason {
    pub(crate) fn broker_closed() -> DisconnectReason {
        DisconnectReason {
            kind: DisconnectKind::BrokerClosed,
            message: "the broker closed the connection".into(),
            source: None,
        }
    }

    /// What reading from the connection failed with: a broker that closed
    /// the connection and said why ([`ClosedByBroker`], as a WebSocket
    /// close frame does) is `BrokerClosed`, anything else `Io`.
    pub(crate) fn read_failed(error: io::Error) -> DisconnectReason {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ClosedByBroker>())
        {
            Some(closed) => DisconnectReason {
                kind: DisconnectKind::BrokerClosed,
                message: format!("the broker closed the connection: {}", closed.0),
                source: None,
            },
            None => DisconnectReason::io("read", error),
        }
    }

    /// `what` failed with `error` (e.g. "read", "write", "resubscribe").
    pub(crate) fn io(what: &str, error: io::Error) -> DisconnectReason {
        DisconnectReason {
            kind: DisconnectKind::Io,
            message: format!("{what} failed: {error}"),
            source: Some(Arc::new(error)),
        }
    }

    pub(crate) fn protocol(message: impl fmt::Display) -> DisconnectReason {
        DisconnectReason {
            kind: DisconnectKind::Protocol,
            message: format!("broker sent a bad frame: {message}"),
            source: None,
        }
    }

    pub fn kind(&self) -> DisconnectKind {
        self.kind
    }

    /// The kind of the I/O error underneath, for [`DisconnectKind::Io`].
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.source.as_ref().map(|error| error.kind())
    }

    /// The code from the protocol's error table that requests cut short by
    /// this disconnect fail with, or that describes it: `MalformedFrame`
    /// for a protocol failure, `ConnectionClosed` otherwise.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DisconnectKind::Protocol => ErrorCode::MalformedFrame,
            DisconnectKind::BrokerClosed | DisconnectKind::Io => ErrorCode::ConnectionClosed,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DisconnectReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}

/// The error a transport's reader returns when the broker closed the
/// connection on purpose and said why (a WebSocket close frame with a code
/// other than a plain 1000, which reads as the end of the stream): the
/// same as a TCP broker that sends its Error frame and closes, so the
/// disconnect is `BrokerClosed` on every transport.
#[cfg_attr(not(all(feature = "web", target_arch = "wasm32")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct ClosedByBroker(pub String);

impl fmt::Display for ClosedByBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClosedByBroker {}

/// Equal when kind and message are: events compare without the I/O error
/// object itself (which is not comparable).
impl PartialEq for DisconnectReason {
    fn eq(&self, other: &DisconnectReason) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for DisconnectReason {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_reason_keeps_its_error_as_the_source() {
        let reason = DisconnectReason::io(
            "read",
            io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer"),
        );
        assert_eq!(reason.kind(), DisconnectKind::Io);
        assert_eq!(reason.io_kind(), Some(io::ErrorKind::ConnectionReset));
        assert_eq!(reason.code(), ErrorCode::ConnectionClosed);
        assert_eq!(reason.to_string(), "read failed: reset by peer");
        let source = reason.source().expect("a source");
        assert_eq!(source.to_string(), "reset by peer");
    }

    #[test]
    fn other_reasons_have_no_source() {
        let closed = DisconnectReason::broker_closed();
        assert_eq!(closed.kind(), DisconnectKind::BrokerClosed);
        assert!(closed.source().is_none() && closed.io_kind().is_none());
        let bad = DisconnectReason::protocol("length 0");
        assert_eq!(bad.kind(), DisconnectKind::Protocol);
        assert_eq!(bad.code(), ErrorCode::MalformedFrame);
        assert_ne!(closed, bad);
        assert_eq!(closed, DisconnectReason::broker_closed());
    }

    #[test]
    fn a_read_ended_by_the_broker_saying_why_is_broker_closed() {
        let said = DisconnectReason::read_failed(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            ClosedByBroker("close code 4501: protocol error 501: shutting down".into()),
        ));
        assert_eq!(said.kind(), DisconnectKind::BrokerClosed);
        assert_eq!(said.code(), ErrorCode::ConnectionClosed);
        assert!(said.source().is_none());
        assert_eq!(
            said.to_string(),
            "the broker closed the connection: close code 4501: protocol error 501: shutting down"
        );
        let lost = DisconnectReason::read_failed(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "close code 1006: no connection, or it was lost",
        ));
        assert_eq!(lost.kind(), DisconnectKind::Io);
        assert_eq!(lost.io_kind(), Some(io::ErrorKind::ConnectionAborted));
    }
}
