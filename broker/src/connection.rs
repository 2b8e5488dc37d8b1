//! One client connection: the handshake, then a read loop that parses frames
//! and acts on them. Publishing fans out right here, on the publisher's task:
//! no hop through another task, and `block` backpressure stalls exactly this
//! publisher's socket and nobody else.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blipmq_protocol::{
    check_frame, decode, headers, topic, AckKind, Encoder, ErrorCode, ErrorFrame, Frame,
    FrameError, Hello, Publish, Qos, Subscribe, Subscribed, Unsubscribe, Unsubscribed, Welcome,
    LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::admission::Admission;
use crate::auth::User;
use crate::config::{Listener, OverflowPolicy};
use crate::confirm::{storage_error_code, ConfirmPipeline, StoredPublish};
use crate::connections::{ConnectionInfo, Link, Listed};
use crate::durable::{
    ephemeral_name, AckOutcome, AttachError, ConsumerTerms, QueueKind, TermsRefused,
};
use crate::metrics::{add, inc, Transport};
use crate::outbox::{Outbox, PendingWakes};
use crate::registry::Matches;
use crate::server::Shared;
use crate::subscription::{MessageRef, QueuedMessage, Subscription};
use crate::throttle::clip;
use crate::writer::{self, WriterConfig};

/// Largest frame accepted before the handshake completes. A Hello is tiny;
/// an unauthenticated peer gets no room to make the broker buffer more.
pub(crate) const MAX_HANDSHAKE_FRAME: usize = 16 * 1024;

/// The most bytes of a client's name that go into a log line.
const MAX_LOGGED_NAME: usize = 64;

/// Bytes the read buffer grows by when it is full, once the connection has
/// shown it sends in bulk (a read filled all the room there was).
const READ_CHUNK: usize = 64 * 1024;
/// The read buffer of a new connection, and the step it grows by until then:
/// most connections only ever send small frames now and then, and a
/// thousand idle ones should not hold 64 MiB of buffers (at 1 KiB, it was a
/// sixth of what an idle connection costs: RSS with 1,000 idle connections
/// 10.3 MB, 9.6 MB at 256 B).
const FIRST_READ_CHUNK: usize = 256;
/// The buffer grows by a chunk before a read that would have less room.
const MIN_READ_ROOM: usize = 512;

/// Subscriptions of a closed connection removed per hold of the registry's
/// write lock. Small: when many connections close at once, each runtime
/// thread may be blocked waiting for the lock while another holds it, and
/// other connections are served between chunks.
const REMOVE_CHUNK: usize = 128;

/// Serve one accepted connection until it closes or `shutdown` fires. The
/// halves carry the protocol's byte stream: a TCP socket's, or a WebSocket
/// adapted to it (`websocket.rs`).
pub(crate) async fn serve(
    read_half: impl AsyncRead + Unpin + Send + 'static,
    write_half: impl AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    admission: Admission,
) {
    let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("connection", id = connection_id, %peer);
    async move {
        debug!("accepted");
        let outbox = Outbox::with_control_budget(shared.control_memory);
        // The reader stops on broker shutdown or when the writer fails; the
        // writer stops only after the reader has queued its last words.
        let reader_stop = shutdown.child_token();
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(
            writer::run(
                write_half,
                outbox.clone(),
                WriterConfig {
                    max_batch: shared.config.delivery.max_batch,
                    max_batch_bytes: shared.config.delivery.max_batch_bytes,
                    flush_interval: Duration::from_millis(shared.config.delivery.flush_interval_ms),
                },
                shared.metrics.clone(),
                writer_stop.clone(),
            )
            .in_current_span(),
        );
        let mut reader = Reader {
            shared: shared.clone(),
            outbox: outbox.clone(),
            connection_id,
            encoder: Encoder::new(),
            ready: false,
            drop_notices: false,
            match_cache: None,
            wakes: PendingWakes::default(),
            confirms: None,
            stop: reader_stop.clone(),
            read_at_ms: unix_millis(),
            read_at: Instant::now(),
            peer,
            admission,
            user: shared.auth.anonymous(),
            auth_changes: shared.auth.watch(),
            listed: None,
        };
        reader.run(read_half, &reader_stop, &shutdown).await;
        // QoS 1 messages already handed to the log still get their confirms.
        if let Some(confirms) = reader.confirms.take() {
            confirms.finish().await;
        }
        // In chunks, each under one hold of the index's write lock, letting
        // other tasks on this thread run in between: a connection with many
        // subscriptions must not stall publishers or this runtime thread.
        let subscriptions = outbox.take_all_subscriptions();
        for chunk in subscriptions.chunks(REMOVE_CHUNK) {
            shared.registry.remove_all(chunk.iter().map(|s| &**s));
            for subscription in chunk {
                if let Some(name) = &subscription.durable {
                    shared.durable.detach(name, subscription);
                }
                subscription.close();
            }
            if subscriptions.len() > REMOVE_CHUNK {
                tokio::task::yield_now().await;
            }
        }
        drop(subscriptions);
        writer_stop.cancel();
        let _ = writer.await;
        debug!("closed");
    }
    .instrument(span)
    .await
}

