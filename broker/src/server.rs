//! The broker's entry point: accept connections, enforce the connection
//! limit, and shut everything down in order.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::connection;
use crate::dead_letter;
use crate::durable::{DeliverySettings, Durable};
use crate::http;
use crate::memory::MemoryBudget;
use crate::metrics::{inc, Gauges, Metrics, Transport};
use crate::registry::Registry;
use crate::websocket;

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The sockets a broker serves, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub clients: TcpListener,
    /// The WebSocket listener (`[websocket] bind_addr`); `None` = none.
    pub websocket: Option<TcpListener>,
    /// `None` disables the metrics endpoint.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Bind the addresses named in `config`.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
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
        Ok(Listeners {
            clients,
            websocket,
            metrics,
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
}

impl Shared {
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
    let opened = match &listeners.metrics {
        Some(metrics) => tokio::select! {
            opened = recovering => opened,
            _ = http::serve_while_recovering(metrics) => unreachable!("serves until dropped"),
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
    let shared = Arc::new(Shared {
        durable,
        registry: Registry::new(
            config.queues.topic_capacity,
            config.effective_fanout_shards(),
        ),
        metrics: Arc::new(Metrics::default()),
        memory: MemoryBudget::leak(config.queues.max_memory_bytes),
        control_memory: MemoryBudget::leak(config.queues.max_memory_bytes / 16),
        next_message_id: AtomicU64::new(first_message_id),
        next_subscription_id: AtomicU64::new(1),
        next_connection_id: AtomicU64::new(1),
        config,
    });
    ready();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    // QoS 1 housekeeping: dead letters, and redelivery of overdue acks.
    let dead_letter_task = tokio::spawn(dead_letter::run(shared.clone(), dead_letters));
    let sweeper = tokio::spawn(redeliver_overdue(shared.clone()));
    if let Some(listener) = listeners.metrics {
        tasks.spawn(http::serve(listener, shared.clone(), stop.clone()));
    }
    // One permit per open connection: the limit reads off the semaphore.
    let permits = Arc::new(Semaphore::new(shared.config.server.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (transport, accepted) = tokio::select! {
            _ = &mut shutdown => break,
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
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics.connection_opened(transport);
                let shared = shared.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    match transport {
                        Transport::Tcp => {
                            let (read_half, write_half) = stream.into_split();
                            connection::serve(read_half, write_half, peer, shared.clone(), stop)
                                .await
                        }
                        Transport::WebSocket => {
                            websocket::serve(stream, peer, shared.clone(), stop).await
                        }
                    }
                    // Free the slot before the gauge says it is free.
                    drop(permit);
                    shared.metrics.connection_closed(transport);
                });
            }
            Err(_) => {
                inc(&metrics.connections_rejected);
                metrics.error_sent(blipmq_protocol::ErrorCode::TooManyConnections);
                warn!(%peer, "connection refused: max_connections reached");
                match transport {
                    Transport::Tcp => tasks.spawn(connection::reject_over_limit(
                        stream,
                        shared.config.server.max_connections,
                    )),
                    Transport::WebSocket => {
                        tasks.spawn(websocket::reject_over_limit(stream, peer, shared.clone()))
                    }
                };
            }
        }
    }
    info!("shutting down");
    drop(listeners.clients);
    drop(listeners.websocket);
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
    sweeper.abort();
    dead_letter_task.abort();
    info!("stopped");
    Ok(())
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

/// Every sweep interval, send again the QoS 1 deliveries whose ack is late.
async fn redeliver_overdue(shared: Arc<Shared>) {
    let interval = shared.durable.sweep_interval();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Expiry of detached queues scans every entry: about once a second.
    let expiry_every = (Duration::from_secs(1).as_millis() / interval.as_millis().max(1)).max(1);
    for round in 0u128.. {
        tick.tick().await;
        let now = std::time::Instant::now();
        let overdue = shared.durable.redeliver_overdue(now);
        if overdue > 0 {
            tracing::debug!(overdue, "redelivering unacked QoS 1 messages");
        }
        if round % expiry_every == 0 {
            let expired = shared.durable.expire_detached(now);
            if expired > 0 {
                tracing::debug!(expired, "expired QoS 1 messages of detached queues");
            }
        }
    }
}
