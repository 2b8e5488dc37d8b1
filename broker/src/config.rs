//! `blipmq.toml`: every key, its built-in default, `BLIPMQ_*` environment
//! overrides, and validation whose errors name the offending key.
//!
//! Precedence, lowest first: built-in defaults, the config file, environment
//! variables `BLIPMQ_<SECTION>_<KEY>` (e.g. `BLIPMQ_SERVER_BIND_ADDR`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a subscriber queue does with a new message when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Evict the oldest queued message to make room (the default: a slow
    /// consumer sees the freshest data).
    DropOldest,
    /// Discard the new message.
    DropNew,
    /// Make the publishing connection wait until there is room. Only that
    /// publisher slows down; other publishers and topics are unaffected.
    Block,
}

impl OverflowPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::DropOldest => "drop_oldest",
            OverflowPolicy::DropNew => "drop_new",
            OverflowPolicy::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub queues: QueuesConfig,
    pub delivery: DeliveryConfig,
    pub auth: AuthConfig,
    /// Limits of the stored queues behind QoS 1 subscriptions.
    pub durable: DurableConfig,
    /// The write-ahead log behind QoS 1 (see `wal::WalConfig`).
    pub wal: crate::wal::WalConfig,
    /// The WebSocket listener for browsers (off unless `bind_addr` is set).
    pub websocket: WebSocketConfig,
    /// The certificate the listeners present (TLS is off without one).
    pub tls: TlsConfig,
}

/// `[tls]`: the broker's certificate and what it asks of clients. With a
/// `cert_file` every listener speaks TLS unless its own `tls = false` says
/// otherwise; the certificate, key and client CA are read again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM: CAs whose certificates clients must present (mutual TLS). Unset
    /// = clients are not asked for a certificate.
    pub client_ca_file: Option<PathBuf>,
    /// The oldest TLS version accepted: "1.2" (the default) or "1.3".
    pub min_version: TlsVersion,
}

impl TlsConfig {
    /// Whether a certificate is configured.
    pub fn configured(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// A TLS protocol version, written "1.2" or "1.3" (a string or a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `BLIPMQ_TLS_MIN_VERSION=1.3` arrives as a number, the file's
        // `min_version = "1.3"` as a string: both mean the same.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Number(f64),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Text(text) => text,
            Written::Number(number) => number.to_string(),
        };
        match text.as_str() {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            other => Err(serde::de::Error::custom(format!(
                "unknown TLS version {other:?}: use \"1.2\" or \"1.3\""
            ))),
        }
    }
}

/// The broker's listeners, for the questions asked of each (TLS, exposure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Clients,
    WebSocket,
    Metrics,
}

