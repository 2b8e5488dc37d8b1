//! `NativeClient::events`: the changes of a client's connection
//! (client-rs's `ClientEvent`s), one call at a time; the Kotlin layer makes
//! them a `Flow`.

use std::pin::Pin;

use blipmq::ClientEvent as CoreEvent;
use futures::{Stream, StreamExt};
use tokio::sync::Mutex;

use crate::error::NativeError;
use crate::runtime::on_runtime;

/// A change of the client's connection.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ClientEvent {
    /// Connected again after a lost connection, with the subscriptions sent
    /// again (anything sent from now on reaches the broker after them);
    /// `connection_id` is the broker's id of the new connection.
    Reconnected { connection_id: u64 },
    /// The connection was lost; the client reconnects with backoff unless
    /// reconnecting is off.
    Disconnected { reason: String },
    /// Reconnect attempt `attempt` (from 1) failed; the next follows after a
    /// backoff.
    ReconnectFailed { attempt: u32, error: String },
    /// The broker sent an error that answers no call, e.g. ShuttingDown
    /// before it stops.
    ServerError { error: NativeError },
    /// The client has closed: the last event.
    Closed,
}

impl From<CoreEvent> for ClientEvent {
    fn from(event: CoreEvent) -> ClientEvent {
        match event {
            CoreEvent::Connected { connection_id } => ClientEvent::Reconnected { connection_id },
            CoreEvent::Disconnected { reason } => ClientEvent::Disconnected {
                reason: reason.to_string(),
            },
            CoreEvent::ReconnectFailed { attempt, error } => {
                ClientEvent::ReconnectFailed { attempt, error }
            }
            CoreEvent::ServerError { code, message } => ClientEvent::ServerError {
                error: NativeError::from_code(code, message),
            },
            CoreEvent::Closed => ClientEvent::Closed,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = CoreEvent> + Send>>;

/// The events of one client from the moment `NativeClient::events` was
/// called; every such call gets every event.
#[derive(uniffi::Object)]
pub struct NativeEvents {
    /// Ends after `Closed` (the client crate's stream does).
    stream: Mutex<EventStream>,
}

impl NativeEvents {
    pub fn new(stream: impl Stream<Item = CoreEvent> + Send + 'static) -> NativeEvents {
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
