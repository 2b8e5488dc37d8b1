//! Broker counters, gauges and histograms, rendered in the Prometheus text
//! format (docs/metrics.md lists every family).
//!
//! Counters are relaxed atomics bumped on the hot path; gauges that can be
//! derived (subscriptions, queue depth) are computed at scrape time instead of
//! being maintained per message.
//!
//! Written by hand rather than with `prometheus-client`: that crate's
//! histogram takes a write lock per observation, its exposition renders at
//! half the speed, and scrape-time gauges would need a custom collector; it
//! would add 30 KB. docs/metrics.md has the measurement.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use blipmq_protocol::{error_code_name, ErrorCode};
use parking_lot::Mutex;

use crate::config::OverflowPolicy;
use crate::durable::DropReason;

mod histogram;
mod process;
mod queues;

pub use histogram::{Histogram, HistogramSnapshot};

#[derive(Default)]
pub struct Metrics {
    pub published: AtomicU64,
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped_ttl: AtomicU64,
    pub dropped_full_drop_oldest: AtomicU64,
    pub dropped_full_drop_new: AtomicU64,
    /// Messages a `block` publisher was waiting to enqueue when the
    /// subscription went away.
    pub dropped_subscriber_gone: AtomicU64,
    /// QoS 0 message copies discarded because the memory budget was full.
    pub dropped_memory_budget: AtomicU64,
    /// QoS 1 publishes refused (QueueFull) because the memory budget was full.
    pub refused_memory_budget: AtomicU64,
    pub flush_bytes: AtomicU64,
    pub flush_batches: AtomicU64,
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Open and accepted connections per listener; the two fields above
    /// count every transport together.
    by_transport: [TransportCounters; 2],
    /// WebSocket upgrades refused for the page's `Origin`.
    pub websocket_origin_rejections: AtomicU64,
    /// WebSocket upgrades that failed otherwise (not a WebSocket request,
    /// or none within the handshake timeout).
    pub websocket_upgrade_failures: AtomicU64,
    /// TLS handshakes on the client and WebSocket ports that failed (a
    /// plaintext client, an unknown CA, no client certificate under mutual
    /// TLS) or did not finish within the handshake timeout.
    pub tls_handshake_failures: AtomicU64,
    /// Publishes and subscribes refused: the user may not (AUTH-3, AUTH-4).
    pub permission_denials: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Failed Hellos answered only after `auth.failure_delay_ms` (LIMIT-26).
    pub auth_failures_delayed: AtomicU64,
    /// Sockets whose Hello is not accepted yet (each holds a handshake slot).
    handshakes_current: AtomicU64,
    /// Sockets closed at accept: `server.max_handshakes` were in handshake.
    pub handshakes_rejected: AtomicU64,
    /// Peers that sent more than a handshake's worth of bytes before their
    /// Hello was accepted (LIMIT-22), over either transport.
    pub handshake_too_large: AtomicU64,
    /// Connections to the metrics port open now.
    pub http_connections: AtomicU64,
    /// Metrics connections closed at accept (`metrics.max_connections`).
    pub http_rejected: AtomicU64,
    /// Metrics connections closed for a request head or a response that
    /// took too long.
    pub http_request_timeouts: AtomicU64,
    pub http_write_timeouts: AtomicU64,
    /// Log lines a peer could cause that were held back (LIMIT-27).
    pub log_lines_suppressed: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Connections closed for staying silent through their keepalive
    /// (LIMIT-31).
    pub keepalive_closes: AtomicU64,
    /// Subscribes refused at `queues.max_subscriptions_per_connection`.
    pub subscriptions_refused_per_connection: AtomicU64,
    /// Subscribes refused at `queues.max_subscriptions`.
    pub subscriptions_refused_broker: AtomicU64,
    /// Subscribes refused at `queues.topic_capacity`.
    pub subscriptions_refused_topic_capacity: AtomicU64,
    /// Error frames sent, by code. Errors are off the hot path, so a lock is fine.
    errors_sent: Mutex<BTreeMap<u16, u64>>,
    /// From a QoS 1 publish read off the socket to its Confirm handed to the
    /// connection's writer: the log append and its fsync, mostly.
    pub confirm_latency: Histogram,
    /// From a publish read off the socket to a copy of it handed to a
    /// subscriber's socket, first deliveries only (a redelivery's wait is
    /// the ack timeout, not latency).
    pub delivery_latency: Histogram,
}

