//! The client's one background task: connect and handshake, then read and
//! write until the connection drops; reconnect with jittered backoff (to
//! the broker addresses in turn) and resubscribe; on close, flush what is
//! queued and stop.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use blipmq_protocol::{
    check_frame, decode, Dropped, ErrorCode, Frame, FrameError, Hello, Subscribe, Unsubscribe,
    LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
};
use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{self, Either};

use crate::addresses::{every_address_failed, Endpoint};
use crate::disconnect::DisconnectReason;
use crate::error::{ConnectError, ConnectErrorKind, Error, Failure};
use crate::jitter::Jitter;
use crate::mailbox::MailboxSender;
use crate::message::Message;
use crate::outbox::{Outbox, IDLE_KEPT_BYTES};
use crate::state::{
    encode_frame, encode_frame_into, ClientEvent, ConnectionStatus, Inner, Pending,
};
use crate::transport::{Connector, TransportReader, TransportWriter};
use blipmq_protocol::headers::HeaderLimits;

/// Largest frame the client accepts from a broker: a delivery of the
/// broker's maximum payload plus its envelope. Bounded before allocation.
fn max_incoming_frame(inner: &Inner) -> usize {
    let max = inner
        .max_message_size
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    let headers = inner.header_limits.lock().unwrap().frame_overhead();
    max.saturating_add(blipmq_protocol::FRAME_ENVELOPE_ALLOWANCE)
        .saturating_add(headers)
        .min(u32::MAX as usize)
}

pub(crate) struct Connected {
    reader: Box<dyn TransportReader>,
    writer: Box<dyn TransportWriter>,
    /// Bytes received after the Welcome.
    buffered: BytesMut,
    /// The broker's id of this connection (from its Welcome).
    connection_id: u64,
    /// Which of the endpoints this connection is to.
    endpoint: usize,
}

/// Whether the broker's first bytes are a TLS record (an alert, after a
/// plaintext Hello reached a TLS port). No Welcome starts so: its length
/// prefix would be over 190 KiB, far past the handshake's limit.
fn speaks_tls(received: &[u8]) -> bool {
    matches!(received, [0x15 | 0x16, 0x03, ..])
}

/// Try the endpoints in turn, each once, starting at `start`: the first
/// that completes the handshake is the connection; when none does, the
/// error names each address's failure.
pub(crate) async fn connect_any(
    inner: &Inner,
    endpoints: &[Endpoint],
    start: usize,
) -> Result<Connected, ConnectError> {
    let mut failures = Vec::new();
    for offset in 0..endpoints.len() {
        let index = (start + offset) % endpoints.len();
        let endpoint = &endpoints[index];
        match connect(inner, &*endpoint.connector, &endpoint.dial).await {
            Ok(mut connection) => {
                connection.endpoint = index;
                endpoint
                    .address
                    .clone_into(&mut inner.address.lock().unwrap());
                return Ok(connection);
            }
            Err(error) => {
                tracing::debug!(address = %endpoint.address, %error, "connect failed");
                failures.push((endpoint.address.clone(), error));
            }
        }
    }
    Err(every_address_failed(failures))
}

/// Connect and complete the handshake, within the connect timeout.
async fn connect(
    inner: &Inner,
    connector: &dyn Connector,
    addr: &str,
) -> Result<Connected, ConnectError> {
    let timeout = inner.options.connect_timeout;
    let attempt = handshake(inner, connector, addr);
    futures::pin_mut!(attempt);
    match future::select(attempt, inner.runtime.sleep(timeout)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(Error::new(
            ConnectErrorKind::TimedOut,
            ErrorCode::Timeout,
            format!(
                "no handshake with {addr} within {} ms",
                crate::options::whole_millis(timeout)
            ),
        )),
    }
}