impl Listener {
    /// The config section that configures it.
    pub fn section(self) -> &'static str {
        match self {
            Listener::Clients => "server",
            Listener::WebSocket => "websocket",
            Listener::Metrics => "metrics",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the TCP listener for clients.
    pub bind_addr: SocketAddr,
    /// Clients beyond this, counted when their Hello is accepted, are
    /// answered with TooManyConnections and closed (LIMIT-1).
    pub max_connections: usize,
    /// Largest payload a Publish may carry.
    pub max_message_size_bytes: usize,
    /// A connection that has not completed the handshake by then is closed
    /// (for WebSocket, the upgrade counts as part of the handshake).
    pub handshake_timeout_ms: u64,
    /// Sockets that have not had their Hello accepted yet, at most (LIMIT-20):
    /// each holds a handshake slot, not a connection slot, so unauthenticated
    /// sockets cannot take the room of authenticated clients. A socket
    /// accepted beyond it is closed at once.
    pub max_handshakes: usize,
    /// After the handshake, a connection the broker has heard no frame from
    /// for this long is sent a `Ping` (LIMIT-30). 0 turns keepalive off.
    pub keepalive_interval_ms: u64,
    /// Further silent intervals after the first `Ping` before the broker
    /// closes the connection, detaching its subscriptions (LIMIT-31).
    pub keepalive_missed: u32,
    /// Most headers on one message (HeadersTooLarge beyond).
    pub max_headers: usize,
    /// Longest header key, in bytes.
    pub max_header_key_bytes: usize,
    /// Most header bytes (keys plus values) on one message.
    pub max_headers_bytes: usize,
    /// TLS on this listener: unset = on when `[tls]` has a certificate.
    pub tls: Option<bool>,
    /// On SIGTERM or SIGINT, how long `/readyz` answers 503 (draining)
    /// while clients are still served, before they are told ShuttingDown:
    /// time for a load balancer to stop sending new ones. 0 = no delay.
    pub drain_delay_ms: u64,
    /// Then how long connections get to deliver their last confirms and
    /// close before the broker stops anyway.
    pub shutdown_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (Prometheus text format) here.
    pub bind_addr: SocketAddr,
    pub enabled: bool,
    /// Connections to the metrics port open at once, at most; one beyond it
    /// is answered 503 and closed at once (LIMIT-24).
    pub max_connections: usize,
    /// How long a client may take to send a whole request head, and how
    /// long a kept-alive connection may sit idle between requests (LIMIT-25).
    pub request_timeout_ms: u64,
    /// How long writing one response may take: a scraper that does not read
    /// is disconnected then (LIMIT-25).
    pub write_timeout_ms: u64,
    /// HTTPS on this listener: unset = on when `[tls]` has a certificate.
    pub tls: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// Most distinct subscription patterns the broker holds at once; a
    /// Subscribe beyond it gets TooManyTopics.
    pub topic_capacity: usize,
    /// Messages each subscription may have waiting for its connection.
    pub subscriber_capacity: usize,
    /// Bytes each subscription may have waiting (encoded deliveries and a
    /// queue entry of about 40 bytes for each); whichever of the two bounds
    /// is reached first makes the queue full. A single message larger than
    /// this still fits an empty queue.
    pub subscriber_capacity_bytes: usize,
    /// Bytes of messages the broker holds in memory at once, counted once
    /// per message however many queues hold it: subscriber queues, the
    /// stored QoS 1 messages, and messages between a publisher's read and
    /// their delivery. At the budget a new QoS 0 message is discarded
    /// (`drop_oldest`, `drop_new`) or its publisher waits (`block`), and a
    /// QoS 1 publish is refused with QueueFull.
    pub max_memory_bytes: usize,
    pub overflow_policy: OverflowPolicy,
    /// Most subscriptions one connection holds at once; a Subscribe beyond
    /// it gets TooManyTopics and the connection goes on (LIMIT-10).
    pub max_subscriptions_per_connection: usize,
    /// Most subscriptions the broker holds at once, over every connection
    /// (LIMIT-12): each costs about a kilobyte and a share of every
    /// matching publish, and without it many connections at their own
    /// limit would hold without bound.
    pub max_subscriptions: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Most deliveries written to a socket in one batch.
    pub max_batch: usize,
    /// Most bytes written to a socket in one batch (a single larger message
    /// is still written whole).
    pub max_batch_bytes: usize,
    /// How long a connection's writer may wait for a batch to fill before
    /// writing it. 0 writes as soon as the queues are drained (lowest
    /// latency); a few ms trade latency for fewer, larger writes.
    pub flush_interval_ms: u64,
    /// Shards of the topic-match cache that publishers consult (0 = one per CPU).
    pub fanout_shards: usize,
    /// TTL applied to messages published with ttl_ms = 0; 0 = never expire.
    pub default_ttl_ms: u64,
    /// QoS 1: how long a delivery may stay unacked before it is sent again
    /// (to another member, for a queue group).
    pub ack_timeout_ms: u64,
    /// QoS 1: deliveries of one message before it is moved to the
    /// dead-letter topic instead; 0 = redeliver forever.
    pub max_deliveries: u32,
    /// QoS 1: unacked deliveries one consumer may hold at once (its credit);
    /// capped by `queues.subscriber_capacity`.
    pub max_in_flight: usize,
    /// QoS 1: where a message goes after `max_deliveries`: the topic
    /// `<prefix>.<subscription name>` (or the prefix alone when the name is
    /// not a valid topic token). Wildcards do not match `$` topics.
    pub dead_letter_prefix: String,
}

/// `[durable]`: what the stored queues behind QoS 1 subscriptions may hold.
/// Every limit is finite by default, because each protects the broker from
/// one forgotten consumer: memory and the manifest grow with the number of
/// queues.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurableConfig {
    /// Most durable subscriptions and queue groups at once (attached or
    /// not); a Subscribe that would create one more gets TooManyTopics.
    /// Ephemeral QoS 1 subscriptions are not counted: they end with their
    /// connection.
    pub max_queues: usize,
    /// Messages one stored queue keeps at most; past it, its oldest are
    /// dropped. 0 = no limit.
    pub max_messages: u64,
    /// Bytes (of encoded messages) one stored queue keeps at most; past it,
    /// its oldest are dropped. 0 = no limit; otherwise at least
    /// `server.max_message_size_bytes`.
    pub max_bytes: u64,
    /// A message stored longer ago than this is dropped from every queue.
    /// 0 = no limit.
    pub max_age_ms: u64,
    /// A durable subscription or queue group nobody has been attached to
    /// for this long is deleted, with everything it kept. 0 = never.
    pub detached_expiry_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Deprecated: keys in clear, each a user with every right (as
    /// `[[auth.users]]` with `admin = true`). When any key or user is
    /// configured, a client must present a key in its Hello. Each is at
    /// most [`AuthConfig::MAX_KEY_BYTES`] bytes.
    pub api_keys: Vec<String>,
    /// Users: a name, the SHA-256 of their key, and what they may do.
    pub users: Vec<UserConfig>,
    /// Failed Hellos one source address may make per `failure_window_ms`
    /// before its further failures are answered only after
    /// `failure_delay_ms` (LIMIT-26). A correct key is never delayed.
    pub max_failures: u32,
    pub failure_window_ms: u64,
    pub failure_delay_ms: u64,
}

/// `[[auth.users]]`: one user. `blipmq keygen` makes a key and its digest.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// Shown in logs and in the errors this user's clients get.
    pub name: String,
    /// The SHA-256 digest of the user's key, 64 hexadecimal digits. The key
    /// itself is never stored: it is high-entropy and random, so its digest
    /// cannot be reversed.
    pub key_sha256: String,
    /// Topics this user may publish to.
    pub publish: RulesConfig,
    /// Patterns this user may subscribe to (see `RulesConfig`).
    pub subscribe: RulesConfig,
    /// Durable subscription and queue group names this user may create,
    /// attach to or delete: exact names, or a prefix ending in `*`. Unset =
    /// any name.
    pub queues: Option<Vec<String>>,
    /// Every right, including publishing to `$` topics (reserved to the
    /// broker: dead letters).
    pub admin: bool,
}