/// The listener a connection came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp = 0,
    WebSocket = 1,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::WebSocket];

    /// The `transport` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
        }
    }
}

#[derive(Default)]
struct TransportCounters {
    current: AtomicU64,
    total: AtomicU64,
}

/// Scrape-time values the metrics module cannot see on its own.
pub struct Gauges {
    pub subscriptions: u64,
    pub queue_depth: u64,
    pub topics: u64,
    /// Bytes of messages held, and the budget (`queues.max_memory_bytes`).
    pub memory_bytes: u64,
    pub memory_budget_bytes: u64,
    /// QoS 1 queues: durable subscriptions, groups, redeliveries, dead letters.
    pub durable: crate::durable::DurableGauges,
    /// The write-ahead log's counters, once it is open.
    pub wal: crate::wal::WalStats,
    /// The log's state: ok, full, no_space, failing or stopped.
    pub wal_state: &'static str,
    /// Durable subscriptions and queue groups, for the per-queue series.
    pub queues: Vec<crate::durable::QueueStats>,
}

#[inline]
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn dropped_queue_full(&self, policy: OverflowPolicy) -> &AtomicU64 {
        match policy {
            OverflowPolicy::DropOldest => &self.dropped_full_drop_oldest,
            // A `block` queue never drops for being full; should it ever, the
            // drop is counted with drop_new, whose effect it has.
            OverflowPolicy::DropNew | OverflowPolicy::Block => &self.dropped_full_drop_new,
        }
    }

    /// A client's Hello was accepted (it holds a `max_connections` permit).
    pub fn connection_opened(&self, transport: Transport) {
        let by = &self.by_transport[transport as usize];
        for counter in [
            &self.connections_total,
            &self.connections_current,
            &by.total,
            &by.current,
        ] {
            inc(counter);
        }
    }

    /// A connection counted by `connection_opened` has ended.
    pub fn connection_closed(&self, transport: Transport) {
        self.connections_current.fetch_sub(1, Ordering::Relaxed);
        self.by_transport[transport as usize]
            .current
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// A socket was accepted into a handshake slot.
    pub fn handshake_started(&self) {
        inc(&self.handshakes_current);
    }

    /// A socket counted by `handshake_started` has left its handshake slot.
    pub fn handshake_ended(&self) {
        self.handshakes_current.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn error_sent(&self, code: ErrorCode) {
        *self.errors_sent.lock().entry(code.0).or_default() += 1;
    }

    /// The whole exposition, HELP and TYPE lines included.
    pub fn render(&self, gauges: &Gauges) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "blipmq_messages_published_total",
            "counter",
            "Messages accepted from publishers.",
            &[("", get(&self.published))],
        );
        family(
            "blipmq_messages_enqueued_total",
            "counter",
            "Message copies placed on subscriber queues.",
            &[("", get(&self.enqueued))],
        );
        family(
            "blipmq_messages_delivered_total",
            "counter",
            "Deliveries written to subscriber sockets.",
            &[("", get(&self.delivered))],
        );
        // QoS 1 messages a stored queue dropped without an ack: TTL like
        // any queue's, and the [durable] limits.
        let durable_dropped = |reason: DropReason| {
            let at = DropReason::ALL.iter().position(|&r| r == reason);
            at.map_or(0, |i| gauges.durable.dropped[i])
        };
        family(
            "blipmq_messages_dropped_total",
            "counter",
            "Message copies dropped before delivery, by cause.",
            &[
                (
                    "{reason=\"ttl\"}",
                    get(&self.dropped_ttl) + durable_dropped(DropReason::Ttl),
                ),
                (
                    "{reason=\"queue_full\",policy=\"drop_oldest\"}",
                    get(&self.dropped_full_drop_oldest),
                ),
                (
                    "{reason=\"queue_full\",policy=\"drop_new\"}",
                    get(&self.dropped_full_drop_new),
                ),
                (
                    "{reason=\"subscriber_gone\"}",
                    get(&self.dropped_subscriber_gone),
                ),
                (
                    "{reason=\"memory_budget\"}",
                    get(&self.dropped_memory_budget),
                ),
                ("{reason=\"max_age\"}", durable_dropped(DropReason::MaxAge)),
                (
                    "{reason=\"max_messages\"}",
                    durable_dropped(DropReason::MaxMessages),
                ),
                (
                    "{reason=\"max_bytes\"}",
                    durable_dropped(DropReason::MaxBytes),
                ),
                (
                    "{reason=\"detached_expiry\"}",
                    durable_dropped(DropReason::DetachedExpiry),
                ),
                (
                    "{reason=\"dead_letter_exhausted\"}",
                    durable_dropped(DropReason::DeadLetterExhausted),
                ),
            ],
        );
        family(
            "blipmq_flush_bytes_total",
            "counter",
            "Bytes written to client sockets.",
            &[("", get(&self.flush_bytes))],
        );
        family(
            "blipmq_flush_batches_total",
            "counter",
            "Batched socket writes.",
            &[("", get(&self.flush_batches))],
        );
        family(
            "blipmq_connections",
            "gauge",
            "Client connections open now (their Hello accepted).",
            &[("", get(&self.connections_current))],
        );
        family(
            "blipmq_connections_total",
            "counter",
            "Client connections admitted (their Hello accepted).",
            &[("", get(&self.connections_total))],
        );
        family(
            "blipmq_connections_rejected_total",
            "counter",
            "Connections refused because max_connections was reached.",
            &[("", get(&self.connections_rejected))],
        );
        let labelled = |pick: fn(&TransportCounters) -> &AtomicU64| {
            Transport::ALL.map(|t| {
                (
                    format!("{{transport=\"{}\"}}", t.label()),
                    get(pick(&self.by_transport[t as usize])),
                )
            })
        };
        let open = labelled(|c| &c.current);
        let accepted = labelled(|c| &c.total);
        family(
            "blipmq_transport_connections",
            "gauge",
            "Client connections open now, by transport.",
            &open.each_ref().map(|(l, n)| (l.as_str(), *n)),
        );
        family(
            "blipmq_transport_connections_total",
            "counter",
            "Client connections accepted, by transport.",
            &accepted.each_ref().map(|(l, n)| (l.as_str(), *n)),
        );
        family(
            "blipmq_websocket_upgrade_failures_total",
            "counter",
            "WebSocket upgrades refused: for the page's Origin, or a failed handshake.",
            &[
                (
                    "{reason=\"origin\"}",
                    get(&self.websocket_origin_rejections),
                ),
                (
                    "{reason=\"handshake\"}",
                    get(&self.websocket_upgrade_failures),
                ),
            ],
        );
        family(
            "blipmq_tls_handshake_failures_total",
            "counter",
            "TLS handshakes on the client and WebSocket ports that failed or timed out.",
            &[("", get(&self.tls_handshake_failures))],
        );
        family(
            "blipmq_permission_denials_total",
            "counter",
            "Publishes and subscribes refused because the user may not.",
            &[("", get(&self.permission_denials))],
        );
        family(
            "blipmq_auth_failures_total",
            "counter",
            "Handshakes refused for a missing or wrong API key.",
            &[("", get(&self.auth_failures))],
        );
        family(
            "blipmq_auth_failures_delayed_total",
            "counter",
            "Failed handshakes answered after auth.failure_delay_ms: their address was over auth.max_failures.",
            &[("", get(&self.auth_failures_delayed))],
        );
        family(
            "blipmq_handshakes",
            "gauge",
            "Sockets whose Hello is not accepted yet (bounded by server.max_handshakes).",
            &[("", get(&self.handshakes_current))],
        );
        family(
            "blipmq_handshakes_rejected_total",
            "counter",
            "Sockets closed at accept because server.max_handshakes were in handshake.",
            &[("", get(&self.handshakes_rejected))],
        );
        family(
            "blipmq_handshake_too_large_total",
            "counter",
            "Peers closed for sending more than a handshake's worth of bytes before their Hello was accepted.",
            &[("", get(&self.handshake_too_large))],
        );
        family(
            "blipmq_http_connections",
            "gauge",
            "Connections to the metrics port open now (bounded by metrics.max_connections).",
            &[("", get(&self.http_connections))],
        );
        family(
            "blipmq_http_connections_rejected_total",
            "counter",
            "Connections to the metrics port closed at accept because metrics.max_connections were open.",
            &[("", get(&self.http_rejected))],
        );
        family(
            "blipmq_http_timeouts_total",
            "counter",
            "Metrics connections closed for a request head (metrics.request_timeout_ms) or a response write (metrics.write_timeout_ms) that took too long.",
            &[
                ("{phase=\"request\"}", get(&self.http_request_timeouts)),
                ("{phase=\"write\"}", get(&self.http_write_timeouts)),
            ],
        );
        family(
            "blipmq_log_lines_suppressed_total",
            "counter",
            "Warnings a peer could cause (failed logins, refusals) held back by the per-kind rate limit.",
            &[("", get(&self.log_lines_suppressed))],
        );
        family(
            "blipmq_protocol_errors_total",
            "counter",
            "Malformed, oversized or out-of-order frames received.",
            &[("", get(&self.protocol_errors))],
        );
        family(
            "blipmq_keepalive_closes_total",
            "counter",
            "Connections closed because nothing was heard from them through the keepalive (server.keepalive_interval_ms x (keepalive_missed + 1)).",
            &[("", get(&self.keepalive_closes))],
        );
        let errors: Vec<(String, u64)> = self
            .errors_sent
            .lock()
            .iter()
            .map(|(code, n)| {
                (
                    format!(
                        "{{code=\"{code}\",name=\"{}\"}}",
                        error_code_name(ErrorCode(*code))
                    ),
                    *n,
                )
            })
            .collect();
        let errors: Vec<(&str, u64)> = errors.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        family(
            "blipmq_errors_sent_total",
            "counter",
            "Error frames sent to clients, by error code.",
            &errors,
        );
        family(
            "blipmq_subscriptions_refused_total",
            "counter",
            "Subscribes refused with TooManyTopics, by the limit reached.",
            &[
                (
                    "{limit=\"max_subscriptions_per_connection\"}",
                    get(&self.subscriptions_refused_per_connection),
                ),
                (
                    "{limit=\"topic_capacity\"}",
                    get(&self.subscriptions_refused_topic_capacity),
                ),
                (
                    "{limit=\"max_subscriptions\"}",
                    get(&self.subscriptions_refused_broker),
                ),
            ],
        );
        family(
            "blipmq_subscriptions",
            "gauge",
            "Active subscriptions.",
            &[("", gauges.subscriptions)],
        );
        family(
            "blipmq_topics",
            "gauge",
            "Distinct subscription patterns held (bounded by queues.topic_capacity).",
            &[("", gauges.topics)],
        );
        family(
            "blipmq_queue_depth",
            "gauge",
            "Messages waiting in subscriber queues.",
            &[("", gauges.queue_depth)],
        );
        family(
            "blipmq_memory_bytes",
            "gauge",
            "Bytes of messages held in memory (queues, stored QoS 1 messages, messages in flight).",
            &[("", gauges.memory_bytes)],
        );
        family(
            "blipmq_memory_budget_bytes",
            "gauge",
            "The memory budget for messages (queues.max_memory_bytes).",
            &[("", gauges.memory_budget_bytes)],
        );
        family(
            "blipmq_publishes_refused_total",
            "counter",
            "QoS 1 publishes refused before they were stored, by cause.",
            &[(
                "{reason=\"memory_budget\"}",
                get(&self.refused_memory_budget),
            )],
        );
        family(
            "blipmq_durable_subscriptions",
            "gauge",
            "Durable subscriptions and queue groups, attached or not.",
            &[("", gauges.durable.queues)],
        );
        family(
            "blipmq_durable_unacked_messages",
            "gauge",
            "Stored QoS 1 messages a subscription has not acked yet.",
            &[("", gauges.durable.unacked)],
        );
        family(
            "blipmq_redeliveries_total",
            "counter",
            "QoS 1 deliveries sent again (ack timeout, or the consumer left).",
            &[("", gauges.durable.redeliveries)],
        );
        family(
            "blipmq_dead_letters_total",
            "counter",
            "QoS 1 messages moved to a dead-letter topic after max_deliveries.",
            &[("", gauges.durable.dead_letters)],
        );
        family(
            "blipmq_durable_manifest_writes_total",
            "counter",
            "Rewrites of the durable subscription manifest (one may cover many creates and deletes).",
            &[("", gauges.durable.manifest_writes)],
        );
        family(
            "blipmq_durable_expired_total",
            "counter",
            "Durable subscriptions and queue groups deleted after durable.detached_expiry_ms without a consumer.",
            &[("", gauges.durable.expired_queues)],
        );
        let wal = &gauges.wal;
        family(
            "blipmq_wal_records_total",
            "counter",
            "Records appended to the write-ahead log.",
            &[("", wal.records_appended)],
        );
        family(
            "blipmq_wal_bytes_total",
            "counter",
            "Bytes appended to the write-ahead log.",
            &[("", wal.bytes_appended)],
        );
        family(
            "blipmq_wal_fsyncs_total",
            "counter",
            "fsync calls of the write-ahead log (group commit: far fewer than records).",
            &[("", wal.fsyncs)],
        );
        family(
            "blipmq_wal_torn_tail_truncations_total",
            "counter",
            "Torn or corrupt segment tails cut off at recovery.",
            &[("", wal.torn_tail_truncations)],
        );
        family(
            "blipmq_wal_full_rejections_total",
            "counter",
            "QoS 1 messages refused because the log was at wal.max_bytes.",
            &[("", wal.full_rejections)],
        );
        family(
            "blipmq_wal_bytes",
            "gauge",
            "Current size of the write-ahead log's segments.",
            &[("", wal.current_bytes)],
        );
        family(
            "blipmq_wal_segments",
            "gauge",
            "Segment files of the write-ahead log.",
            &[("", wal.segments)],
        );
        family(
            "blipmq_wal_segments_deleted_total",
            "counter",
            "Segments deleted because no subscription needed them any more.",
            &[("", wal.segments_deleted)],
        );
        family(
            "blipmq_wal_segments_quarantined_total",
            "counter",
            "Corrupt segments moved aside by recovery.",
            &[("", wal.segments_quarantined)],
        );
        family(
            "blipmq_wal_corruptions_total",
            "counter",
            "Damage found at start that was not a torn tail (bad CRCs, cut sealed segments, missing segments); the log says where.",
            &[("", wal.corruptions)],
        );
        family(
            "blipmq_wal_write_failures_total",
            "counter",
            "Batches of QoS 1 messages whose write or fsync failed (their publishers got an error).",
            &[("", wal.write_failures)],
        );
        family(
            "blipmq_wal_repairs_total",
            "counter",
            "Times the log was rolled back to its last confirmed record after a failure.",
            &[("", wal.repairs)],
        );
        family(
            "blipmq_wal_fsync_failures_total",
            "counter",
            "Background fsyncs (fsync_policy = interval) that failed.",
            &[("", wal.fsync_failures)],
        );
        family(
            "blipmq_wal_delete_failures_total",
            "counter",
            "Released segments whose deletion failed (kept, and tried again).",
            &[("", wal.delete_failures)],
        );
        wal.fsync_duration.render(
            &mut out,
            "blipmq_wal_fsync_duration_seconds",
            "How long the write-ahead log's fsyncs took.",
        );
        self.confirm_latency.render(
            &mut out,
            "blipmq_confirm_latency_seconds",
            "From a QoS 1 publish read to its Confirm queued for the publisher.",
        );
        self.delivery_latency.render(
            &mut out,
            "blipmq_delivery_latency_seconds",
            "From a publish read to a copy written to a subscriber's socket (first deliveries).",
        );
        let _ = writeln!(
            out,
            "# HELP blipmq_build_info The broker's version; the value is always 1.\n# TYPE blipmq_build_info gauge\nblipmq_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(out, "# HELP blipmq_wal_state The write-ahead log's state: 1 for the current one (not ok: QoS 1 publishes are refused; /readyz says why).\n# TYPE blipmq_wal_state gauge");
        for state in crate::wal::WalHealth::STATES {
            let value = u8::from(state == gauges.wal_state);
            let _ = writeln!(out, "blipmq_wal_state{{state=\"{state}\"}} {value}");
        }
        queues::render(&mut out, &gauges.queues);
        process::render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_help_type_and_values() {
        let m = Metrics::default();
        inc(&m.published);
        add(&m.flush_bytes, 42);
        m.error_sent(ErrorCode::InvalidTopic);
        m.error_sent(ErrorCode::InvalidTopic);
        m.connection_opened(Transport::Tcp);
        m.connection_opened(Transport::WebSocket);
        m.connection_opened(Transport::WebSocket);
        m.connection_closed(Transport::WebSocket);
        inc(&m.subscriptions_refused_per_connection);
        let text = m.render(&Gauges {
            subscriptions: 3,
            queue_depth: 4,
            topics: 2,
            memory_bytes: 10,
            memory_budget_bytes: 11,
            durable: crate::durable::DurableGauges {
                queues: 1,
                unacked: 5,
                redeliveries: 6,
                dead_letters: 7,
                manifest_writes: 8,
                dropped: [1, 2, 3, 4, 5, 6],
                expired_queues: 9,
            },
            wal: Default::default(),
            wal_state: "full",
            queues: Vec::new(),
        });
        assert!(text.contains("\nblipmq_wal_state{state=\"full\"} 1\n"));
        assert!(text.contains("\nblipmq_wal_state{state=\"ok\"} 0\n"));
        assert!(text.contains(&format!(
            "\nblipmq_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("# TYPE blipmq_messages_published_total counter\n"));
        assert!(text.contains("\nblipmq_messages_published_total 1\n"));
        assert!(text.contains("\nblipmq_flush_bytes_total 42\n"));
        assert!(text.contains("blipmq_errors_sent_total{code=\"300\",name=\"InvalidTopic\"} 2\n"));
        assert!(text.contains("\nblipmq_subscriptions 3\n"));
        assert!(text.contains("\nblipmq_queue_depth 4\n"));
        assert!(text.contains("\nblipmq_memory_bytes 10\n"));
        assert!(text.contains("\nblipmq_memory_budget_bytes 11\n"));
        assert!(text.contains("\nblipmq_redeliveries_total 6\n"));
        assert!(text.contains("\nblipmq_dead_letters_total 7\n"));
        // A stored queue's TTL drops count with every other TTL drop.
        assert!(text.contains("blipmq_messages_dropped_total{reason=\"ttl\"} 1\n"));
        assert!(text.contains("blipmq_messages_dropped_total{reason=\"max_age\"} 2\n"));
        assert!(text.contains("blipmq_messages_dropped_total{reason=\"detached_expiry\"} 5\n"));
        assert!(text.contains("\nblipmq_durable_expired_total 9\n"));
        assert!(text.contains("\nblipmq_connections 2\n"));
        assert!(text.contains("\nblipmq_connections_total 3\n"));
        assert!(text.contains("\nblipmq_transport_connections{transport=\"tcp\"} 1\n"));
        assert!(text.contains("\nblipmq_transport_connections{transport=\"websocket\"} 1\n"));
        assert!(text.contains("\nblipmq_transport_connections_total{transport=\"websocket\"} 2\n"));
        assert!(text.contains(
            "\nblipmq_subscriptions_refused_total{limit=\"max_subscriptions_per_connection\"} 1\n"
        ));
        assert!(text.contains("\nblipmq_subscriptions_refused_total{limit=\"topic_capacity\"} 0\n"));
        // Every family has both a HELP and a TYPE line.
        assert_eq!(
            text.matches("# HELP ").count(),
            text.matches("# TYPE ").count()
        );
        m.confirm_latency
            .observe(std::time::Duration::from_millis(2));
        let timed = m.render(&Gauges {
            subscriptions: 0,
            queue_depth: 0,
            topics: 0,
            memory_bytes: 0,
            memory_budget_bytes: 0,
            durable: Default::default(),
            wal: Default::default(),
            wal_state: "ok",
            queues: Vec::new(),
        });
        assert!(timed.contains("\nblipmq_confirm_latency_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(timed.contains("\nblipmq_delivery_latency_seconds_count 0\n"));
        assert!(timed.contains("\nblipmq_wal_fsync_duration_seconds_count 0\n"));
    }
}