async fn handshake(
    inner: &Inner,
    connector: &dyn Connector,
    addr: &str,
) -> Result<Connected, ConnectError> {
    let io_error = |e: std::io::Error| {
        #[cfg(feature = "tls")]
        let kind = if crate::tls::is_failure(&e) {
            ConnectErrorKind::Tls
        } else {
            ConnectErrorKind::Io
        };
        #[cfg(not(feature = "tls"))]
        let kind = ConnectErrorKind::Io;
        Error::new(kind, ErrorCode::ConnectFailed, format!("{addr}: {e}"))
    };
    let (mut reader, mut writer) = connector.connect(addr).await.map_err(io_error)?;
    let hello = encode_frame(&Frame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: inner.options.name.as_deref(),
        api_key: inner.options.api_key.as_deref(),
        // Every discard is reported to the subscription (QUEUE-6).
        drop_notices: true,
    }));
    writer.write_frames(&hello).await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if speaks_tls(&buf) {
            return Err(Error::new(
                ConnectErrorKind::Tls,
                ErrorCode::ConnectFailed,
                format!("{addr} speaks TLS: connect to tls://{addr}"),
            ));
        }
        match check_frame(&buf, 64 * 1024) {
            Ok(total) => {
                let frame = buf.split_to(total);
                return match decode(&frame[LENGTH_PREFIX_LEN..]) {
                    Ok(Frame::Welcome(welcome)) => {
                        inner.max_message_size.store(
                            welcome.max_message_size,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        *inner.header_limits.lock().unwrap() = HeaderLimits {
                            max_headers: welcome.max_headers.into(),
                            max_key_size: welcome.max_header_key_size.into(),
                            max_total_size: welcome.max_headers_size as usize,
                        };
                        Ok(Connected {
                            reader,
                            writer,
                            buffered: buf,
                            connection_id: welcome.connection_id,
                            endpoint: 0,
                        })
                    }
                    Ok(Frame::Error(e)) => {
                        let kind = if e.code == ErrorCode::AuthFailed {
                            ConnectErrorKind::AuthFailed
                        } else {
                            ConnectErrorKind::Rejected
                        };
                        Err(Error::new(kind, e.code, e.message))
                    }
                    Ok(other) => Err(Error::new(
                        ConnectErrorKind::Rejected,
                        ErrorCode::UnsupportedFrame,
                        format!("expected Welcome, got {}", other.kind()),
                    )),
                    Err(e) => Err(Error::new(
                        ConnectErrorKind::Rejected,
                        e.code(),
                        e.to_string(),
                    )),
                };
            }
            Err(FrameError::Incomplete { .. }) => {}
            Err(e) => {
                return Err(Error::new(
                    ConnectErrorKind::Rejected,
                    e.code(),
                    e.to_string(),
                ))
            }
        }
        if reader.read(&mut buf).await.map_err(io_error)? == 0 {
            return Err(Error::new(
                ConnectErrorKind::Io,
                ErrorCode::ConnectionClosed,
                format!("{addr} closed the connection during the handshake"),
            ));
        }
    }
}

/// Run the client's connection until it is closed for good.
pub(crate) async fn run(
    inner: Arc<Inner>,
    endpoints: Vec<Endpoint>,
    mut connection: Connected,
    shutdown: async_channel::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    // The first connection was announced by `connect` returning; later
    // ones by a `Connected` event.
    let mut reconnected = false;
    let mut jitter = Jitter::seeded(inner.runtime.random_seed());
    loop {
        let address = &endpoints[connection.endpoint].address;
        inner.set_status(ConnectionStatus::Connected);
        let announce = reconnected.then_some(address.as_str());
        let ended = serve(&inner, &mut connection, &shutdown, announce).await;
        inner.subscriptions.lock().unwrap().disconnect();
        let lost = match &ended {
            Some(reason) => format!("connection lost: {reason}"),
            None => "connection lost: client closed".to_string(),
        };
        inner.fail_pending(&Failure::Disconnected.error(lost));
        let Some(reason) = ended else {
            break;
        };
        if inner.is_closed() || shutdown.is_closed() {
            break;
        }
        inner.emit(ClientEvent::Disconnected {
            reason: reason.clone(),
        });
        tracing::info!(%reason, "connection lost");
        if !inner.options.reconnect.enabled {
            break;
        }
        inner.set_status(ConnectionStatus::Reconnecting);
        let last_worked = connection.endpoint;
        match reconnect(&inner, &endpoints, last_worked, &mut jitter, &shutdown).await {
            Some(next) => {
                connection = next;
                reconnected = true;
            }
            None => break,
        }
    }
    inner
        .closed
        .store(true, std::sync::atomic::Ordering::Release);
    inner.set_status(ConnectionStatus::Closed);
    inner.outgoing.close();
    // Subscriptions end: their streams yield None once drained.
    for entry in inner.subscriptions.lock().unwrap().by_local.values() {
        entry.sender.close();
    }
    inner.fail_pending(&Failure::Closed.error("the client is closed"));
    inner.emit(ClientEvent::Closed);
    let _ = done.send(());
}

