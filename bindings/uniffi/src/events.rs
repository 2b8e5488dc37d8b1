//! `NativeClient::events`: the changes of a client's connection
//! (client-rs's `ClientEvent`s, as `blipmq::foreign::ForeignEvent`s), one
//! call at a time; the Kotlin layer makes them a `Flow`.

use std::pin::Pin;

use blipmq::foreign::{EventKind, ForeignDisconnect, ForeignEvent};
use blipmq_protocol::ErrorCode;
use futures::{Stream, StreamExt};
use tokio::sync::Mutex;

use crate::error::NativeError;
use crate::runtime::on_runtime;

/// A change of the client's connection.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ClientEvent {
    /// Connected again after a lost connection, with the subscriptions sent
    /// again (anything sent from now on reaches the broker after them);
    /// `connection_id` is the broker's id of the new connection, `address`
    /// its broker address as given to connect.
    Reconnected { connection_id: u64, address: String },
    /// The connection was lost; the client reconnects with backoff unless
    /// reconnecting is off. `reason` says why for people, `kind` why to act
    /// on; `code` is the wire code that goes with it (MalformedFrame for
    /// `Protocol`, ConnectionClosed otherwise); `io_kind`, for `Io`, is the
    /// I/O error's kind in snake case (`connection_reset`, ...).
    Disconnected {
        reason: String,
        kind: DisconnectKind,
        code: u16,
        io_kind: Option<String>,
    },
    /// Reconnect attempt `attempt` (from 1) failed; the next follows after a
    /// backoff.
    ReconnectFailed { attempt: u32, error: String },
    /// The broker sent an error that answers no call, e.g. ShuttingDown
    /// before it stops.
    ServerError { error: NativeError },
    /// The client has closed: the last event.
    Closed,
}

/// What ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DisconnectKind {
    /// The broker closed the connection (a restart, a limit, a keepalive
    /// that went unanswered).
    BrokerClosed,
    /// Reading from or writing to the connection failed.
    Io,
    /// The broker sent bytes that are not frames.
    Protocol,
}

impl From<blipmq::DisconnectKind> for DisconnectKind {
    fn from(kind: blipmq::DisconnectKind) -> DisconnectKind {
        match kind {
            blipmq::DisconnectKind::BrokerClosed => DisconnectKind::BrokerClosed,
            blipmq::DisconnectKind::Protocol => DisconnectKind::Protocol,
            // The client crate's kinds are `non_exhaustive`: one added
            // there is added here too; until then it counts as a failed
            // connection.
            _ => DisconnectKind::Io,
        }
    }
}

impl From<ForeignEvent> for ClientEvent {
    fn from(event: ForeignEvent) -> ClientEvent {
        let message = event.message.unwrap_or_default();
        let code = event.code.unwrap_or(ErrorCode::Unknown);
        match event.kind {
            EventKind::Connected => ClientEvent::Reconnected {
                connection_id: event.connection_id.unwrap_or_default(),
                address: event.address.unwrap_or_default(),
            },
            EventKind::Disconnected => {
                let disconnect = event.disconnect.as_ref();
                ClientEvent::Disconnected {
                    reason: message,
                    kind: disconnect.map_or(DisconnectKind::Io, |d| d.kind.into()),
                    code: code.0,
                    io_kind: disconnect.and_then(ForeignDisconnect::io_kind_name),
                }
            }
            EventKind::ReconnectFailed => ClientEvent::ReconnectFailed {
                attempt: event.attempt.unwrap_or_default(),
                error: message,
            },
            EventKind::ServerError => ClientEvent::ServerError {
                error: NativeError::from_code(code, message),
            },
            EventKind::Closed => ClientEvent::Closed,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = ForeignEvent> + Send>>;

/// The events of one client from the moment `NativeClient::events` was
/// called; every such call gets every event.
#[derive(uniffi::Object)]
pub struct NativeEvents {
    /// Ends after `Closed` (the client crate's stream does).
    stream: Mutex<EventStream>,
}

impl NativeEvents {
    pub fn new(stream: impl Stream<Item = ForeignEvent> + Send + 'static) -> NativeEvents {
        NativeEvents {
            stream: Mutex::new(Box::pin(stream)),
        }
    }
}

#[uniffi::export]
impl NativeEvents {
    /// The next event; `None` after `Closed`. Cancelling the call loses no
    /// event.
    pub async fn next(&self) -> Option<ClientEvent> {
        on_runtime(async {
            let event = self.stream.lock().await.next().await;
            event.map(ClientEvent::from)
        })
        .await
    }
}