/// Allow and deny lists of topic patterns. Unset `allow` = everything not
/// denied; a deny always wins. A subscription pattern needs an allow pattern
/// that covers every topic it can match, and no deny pattern that could
/// match a topic it matches (SPEC AUTH-4).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

impl AuthConfig {
    /// The longest API key: keys are compared over this many bytes whatever
    /// their length, so that the time taken does not reveal it.
    pub const MAX_KEY_BYTES: usize = 512;
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_keys: Vec::new(),
            users: Vec::new(),
            max_failures: 10,
            failure_window_ms: 60_000,
            failure_delay_ms: 1_000,
        }
    }
}

/// The WebSocket listener: the same protocol as the TCP listener, one frame
/// per binary WebSocket message, for clients that cannot open TCP sockets.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Listen for WebSocket clients here; `None` (the default) = no listener.
    /// The suggested address is [`WebSocketConfig::SUGGESTED_BIND_ADDR`].
    pub bind_addr: Option<SocketAddr>,
    /// Origins (`scheme://host[:port]`, or `*`) whose pages may connect.
    /// Empty = any origin on a loopback address, none on any other. A
    /// request without an `Origin` header (not a browser) is never refused
    /// for it: only browsers send one.
    pub allowed_origins: Vec<String>,
    /// wss on this listener: unset = on when `[tls]` has a certificate.
    pub tls: Option<bool>,
    /// Serve plaintext WebSocket on an address other than loopback. Off by
    /// default: browsers send the API key in the first frame, and a page
    /// served over https cannot open `ws://` anyway.
    pub allow_plaintext: bool,
}

impl WebSocketConfig {
    /// The address the documentation suggests, next to the TCP port.
    pub const SUGGESTED_BIND_ADDR: &'static str = "127.0.0.1:7879";

    /// Whether a browser page from `origin` may connect. With no list, any
    /// page may on a loopback address (development), none elsewhere: a
    /// listener on the network names the origins it serves (a page from any
    /// site could otherwise use a visitor's browser to reach it).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let on_loopback = self.bind_addr.is_none_or(|addr| addr.ip().is_loopback());
        (self.allowed_origins.is_empty() && on_loopback)
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind_addr: "127.0.0.1:7878".parse().expect("valid literal"),
            max_connections: 10_000,
            max_message_size_bytes: 1024 * 1024,
            handshake_timeout_ms: 10_000,
            max_handshakes: 1024,
            // A peer that vanished without a FIN is closed 90 s after the
            // last frame heard from it: ping after 30 s of silence, close
            // after two more silent intervals.
            keepalive_interval_ms: 30_000,
            keepalive_missed: 2,
            max_headers: 64,
            max_header_key_bytes: 256,
            max_headers_bytes: 16 * 1024,
            tls: None,
            drain_delay_ms: 0,
            shutdown_timeout_ms: 5_000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind_addr: "127.0.0.1:9090".parse().expect("valid literal"),
            enabled: true,
            max_connections: 64,
            request_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            tls: None,
        }
    }
}

impl Default for QueuesConfig {
    fn default() -> Self {
        QueuesConfig {
            topic_capacity: 100_000,
            // A burst of a million small messages; the bytes bound below
            // is what a queue usually meets first (see docs/limits.md).
            subscriber_capacity: 1 << 20,
            // NATS's default for a slow consumer's pending bytes. Counts
            // each message's queue entry too, so it bounds the memory of a
            // queue of tiny messages as well.
            subscriber_capacity_bytes: 64 * 1024 * 1024,
            // Room for the default [durable] max_bytes of four queues'
            // stored messages and the subscriber queues beside them.
            max_memory_bytes: 1024 * 1024 * 1024,
            overflow_policy: OverflowPolicy::DropOldest,
            max_subscriptions_per_connection: 10_000,
            // About 1.2 GB of subscriptions at ~1.2 KB each.
            max_subscriptions: 1_000_000,
        }
    }
}

const WEEK_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            max_queues: 10_000,
            max_messages: 1_000_000,
            // A quarter of the default wal.max_bytes: one forgotten queue
            // cannot fill the log with its own messages.
            max_bytes: 256 * 1024 * 1024,
            max_age_ms: WEEK_MS,
            detached_expiry_ms: WEEK_MS,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_batch: 512,
            max_batch_bytes: 256 * 1024,
            flush_interval_ms: 0,
            fanout_shards: 0,
            default_ttl_ms: 0,
            ack_timeout_ms: 30_000,
            max_deliveries: 0,
            max_in_flight: 1024,
            dead_letter_prefix: "$dlq".into(),
        }
    }
}

