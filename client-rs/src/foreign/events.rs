//! Client events as one flat record of plain fields, so that each binding
//! only copies fields into its runtime's shape and none of them takes a
//! [`ClientEvent`] apart itself (where four copies of that match drifted).

use std::io;

use blipmq_protocol::{error_code_name, ErrorCode};

use crate::{ClientEvent, DisconnectKind};

/// Which event a [`ForeignEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Connected again after a lost connection: `connection_id` and
    /// `address`.
    Connected,
    /// The connection was lost: `message`, `code` and `disconnect`.
    Disconnected,
    /// A reconnect attempt failed: `attempt` and `message`.
    ReconnectFailed,
    /// An error frame that answers no request: `code` and `message`.
    ServerError,
    /// The client has closed: the last event.
    Closed,
}

impl EventKind {
    /// The kind's name as the bindings pass it to their own language's
    /// layer: `connected`, `disconnected`, `reconnect_failed`,
    /// `server_error` or `closed` (the conformance suite's names too).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::ReconnectFailed => "reconnect_failed",
            EventKind::ServerError => "server_error",
            EventKind::Closed => "closed",
        }
    }
}

/// A [`ClientEvent`] flattened: `kind` says which fields are set (see
/// [`EventKind`]); the others are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignEvent {
    pub kind: EventKind,
    /// `Connected`: the broker's id of the new connection.
    pub connection_id: Option<u64>,
    /// `Connected`: the broker address of the new connection, as given to
    /// connect.
    pub address: Option<String>,
    /// `ReconnectFailed`: which attempt failed, from 1.
    pub attempt: Option<u32>,
    /// Text for people: why the connection ended (`Disconnected`), why the
    /// attempt failed (`ReconnectFailed`), the broker's words (`ServerError`).
    pub message: Option<String>,
    /// `ServerError`: the error frame's code. `Disconnected`: the code that
    /// goes with the reason ([`crate::DisconnectReason::code`]), the one
    /// calls cut short by it fail with.
    pub code: Option<ErrorCode>,
    /// `Disconnected`: why, as a type to act on.
    pub disconnect: Option<ForeignDisconnect>,
}

/// The typed part of a [`crate::DisconnectReason`], in plain fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignDisconnect {
    pub kind: DisconnectKind,
    /// `Io`: the kind of the I/O error underneath (the reason's source).
    pub io_kind: Option<io::ErrorKind>,
}

impl ForeignDisconnect {
    /// `broker_closed`, `io` or `protocol`: the name every SDK gives the kind.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            DisconnectKind::BrokerClosed => "broker_closed",
            DisconnectKind::Io => "io",
            DisconnectKind::Protocol => "protocol",
        }
    }

    /// The I/O error's kind in snake case (`connection_reset`,
    /// `timed_out`, ...), for `Io`.
    pub fn io_kind_name(&self) -> Option<String> {
        self.io_kind.map(|kind| snake_case(&format!("{kind:?}")))
    }
}

impl ForeignEvent {
    fn of(kind: EventKind) -> ForeignEvent {
        ForeignEvent {
            kind,
            connection_id: None,
            address: None,
            attempt: None,
            message: None,
            code: None,
            disconnect: None,
        }
    }

    /// The name of `code` in the schema's error table (`ShuttingDown`).
    pub fn code_name(&self) -> Option<&'static str> {
        self.code.map(error_code_name)
    }
}

impl From<ClientEvent> for ForeignEvent {
    fn from(event: ClientEvent) -> ForeignEvent {
        match event {
            ClientEvent::Connected {
                connection_id,
                address,
            } => ForeignEvent {
                connection_id: Some(connection_id),
                address: Some(address),
                ..ForeignEvent::of(EventKind::Connected)
            },
            ClientEvent::Disconnected { reason } => ForeignEvent {
                code: Some(reason.code()),
                disconnect: Some(ForeignDisconnect {
                    kind: reason.kind(),
                    io_kind: reason.io_kind(),
                }),
                message: Some(reason.to_string()),
                ..ForeignEvent::of(EventKind::Disconnected)
            },
            ClientEvent::ReconnectFailed { attempt, error } => ForeignEvent {
                attempt: Some(attempt),
                message: Some(error),
                ..ForeignEvent::of(EventKind::ReconnectFailed)
            },
            ClientEvent::ServerError { code, message } => ForeignEvent {
                code: Some(code),
                message: Some(message),
                ..ForeignEvent::of(EventKind::ServerError)
            },
            ClientEvent::Closed => ForeignEvent::of(EventKind::Closed),
        }
    }
}

