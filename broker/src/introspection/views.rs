//! The JSON documents of the introspection API, built from snapshots of
//! the broker's state. Nothing here holds a lock across an await, and no
//! secret (a key, a digest, a private key's path) is ever shown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::page::Page;
use super::time::rfc3339;
use crate::config::{Config, Listener, TlsVersion};
use crate::connections::ConnectionInfo;
use crate::durable::QueueStats;
use crate::server::Shared;

/// One page of a list: which slice it is, of how many, and whether more
/// follow it.
#[derive(Serialize)]
pub(super) struct Paged<T: Serialize> {
    total: usize,
    offset: usize,
    limit: usize,
    /// More items follow this page (ask again with a larger offset).
    truncated: bool,
    items: Vec<T>,
}

impl<T: Serialize> Paged<T> {
    fn new(total: usize, page: Page, items: Vec<T>) -> Paged<T> {
        Paged {
            total,
            offset: page.offset,
            limit: page.limit,
            truncated: page.offset.saturating_add(items.len()) < total,
            items,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().min(u128::from(u64::MAX)) as u64
}

// ---- GET /v1/server ----

#[derive(Serialize)]
pub(super) struct ServerView {
    server_name: &'static str,
    version: &'static str,
    started_at: String,
    uptime_ms: u64,
    /// Shutdown has begun: `/readyz` answers 503.
    draining: bool,
    connections: usize,
    subscriptions: u64,
    /// Distinct subscription patterns.
    topics: u64,
    durable_queues: u64,
    config: ConfigSummary,
}

#[derive(Serialize)]
struct ConfigSummary {
    listeners: Listeners,
    limits: Limits,
    wal: WalSummary,
    durable: DurableSummary,
    delivery: DeliverySummary,
    auth: AuthSummary,
    tls: TlsSummary,
    shutdown: ShutdownSummary,
}

#[derive(Serialize)]
struct Listeners {
    clients: Option<ListenerView>,
    websocket: Option<ListenerView>,
    http: Option<ListenerView>,
}

#[derive(Serialize)]
struct ListenerView {
    addr: SocketAddr,
    tls: bool,
}

#[derive(Serialize)]
struct Limits {
    max_connections: usize,
    max_handshakes: usize,
    max_message_size_bytes: usize,
    max_subscriptions: usize,
    max_subscriptions_per_connection: usize,
    topic_capacity: usize,
    subscriber_capacity: usize,
    subscriber_capacity_bytes: usize,
    max_memory_bytes: usize,
    overflow_policy: &'static str,
}

#[derive(Serialize)]
struct WalSummary {
    dir: String,
    fsync_policy: &'static str,
    fsync_interval_ms: u64,
    segment_bytes: u64,
    max_bytes: u64,
}

#[derive(Serialize)]
struct DurableSummary {
    max_queues: usize,
    max_messages: u64,
    max_bytes: u64,
    max_age_ms: u64,
    detached_expiry_ms: u64,
}

#[derive(Serialize)]
struct DeliverySummary {
    ack_timeout_ms: u64,
    max_deliveries: u32,
    max_in_flight: usize,
    dead_letter_prefix: String,
}

#[derive(Serialize)]
struct AuthSummary {
    /// Clients must present a key.
    enabled: bool,
    /// Users, legacy `api_keys` included.
    users: usize,
}

#[derive(Serialize)]
struct TlsSummary {
    /// A certificate is configured.
    enabled: bool,
    min_version: &'static str,
    /// Clients must present a certificate (mutual TLS).
    client_certificates: bool,
}

#[derive(Serialize)]
struct ShutdownSummary {
    drain_delay_ms: u64,
    shutdown_timeout_ms: u64,
}

pub(super) fn server(shared: &Shared) -> ServerView {
    let (subscriptions, topics, _) = shared.registry.gauges();
    ServerView {
        server_name: "blipmq",
        version: env!("CARGO_PKG_VERSION"),
        started_at: rfc3339(shared.started_at),
        uptime_ms: millis(shared.started.elapsed()),
        draining: shared.draining.load(Ordering::Relaxed),
        connections: shared.connections.len(),
        subscriptions,
        topics,
        durable_queues: shared.durable.gauges().queues,
        config: config_summary(shared),
    }
}

fn config_summary(shared: &Shared) -> ConfigSummary {
    let config: &Config = &shared.config;
    let bound = shared.listening.get();
    let listener = |addr: Option<SocketAddr>, which: Listener| {
        addr.map(|addr| ListenerView {
            addr,
            tls: config.tls_on(which),
        })
    };
    let users = shared.auth.users();
    ConfigSummary {
        listeners: Listeners {
            clients: listener(bound.and_then(|b| b.clients), Listener::Clients),
            websocket: listener(bound.and_then(|b| b.websocket), Listener::WebSocket),
            http: listener(bound.and_then(|b| b.metrics), Listener::Metrics),
        },
        limits: Limits {
            max_connections: config.server.max_connections,
            max_handshakes: config.server.max_handshakes,
            max_message_size_bytes: config.server.max_message_size_bytes,
            max_subscriptions: config.queues.max_subscriptions,
            max_subscriptions_per_connection: config.queues.max_subscriptions_per_connection,
            topic_capacity: config.queues.topic_capacity,
            subscriber_capacity: config.queues.subscriber_capacity,
            subscriber_capacity_bytes: config.queues.subscriber_capacity_bytes,
            max_memory_bytes: config.queues.max_memory_bytes,
            overflow_policy: config.queues.overflow_policy.as_str(),
        },
        wal: WalSummary {
            dir: config.wal.dir.display().to_string(),
            fsync_policy: config.wal.fsync_policy.as_str(),
            fsync_interval_ms: config.wal.fsync_interval_ms,
            segment_bytes: config.wal.segment_bytes,
            max_bytes: config.wal.max_bytes,
        },
        durable: DurableSummary {
            max_queues: config.durable.max_queues,
            max_messages: config.durable.max_messages,
            max_bytes: config.durable.max_bytes,
            max_age_ms: config.durable.max_age_ms,
            detached_expiry_ms: config.durable.detached_expiry_ms,
        },
        delivery: DeliverySummary {
            ack_timeout_ms: config.delivery.ack_timeout_ms,
            max_deliveries: config.delivery.max_deliveries,
            max_in_flight: config.delivery.max_in_flight,
            dead_letter_prefix: config.delivery.dead_letter_prefix.clone(),
        },
        auth: AuthSummary {
            enabled: users.require_key(),
            users: users.count(),
        },
        tls: TlsSummary {
            enabled: config.tls.configured(),
            min_version: match config.tls.min_version {
                TlsVersion::Tls12 => "1.2",
                TlsVersion::Tls13 => "1.3",
            },
            client_certificates: config.tls.client_ca_file.is_some(),
        },
        shutdown: ShutdownSummary {
            drain_delay_ms: config.server.drain_delay_ms,
            shutdown_timeout_ms: config.server.shutdown_timeout_ms,
        },
    }
}

// ---- GET /v1/connections ----

#[derive(Serialize)]
pub(super) struct ConnectionView {
    id: u64,
    remote_addr: SocketAddr,
    /// tcp, tls, ws or wss.
    transport: &'static str,
    client_name: String,
    user: String,
    connected_at: String,
    subscriptions: usize,
    bytes_in: u64,
    /// Publishes received.
    messages_in: u64,
    bytes_out: u64,
    /// Deliveries written.
    messages_out: u64,
    /// Deliveries queued for the socket, over all its subscriptions.
    pending_messages: u64,
    /// Their bytes, and the replies not yet written.
    pending_bytes: u64,
}

fn connection_view(connection: &ConnectionInfo) -> ConnectionView {
    let subscriptions = connection.outbox.subscriptions_snapshot();
    let (bytes_in, messages_in, bytes_out, messages_out) = connection.outbox.traffic.totals();
    ConnectionView {
        id: connection.id,
        remote_addr: connection.peer,
        transport: connection.link.as_str(),
        client_name: connection.client_name.clone(),
        user: connection.user.clone(),
        connected_at: rfc3339(connection.connected_at),
        subscriptions: subscriptions.len(),
        bytes_in,
        messages_in,
        bytes_out,
        messages_out,
        pending_messages: subscriptions.iter().map(|s| s.depth() as u64).sum(),
        pending_bytes: subscriptions
            .iter()
            .map(|s| s.queued_bytes() as u64)
            .sum::<u64>()
            + connection.outbox.control_backlog_bytes() as u64,
    }
}

pub(super) fn connections(shared: &Shared, page: Page) -> Paged<ConnectionView> {
    let (total, listed) = shared.connections.page(page.offset, page.limit);
    Paged::new(
        total,
        page,
        listed.iter().map(|c| connection_view(c)).collect(),
    )
}

// ---- GET /v1/subscriptions ----

#[derive(Serialize)]
pub(super) struct SubscriptionView {
    connection: u64,
    id: u64,
    pattern: String,
    qos: u8,
    /// The stored queue it consumes (`/v1/queues/NAME`): its durable
    /// name, or its queue group's.
    durable: Option<String>,
    queue_group: Option<String>,
    /// Messages queued for the connection's writer.
    queue_depth: usize,
    /// Messages discarded for it (overflow policy, memory budget).
    dropped: u64,
}

/// Every subscription, ordered by connection then subscription id, one
/// page of them. Connections wholly before or after the page are only
/// counted, not copied.
pub(super) fn subscriptions(shared: &Shared, page: Page) -> Paged<SubscriptionView> {
    let mut total = 0usize;
    let mut items = Vec::new();
    for connection in shared.connections.all() {
        let count = connection.outbox.subscription_count();
        if total + count <= page.offset || items.len() >= page.limit {
            total += count;
            continue;
        }
        let mut held = connection.outbox.subscriptions_snapshot();
        held.sort_unstable_by_key(|s| s.id);
        for subscription in held {
            let index = total;
            total += 1;
            if index < page.offset || items.len() >= page.limit {
                continue;
            }
            items.push(SubscriptionView {
                connection: connection.id,
                id: subscription.id,
                pattern: subscription.pattern.clone(),
                // Every QoS 1 subscription consumes a stored queue.
                qos: u8::from(subscription.durable.is_some()),
                // An ephemeral QoS 1 subscription's queue has an internal
                // name (it starts with a control character) nobody chose.
                durable: subscription
                    .durable
                    .clone()
                    .filter(|name| !name.starts_with('\u{1}')),
                queue_group: subscription.group.clone(),
                queue_depth: subscription.depth(),
                dropped: subscription.dropped(),
            });
        }
    }
    Paged::new(total, page, items)
}

// ---- GET /v1/queues, /v1/queues/NAME ----

#[derive(Serialize)]
pub(super) struct QueueView {
    name: String,
    pattern: String,
    /// durable or group.
    kind: &'static str,
    consumers: usize,
    pending: u64,
    unacked: u64,
    kept: u64,
    oldest_unacked_age_ms: Option<u64>,
    redeliveries: u64,
    dead_letters: u64,
    bytes_pinned: u64,
    detached_for_ms: Option<u64>,
}

impl From<QueueStats> for QueueView {
    fn from(stats: QueueStats) -> QueueView {
        QueueView {
            name: stats.name,
            pattern: stats.pattern,
            kind: stats.kind.as_str(),
            consumers: stats.consumers,
            pending: stats.pending,
            unacked: stats.unacked,
            kept: stats.kept,
            oldest_unacked_age_ms: stats.oldest_unacked_age.map(millis),
            redeliveries: stats.redeliveries,
            dead_letters: stats.dead_letters,
            bytes_pinned: stats.bytes_pinned,
            detached_for_ms: stats.detached_for.map(millis),
        }
    }
}

pub(super) fn queues(shared: &Shared, page: Page) -> Paged<QueueView> {
    let all = shared.durable.queue_stats();
    let total = all.len();
    let items = all
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(QueueView::from)
        .collect();
    Paged::new(total, page, items)
}

pub(super) fn queue(shared: &Shared, name: &str) -> Option<QueueView> {
    shared.durable.queue_stat(name).map(QueueView::from)
}

// ---- GET /v1/topics ----

#[derive(Serialize)]
pub(super) struct TopicView {
    /// A topic, or a pattern with `*` or `>`.
    pattern: String,
    subscriptions: usize,
    /// Distinct queue groups among them (each gets a message once).
    queue_groups: usize,
}

/// The patterns subscribed to, by name, with how many subscriptions each
/// has. Built from the connections' subscriptions: the map holds one entry
/// per distinct pattern, at most `queues.topic_capacity`.
pub(super) fn topics(shared: &Shared, page: Page) -> Paged<TopicView> {
    let mut by_pattern: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    for connection in shared.connections.all() {
        for subscription in connection.outbox.subscriptions_snapshot() {
            let entry = by_pattern.entry(subscription.pattern.clone()).or_default();
            entry.0 += 1;
            if let Some(group) = &subscription.group {
                entry.1.insert(group.clone());
            }
        }
    }
    let total = by_pattern.len();
    let items = by_pattern
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|(pattern, (subscriptions, groups))| TopicView {
            pattern,
            subscriptions,
            queue_groups: groups.len(),
        })
        .collect();
    Paged::new(total, page, items)
}