/// A configuration that cannot be used. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config: {key} {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("{0}")]
    Wal(String),
}

/// Keys whose value is a list; in the environment they are comma-separated.
/// Keys whose value is a path: in the environment, always a string.
const PATH_KEYS: &[(&str, &str)] = &[
    ("tls", "cert_file"),
    ("tls", "key_file"),
    ("tls", "client_ca_file"),
];

const LIST_KEYS: &[(&str, &str)] = &[("auth", "api_keys"), ("websocket", "allowed_origins")];

impl Config {
    /// Load the config the binary runs with: defaults, then `path` if given,
    /// then `BLIPMQ_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Parse {
                            origin: format!(" in {}", path.display()),
                            message: one_line(&e, Some(&text)),
                        })?;
                (table, format!(" in {}", path.display()))
            }
            None => (toml::Table::new(), String::new()),
        };
        apply_env_overrides(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin,
                    message: one_line(&e, None),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Parse a config from TOML text (for tests and embedding).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: String::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check the values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least_one(key: &'static str, value: usize) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "must be at least 1".into(),
                });
            }
            Ok(())
        }
        at_least_one("server.max_connections", self.server.max_connections)?;
        at_least_one(
            "server.max_message_size_bytes",
            self.server.max_message_size_bytes,
        )?;
        // A frame (payload, headers, envelope) must fit the u32 length
        // prefix with room to spare; 1 GiB messages are beyond any sane use.
        let largest = 1024 * 1024 * 1024;
        if self.server.max_message_size_bytes > largest {
            return Err(ConfigError::Invalid {
                key: "server.max_message_size_bytes",
                problem: format!("must be at most {largest}"),
            });
        }
        if self.server.max_headers > u16::MAX as usize {
            return Err(ConfigError::Invalid {
                key: "server.max_headers",
                problem: format!("must be at most {}", u16::MAX),
            });
        }
        if self.server.max_header_key_bytes == 0
            || self.server.max_header_key_bytes > u16::MAX as usize
        {
            return Err(ConfigError::Invalid {
                key: "server.max_header_key_bytes",
                problem: format!("must be between 1 and {}", u16::MAX),
            });
        }
        if self.server.max_headers_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "server.max_headers_bytes",
                problem: "must be at most 16777216".into(),
            });
        }
        if self.server.handshake_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "server.handshake_timeout_ms",
                problem: "must be at least 1".into(),
            });
        }
        at_least_one("server.max_handshakes", self.server.max_handshakes)?;
        if self.server.drain_delay_ms > 3_600_000 {
            return Err(ConfigError::Invalid {
                key: "server.drain_delay_ms",
                problem: "must be at most 3600000 (an hour)".into(),
            });
        }
        at_least_one("metrics.max_connections", self.metrics.max_connections)?;
        for (key, value) in [
            (
                "metrics.request_timeout_ms",
                self.metrics.request_timeout_ms,
            ),
            ("metrics.write_timeout_ms", self.metrics.write_timeout_ms),
            ("auth.failure_window_ms", self.auth.failure_window_ms),
            (
                "server.shutdown_timeout_ms",
                self.server.shutdown_timeout_ms,
            ),
        ] {
            if !(1..=3_600_000).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "must be between 1 and 3600000".into(),
                });
            }
        }
        if self.auth.failure_delay_ms > 60_000 {
            return Err(ConfigError::Invalid {
                key: "auth.failure_delay_ms",
                problem: "must be at most 60000".into(),
            });
        }
        if self.server.keepalive_interval_ms > 0 {
            at_least_one(
                "server.keepalive_missed",
                self.server.keepalive_missed as usize,
            )?;
            // A day: longer is keepalive turned off in all but name, and
            // (interval × (missed + 1)) must stay far from overflowing.
            let longest = 24 * 60 * 60 * 1000;
            if self.server.keepalive_interval_ms > longest {
                return Err(ConfigError::Invalid {
                    key: "server.keepalive_interval_ms",
                    problem: format!("must be at most {longest} (0 turns keepalive off)"),
                });
            }
            if self.server.keepalive_missed > 1000 {
                return Err(ConfigError::Invalid {
                    key: "server.keepalive_missed",
                    problem: "must be at most 1000".into(),
                });
            }
        }
        at_least_one("queues.topic_capacity", self.queues.topic_capacity)?;
        at_least_one(
            "queues.subscriber_capacity",
            self.queues.subscriber_capacity,
        )?;
        at_least_one(
            "queues.subscriber_capacity_bytes",
            self.queues.subscriber_capacity_bytes,
        )?;
        // Twice the largest message: one being delivered and one arriving.
        let room_for_two = 2 * (self.server.max_message_size_bytes + 64 * 1024);
        if self.queues.max_memory_bytes < room_for_two {
            return Err(ConfigError::Invalid {
                key: "queues.max_memory_bytes",
                problem: format!(
                    "must be at least {room_for_two} (twice server.max_message_size_bytes \
                     and its envelope)"
                ),
            });
        }
        at_least_one(
            "queues.max_subscriptions_per_connection",
            self.queues.max_subscriptions_per_connection,
        )?;
        at_least_one("queues.max_subscriptions", self.queues.max_subscriptions)?;
        at_least_one("delivery.max_batch", self.delivery.max_batch)?;
        at_least_one("delivery.max_batch_bytes", self.delivery.max_batch_bytes)?;
        if self.delivery.flush_interval_ms > 10_000 {
            return Err(ConfigError::Invalid {
                key: "delivery.flush_interval_ms",
                problem: "must be at most 10000".into(),
            });
        }
        if (1..100).contains(&self.durable.detached_expiry_ms) {
            // Shorter would race a consumer between its Subscribe being
            // checked and its attaching.
            return Err(ConfigError::Invalid {
                key: "durable.detached_expiry_ms",
                problem: "must be 0 (never) or at least 100".into(),
            });
        }
        if self.delivery.default_ttl_ms > u32::MAX as u64 {
            return Err(ConfigError::Invalid {
                key: "delivery.default_ttl_ms",
                problem: format!("must be at most {}", u32::MAX),
            });
        }
        if !(10..=3_600_000).contains(&self.delivery.ack_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "delivery.ack_timeout_ms",
                problem: "must be between 10 and 3600000".into(),
            });
        }
        at_least_one("delivery.max_in_flight", self.delivery.max_in_flight)?;
        at_least_one("durable.max_queues", self.durable.max_queues)?;
        let max_message = self.server.max_message_size_bytes as u64;
        if self.durable.max_bytes != 0 && self.durable.max_bytes < max_message {
            return Err(ConfigError::Invalid {
                key: "durable.max_bytes",
                problem: format!(
                    "must be 0 (no limit) or at least server.max_message_size_bytes \
                     ({max_message}), so that one message fits"
                ),
            });
        }
        if let Err(error) =
            blipmq_protocol::topic::validate_topic(&self.delivery.dead_letter_prefix)
        {
            return Err(ConfigError::Invalid {
                key: "delivery.dead_letter_prefix",
                problem: format!("must be a valid topic: {error}"),
            });
        }
        if let Err(error) = self.wal.validate() {
            return Err(ConfigError::Wal(error.to_string()));
        }
        if let Some(bad) = self
            .websocket
            .allowed_origins
            .iter()
            .find(|o| !valid_origin(o))
        {
            return Err(ConfigError::Invalid {
                key: "websocket.allowed_origins",
                problem: format!(
                    "{bad:?} is not an origin: use scheme://host[:port] (no path) or \"*\""
                ),
            });
        }
        self.validate_users()?;
        if self.auth.api_keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Invalid {
                key: "auth.api_keys",
                problem: "must not contain an empty key".into(),
            });
        }
        if self
            .auth
            .api_keys
            .iter()
            .any(|k| k.len() > AuthConfig::MAX_KEY_BYTES)
        {
            return Err(ConfigError::Invalid {
                key: "auth.api_keys",
                problem: format!(
                    "must not contain a key longer than {} bytes",
                    AuthConfig::MAX_KEY_BYTES
                ),
            });
        }
        self.validate_tls()?;
        Ok(())
    }

    /// Whether `listener` speaks TLS: its own `tls` key, else whether
    /// `[tls]` has a certificate.
    pub fn tls_on(&self, listener: Listener) -> bool {
        let own = match listener {
            Listener::Clients => self.server.tls,
            Listener::WebSocket => self.websocket.tls,
            Listener::Metrics => self.metrics.tls,
        };
        own.unwrap_or(self.tls.configured())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "auth.users",
            problem,
        };
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for user in &self.auth.users {
            let name = &user.name;
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "{name:?}: a user's name is 1 to 128 characters, no control characters"
                )));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid(format!("{name:?} is named twice")));
            }
            let digest = &user.key_sha256;
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "{name:?}: key_sha256 must be 64 hexadecimal digits (blipmq keygen prints one)"
                )));
            }
            if !digests.insert(digest.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "{name:?}: key_sha256 is another user's too: one key, one user"
                )));
            }
            for (list, patterns) in [
                (
                    "publish.allow",
                    user.publish.allow.as_deref().unwrap_or(&[]),
                ),
                ("publish.deny", &user.publish.deny[..]),
                (
                    "subscribe.allow",
                    user.subscribe.allow.as_deref().unwrap_or(&[]),
                ),
                ("subscribe.deny", &user.subscribe.deny[..]),
            ] {
                for pattern in patterns {
                    if let Err(error) = blipmq_protocol::topic::validate_pattern(pattern) {
                        return Err(invalid(format!("{name:?}: {list} {pattern:?}: {error}")));
                    }
                }
            }
            for queue in user.queues.iter().flatten() {
                if queue.is_empty() || queue.trim_end_matches('*').contains('*') {
                    return Err(invalid(format!(
                        "{name:?}: queues {queue:?}: a name, or a prefix ending in one '*'"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.key_file",
                problem: "and tls.cert_file go together: set both or neither".into(),
            });
        }
        if tls.client_ca_file.is_some() && !tls.configured() {
            return Err(ConfigError::Invalid {
                key: "tls.client_ca_file",
                problem: "needs tls.cert_file and tls.key_file (the broker's own certificate)"
                    .into(),
            });
        }
        for (listener, key) in [
            (Listener::Clients, "server.tls"),
            (Listener::WebSocket, "websocket.tls"),
            (Listener::Metrics, "metrics.tls"),
        ] {
            if self.tls_on(listener) && !tls.configured() {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "is true but [tls] has no cert_file and key_file".into(),
                });
            }
        }
        if let Some(addr) = self.websocket.bind_addr {
            if !addr.ip().is_loopback()
                && !self.tls_on(Listener::WebSocket)
                && !self.websocket.allow_plaintext
            {
                return Err(ConfigError::Invalid {
                    key: "websocket.bind_addr",
                    problem: format!(
                        "{addr} is not a loopback address and the WebSocket listener has no \
                         TLS: configure [tls] (wss), or set websocket.allow_plaintext = true \
                         behind a proxy that terminates TLS"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The listeners bound to an address other than loopback that speak
    /// plaintext: the broker warns about each at start.
    pub fn exposed_plaintext_listeners(&self) -> Vec<(Listener, SocketAddr)> {
        let mut bound = vec![(Listener::Clients, self.server.bind_addr)];
        if let Some(addr) = self.websocket.bind_addr {
            bound.push((Listener::WebSocket, addr));
        }
        if self.metrics.enabled {
            bound.push((Listener::Metrics, self.metrics.bind_addr));
        }
        bound
            .into_iter()
            .filter(|(listener, addr)| !addr.ip().is_loopback() && !self.tls_on(*listener))
            .collect()
    }

    /// The header limits in effect.
    pub fn header_limits(&self) -> blipmq_protocol::headers::HeaderLimits {
        blipmq_protocol::headers::HeaderLimits {
            max_headers: self.server.max_headers,
            max_key_size: self.server.max_header_key_bytes,
            max_total_size: self.server.max_headers_bytes,
        }
    }

    /// The largest frame body the broker accepts after the handshake: the
    /// payload limit plus room for the topic, the headers and the envelope.
    pub fn max_frame_size(&self) -> usize {
        self.server.max_message_size_bytes
            + blipmq_protocol::FRAME_ENVELOPE_ALLOWANCE
            + self.header_limits().frame_overhead()
    }

    /// The number of fan-out cache shards in effect (resolving 0 = auto).
    pub fn effective_fanout_shards(&self) -> usize {
        match self.delivery.fanout_shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !host.is_empty()
        && !host.contains(['/', '?', '#', ' '])
}

/// Fold `BLIPMQ_<SECTION>_<KEY>=value` into the parsed file. A value is read
/// as a TOML scalar when it parses as one (numbers, booleans), else as a string.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    const SECTIONS: &[&str] = &[
        "server",
        "metrics",
        "queues",
        "delivery",
        "durable",
        "auth",
        "wal",
        "websocket",
        "tls",
    ];
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("BLIPMQ_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            // BLIPMQ_API_KEY, BLIPMQ_CONFIG, BLIPMQ_LOG_FORMAT and the like
            // belong to the command line, not to the file's sections.
            continue;
        }
        let value = if LIST_KEYS.contains(&(section, key)) {
            toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            )
        } else if PATH_KEYS.contains(&(section, key)) {
            toml::Value::String(raw)
        } else {
            parse_scalar(&raw)
        };
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(ConfigError::Parse {
                origin: String::new(),
                message: format!("`{section}` must be a table"),
            });
        };
        section_table.insert(key.to_string(), value);
    }
    Ok(())
}

