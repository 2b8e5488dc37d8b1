//! State shared by the client handles, the subscriptions and the connection
//! task: requests awaiting an answer, the subscription table, status and
//! events.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use blipmq_protocol::headers::HeaderLimits;
use blipmq_protocol::{Encoder, ErrorCode, Frame};
use bytes::Bytes;
use futures::channel::oneshot;

use crate::disconnect::DisconnectReason;
use crate::error::{Error, Failure};
use crate::mailbox::MailboxSender;
use crate::options::{ClientOptions, SubscribeOptions};
use crate::outbox::{Outbox, PushError};
use crate::transport::Runtime;

thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// Encode one frame, length prefix included, with this thread's encoder.
pub(crate) fn encode_frame(frame: &Frame<'_>) -> Bytes {
    ENCODER.with(|encoder| encoder.borrow_mut().encode_to_bytes(frame))
}

/// Append one frame, length prefix included, to `out`.
pub(crate) fn encode_frame_into(frame: &Frame<'_>, out: &mut bytes::BytesMut) {
    ENCODER.with(|encoder| encoder.borrow_mut().encode(frame, out))
}

/// The answer to a request: Ok(a value from the reply) or the failure.
pub(crate) type Reply = Result<u64, Error<Failure>>;

/// A request waiting for its answer, keyed by its request or publish id.
pub(crate) enum Pending {
    /// A QoS 1 publish waiting for its Confirm (the value is the message id).
    Confirm(oneshot::Sender<Reply>),
    /// A Subscribe from the user (the value is the broker's subscription id).
    Subscribe {
        local_id: u64,
        reply: oneshot::Sender<Reply>,
    },
    /// A Subscribe the connection task re-sent after a reconnect.
    Resubscribe { local_id: u64 },
    /// An Unsubscribe or a Ping waiting for its answer.
    Request(oneshot::Sender<Reply>),
}

impl Pending {
    pub(crate) fn fail(self, error: Error<Failure>) {
        match self {
            Pending::Confirm(reply)
            | Pending::Subscribe { reply, .. }
            | Pending::Request(reply) => {
                let _ = reply.send(Err(error));
            }
            Pending::Resubscribe { .. } => {}
        }
    }
}

pub(crate) struct SubscriptionEntry {
    pub pattern: String,
    pub options: SubscribeOptions,
    pub sender: MailboxSender,
    /// The broker's id on the current connection; `None` while disconnected
    /// or before the broker answered.
    pub server_id: Option<u64>,
    /// The broker accepted it once; only such subscriptions are re-sent
    /// after a reconnect.
    pub confirmed: bool,
}

#[derive(Default)]
pub(crate) struct SubscriptionTable {
    pub by_local: HashMap<u64, SubscriptionEntry>,
    pub by_server: HashMap<u64, u64>,
}

impl SubscriptionTable {
    pub fn remove(&mut self, local_id: u64) -> Option<SubscriptionEntry> {
        let entry = self.by_local.remove(&local_id)?;
        if let Some(server_id) = entry.server_id {
            self.by_server.remove(&server_id);
        }
        Some(entry)
    }

    /// Forget every broker-side id: they die with the connection.
    pub fn disconnect(&mut self) {
        self.by_server.clear();
        for entry in self.by_local.values_mut() {
            entry.server_id = None;
        }
    }
}

/// Whether the client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    Connected = 0,
    /// The connection dropped; the client is reconnecting with backoff.
    Reconnecting = 1,
    /// Closed by the user, or reconnecting gave up (or is disabled).
    Closed = 2,
}

/// Something that happened to the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected again after a lost connection, with the subscriptions sent
    /// again: anything sent from now on reaches the broker after them.
    Connected {
        connection_id: u64,
        /// The broker address of the new connection, as given to connect.
        address: String,
    },
    /// The connection was lost; unless reconnecting is off, the client
    /// tries again (`ReconnectFailed`, then `Connected`).
    Disconnected {
        reason: DisconnectReason,
    },
    /// A reconnect attempt failed; the next one follows after a backoff.
    ReconnectFailed {
        attempt: u32,
        error: String,
    },
    /// An error frame that answers no particular request.
    ServerError {
        code: ErrorCode,
        message: String,
    },
    Closed,
}