/// Retry with jittered exponential backoff until connected, closed or out
/// of attempts. Each attempt tries every address once, starting with the
/// one that worked last (a broker that restarts is usually back first),
/// then the next ones in the order given.
async fn reconnect(
    inner: &Inner,
    endpoints: &[Endpoint],
    last_worked: usize,
    jitter: &mut Jitter,
    shutdown: &async_channel::Receiver<()>,
) -> Option<Connected> {
    let policy = &inner.options.reconnect;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if policy.max_attempts.is_some_and(|max| attempt > max) {
            tracing::warn!(attempts = attempt - 1, "giving up reconnecting");
            return None;
        }
        let wait = inner
            .runtime
            .sleep(policy.delay(attempt, jitter.next_u64()));
        let stop = shutdown.recv();
        futures::pin_mut!(stop);
        if let Either::Right(_) = future::select(wait, stop).await {
            return None;
        }
        // A round over several slow addresses can take a connect timeout
        // each: closing the client ends it at once.
        let round = connect_any(inner, endpoints, last_worked);
        let stop = shutdown.recv();
        futures::pin_mut!(round, stop);
        match future::select(round, stop).await {
            Either::Left((Ok(connection), _)) => return Some(connection),
            Either::Left((Err(error), _)) => inner.emit(ClientEvent::ReconnectFailed {
                attempt,
                error: error.to_string(),
            }),
            Either::Right(_) => return None,
        }
    }
}

/// Resubscribe (and, after a reconnect, announce the connection), then read
/// and write until the connection fails or the client closes. Returns why it
/// failed, or `None` when the client closed it.
async fn serve(
    inner: &Inner,
    connection: &mut Connected,
    shutdown: &async_channel::Receiver<()>,
    announce: Option<&str>,
) -> Option<DisconnectReason> {
    if let Err(e) = resubscribe(inner, &mut *connection.writer).await {
        return Some(DisconnectReason::io("resubscribe", e));
    }
    if let Some(address) = announce {
        // After the Subscribes went out: whatever the client sends once it
        // has heard of the connection (a flush, a publish to itself) reaches
        // the broker after them.
        inner.emit(ClientEvent::Connected {
            connection_id: connection.connection_id,
            address: address.to_string(),
        });
    }
    let read = read_loop(inner, &mut *connection.reader, &mut connection.buffered);
    let write = write_loop(&mut *connection.writer, &inner.outgoing, shutdown);
    futures::pin_mut!(read, write);
    match future::select(read, write).await {
        Either::Left((reason, _)) => Some(reason),
        Either::Right((reason, _)) => reason,
    }
}

/// Send Subscribe again for every subscription the broker had accepted.
async fn resubscribe(inner: &Inner, writer: &mut dyn TransportWriter) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    {
        let table = inner.subscriptions.lock().unwrap();
        let mut pending = inner.pending.lock().unwrap();
        for (local_id, entry) in table.by_local.iter().filter(|(_, e)| e.confirmed) {
            let request_id = inner.next_id();
            pending.insert(
                request_id,
                Pending::Resubscribe {
                    local_id: *local_id,
                },
            );
            encode_frame_into(
                &Frame::Subscribe(Subscribe {
                    request_id,
                    pattern: &entry.pattern,
                    qos: entry.options.qos.as_wire(),
                    durable_name: entry.options.durable.as_deref(),
                    queue_group: entry.options.group.as_deref(),
                    ack_timeout_ms: entry.options.ack_timeout_ms(),
                    max_deliveries: entry.options.max_deliveries,
                }),
                &mut batch,
            );
        }
    }
    if !batch.is_empty() {
        writer.write_frames(&batch).await?;
    }
    Ok(())
}

/// Take frames from the outbox and write them, everything queued at once.
/// On shutdown, write what is still queued and close the sending side
/// (then `None`: the client closed the connection).
async fn write_loop(
    writer: &mut dyn TransportWriter,
    outgoing: &Outbox,
    shutdown: &async_channel::Receiver<()>,
) -> Option<DisconnectReason> {
    // Swapped with the outbox's buffer on every take: the two buffers keep
    // their capacity, so steady-state writing allocates nothing. Both let a
    // large capacity go once the connection is idle.
    let mut batch = BytesMut::new();
    loop {
        let next = future::poll_fn(|cx| {
            let taken = outgoing.poll_take(cx, &mut batch);
            if taken.is_pending() && batch.capacity() > IDLE_KEPT_BYTES {
                batch = BytesMut::new();
            }
            taken
        });
        let stop = shutdown.recv();
        futures::pin_mut!(next, stop);
        let finishing = match future::select(next, stop).await {
            Either::Left((true, _)) => false,
            // Closed, or asked to stop: flush and finish.
            Either::Left((false, _)) | Either::Right(_) => {
                outgoing.take_now(&mut batch);
                true
            }
        };
        if !batch.is_empty() {
            if let Err(e) = writer.write_frames(&batch).await {
                return Some(DisconnectReason::io("write", e));
            }
            batch.clear();
        }
        if finishing {
            writer.close().await;
            return None;
        }
    }
}

