//! The broker's entry point: accept connections, enforce the connection
//! limit, and shut everything down in order.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admission::{Admission, Slots};
use crate::auth::{AuthState, Users};
use crate::config::{Config, Listener};
use crate::connection;
use crate::connections::Connections;
use crate::dead_letter;
use crate::durable::{DeliverySettings, Durable};
use crate::http;
use crate::memory::MemoryBudget;
use crate::metrics::{add, inc, Gauges, Metrics, Transport};
use crate::registry::Registry;
use crate::throttle::{LogGate, LoginFailures};
use crate::tls::{self, Tls};
use crate::websocket;

/// The sockets a broker serves, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub clients: TcpListener,
    /// The WebSocket listener (`[websocket] bind_addr`); `None` = none.
    pub websocket: Option<TcpListener>,
    /// `None` disables the metrics endpoint.
    pub metrics: Option<TcpListener>,
    /// The certificate `[tls]` names, read at bind; `None` = no TLS. Which
    /// listeners use it is `Config::tls_on`'s answer. [`Tls::reload`] reads
    /// the files again (the binary does on SIGHUP).
    pub tls: Option<Arc<Tls>>,
    /// The users in effect, when the caller keeps a handle to replace them
    /// (the binary does, on SIGHUP); `None` = the config's, fixed.
    pub auth: Option<Arc<AuthState>>,
}

impl Listeners {
    /// Bind the addresses named in `config`, and read its TLS files.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let tls = Tls::load(&config.tls)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let clients = TcpListener::bind(config.server.bind_addr)
            .await
            .map_err(|e| with_context(e, "server.bind_addr", config.server.bind_addr))?;
        let websocket = match config.websocket.bind_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| with_context(e, "websocket.bind_addr", addr))?,
            ),
            None => None,
        };
        let metrics = if config.metrics.enabled {
            Some(
                TcpListener::bind(config.metrics.bind_addr)
                    .await
                    .map_err(|e| with_context(e, "metrics.bind_addr", config.metrics.bind_addr))?,
            )
        } else {
            None
        };
        if !config.auth.api_keys.is_empty() {
            warn!(
                "auth.api_keys is deprecated: each key is a user with every right; \
                 move to [[auth.users]] (blipmq keygen) with the rights each needs"
            );
        }
        Ok(Listeners {
            clients,
            websocket,
            metrics,
            tls,
            auth: Some(Arc::new(AuthState::new(Users::from_config(&config.auth)))),
        })
    }
}

fn with_context(error: io::Error, key: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot listen on {addr} ({key}): {error}"),
    )
}

/// Accept on `listener`, or wait forever when there is none.
async fn accept_if_any(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// State every connection shares.
pub(crate) struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// QoS 1: the write-ahead log and durable subscriptions.
    pub durable: Durable,
    /// What messages in memory may take (`queues.max_memory_bytes`).
    pub memory: &'static MemoryBudget,
    /// What every connection's unread replies may take together: a
    /// sixteenth of the message budget (LIMIT-2).
    pub control_memory: &'static MemoryBudget,
    pub next_message_id: AtomicU64,
    pub next_subscription_id: AtomicU64,
    pub next_connection_id: AtomicU64,
    /// Handshake and connection slots (LIMIT-1, LIMIT-20).
    pub slots: Slots,
    /// Failed Hellos per source address (LIMIT-26).
    pub login_failures: LoginFailures,
    /// Warnings a peer can cause, one line a second per kind (LIMIT-27):
    /// failed logins, and sockets refused for a limit.
    pub auth_log: LogGate,
    pub refusal_log: LogGate,
    /// The users and their rights (`[auth]`), replaced on reload.
    pub auth: Arc<AuthState>,
    /// The clients whose Hello was accepted (introspection).
    pub connections: Arc<Connections>,
    /// When this broker started serving, on both clocks: the wall clock's
    /// for operators, the monotonic one for uptime.
    pub started_at: SystemTime,
    pub started: Instant,
    /// The addresses the listeners are bound to, set once they serve.
    pub listening: OnceLock<Listening>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
}