pub(crate) struct Inner {
    pub options: ClientOptions,
    pub runtime: Arc<dyn Runtime>,
    /// Encoded frames on their way to the connection task. Bounded: a
    /// publisher waits here when the client is sending faster than the
    /// network takes, instead of growing memory.
    pub outgoing: Arc<Outbox>,
    next_id: AtomicU64,
    /// From the broker's Welcome; publishes larger than this fail locally.
    pub max_message_size: AtomicU32,
    /// From the broker's Welcome; headers beyond these fail locally.
    pub header_limits: Mutex<HeaderLimits>,
    pub pending: Mutex<HashMap<u64, Pending>>,
    pub subscriptions: Mutex<SubscriptionTable>,
    status: AtomicU8,
    /// The broker address of the current connection (the last one while
    /// reconnecting), as given to connect.
    pub address: Mutex<String>,
    /// Every `events()` stream's sender; `None` once `Closed` went out, the
    /// last event: the streams then end, and new ones end at once.
    listeners: Mutex<Option<Vec<async_channel::Sender<ClientEvent>>>>,
    pub closed: AtomicBool,
    /// Closing this wakes the connection task to flush and stop.
    pub shutdown: async_channel::Sender<()>,
}

impl Inner {
    pub fn new(
        options: ClientOptions,
        runtime: Arc<dyn Runtime>,
        outgoing: Arc<Outbox>,
        shutdown: async_channel::Sender<()>,
    ) -> Inner {
        Inner {
            options,
            runtime,
            outgoing,
            next_id: AtomicU64::new(1),
            max_message_size: AtomicU32::new(u32::MAX),
            header_limits: Mutex::new(HeaderLimits::default()),
            pending: Mutex::default(),
            subscriptions: Mutex::default(),
            status: AtomicU8::new(ConnectionStatus::Connected as u8),
            address: Mutex::default(),
            listeners: Mutex::new(Some(Vec::new())),
            closed: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Request ids, publish ids and local subscription ids come from one
    /// counter, so an Error's request_id can never be ambiguous.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn status(&self) -> ConnectionStatus {
        match self.status.load(Ordering::Acquire) {
            0 => ConnectionStatus::Connected,
            1 => ConnectionStatus::Reconnecting,
            _ => ConnectionStatus::Closed,
        }
    }

    pub fn set_status(&self, status: ConnectionStatus) {
        self.status.store(status as u8, Ordering::Release);
    }

    pub fn subscribe_events(&self) -> async_channel::Receiver<ClientEvent> {
        let (tx, rx) = async_channel::unbounded();
        // After `Closed` the sender is dropped here and the stream is over.
        if let Some(listeners) = self.listeners.lock().unwrap().as_mut() {
            listeners.push(tx);
        }
        rx
    }

    pub fn emit(&self, event: ClientEvent) {
        tracing::debug!(?event, "client event");
        let mut listeners = self.listeners.lock().unwrap();
        if let Some(senders) = listeners.as_mut() {
            senders.retain(|tx| tx.try_send(event.clone()).is_ok());
        }
        if event == ClientEvent::Closed {
            // Dropping the senders ends every stream once it is drained.
            *listeners = None;
        }
    }

    /// Register a request, then queue its frame (encoded straight into the
    /// outbox): the answer can never arrive before its entry exists.
    pub async fn request(
        &self,
        id: u64,
        pending: Pending,
        frame: &Frame<'_>,
    ) -> Result<(), Error<Failure>> {
        self.request_with(id, pending, |out| encode_frame_into(frame, out))
            .await
    }

    /// [`Inner::request`] with the frame appended by `encode`.
    pub async fn request_with(
        &self,
        id: u64,
        pending: Pending,
        encode: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), Error<Failure>> {
        self.pending.lock().unwrap().insert(id, pending);
        if self.outgoing.push_with(encode).await.is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err(Failure::Closed.error("the client is closed"));
        }
        Ok(())
    }

    /// [`Inner::request_with`] without waiting for room: nothing is
    /// registered or queued when the outgoing queue is full or closed.
    pub fn try_request_with(
        &self,
        id: u64,
        pending: Pending,
        encode: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), PushError> {
        self.pending.lock().unwrap().insert(id, pending);
        let pushed = self.outgoing.try_push_with(encode);
        if pushed.is_err() {
            self.pending.lock().unwrap().remove(&id);
        }
        pushed
    }

    /// Wait for a reply within the request timeout; on timeout the pending
    /// entry is dropped so that a late answer is ignored.
    pub async fn await_reply(&self, id: u64, reply: oneshot::Receiver<Reply>) -> Reply {
        let timeout = self.options.request_timeout;
        let sleep = self.runtime.sleep(timeout);
        match futures::future::select(reply, sleep).await {
            futures::future::Either::Left((Ok(reply), _)) => reply,
            futures::future::Either::Left((Err(_), _)) => {
                Err(Failure::Disconnected.error("the connection closed before the answer"))
            }
            futures::future::Either::Right(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(Failure::TimedOut.error(format!(
                    "no answer within {} ms",
                    crate::options::whole_millis(timeout)
                )))
            }
        }
    }

    /// Fail every waiting request (the connection is gone).
    pub fn fail_pending(&self, error: &Error<Failure>) {
        let pending: Vec<Pending> = self
            .pending
            .lock()
            .unwrap()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in pending {
            p.fail(error.clone());
        }
    }
}