/// What the read loop of one connection keeps between deliveries: the
/// mailbox of every subscription it has delivered to (a broker's
/// subscription id names one subscription for the whole connection), each
/// with the topic it last carried and the deliveries not yet handed over.
/// A connection with many subscriptions interleaves them, so one "last
/// route" would miss on nearly every delivery and pay a table lock, a
/// sender clone and a topic allocation each time.
#[derive(Default)]
struct DeliveryCache {
    routes: HashMap<u64, Route, BuildHasherDefault<IdHasher>>,
    /// Routes with pending deliveries, in the order they got their first.
    pending: Vec<u64>,
}

struct Route {
    mailbox: MailboxSender,
    /// Shared by consecutive deliveries of one topic (an exact subscription
    /// only ever carries one).
    topic: Option<Arc<str>>,
    /// Deliveries from the current read, handed over together.
    pending: Vec<Message>,
    /// Discards the broker reported after the last of `pending`: the next
    /// delivery gathered carries them (QUEUE-6).
    dropped_next: u64,
}

/// Routes past this many are forgotten wholesale: they are rebuilt from the
/// subscription table on the next deliveries.
const MAX_CACHED_ROUTES: usize = 4096;

/// Deliveries a route gathers before they are handed over even though the
/// read buffer holds more.
const MAX_PENDING_PER_ROUTE: usize = 1024;

impl DeliveryCache {
    /// The route of subscription `server_id`, looked up in the subscription
    /// table only the first time (or after its mailbox closed): a delivery
    /// to a known subscription costs one hash lookup.
    fn route(&mut self, inner: &Inner, server_id: u64) -> Option<&mut Route> {
        // (Not while deliveries are pending: the limit may be passed until
        // the next flush.)
        if self.routes.len() >= MAX_CACHED_ROUTES
            && self.pending.is_empty()
            && !self.routes.contains_key(&server_id)
        {
            self.routes.clear();
        }
        match self.routes.entry(server_id) {
            Entry::Occupied(entry) if !entry.get().mailbox.is_closed() => Some(entry.into_mut()),
            Entry::Occupied(entry) => match subscription_mailbox(inner, server_id) {
                Some(mailbox) => {
                    let route = entry.into_mut();
                    // Pending deliveries for a closed mailbox are dropped,
                    // as the mailbox itself would.
                    *route = Route::new(mailbox);
                    Some(route)
                }
                None => {
                    entry.remove();
                    None
                }
            },
            Entry::Vacant(entry) => subscription_mailbox(inner, server_id)
                .map(|mailbox| entry.insert(Route::new(mailbox))),
        }
    }

    /// Hand every gathered delivery to its subscription, waiting for room
    /// where a consumer is behind (reading stops meanwhile, and the broker's
    /// queue and overflow policy take over).
    async fn flush(&mut self) {
        for server_id in self.pending.drain(..) {
            if let Some(route) = self.routes.get_mut(&server_id) {
                route.hand_over().await;
            }
        }
    }

    /// Hand over what subscription `server_id` gathered.
    async fn flush_route(&mut self, server_id: u64) {
        if let Some(route) = self.routes.get_mut(&server_id) {
            route.hand_over().await;
        }
    }

    /// Forget every route (a subscription ended). Call after [`flush`].
    fn clear(&mut self) {
        debug_assert!(self.pending.is_empty());
        self.routes.clear();
    }
}

/// The mailbox of subscription `server_id` in the subscription table, if it
/// is still there.
fn subscription_mailbox(inner: &Inner, server_id: u64) -> Option<MailboxSender> {
    let table = inner.subscriptions.lock().unwrap();
    table
        .by_server
        .get(&server_id)
        .and_then(|local| table.by_local.get(local))
        .map(|entry| entry.sender.clone())
}

impl Route {
    fn new(mailbox: MailboxSender) -> Route {
        Route {
            mailbox,
            topic: None,
            pending: Vec::new(),
            dropped_next: 0,
        }
    }