/// The bound addresses, as `/v1/server` shows them (`None` = off).
#[derive(Debug, Clone)]
pub struct Listening {
    pub clients: Option<SocketAddr>,
    pub websocket: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// How often a warning a peer can cause may be logged, per kind.
const PEER_WARNING_INTERVAL: Duration = Duration::from_secs(1);

impl Shared {
    pub fn new(
        config: Config,
        durable: Durable,
        metrics: Arc<Metrics>,
        first_message_id: u64,
        auth: Arc<AuthState>,
    ) -> Shared {
        Shared {
            durable,
            registry: Registry::new(
                config.queues.topic_capacity,
                config.effective_fanout_shards(),
            ),
            metrics,
            memory: MemoryBudget::leak(config.queues.max_memory_bytes),
            control_memory: MemoryBudget::leak(config.queues.max_memory_bytes / 16),
            next_message_id: AtomicU64::new(first_message_id),
            next_subscription_id: AtomicU64::new(1),
            next_connection_id: AtomicU64::new(1),
            slots: Slots::new(config.server.max_handshakes, config.server.max_connections),
            login_failures: LoginFailures::new(
                config.auth.max_failures,
                Duration::from_millis(config.auth.failure_window_ms),
                Duration::from_millis(config.auth.failure_delay_ms),
            ),
            auth_log: LogGate::new(PEER_WARNING_INTERVAL),
            refusal_log: LogGate::new(PEER_WARNING_INTERVAL),
            auth,
            connections: Arc::default(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            listening: OnceLock::new(),
            draining: AtomicBool::new(false),
            config,
        }
    }

    pub fn gauges(&self) -> Gauges {
        let (subscriptions, topics, queue_depth) = self.registry.gauges();
        Gauges {
            subscriptions,
            topics,
            queue_depth,
            memory_bytes: self.memory.used() as u64,
            memory_budget_bytes: self.memory.limit() as u64,
            durable: self.durable.gauges(),
            wal: self.durable.wal_stats().unwrap_or_default(),
            wal_state: self.durable.health().label(),
            queues: self.durable.queue_stats(),
        }
    }
}

/// Run the broker on `listeners` until `shutdown` completes, then close every
/// connection (each is told ShuttingDown) and return.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_and_notify(listeners, config, shutdown, || {}).await
}

/// [`run`], calling `ready` once the broker serves everything: after the
/// write-ahead log is recovered (the `blipmq` binary prints its readiness
/// line there). Until then clients wait in the accept backlog and `/readyz`
/// answers 503.
pub async fn run_and_notify(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> io::Result<()> {
    // Recover durable state before serving anyone (the listeners are bound,
    // so early clients wait in the accept backlog).
    let settings = DeliverySettings::from_config(&config);
    let recovering = Durable::open(config.wal.clone(), settings);
    let metrics = Arc::new(Metrics::default());
    warn_of_exposed_plaintext(&config);
    let tls_for = |listener: Listener| {
        if config.tls_on(listener) {
            listeners.tls.clone()
        } else {
            None
        }
    };
    let (clients_tls, websocket_tls) = (tls_for(Listener::Clients), tls_for(Listener::WebSocket));
    let http_limits =
        http::Limits::new(&config.metrics, metrics.clone(), tls_for(Listener::Metrics));
    let opened = match &listeners.metrics {
        Some(listener) => tokio::select! {
            opened = recovering => opened,
            _ = http::serve_while_recovering(listener, &http_limits) => unreachable!("serves until dropped"),
        },
        None => recovering.await,
    };
    let (durable, dead_letters) = opened.map_err(|e| {
        io::Error::other(format!(
            "cannot open the write-ahead log ({}): {e}",
            config.wal.dir.display()
        ))
    })?;
    let first_message_id = first_message_id(durable.recovered_max_message_id());
    let auth = listeners
        .auth
        .clone()
        .unwrap_or_else(|| Arc::new(AuthState::new(Users::from_config(&config.auth))));
    let shared = Arc::new(Shared::new(
        config,
        durable,
        metrics,
        first_message_id,
        auth,
    ));
    let local = |listener: &TcpListener| listener.local_addr().ok();
    let _ = shared.listening.set(Listening {
        clients: local(&listeners.clients),
        websocket: listeners.websocket.as_ref().and_then(local),
        metrics: listeners.metrics.as_ref().and_then(local),
    });
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    // QoS 1 housekeeping: dead letters, and redelivery of overdue acks.
    let dead_letter_task = tokio::spawn(dead_letter::run(shared.clone(), dead_letters));
    let sweeper = tokio::spawn(redeliver_overdue(shared.clone()));
    // The HTTP port outlives the client connections: it answers `/readyz`
    // with 503 while they drain, and stops last.
    let http_stop = CancellationToken::new();
    let http_task = listeners.metrics.map(|listener| {
        tokio::spawn(http::serve(
            listener,
            shared.clone(),
            http_limits,
            http_stop.clone(),
        ))
    });
    // After the HTTP port serves the recovered broker: a probe that follows
    // the readiness line finds `/readyz` answering 200.
    ready();
    tokio::pin!(shutdown);
    // `server.drain_delay_ms`: set going by the shutdown signal.
    let drain_delay = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(drain_delay);
    let mut draining = false;
    loop {
        let (transport, accepted) = tokio::select! {
            _ = &mut shutdown, if !draining => {
                shared.draining.store(true, Ordering::Relaxed);
                let delay = Duration::from_millis(shared.config.server.drain_delay_ms);
                if delay.is_zero() {
                    break;
                }
                info!(?delay, "draining: /readyz answers 503; clients are served until server.drain_delay_ms ends");
                drain_delay.as_mut().reset(tokio::time::Instant::now() + delay);
                draining = true;
                continue;
            }
            _ = &mut drain_delay, if draining => break,
            accepted = listeners.clients.accept() => (Transport::Tcp, accepted),
            accepted = accept_if_any(listeners.websocket.as_ref()) => (Transport::WebSocket, accepted),
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of
                // spinning, and keep serving the connections we have.
                error!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            warn!(%error, %peer, "cannot set TCP_NODELAY");
        }
        let metrics = &shared.metrics;
        let listener_tls = match transport {
            Transport::Tcp => clients_tls.as_ref(),
            Transport::WebSocket => websocket_tls.as_ref(),
        };
        let Ok(handshake) = shared.slots.handshakes.clone().try_acquire_owned() else {
            // Beyond the handshake budget: closed here and now, with no
            // upgrade and no task (LIMIT-21).
            inc(&metrics.handshakes_rejected);
            if listener_tls.is_none() {
                // A TLS port has no plaintext way to say why: closed.
                refuse_at_accept(&stream, transport, shared.config.server.max_handshakes);
            }
            if let Some(suppressed) = shared.refusal_log.admit(std::time::Instant::now()) {
                add(&metrics.log_lines_suppressed, suppressed);
                warn!(%peer, suppressed, "socket refused: server.max_handshakes are in handshake");
            }
            continue;
        };
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(shared.config.server.handshake_timeout_ms);
        let admission = Admission::new(
            transport,
            metrics.clone(),
            &shared.slots,
            handshake,
            deadline,
        );
        let shared = shared.clone();
        let stop = stop.clone();
        let acceptor = listener_tls.map(|tls| tls.acceptor());
        tasks.spawn(async move {
            match (transport, acceptor) {
                (Transport::Tcp, None) => {
                    let (read_half, write_half) = stream.into_split();
                    connection::serve(read_half, write_half, peer, shared, stop, admission).await
                }
                (Transport::Tcp, Some(acceptor)) => {
                    let deadline = admission.deadline;
                    let metrics = &shared.metrics;
                    let secured =
                        tls::handshake(acceptor, stream, deadline, &stop, metrics, peer).await;
                    if let Some(stream) = secured {
                        let (read_half, write_half) = tokio::io::split(stream);
                        connection::serve(read_half, write_half, peer, shared, stop, admission)
                            .await
                    }
                }
                (Transport::WebSocket, acceptor) => {
                    websocket::serve(stream, acceptor, peer, shared, stop, admission).await
                }
            }
        });
    }
    info!("shutting down");
    drop(listeners.clients);
    drop(listeners.websocket);
    shared.draining.store(true, Ordering::Relaxed);
    stop.cancel();
    tasks.close();
    let grace = Duration::from_millis(shared.config.server.shutdown_timeout_ms);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!("some connections did not close within {grace:?} (server.shutdown_timeout_ms)");
    }
    http_stop.cancel();
    if let Some(http_task) = http_task {
        let _ = http_task.await;
    }
    sweeper.abort();
    dead_letter_task.abort();
    info!("stopped");
    Ok(())
}

/// A plaintext listener on an address other than loopback carries API keys
/// and messages in clear: said once at start, for each.
fn warn_of_exposed_plaintext(config: &Config) {
    for (listener, addr) in config.exposed_plaintext_listeners() {
        warn!(
            %addr,
            listener = listener.section(),
            "plaintext listener on a non-loopback address: API keys and messages cross the network in clear; configure [tls]"
        );
    }
}

/// Tell a socket refused at accept why, if its send buffer takes the
/// answer without waiting (a fresh socket's does), then drop it: an Error
/// frame over TCP, an HTTP 503 on the WebSocket port (no upgrade happened).
fn refuse_at_accept(stream: &TcpStream, transport: Transport, max_handshakes: usize) {
    let message =
        format!("the broker is at its limit of {max_handshakes} sockets awaiting a handshake");
    let answer = match transport {
        Transport::Tcp => blipmq_protocol::Encoder::new()
            .encode_to_bytes(&blipmq_protocol::Frame::Error(blipmq_protocol::ErrorFrame {
                code: blipmq_protocol::ErrorCode::TooManyConnections,
                message: &message,
                request_id: 0,
            }))
            .to_vec(),
        Transport::WebSocket => format!(
            "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{message}\n",
            message.len() + 1
        )
        .into_bytes(),
    };
    let _ = stream.try_write(&answer);
}

/// Message ids stay unique and increasing across restarts (PUB-5): the
/// first id of a run is past every id in the log, and past the clock in
/// microseconds, which covers history the log has already released (a run
/// would have to average over a million messages per second to overtake it).
fn first_message_id(recovered_max: u64) -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    micros.max(recovered_max + 1).max(1)
}

/// Every sweep interval, send again the QoS 1 deliveries whose ack is late;
/// also whenever the store's alarm rings for a deadline or a nak delay that
/// comes sooner (a subscription's shorter ack timeout, QOS-22).
async fn redeliver_overdue(shared: Arc<Shared>) {
    let interval = shared.durable.sweep_interval();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Expiry of detached queues scans every entry: about once a second.
    let expiry_every = (Duration::from_secs(1).as_millis() / interval.as_millis().max(1)).max(1);
    let mut round = 0u128;
    loop {
        let ticked = tokio::select! {
            _ = tick.tick() => true,
            () = shared.durable.sweep_due() => false,
        };
        let now = std::time::Instant::now();
        let overdue = shared.durable.redeliver_overdue(now);
        if overdue > 0 {
            tracing::debug!(overdue, "redelivering unacked QoS 1 messages");
        }
        if !ticked {
            continue;
        }
        // The first tick (at once) sweeps; then every `expiry_every`th.
        round += 1;
        if (round - 1) % expiry_every == 0 {
            let expired = shared.durable.expire_detached(now);
            if expired > 0 {
                tracing::debug!(expired, "expired QoS 1 messages of detached queues");
            }
        }
    }
}