/// toml's messages span several lines (a source excerpt, then "in `key`");
/// the broker reports a bad config in one line that still names the key, or
/// the line and column of a syntax error in `source`.
fn one_line(error: &toml::de::Error, source: Option<&str>) -> String {
    let text = match (error.span(), source) {
        (Some(span), Some(source)) => {
            let before = source.get(..span.start).unwrap_or(source);
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            format!("line {line}, column {column}: {}", error.message())
        }
        _ => error.to_string(),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn parse_scalar(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_)),
            ) => v,
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn built_in_defaults_are_valid_and_documented_values() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.bind_addr.to_string(), "127.0.0.1:7878");
        assert_eq!(c.metrics.bind_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.queues.overflow_policy, OverflowPolicy::DropOldest);
        assert!(c.auth.api_keys.is_empty());
        assert_eq!(c.websocket.bind_addr, None, "the WebSocket listener is off");
    }

    #[test]
    fn keepalive_keys_are_validated_and_read_from_the_environment() {
        let c = Config::load(
            None,
            env(&[
                ("BLIPMQ_SERVER_KEEPALIVE_INTERVAL_MS", "250"),
                ("BLIPMQ_SERVER_KEEPALIVE_MISSED", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.server.keepalive_interval_ms, c.server.keepalive_missed),
            (250, 4)
        );
        let off = Config::from_toml("[server]\nkeepalive_interval_ms = 0\nkeepalive_missed = 0\n");
        assert!(off.is_ok(), "0 turns keepalive off, whatever missed says");
        for (toml, key) in [
            ("keepalive_missed = 0", "server.keepalive_missed"),
            ("keepalive_missed = 1001", "server.keepalive_missed"),
            (
                "keepalive_interval_ms = 86400001",
                "server.keepalive_interval_ms",
            ),
        ] {
            let e = Config::from_toml(&format!("[server]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn the_websocket_section_from_the_file_and_the_environment() {
        let c = Config::from_toml(
            "[websocket]\nbind_addr = \"127.0.0.1:7879\"\nallowed_origins = [\"http://localhost:8080\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.websocket.bind_addr,
            Some(WebSocketConfig::SUGGESTED_BIND_ADDR.parse().unwrap())
        );
        assert!(c.websocket.origin_allowed("http://LOCALHOST:8080"));
        assert!(!c.websocket.origin_allowed("http://evil.example"));
        let c = Config::load(
            None,
            env(&[
                ("BLIPMQ_WEBSOCKET_BIND_ADDR", "127.0.0.1:0"),
                (
                    "BLIPMQ_WEBSOCKET_ALLOWED_ORIGINS",
                    "http://a.test, https://b.test:8443",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.websocket.bind_addr.unwrap().port(), 0);
        assert_eq!(
            c.websocket.allowed_origins,
            vec!["http://a.test", "https://b.test:8443"]
        );
        // No list: any origin on loopback, none on the network.
        assert!(WebSocketConfig::default().origin_allowed("http://anything.test"));
        let exposed = WebSocketConfig {
            bind_addr: Some("0.0.0.0:7879".parse().unwrap()),
            allow_plaintext: true,
            ..WebSocketConfig::default()
        };
        assert!(!exposed.origin_allowed("http://anything.test"));
        let named = WebSocketConfig {
            allowed_origins: vec!["https://app.example".into()],
            ..exposed
        };
        assert!(named.origin_allowed("https://app.example"));
        assert!(!named.origin_allowed("https://evil.example"));
    }

    #[test]
    fn the_shipped_example_config_parses_and_matches_the_defaults() {
        let text = include_str!("../../blipmq.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "[server]\nmax_connections = 5\n[queues]\noverflow_policy = \"block\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("BLIPMQ_SERVER_MAX_CONNECTIONS", "7"),
                ("BLIPMQ_SERVER_MAX_HANDSHAKES", "9"),
                ("BLIPMQ_METRICS_MAX_CONNECTIONS", "3"),
                ("BLIPMQ_METRICS_WRITE_TIMEOUT_MS", "500"),
                ("BLIPMQ_AUTH_MAX_FAILURES", "4"),
                ("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0"),
                ("BLIPMQ_AUTH_API_KEYS", "k1, k2"),
                ("BLIPMQ_METRICS_ENABLED", "false"),
                ("BLIPMQ_QUEUES_MAX_SUBSCRIPTIONS_PER_CONNECTION", "50"),
                ("BLIPMQ_API_KEY", "ignored: belongs to the CLI"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.max_connections, 7);
        assert_eq!(c.server.max_handshakes, 9);
        assert_eq!(c.metrics.max_connections, 3);
        assert_eq!(c.metrics.write_timeout_ms, 500);
        assert_eq!(c.auth.max_failures, 4);
        assert_eq!(c.server.bind_addr.port(), 0);
        assert_eq!(c.queues.overflow_policy, OverflowPolicy::Block);
        assert_eq!(c.auth.api_keys, vec!["k1", "k2"]);
        assert!(!c.metrics.enabled);
        assert_eq!(c.queues.max_subscriptions_per_connection, 50);
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = error_of("[server]\nmax_conections = 5\n");
        assert!(e.contains("max_conections"), "{e}");
        let e = error_of("[queues]\noverflow_policy = \"drop_everything\"\n");
        assert!(
            e.contains("overflow_policy") && e.contains("drop_everything"),
            "{e}"
        );
        let e = error_of("[server]\nmax_connections = \"many\"\n");
        assert!(e.contains("max_connections"), "{e}");
        let e = error_of("[server]\nbind_addr = \"nowhere\"\n");
        assert!(e.contains("bind_addr"), "{e}");
        let e = error_of("[queues]\nsubscriber_capacity = 0\n");
        assert!(e.contains("queues.subscriber_capacity"), "{e}");
        let e = error_of("[queues]\nsubscriber_capacity_bytes = 0\n");
        assert!(e.contains("queues.subscriber_capacity_bytes"), "{e}");
        let e = error_of("[queues]\nmax_memory_bytes = 1000000\n");
        assert!(e.contains("queues.max_memory_bytes"), "{e}");
        let e = error_of("[queues]\nmax_subscriptions_per_connection = 0\n");
        assert!(e.contains("queues.max_subscriptions_per_connection"), "{e}");
        let e = error_of("[durable]\nmax_queues = 0\n");
        assert!(e.contains("durable.max_queues"), "{e}");
        let e = error_of("[durable]\nmax_bytes = 1000\n");
        assert!(e.contains("durable.max_bytes"), "{e}");
        let e = error_of("[durable]\ndetached_expiry_ms = 5\n");
        assert!(e.contains("durable.detached_expiry_ms"), "{e}");
        let e = error_of("[durable]\nmax_age = 5\n");
        assert!(e.contains("max_age"), "{e}");
        let e = error_of("[auth]\napi_keys = [\"\"]\n");
        assert!(e.contains("auth.api_keys"), "{e}");
        let e = error_of(&format!("[auth]\napi_keys = [\"{}\"]\n", "k".repeat(513)));
        assert!(e.contains("auth.api_keys"), "{e}");
        let e = error_of("[server]\nmax_handshakes = 0\n");
        assert!(e.contains("server.max_handshakes"), "{e}");
        let e = error_of("[metrics]\nmax_connections = 0\n");
        assert!(e.contains("metrics.max_connections"), "{e}");
        let e = error_of("[metrics]\nwrite_timeout_ms = 0\n");
        assert!(e.contains("metrics.write_timeout_ms"), "{e}");
        let e = error_of("[metrics]\nrequest_timeout_ms = 0\n");
        assert!(e.contains("metrics.request_timeout_ms"), "{e}");
        let e = error_of("[auth]\nfailure_delay_ms = 600000\n");
        assert!(e.contains("auth.failure_delay_ms"), "{e}");
        let e = error_of("[websocket]\nbind_addr = \"nowhere\"\n");
        assert!(e.contains("bind_addr"), "{e}");
        let e = error_of("[websocket]\nallowed_origins = [\"http://a.test/page\"]\n");
        assert!(e.contains("websocket.allowed_origins"), "{e}");
        let e = error_of("[websocket]\nallowed_origins = [\"a.test\"]\n");
        assert!(e.contains("websocket.allowed_origins"), "{e}");
        let e = error_of("[nonsense]\n");
        assert!(e.contains("nonsense"), "{e}");
        let e = Config::load(None, env(&[("BLIPMQ_SERVER_MAX_CONNECTIONS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections"), "{e}");
    }

    #[test]
    fn tls_keys_are_validated_and_read_from_the_environment() {
        let c = Config::load(
            None,
            env(&[
                ("BLIPMQ_TLS_CERT_FILE", "/etc/blipmq/cert.pem"),
                ("BLIPMQ_TLS_KEY_FILE", "/etc/blipmq/1.2"),
                ("BLIPMQ_TLS_MIN_VERSION", "1.3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/blipmq/cert.pem"))
        );
        assert_eq!(
            c.tls.key_file.as_deref(),
            Some(Path::new("/etc/blipmq/1.2"))
        );
        assert_eq!(c.tls.min_version, TlsVersion::Tls13);
        assert!(c.tls_on(Listener::Clients) && c.tls_on(Listener::Metrics));

        let invalid = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        assert!(invalid("[tls]\nkey_file = \"k.pem\"").contains("tls.key_file"));
        assert!(invalid("[tls]\nclient_ca_file = \"ca.pem\"").contains("tls.client_ca_file"));
        assert!(invalid("[server]\ntls = true").contains("server.tls"));
        assert!(
            invalid("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nmin_version = \"1.1\"")
                .contains("1.1")
        );
        let c =
            Config::from_toml("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n[metrics]\ntls = false")
                .unwrap();
        assert!(c.tls_on(Listener::Clients) && !c.tls_on(Listener::Metrics));
    }

    #[test]
    fn a_websocket_listener_off_loopback_needs_tls_or_allow_plaintext() {
        let error = Config::from_toml("[websocket]\nbind_addr = \"0.0.0.0:7879\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("websocket.bind_addr") && error.contains("allow_plaintext"),
            "{error}"
        );
        Config::from_toml("[websocket]\nbind_addr = \"0.0.0.0:7879\"\nallow_plaintext = true")
            .unwrap();
        Config::from_toml(
            "[websocket]\nbind_addr = \"0.0.0.0:7879\"\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"",
        )
        .unwrap();
        Config::from_toml("[websocket]\nbind_addr = \"127.0.0.1:7879\"").unwrap();
    }

    #[test]
    fn plaintext_listeners_off_loopback_are_named_for_the_start_warning() {
        let c = Config::from_toml(
            "[server]\nbind_addr = \"0.0.0.0:7878\"\n[websocket]\nbind_addr = \"0.0.0.0:7879\"\nallow_plaintext = true",
        )
        .unwrap();
        let exposed: Vec<Listener> = c
            .exposed_plaintext_listeners()
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(exposed, [Listener::Clients, Listener::WebSocket]);
        assert!(Config::default().exposed_plaintext_listeners().is_empty());
    }
}