    /// Hand the gathered deliveries to the subscription; discards reported
    /// after the last of them wait in the mailbox for its next message.
    async fn hand_over(&mut self) {
        self.mailbox.send_all(&mut self.pending).await;
        if self.dropped_next > 0 {
            self.mailbox
                .carry_dropped(std::mem::take(&mut self.dropped_next));
        }
    }

    fn topic(&mut self, topic: &str) -> Arc<str> {
        match &self.topic {
            Some(last) if **last == *topic => last.clone(),
            _ => {
                let shared: Arc<str> = Arc::from(topic);
                self.topic = Some(shared.clone());
                shared
            }
        }
    }
}

/// Hashes broker-assigned subscription ids (small distinct integers, not
/// attacker-chosen keys) with one multiply instead of SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Read frames and act on them until the connection ends.
async fn read_loop(
    inner: &Inner,
    reader: &mut dyn TransportReader,
    buf: &mut BytesMut,
) -> DisconnectReason {
    let mut cache = DeliveryCache::default();
    loop {
        // The limits come with the broker's Welcome: fixed for a connection.
        let max_frame = max_incoming_frame(inner);
        // Every whole frame buffered, as one shared buffer their messages'
        // payloads point into (not one split per frame).
        let mut complete = 0;
        let needed = loop {
            match check_frame(&buf[complete..], max_frame) {
                Ok(total) => complete += total,
                Err(FrameError::Incomplete { needed }) => break needed,
                Err(e) => return DisconnectReason::protocol(e),
            }
        };
        let frames = buf.split_to(complete).freeze();
        buf.reserve(needed.max(64 * 1024));
        let mut at = 0;
        // Every frame in `frames` was checked above; past the last one the
        // check finds nothing whole and the loop ends.
        while let Ok(total) = check_frame(&frames[at..], max_frame) {
            let body = &frames[at + LENGTH_PREFIX_LEN..at + total];
            at += total;
            match gather(inner, &mut cache, &frames, body) {
                Ok(Gathered::Delivery) => {}
                Ok(Gathered::RouteFull(server_id)) => cache.flush_route(server_id).await,
                Ok(Gathered::Other(frame)) => {
                    // Whatever else the broker says comes after the
                    // deliveries before it: they reach their subscriptions
                    // first (an Unsubscribed ends a stream only after what
                    // was delivered to it).
                    cache.flush().await;
                    handle_control(inner, &mut cache, frame);
                }
                Err(reason) => return reason,
            }
        }
        // Everything this read brought is in: hand it over before waiting
        // for the next.
        cache.flush().await;
        match reader.read(buf).await {
            Ok(0) => return DisconnectReason::broker_closed(),
            Ok(_) => {}
            Err(e) => return DisconnectReason::read_failed(e),
        }
    }
}

/// What [`gather`] made of a frame.
enum Gathered<'a> {
    /// A delivery, gathered for its subscription (or discarded, for one
    /// that is gone).
    Delivery,
    /// A delivery that filled its subscription's pending batch: hand it over.
    RouteFull(u64),
    Other(Frame<'a>),
}

/// Decode one frame body (a part of `frames`) and gather it if it is a
/// delivery. A plain function, not an `async` one: per message, the moves
/// into and out of an async call's state were a visible share of a
/// subscriber's CPU. `Err` ends the connection.
fn gather<'a>(
    inner: &Inner,
    cache: &mut DeliveryCache,
    frames: &Bytes,
    body: &'a [u8],
) -> Result<Gathered<'a>, DisconnectReason> {
    let d = match decode(body).map_err(DisconnectReason::protocol)? {
        Frame::Delivery(d) => d,
        Frame::Dropped(notice) => {
            note_dropped(inner, cache, notice);
            return Ok(Gathered::Delivery);
        }
        other => return Ok(Gathered::Other(other)),
    };
    // A delivery for a subscription dropped a moment ago is discarded.
    let server_id = d.route.subscription_id;
    let Some(route) = cache.route(inner, server_id) else {
        return Ok(Gathered::Delivery);
    };
    let first = route.pending.is_empty();
    let topic = route.topic(d.topic);
    let dropped_before = std::mem::take(&mut route.dropped_next);
    // Fields borrow from `frames` itself (slice_ref takes any part of it).
    route.pending.push(Message {
        topic,
        payload: frames.slice_ref(d.payload),
        headers: d
            .headers
            .iter()
            .map(|h| (h.key.to_string(), frames.slice_ref(h.value)))
            .collect(),
        id: d.message_id,
        timestamp_ms: d.timestamp_ms,
        delivery_count: d.route.delivery_count,
        subscription_id: server_id,
        delivery_id: d.route.delivery_id,
        dropped_before,
        acks: (d.route.delivery_id != 0).then(|| inner.outgoing.clone()),
    });
    let full = route.pending.len() >= MAX_PENDING_PER_ROUTE;
    if first {
        cache.pending.push(server_id);
    }
    Ok(if full {
        Gathered::RouteFull(server_id)
    } else {
        Gathered::Delivery
    })
}