/// The broker's side of keepalive (LIMIT-30, LIMIT-31): after `interval`
/// without a frame from the peer it sends a `Ping`; after `missed` more
/// silent intervals it closes the connection. Any whole frame received
/// counts, not only a `Pong`, and bytes that never complete a frame do not.
struct Keepalive {
    /// `None`: keepalive is off.
    interval: Option<Duration>,
    missed: u32,
    /// When the last frame was heard (the handshake's read, at first).
    last_heard: Instant,
    /// Pings sent since then, and when the last one was.
    pings: u32,
    last_ping: Instant,
    /// When the current socket read completed.
    read_at: Instant,
    /// The bytes of the current read completed at least one frame.
    heard_frame: bool,
}

enum KeepaliveStep {
    /// A frame was heard meanwhile: nothing to do before the next deadline.
    Wait,
    Ping,
    Close,
}

impl Keepalive {
    fn new(interval_ms: u64, missed: u32) -> Keepalive {
        let now = Instant::now();
        Keepalive {
            interval: (interval_ms > 0).then(|| Duration::from_millis(interval_ms)),
            missed,
            last_heard: now,
            pings: 0,
            last_ping: now,
            read_at: now,
            heard_frame: false,
        }
    }

    fn enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// After the frames of one read were handled.
    fn settle_read(&mut self) {
        if std::mem::take(&mut self.heard_frame) {
            self.last_heard = self.read_at;
            self.pings = 0;
        }
    }

    /// When the timer should next fire: an interval after the last frame
    /// heard, or after the last ping sent since. Each ping therefore gets a
    /// whole interval to be answered, even after the reader was busy.
    fn deadline(&self) -> tokio::time::Instant {
        // Off: a deadline the select never polls (its branch is disabled).
        let interval = self.interval.unwrap_or(Duration::from_secs(86_400));
        let since = if self.pings == 0 {
            self.last_heard
        } else {
            self.last_ping
        };
        (since + interval).into()
    }

    fn on_timer(&mut self, now: Instant) -> KeepaliveStep {
        if now < self.deadline().into_std() {
            return KeepaliveStep::Wait;
        }
        if self.pings >= self.missed {
            return KeepaliveStep::Close;
        }
        self.pings += 1;
        self.last_ping = now;
        KeepaliveStep::Ping
    }

    fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

/// How far [`Reader::publish_now`] got.
enum Publishing {
    Done(Flow),
    /// A QoS 1 message, for the log.
    Durable(MessageRef, Matches),
    /// A `block` queue was full: these subscriptions still wait for the
    /// message (the full one first), in fan-out order.
    Blocked(MessageRef, Vec<Arc<Subscription>>),
    /// A QoS 0 message behind QoS 1 ones of this connection that are not
    /// delivered yet: it goes through the confirm pipeline after them.
    Behind(MessageRef, Matches),
    /// A QoS 0 message under `block` that the memory budget has no room
    /// for yet: its publisher waits for room.
    AwaitingMemory(QueuedMessage, Matches),
}

/// Whether the read loop goes on after a frame.
enum Flow {
    Continue,
    Close,
}

struct Reader {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    connection_id: u64,
    encoder: Encoder,
    /// The handshake has completed.
    ready: bool,
    /// The client's Hello asked for Dropped notices (QUEUE-6).
    drop_notices: bool,
    /// The last topic this connection published to and its subscribers, so
    /// that a steady stream to one topic costs one atomic load per message
    /// ([`crate::registry::MatchSet::is_current`]).
    match_cache: Option<(String, Matches)>,
    /// Writers this reader's publishes have queued messages for, woken
    /// once per read rather than once per message.
    wakes: PendingWakes,
    /// Started on the first QoS 1 publish.
    confirms: Option<ConfirmPipeline>,
    /// Stops this reader: the confirm pipeline cancels it when the
    /// publisher does not read its confirms (LIMIT-2).
    stop: CancellationToken,
    /// When the bytes being handled were read (ms since the Unix epoch):
    /// the accept time stamped on messages, one clock read per socket read.
    read_at_ms: u64,
    /// The same moment on the monotonic clock, for latency metrics.
    read_at: Instant,
    peer: SocketAddr,
    /// The handshake slot until the Hello is accepted, then the connection
    /// slot; freed when the reader goes.
    admission: Admission,
    /// Who the Hello's key says the client is, and so what it may do.
    user: Arc<User>,
    /// Reloads of the users: the connection closes when its user is gone
    /// or changed (AUTH-7).
    auth_changes: tokio::sync::watch::Receiver<u64>,
    /// Its entry in the broker's list of connections (introspection), from
    /// the accepted Hello on.
    listed: Option<Listed>,
}

impl Reader {
    async fn run(
        &mut self,
        mut socket: impl AsyncRead + Unpin,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        let config = &self.shared.config;
        let max_frame = config.max_frame_size();
        let handshake_deadline = tokio::time::sleep_until(self.admission.deadline);
        tokio::pin!(handshake_deadline);
        let mut keepalive = Keepalive::new(
            config.server.keepalive_interval_ms,
            config.server.keepalive_missed,
        );
        // One timer for the connection's life. It is not reset per frame:
        // when it fires, it is moved on to where the last frame heard puts
        // the next deadline, so a busy connection costs a clock read per
        // socket read and a timer wake-up per interval.
        let keepalive_timer = tokio::time::sleep_until(keepalive.deadline());
        tokio::pin!(keepalive_timer);
        let mut chunk = FIRST_READ_CHUNK;
        let mut buf = BytesMut::with_capacity(chunk);
        // Bytes of an oversized frame still to skip.
        let mut discard = 0usize;
        // Publishes handled since the traffic counters were last told.
        let mut publishes = 0u64;
        loop {
            // Act on every whole frame already buffered.
            loop {
                if discard > 0 {
                    let n = discard.min(buf.len());
                    buf.advance(n);
                    discard -= n;
                    if discard > 0 {
                        break;
                    }
                }
                let limit = if self.ready {
                    max_frame
                } else {
                    MAX_HANDSHAKE_FRAME
                };
                match check_frame(&buf, limit) {
                    Ok(total) => {
                        keepalive.heard_frame = true;
                        let flow = match decode(&buf[LENGTH_PREFIX_LEN..total]) {
                            // The hot path, outside `handle`'s future: moving
                            // each decoded publish into that future's state was
                            // a fifth of `handle`'s own time.
                            Ok(Frame::Publish(publish)) if self.ready => {
                                publishes += 1;
                                match self.publish_now(&publish) {
                                    Publishing::Done(flow) => flow,
                                    waiting => {
                                        let (publish_id, topic) =
                                            (publish.publish_id, publish.topic);
                                        self.publish_later(publish_id, topic, waiting).await
                                    }
                                }
                            }
                            Ok(frame) => self.handle(frame).await,
                            Err(error) => self.bad_frame(&error),
                        };
                        buf.advance(total);
                        if let Flow::Close = flow {
                            return;
                        }
                    }
                    Err(FrameError::Incomplete { needed }) => {
                        buf.reserve(needed.max(chunk.min(limit)));
                        break;
                    }
                    Err(error @ FrameError::TooLarge { len, .. }) => {
                        if let Flow::Close = self.bad_frame(&error) {
                            return;
                        }
                        // The framing is intact: skip the body without
                        // buffering it, and go on with the next frame.
                        buf.advance(LENGTH_PREFIX_LEN);
                        discard = len;
                    }
                    Err(error) => {
                        // check_frame reports nothing else; should it ever,
                        // the stream cannot be resynchronised.
                        self.bad_frame(&error);
                        return;
                    }
                }
            }
            // Everything buffered is handled: wake the writers it queued for
            // before waiting for more.
            self.wakes.wake_all();
            if publishes > 0 {
                self.outbox
                    .traffic
                    .received(0, std::mem::take(&mut publishes));
            }
            keepalive.settle_read();
            if buf.capacity() - buf.len() < MIN_READ_ROOM {
                buf.reserve(chunk);
            }
            let room = buf.capacity() - buf.len();
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    if shutdown.is_cancelled() {
                        self.send_error(ErrorCode::ShuttingDown, "the broker is shutting down", 0);
                    }
                    return;
                }
                _ = &mut handshake_deadline, if !self.ready => {
                    self.send_error(ErrorCode::HandshakeTimeout, "no Hello within the handshake timeout", 0);
                    return;
                }
                changed = self.auth_changes.changed(), if self.ready => {
                    if changed.is_ok() && !self.shared.auth.users().still_has(&self.user) {
                        let message = format!(
                            "the user {:?} was removed or changed by a reload: connect again",
                            self.user.name
                        );
                        info!(user = %self.user.name, "closing a connection: its user was removed or changed");
                        self.send_error(ErrorCode::AuthFailed, &message, 0);
                        return;
                    }
                }
                read = socket.read_buf(&mut buf) => match read {
                    Ok(0) => {
                        if !buf.is_empty() || discard > 0 {
                            // The peer closed in the middle of a frame.
                            inc(&self.shared.metrics.protocol_errors);
                            debug!(buffered = buf.len(), "connection closed mid-frame");
                        }
                        return;
                    }
                    Ok(read) => {
                        self.outbox.traffic.received(read as u64, 0);
                        self.read_at_ms = unix_millis();
                        self.read_at = Instant::now();
                        keepalive.read_at = self.read_at;
                        if read == room {
                            // More was waiting than fit: read in bulk from now on.
                            chunk = READ_CHUNK;
                        }
                    }
                    Err(error) => {
                        debug!(%error, "read failed");
                        return;
                    }
                },
                // After the read: bytes already waiting count before silence is judged.
                _ = &mut keepalive_timer, if self.ready && keepalive.enabled() => {
                    match keepalive.on_timer(Instant::now()) {
                        KeepaliveStep::Wait => {}
                        KeepaliveStep::Ping => {
                            // A nonce of 0: the broker waits for no Pong in
                            // particular, any frame will do (PING-2).
                            if let Flow::Close = self.send(&Frame::Ping { nonce: 0 }) {
                                return;
                            }
                        }
                        KeepaliveStep::Close => {
                            inc(&self.shared.metrics.keepalive_closes);
                            info!(
                                silent_ms = keepalive.silent_for(Instant::now()).as_millis() as u64,
                                "closing a connection nothing was heard from through its keepalive"
                            );
                            return;
                        }
                    }
                    keepalive_timer.as_mut().reset(keepalive.deadline());
                }
            }
        }
    }

    /// A frame that could not be used. Before the handshake the connection
    /// is closed; after it the connection survives, since the framing is intact.
    fn bad_frame(&mut self, error: &FrameError) -> Flow {
        inc(&self.shared.metrics.protocol_errors);
        debug!(%error, "bad frame");
        if !self.ready {
            if let FrameError::TooLarge { .. } = error {
                inc(&self.shared.metrics.handshake_too_large);
            }
            self.send_error(error.code(), &format!("{error} (before the handshake)"), 0);
            return Flow::Close;
        }
        self.send_error(error.code(), &error.to_string(), 0)
    }

    /// Queue an error frame; closes the connection if its control backlog is
    /// full (a peer that never reads).
    fn send_error(&mut self, code: ErrorCode, message: &str, request_id: u64) -> Flow {
        self.shared.metrics.error_sent(code);
        self.send(&Frame::Error(ErrorFrame {
            code,
            message,
            request_id,
        }))
    }

    fn send(&mut self, frame: &Frame<'_>) -> Flow {
        let encoder = &mut self.encoder;
        match self.outbox.push_control(|out| encoder.encode(frame, out)) {
            Ok(()) => Flow::Continue,
            Err(_) => {
                warn!("client does not read its replies; closing");
                Flow::Close
            }
        }
    }

    async fn handle(&mut self, frame: Frame<'_>) -> Flow {
        if !self.ready {
            return match frame {
                Frame::Hello(hello) => self.handshake(&hello).await,
                other => {
                    inc(&self.shared.metrics.protocol_errors);
                    self.send_error(
                        ErrorCode::HandshakeRequired,
                        &format!("expected Hello, got {}", other.kind()),
                        0,
                    );
                    Flow::Close
                }
            };
        }
        // Deferred wake-ups go out before anything that may wait.
        self.wakes.wake_all();
        match frame {
            // After the handshake the read loop handles every publish
            // itself (`run`), so it never reaches this function.
            Frame::Publish(_) => unreachable!("a publish after the handshake is handled in run"),
            // Boxed: their futures (durable store calls) would otherwise
            // size the task of every connection, most of which never
            // subscribe more than a few times.
            Frame::Subscribe(subscribe) => Box::pin(self.subscribe(&subscribe)).await,
            Frame::Unsubscribe(unsubscribe) => Box::pin(self.unsubscribe(&unsubscribe)).await,
            Frame::Ack(ack) => {
                // Acks are accepted only for subscriptions this connection
                // owns. QoS 0 deliveries (delivery id 0, also those a durable
                // subscription gets at QoS 0) need none; a stored queue
                // releases a message only when it is in flight to this very
                // subscription (QOS-18).
                let Some(subscription) = self.outbox.subscription(ack.subscription_id) else {
                    return self.send_error(
                        ErrorCode::UnknownSubscription,
                        &format!("no subscription {} on this connection", ack.subscription_id),
                        ack.delivery_id,
                    );
                };
                let Some(kind) = AckKind::from_wire(ack.kind) else {
                    return self.send_error(
                        ErrorCode::InvalidArgument,
                        &format!("ack kind {} is not one this broker knows", ack.kind),
                        0,
                    );
                };
                let (Some(name), 1..) = (&subscription.durable, ack.delivery_id) else {
                    return Flow::Continue;
                };
                let durable = &self.shared.durable;
                let (id, delivery) = (subscription.id, ack.delivery_id);
                let outcome = match kind {
                    AckKind::Ack => durable.ack(name, id, delivery),
                    AckKind::Nak => {
                        let delay = Duration::from_millis(ack.delay_ms.into());
                        durable.nak(name, id, delivery, delay)
                    }
                    AckKind::Term => durable.term(name, id, delivery),
                    AckKind::InProgress => durable.in_progress(name, id, delivery),
                };
                match outcome {
                    AckOutcome::Acked | AckOutcome::Late => Flow::Continue,
                    // Request id 0: an Ack has none, and a delivery id may
                    // equal one of the client's pending request ids, whose
                    // request this error would then fail (QOS-18).
                    AckOutcome::Unknown => self.send_error(
                        ErrorCode::InvalidArgument,
                        &format!(
                            "delivery {} is not in flight to subscription {}",
                            ack.delivery_id, ack.subscription_id
                        ),
                        0,
                    ),
                }
            }
            Frame::Ping { nonce } => self.send(&Frame::Pong { nonce }),
            Frame::Pong { .. } => Flow::Continue,
            Frame::Hello(_) => {
                inc(&self.shared.metrics.protocol_errors);
                self.send_error(
                    ErrorCode::DuplicateHandshake,
                    "the handshake is already done",
                    0,
                )
            }
            other => {
                inc(&self.shared.metrics.protocol_errors);
                self.send_error(
                    ErrorCode::UnsupportedFrame,
                    &format!("{} is a broker-to-client frame", other.kind()),
                    0,
                )
            }
        }
    }

    async fn handshake(&mut self, hello: &Hello<'_>) -> Flow {
        if hello.protocol_version != PROTOCOL_VERSION {
            inc(&self.shared.metrics.protocol_errors);
            self.send_error(
                ErrorCode::UnsupportedVersion,
                &format!(
                    "protocol version {} is not supported; this broker speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
                0,
            );
            return Flow::Close;
        }
        let client = clip(hello.client_name.unwrap_or(""), MAX_LOGGED_NAME);
        let users = self.shared.auth.users();
        if users.require_key() {
            match users.authenticate(hello.api_key.unwrap_or("")) {
                Some(user) => self.user = user,
                None => return self.refuse_key(hello, &client).await,
            }
        }
        if !self.admission.admit() {
            // LIMIT-1: every connection slot is taken by authenticated clients.
            let shared = self.shared.clone();
            let metrics = &shared.metrics;
            inc(&metrics.connections_rejected);
            if let Some(suppressed) = shared.refusal_log.admit(std::time::Instant::now()) {
                add(&metrics.log_lines_suppressed, suppressed);
                warn!(suppressed, "connection refused: max_connections reached");
            }
            let max = shared.config.server.max_connections;
            self.send_error(
                ErrorCode::TooManyConnections,
                &format!("the broker is at its limit of {max} connections"),
                0,
            );
            return Flow::Close;
        }
        self.ready = true;
        self.drop_notices = hello.drop_notices;
        info!(%client, "handshake complete");
        self.listed = Some(self.shared.connections.register(ConnectionInfo {
            id: self.connection_id,
            peer: self.peer,
            link: self.link(),
            client_name: client.to_string(),
            user: self.user.name.clone(),
            connected_at: SystemTime::now(),
            outbox: self.outbox.clone(),
        }));
        let server = self.shared.config.server.clone();
        let max_message_size = server.max_message_size_bytes as u32;
        let connection_id = self.connection_id;
        self.send(&Frame::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            server_name: "blipmq",
            server_version: env!("CARGO_PKG_VERSION"),
            max_message_size,
            connection_id,
            max_headers: server.max_headers as u16,
            max_header_key_size: server.max_header_key_bytes as u16,
            max_headers_size: server.max_headers_bytes as u32,
        }))
    }

    /// How the client reached the broker, as introspection shows it.
    fn link(&self) -> Link {
        let config = &self.shared.config;
        match self.admission.transport() {
            Transport::Tcp if config.tls_on(Listener::Clients) => Link::Tls,
            Transport::Tcp => Link::Tcp,
            Transport::WebSocket if config.tls_on(Listener::WebSocket) => Link::SecureWebSocket,
            Transport::WebSocket => Link::WebSocket,
        }
    }

    /// A Hello whose key is missing or no user's: AuthFailed, after a delay
    /// when its address has failed too often (LIMIT-26).
    async fn refuse_key(&mut self, hello: &Hello<'_>, client: &str) -> Flow {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        inc(&metrics.auth_failures);
        let now = std::time::Instant::now();
        if let Some(suppressed) = shared.auth_log.admit(now) {
            add(&metrics.log_lines_suppressed, suppressed);
            warn!(%client, suppressed, "authentication failed");
        }
        // An address over its budget of failures waits for the answer
        // (LIMIT-26); a correct key never does.
        let delay = shared.login_failures.failed(self.peer.ip(), now);
        if !delay.is_zero() {
            inc(&metrics.auth_failures_delayed);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return Flow::Close,
            }
        }
        let message = if hello.api_key.is_none() {
            "this broker requires an API key"
        } else {
            "invalid API key"
        };
        self.send_error(ErrorCode::AuthFailed, message, 0);
        Flow::Close
    }

    /// The part of a publish that waits, after [`Reader::publish_now`] did
    /// what it could: for the log (QoS 1) or for room in a full `block` queue.
    async fn publish_later(
        &mut self,
        publish_id: u64,
        topic: &str,
        publishing: Publishing,
    ) -> Flow {
        match publishing {
            Publishing::Done(flow) => flow,
            Publishing::Durable(message, matches) => {
                self.wakes.wake_all();
                // Boxed, as subscribe is: the log's future is large and QoS 1
                // publishes wait on a disk sync anyway.
                Box::pin(self.publish_durable(publish_id, topic, message, matches)).await
            }
            Publishing::Behind(message, matches) => {
                self.wakes.wake_all();
                if let Some(confirms) = &self.confirms {
                    confirms.push_behind(message, matches).await;
                }
                Flow::Continue
            }
            Publishing::AwaitingMemory(mut message, matches) => {
                // What is queued must drain for the budget to free up.
                self.wakes.wake_all();
                message.charge = self
                    .shared
                    .memory
                    .charge_or_wait(message.delivery.len())
                    .await;
                let message = Arc::new(message);
                if let Some(confirms) = self.confirms.as_ref().filter(|c| c.is_busy()) {
                    confirms.push_behind(message, matches).await;
                    return Flow::Continue;
                }
                let metrics = &self.shared.metrics;
                for subscription in matches.targets() {
                    subscription.enqueue(message.clone(), metrics).await;
                }
                Flow::Continue
            }
            Publishing::Blocked(message, waiting) => {
                // The writers must drain what is queued for the full queue to empty.
                self.wakes.wake_all();
                let metrics = &self.shared.metrics;
                for subscription in waiting {
                    subscription.enqueue(message.clone(), metrics).await;
                }
                Flow::Continue
            }
        }
    }

    /// Check, encode and fan out a publish as far as it goes without
    /// waiting. A plain function, not an `async` one: the hot path of every
    /// message stays out of the connection future's state (the moves in and
    /// out of it were a visible share of the broker's time).
    fn publish_now(&mut self, publish: &Publish<'_>) -> Publishing {
        let request_id = publish.publish_id;
        if let Some(refused) = self.refuse_qos(publish.qos, request_id) {
            return Publishing::Done(refused);
        }
        // The topic of the previous publish was checked then: a steady
        // stream to one topic skips the token scan.
        let same_topic = self
            .match_cache
            .as_ref()
            .is_some_and(|(cached, _)| cached == publish.topic);
        if !same_topic {
            if let Err(error) = topic::validate_topic(publish.topic) {
                return Publishing::Done(self.send_error(
                    ErrorCode::InvalidTopic,
                    &format!("{error}: {:?}", publish.topic),
                    request_id,
                ));
            }
            // The cache holds only a topic that passed this check.
            if !self.user.publish_is_open() || publish.topic.starts_with('$') {
                if let Err(why) = self.user.may_publish(publish.topic) {
                    inc(&self.shared.metrics.permission_denials);
                    return Publishing::Done(self.send_error(
                        ErrorCode::PermissionDenied,
                        &why,
                        request_id,
                    ));
                }
            }
        }
        if !publish.headers.is_empty() {
            let limits = self.shared.config.header_limits();
            let headers = publish.headers.iter().map(|h| (h.key, h.value));
            if let Err(error) = headers::validate_headers(headers, &limits) {
                return Publishing::Done(self.send_error(
                    error.code(),
                    &error.to_string(),
                    request_id,
                ));
            }
        }
        let max = self.shared.config.server.max_message_size_bytes;
        if publish.payload.len() > max {
            return Publishing::Done(self.send_error(
                ErrorCode::MessageTooLarge,
                &format!(
                    "payload of {} bytes exceeds the limit of {max} bytes",
                    publish.payload.len()
                ),
                request_id,
            ));
        }
        inc(&self.shared.metrics.published);
        let matches = self.subscribers_of(publish.topic, same_topic);
        let durable = publish.qos == Qos::AtLeastOnce.as_wire();
        if matches.is_empty() && !durable {
            return Publishing::Done(Flow::Continue);
        }
        let ttl_ms = match publish.ttl_ms {
            0 => self.shared.config.delivery.default_ttl_ms,
            ttl => u64::from(ttl),
        };
        let message_id = self.shared.next_message_id.fetch_add(1, Ordering::Relaxed);
        // Messages carrying W3C trace context get a span with the caller's
        // trace id, so the broker's log lines join the user's trace.
        let trace_id = headers::trace_id_of(&publish.headers);
        let mut message = QueuedMessage {
            delivery: self.encoder.shared_delivery(
                publish.topic,
                publish.payload,
                &publish.headers,
                message_id,
                self.read_at_ms,
            ),
            published_at: self.read_at,
            expires_at: (ttl_ms > 0).then(|| Instant::now() + Duration::from_millis(ttl_ms)),
            trace_id: trace_id.map(Box::from),
            charge: Default::default(),
            message_id,
        };
        if let Some(trace_id) = trace_id {
            tracing::debug_span!("publish", trace_id, topic = publish.topic, message_id)
                .in_scope(|| debug!(subscriptions = matches.len(), "fan-out"));
        }
        match self.shared.memory.try_charge(message.delivery.len()) {
            Some(charge) => message.charge = charge,
            None => return self.over_memory_budget(message, matches, durable, request_id),
        }
        let message = Arc::new(message);
        if durable {
            return Publishing::Durable(message, matches);
        }
        if self.confirms.as_ref().is_some_and(ConfirmPipeline::is_busy) {
            return Publishing::Behind(message, matches);
        }
        let metrics = &self.shared.metrics;
        let mut targets = matches.targets();
        while let Some(subscription) = targets.next() {
            if let Err(message) =
                subscription.try_enqueue_deferring_wake(message.clone(), metrics, &mut self.wakes)
            {
                // A full `block` queue: it and every target after it wait.
                let waiting = std::iter::once(subscription)
                    .chain(targets)
                    .map(Cow::into_owned)
                    .collect();
                return Publishing::Blocked(message, waiting);
            }
        }
        Publishing::Done(Flow::Continue)
    }

    /// A message the memory budget has no room for (LIMIT-3): a QoS 1
    /// publish is refused, so its publisher knows it was not stored; a
    /// QoS 0 one is discarded under a dropping policy, or its publisher
    /// waits for room under `block`, as it would for a full queue.
    fn over_memory_budget(
        &mut self,
        message: QueuedMessage,
        matches: Matches,
        durable: bool,
        request_id: u64,
    ) -> Publishing {
        let metrics = &self.shared.metrics;
        if durable {
            inc(&metrics.refused_memory_budget);
            let budget = self.shared.memory.limit();
            return Publishing::Done(self.send_error(
                ErrorCode::QueueFull,
                &format!(
                    "the broker's memory budget for messages ({budget} bytes, \
                     queues.max_memory_bytes) is full; publish again later"
                ),
                request_id,
            ));
        }
        if self.shared.config.queues.overflow_policy == OverflowPolicy::Block {
            return Publishing::AwaitingMemory(message, matches);
        }
        add(&metrics.dropped_memory_budget, matches.len() as u64);
        // No discard is silent (QUEUE-6): each target hears of it in line.
        for subscription in matches.targets() {
            subscription.note_discarded();
        }
        Publishing::Done(Flow::Continue)
    }

    /// Hand a QoS 1 message to the log; the confirm pipeline confirms and
    /// delivers it once it is durable (QOS-1).
    async fn publish_durable(
        &mut self,
        publish_id: u64,
        topic: &str,
        message: MessageRef,
        matches: Matches,
    ) -> Flow {
        let (pending, hold) = match self.shared.durable.submit(&message).await {
            Ok(submitted) => submitted,
            Err(error) => {
                return self.send_error(storage_error_code(&error), &error.to_string(), publish_id)
            }
        };
        let confirms = self.confirms.get_or_insert_with(|| {
            ConfirmPipeline::start(self.shared.clone(), self.outbox.clone(), self.stop.clone())
        });
        confirms
            .push(StoredPublish {
                pending,
                hold,
                publish_id,
                topic: topic.to_string(),
                read_at: self.read_at,
                message,
                matches,
            })
            .await;
        Flow::Continue
    }

    /// QoS 0 and 1 are served; anything else does not exist (PUB-4).
    /// `Some` means refused.
    fn refuse_qos(&mut self, qos: u8, request_id: u64) -> Option<Flow> {
        match Qos::from_wire(qos) {
            Some(_) => None,
            None => Some(self.send_error(
                ErrorCode::InvalidArgument,
                &format!("qos {qos} does not exist (0 or 1)"),
                request_id,
            )),
        }
    }

    /// The subscriptions `topic` reaches; `cached_topic` says whether it is
    /// the topic of `match_cache` (the caller has compared them already).
    fn subscribers_of(&mut self, topic: &str, cached_topic: bool) -> Matches {
        if let (true, Some((_, matches))) = (cached_topic, &self.match_cache) {
            if matches.is_current() {
                return matches.clone();
            }
        }
        let matches = self.shared.registry.matching(topic);
        self.match_cache = Some((topic.to_string(), matches.clone()));
        matches
    }

    async fn subscribe(&mut self, subscribe: &Subscribe<'_>) -> Flow {
        let request_id = subscribe.request_id;
        if let Some(refused) = self.refuse_qos(subscribe.qos, request_id) {
            return refused;
        }
        let qos1 = subscribe.qos == Qos::AtLeastOnce.as_wire();
        for (what, name) in [
            ("durable name", subscribe.durable_name),
            ("queue group", subscribe.queue_group),
        ] {
            if let Some(name) = name.filter(|n| !valid_durable_name(n)) {
                return self.send_error(
                    ErrorCode::InvalidArgument,
                    &format!(
                        "{what} {name:?}: 1 to 255 bytes, no whitespace or control characters"
                    ),
                    request_id,
                );
            }
        }
        if !qos1 && subscribe.durable_name.is_some() {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "a durable subscription is QoS 1: subscribe with qos 1",
                request_id,
            );
        }
        if let Err(error) = topic::validate_pattern(subscribe.pattern) {
            return self.send_error(
                ErrorCode::InvalidTopic,
                &format!("{error}: {:?}", subscribe.pattern),
                request_id,
            );
        }
        let permitted = self.user.may_subscribe(subscribe.pattern).and_then(|()| {
            [subscribe.durable_name, subscribe.queue_group]
                .into_iter()
                .flatten()
                .try_for_each(|name| self.user.may_use_queue(name))
        });
        if let Err(why) = permitted {
            inc(&self.shared.metrics.permission_denials);
            return self.send_error(ErrorCode::PermissionDenied, &why, request_id);
        }
        let limit = self.shared.config.queues.max_subscriptions_per_connection;
        if self.outbox.subscription_count() >= limit {
            inc(&self.shared.metrics.subscriptions_refused_per_connection);
            return self.send_error(
                ErrorCode::TooManyTopics,
                &format!(
                    "this connection already holds {limit} subscriptions \
                     (queues.max_subscriptions_per_connection)"
                ),
                request_id,
            );
        }
        let limit = self.shared.config.queues.max_subscriptions;
        if self.shared.registry.subscription_count() >= limit {
            inc(&self.shared.metrics.subscriptions_refused_broker);
            return self.send_error(
                ErrorCode::TooManyTopics,
                &format!(
                    "the broker already holds {limit} subscriptions (queues.max_subscriptions)"
                ),
                request_id,
            );
        }
        let shared = &self.shared;
        let subscription_id = shared.next_subscription_id.fetch_add(1, Ordering::Relaxed);
        // Every QoS 1 subscription consumes a stored queue (QOS-4, QOS-10,
        // QOS-11): named by the group, else by the durable name, else one of
        // its own that lives as long as it does.
        let stored_queue = qos1.then(|| match (subscribe.queue_group, subscribe.durable_name) {
            (Some(group), durable) => (durable.unwrap_or(group).to_string(), QueueKind::Group),
            (None, Some(name)) => (name.to_string(), QueueKind::Durable),
            (None, None) => (ephemeral_name(subscription_id), QueueKind::Ephemeral),
        });
        let subscription = Arc::new(
            Subscription::new(
                subscription_id,
                subscribe.pattern.to_string(),
                shared.config.queues.subscriber_capacity,
                shared.config.queues.overflow_policy,
                self.outbox.clone(),
                stored_queue.as_ref().map(|(name, _)| name.clone()),
                subscribe.queue_group.map(str::to_string),
            )
            .with_capacity_bytes(
                shared.config.queues.subscriber_capacity_bytes,
                shared.memory,
            )
            .with_drop_notices(self.drop_notices),
        );
        let terms = if qos1 {
            let defaults = self.shared.durable.default_terms();
            ConsumerTerms::requested(subscribe.ack_timeout_ms, subscribe.max_deliveries, defaults)
        } else if subscribe.ack_timeout_ms != 0 || subscribe.max_deliveries != 0 {
            Err(TermsRefused(
                "ack_timeout_ms and max_deliveries are for QoS 1 subscriptions: subscribe with qos 1"
                    .into(),
            ))
        } else {
            Ok(self.shared.durable.default_terms())
        };
        let terms = match terms {
            Ok(terms) => terms,
            Err(refused) => {
                return self.send_error(ErrorCode::InvalidArgument, &refused.0, request_id);
            }
        };
        let mut created_queue = false;
        if let Some((name, kind)) = &stored_queue {
            // Create or check it first: a refusal must come instead of
            // Subscribed, and deliveries only after it (SUB-7).
            match self
                .shared
                .durable
                .prepare(name, subscribe.pattern, *kind)
                .await
            {
                Ok(created) => created_queue = created,
                Err(error) => {
                    let code = match &error {
                        AttachError::InUse(_) => ErrorCode::DurableInUse,
                        // The limit code for subscriptions the broker will not
                        // hold more of (TooManyTopics is topic_capacity's).
                        AttachError::TooManyQueues { .. } => ErrorCode::TooManyTopics,
                        AttachError::PatternMismatch { .. } | AttachError::KindMismatch { .. } => {
                            ErrorCode::InvalidArgument
                        }
                        AttachError::Storage(e) => storage_error_code(e),
                    };
                    return self.send_error(code, &error.to_string(), request_id);
                }
            }
        }
        let shared = &self.shared;
        if let Err(error) = shared.registry.insert(subscription.clone()) {
            inc(&shared.metrics.subscriptions_refused_topic_capacity);
            if let (Some((name, _)), true) = (&stored_queue, created_queue) {
                // Refused: what the refusal made goes with it.
                shared.durable.abandon(name).await;
            }
            return self.send_error(ErrorCode::TooManyTopics, &error.to_string(), request_id);
        }
        self.outbox.add_subscription(subscription.clone());
        debug!(subscription_id, pattern = subscribe.pattern, "subscribed");
        let flow = self.send(&Frame::Subscribed(Subscribed {
            request_id,
            subscription_id,
        }));
        if let Some((name, _)) = &stored_queue {
            self.shared.durable.attach_with(name, subscription, terms);
        }
        flow
    }

    async fn unsubscribe(&mut self, unsubscribe: &Unsubscribe) -> Flow {
        let Some(subscription) = self.outbox.remove_subscription(unsubscribe.subscription_id)
        else {
            return self.send_error(
                ErrorCode::UnknownSubscription,
                &format!(
                    "no subscription {} on this connection",
                    unsubscribe.subscription_id
                ),
                unsubscribe.request_id,
            );
        };
        self.shared.registry.remove(&subscription);
        subscription.close();
        if let Some(name) = &subscription.durable {
            // Unsubscribing ends a durable subscription for good unless the
            // client asks to keep it (closing the connection only detaches).
            if unsubscribe.keep_durable {
                self.shared.durable.detach(name, &subscription);
            } else if let Err(error) = self.shared.durable.unsubscribe(name, &subscription).await {
                return self.send_error(
                    storage_error_code(&error),
                    &error.to_string(),
                    unsubscribe.request_id,
                );
            }
        }
        self.send(&Frame::Unsubscribed(Unsubscribed {
            request_id: unsubscribe.request_id,
            subscription_id: unsubscribe.subscription_id,
        }))
    }
}

fn valid_durable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