/// `ConnectionReset` -> `connection_reset`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DisconnectReason;

    #[test]
    fn each_event_sets_the_fields_of_its_kind() {
        let reconnected = ForeignEvent::from(ClientEvent::Connected {
            connection_id: 7,
            address: "b:7878".into(),
        });
        assert_eq!(reconnected.kind.name(), "connected");
        assert_eq!(reconnected.connection_id, Some(7));
        assert_eq!(reconnected.address.as_deref(), Some("b:7878"));
        assert_eq!((reconnected.message, reconnected.code), (None, None));

        let failed = ForeignEvent::from(ClientEvent::ReconnectFailed {
            attempt: 2,
            error: "refused".into(),
        });
        assert_eq!(failed.kind.name(), "reconnect_failed");
        assert_eq!(
            (failed.attempt, failed.message.as_deref()),
            (Some(2), Some("refused"))
        );
        assert!(failed.disconnect.is_none());

        let server = ForeignEvent::from(ClientEvent::ServerError {
            code: ErrorCode::ShuttingDown,
            message: "bye".into(),
        });
        assert_eq!(server.kind, EventKind::ServerError);
        assert_eq!(server.code, Some(ErrorCode::ShuttingDown));
        assert_eq!(server.code_name(), Some("ShuttingDown"));
        assert_eq!(server.message.as_deref(), Some("bye"));

        let closed = ForeignEvent::from(ClientEvent::Closed);
        assert_eq!(closed, ForeignEvent::of(EventKind::Closed));
        assert_eq!(closed.kind.name(), "closed");
    }

    #[test]
    fn a_disconnect_keeps_its_text_and_its_typed_reason() {
        let closed = ForeignEvent::from(ClientEvent::Disconnected {
            reason: DisconnectReason::broker_closed(),
        });
        assert_eq!(closed.kind.name(), "disconnected");
        assert_eq!(
            closed.message.as_deref(),
            Some("the broker closed the connection")
        );
        assert_eq!(closed.code, Some(ErrorCode::ConnectionClosed));
        let reason = closed.disconnect.unwrap();
        assert_eq!(reason.kind_name(), "broker_closed");
        assert_eq!(reason.io_kind_name(), None);

        let reset = ForeignEvent::from(ClientEvent::Disconnected {
            reason: DisconnectReason::io(
                "read",
                io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer"),
            ),
        });
        assert_eq!(reset.message.as_deref(), Some("read failed: reset by peer"));
        let reason = reset.disconnect.unwrap();
        assert_eq!(reason.kind_name(), "io");
        assert_eq!(reason.io_kind, Some(io::ErrorKind::ConnectionReset));
        assert_eq!(reason.io_kind_name().as_deref(), Some("connection_reset"));

        let garbage = ForeignEvent::from(ClientEvent::Disconnected {
            reason: DisconnectReason::protocol("length 0"),
        });
        assert_eq!(garbage.code, Some(ErrorCode::MalformedFrame));
        assert_eq!(garbage.code_name(), Some("MalformedFrame"));
        assert_eq!(garbage.disconnect.unwrap().kind_name(), "protocol");
    }

    #[test]
    fn io_kinds_are_named_in_snake_case() {
        assert_eq!(snake_case("TimedOut"), "timed_out");
        assert_eq!(snake_case("UnexpectedEof"), "unexpected_eof");
        assert_eq!(snake_case("Other"), "other");
    }
}