/// The broker discarded messages for a subscription (QUEUE-6): counted at
/// once, and carried by the subscription's next message, in order with
/// the deliveries gathered before it.
fn note_dropped(inner: &Inner, cache: &mut DeliveryCache, notice: Dropped) {
    let Some(route) = cache.route(inner, notice.subscription_id) else {
        return;
    };
    route.mailbox.count_dropped(notice.count);
    if route.pending.is_empty() {
        route.mailbox.carry_dropped(notice.count);
    } else {
        route.dropped_next += notice.count;
    }
}

/// Act on a frame other than a delivery.
fn handle_control(inner: &Inner, cache: &mut DeliveryCache, frame: Frame<'_>) {
    match frame {
        Frame::Subscribed(s) => on_subscribed(inner, s.request_id, s.subscription_id),
        Frame::Unsubscribed(u) => {
            // Let go of the subscription's channel before its owner hears
            // it is over, so that its stream can end.
            cache.clear();
            answer(inner, u.request_id, Ok(u.subscription_id))
        }
        Frame::Confirm(c) => answer(inner, c.publish_id, Ok(c.message_id)),
        Frame::Pong { nonce } => answer(inner, nonce, Ok(nonce)),
        Frame::Ping { nonce } => {
            let _ = inner
                .outgoing
                .try_push_with(|out| encode_frame_into(&Frame::Pong { nonce }, out));
        }
        Frame::Error(e) => {
            let error = Error::new(Failure::Rejected, e.code, e.message);
            let pending = inner.pending.lock().unwrap().remove(&e.request_id);
            match pending {
                Some(Pending::Resubscribe { local_id }) => {
                    tracing::warn!(local_id, %error, "resubscribe refused");
                    inner.emit(ClientEvent::ServerError {
                        code: e.code,
                        message: e.message.to_string(),
                    });
                }
                Some(p) => p.fail(error),
                None => {
                    if e.code == ErrorCode::ShuttingDown {
                        tracing::info!("the broker is shutting down");
                    }
                    inner.emit(ClientEvent::ServerError {
                        code: e.code,
                        message: e.message.to_string(),
                    });
                }
            }
        }
        other => {
            tracing::debug!(
                kind = other.kind(),
                "ignoring an unexpected frame from the broker"
            );
        }
    }
}

fn answer(inner: &Inner, id: u64, reply: Result<u64, Error<Failure>>) {
    let pending = inner.pending.lock().unwrap().remove(&id);
    match pending {
        Some(Pending::Confirm(tx))
        | Some(Pending::Request(tx))
        | Some(Pending::Subscribe { reply: tx, .. }) => {
            let _ = tx.send(reply);
        }
        Some(Pending::Resubscribe { .. }) | None => {}
    }
}

fn on_subscribed(inner: &Inner, request_id: u64, server_id: u64) {
    let pending = inner.pending.lock().unwrap().remove(&request_id);
    let (local_id, reply) = match pending {
        Some(Pending::Subscribe { local_id, reply }) => (local_id, Some(reply)),
        Some(Pending::Resubscribe { local_id }) => (local_id, None),
        Some(other) => {
            other.fail(Failure::Rejected.error("unexpected Subscribed"));
            return;
        }
        None => return,
    };
    let mut table = inner.subscriptions.lock().unwrap();
    match table.by_local.get_mut(&local_id) {
        Some(entry) => {
            entry.server_id = Some(server_id);
            entry.confirmed = true;
            table.by_server.insert(server_id, local_id);
            drop(table);
            if let Some(reply) = reply {
                let _ = reply.send(Ok(server_id));
            }
        }
        None => {
            // Dropped while the broker was answering: undo on the broker.
            drop(table);
            let request_id = inner.next_id();
            let frame = Frame::Unsubscribe(Unsubscribe {
                request_id,
                subscription_id: server_id,
                // Dropped, not unsubscribed: a durable one is only detached.
                keep_durable: true,
            });
            let _ = inner
                .outgoing
                .try_push_with(|out| encode_frame_into(&frame, out));
        }
    }
}
