//! One publisher and one subscriber type over the four systems, each through
//! its usual Rust client: `blipmq`, `async-nats`, `redis` (tokio) and
//! `rumqttc`. Subscribers are confirmed by their server before a
//! subscribe call returns here, so nothing published after it is missed for
//! want of a subscription.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes at the start of a latency payload that carry its send time.
pub const STAMP: usize = 8;
/// Latencies above this are recorded as this (ns).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Redis PUBLISH commands awaiting their reply, per publisher: the
/// multiplexed connection pipelines them.
const REDIS_WINDOW: usize = 1024;
/// Requests rumqttc's event loop may have queued.
const MQTT_CAPACITY: usize = 1024;
/// Limit for connecting and subscribing.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Blipmq,
    Nats,
    Redis,
    Mqtt,
}

impl System {
    pub const ALL: [System; 4] = [System::Blipmq, System::Nats, System::Redis, System::Mqtt];

    pub fn key(self) -> &'static str {
        match self {
            System::Blipmq => "blipmq",
            System::Nats => "nats",
            System::Redis => "redis",
            System::Mqtt => "mqtt",
        }
    }

    /// Column heading in the report.
    pub fn title(self) -> &'static str {
        match self {
            System::Blipmq => "BlipMQ",
            System::Nats => "NATS core",
            System::Redis => "Redis pub/sub",
            System::Mqtt => "Mosquitto QoS 0",
        }
    }

    /// Short name for ratio headings and the chart.
    pub fn short(self) -> &'static str {
        match self {
            System::Blipmq => "BlipMQ",
            System::Nats => "NATS",
            System::Redis => "Redis",
            System::Mqtt => "Mosquitto",
        }
    }

    pub fn from_key(key: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// Where one system listens.
#[derive(Clone, Debug)]
pub struct Target {
    pub system: System,
    pub addr: String,
}

/// Counters shared by every subscriber of one run.
#[derive(Default)]
pub struct Shared {
    pub delivered: AtomicU64,
    /// ns since the epoch of the latest delivery to any subscriber.
    pub last_delivery_ns: AtomicU64,
}

/// What a subscriber records for each message it receives.
pub struct Sink {
    epoch: Instant,
    shared: Arc<Shared>,
    latency: Option<Histogram<u64>>,
    received: u64,
}

impl Sink {
    pub fn new(epoch: Instant, shared: Arc<Shared>, record_latency: bool) -> Sink {
        Sink {
            epoch,
            shared,
            latency: record_latency.then(new_histogram),
            received: 0,
        }
    }

    pub fn record(&mut self, payload: &[u8]) {
        self.record_batch([payload]);
    }

    /// Record messages that were all in hand at once (one read of the
    /// client's buffer): one clock read and one update of the shared
    /// counters for the lot, so that the harness's own bookkeeping stays a
    /// small share of the client's CPU at millions of messages per second.
    pub fn record_batch<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut count = 0;
        for payload in payloads {
            count += 1;
            if let Some(latency) = &mut self.latency {
                if let Some(stamp) = payload.get(..STAMP) {
                    let sent = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                    latency.saturating_record(now.saturating_sub(sent).max(1));
                }
            }
        }
        if count == 0 {
            return;
        }
        self.received += count;
        self.shared.delivered.fetch_add(count, Ordering::Relaxed);
        self.shared
            .last_delivery_ns
            .fetch_max(now, Ordering::Relaxed);
    }

    pub fn finish(self, error: Option<String>) -> SubOutcome {
        SubOutcome {
            received: self.received,
            latency: self.latency,
            error,
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// What one subscription task saw.
pub struct SubOutcome {
    pub received: u64,
    pub latency: Option<Histogram<u64>>,
    pub error: Option<String>,
}

/// One subscriber connection: its receive tasks, and what closes it.
pub struct Subscriber {
    pub tasks: Vec<JoinHandle<SubOutcome>>,
    closer: Closer,
}

enum Closer {
    Blipmq(blipmq::Client),
    Nats(async_nats::Client),
    /// The connection lives in the receive task.
    Redis,
    Mqtt(rumqttc::AsyncClient),
}

impl Subscriber {
    pub async fn close(self) {
        match self.closer {
            Closer::Blipmq(client) => client.close().await,
            Closer::Nats(client) => drop(client),
            Closer::Redis => {}
            Closer::Mqtt(client) => {
                let _ = client.try_disconnect();
            }
        }
    }
}

/// The CA to trust for `tls://` addresses (`--tls-ca`), set once at start.
pub static TLS_CA: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// A BlipMQ client for `target` (`host:port`, or `tls://host:port` trusting
/// [`TLS_CA`]).
async fn connect_blipmq(target: &Target, name: &str) -> Result<blipmq::Client, String> {
    let mut builder = blipmq::Client::builder()
        .name(name)
        .reconnect(blipmq::ReconnectPolicy::disabled());
    if let Some(ca) = TLS_CA.get() {
        builder = builder.tls(blipmq::tls::TlsOptions {
            ca: Some(blipmq::tls::Pem::File(ca.clone())),
            ..Default::default()
        });
    }
    within("connect to BlipMQ", builder.connect(target.addr.clone())).await
}

/// A NATS client for `target`, over TLS trusting [`TLS_CA`] when set.
async fn connect_nats(target: &Target, name: &str) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new().name(name);
    if let Some(ca) = TLS_CA.get() {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    within("connect to NATS", options.connect(target.addr.as_str())).await
}

fn err(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(SETUP_TIMEOUT, future).await {
        Ok(result) => result.map_err(|e| err(what, e)),
        Err(_) => Err(format!("{what}: timed out after {SETUP_TIMEOUT:?}")),
    }
}

/// Connect one subscriber, subscribe it to `topics` and wait until its
/// server has confirmed every subscription; then receive into `sink` until
/// `stop` turns true.
pub async fn subscribe(
    target: &Target,
    name: &str,
    topics: &[String],
    make_sink: impl Fn() -> Sink,
    stop: watch::Receiver<bool>,
) -> Result<Subscriber, String> {
    match target.system {
        System::Blipmq => {
            let client = connect_blipmq(target, name).await?;
            let mut tasks = Vec::new();
            for topic in topics {
                let subscription = match within("subscribe", client.subscribe(topic)).await {
                    Ok(s) => s,
                    Err(e) => {
                        client.close().await;
                        return Err(e);
                    }
                };
                tasks.push(tokio::spawn(blipmq_receive(
                    subscription,
                    make_sink(),
                    stop.clone(),
                )));
            }
            Ok(Subscriber {
                tasks,
                closer: Closer::Blipmq(client),
            })
        }
        System::Nats => {
            let client = connect_nats(target, name).await?;
            let mut tasks = Vec::new();
            for topic in topics {
                let subscriber = within("subscribe", client.subscribe(topic.clone())).await?;
                tasks.push(tokio::spawn(stream_receive(
                    subscriber,
                    nats_payload,
                    make_sink(),
                    stop.clone(),
                )));
            }
            nats_round_trip(&client).await?;
            Ok(Subscriber {
                tasks,
                closer: Closer::Nats(client),
            })
        }
        System::Redis => {
            let client = redis::Client::open(format!("redis://{}/", target.addr))
                .map_err(|e| err("redis url", e))?;
            let mut pubsub = within("connect to Redis", client.get_async_pubsub()).await?;
            // Each call returns once Redis has confirmed the subscription.
            within("subscribe", pubsub.subscribe(topics)).await?;
            let task = tokio::spawn(stream_receive(
                pubsub.into_on_message(),
                redis::Msg::get_payload_bytes,
                make_sink(),
                stop,
            ));
            Ok(Subscriber {
                tasks: vec![task],
                closer: Closer::Redis,
            })
        }
        System::Mqtt => {
            let (client, mut eventloop) = mqtt_connect(target, name).await?;
            let wanted: Vec<_> = topics
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), rumqttc::QoS::AtMostOnce))
                .collect();
            within("subscribe", client.subscribe_many(wanted)).await?;
            within("SUBACK", async {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) => {
                            let refused = ack
                                .return_codes
                                .iter()
                                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                            return if refused {
                                Err("subscription refused".to_string())
                            } else {
                                Ok(())
                            };
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
            .await?;
            let task = tokio::spawn(mqtt_receive(eventloop, make_sink(), stop));
            Ok(Subscriber {
                tasks: vec![task],
                closer: Closer::Mqtt(client),
            })
        }
    }
}

async fn blipmq_receive(
    mut subscription: blipmq::Subscription,
    mut sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    loop {
        let first = tokio::select! {
            message = subscription.next_message() => message,
            _ = stop.wait_for(|stop| *stop) => return sink.finish(None),
        };
        let Some(first) = first else {
            return sink.finish(Some("BlipMQ subscription ended".into()));
        };
        let rest = subscription.try_next_batch(1024);
        sink.record_batch(
            std::iter::once(first.payload().as_ref())
                .chain(rest.iter().map(|message| message.payload().as_ref())),
        );
    }
}

async fn stream_receive<S, M>(
    stream: S,
    payload: fn(&M) -> &[u8],
    mut sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome
where
    S: futures::Stream<Item = M> + Unpin,
{
    let mut batches = stream.ready_chunks(1024);
    loop {
        let batch = tokio::select! {
            batch = batches.next() => batch,
            _ = stop.wait_for(|stop| *stop) => return sink.finish(None),
        };
        let Some(batch) = batch else {
            return sink.finish(Some("subscription ended".into()));
        };
        sink.record_batch(batch.iter().map(payload));
    }
}

/// Returns once the server has handled everything this client sent before
/// (its SUBs included). `flush` only writes the client's buffer; a request
/// to a subject nobody serves comes back "no responders" from the server,
/// which handles a connection's operations in order.
async fn nats_round_trip(client: &async_nats::Client) -> Result<(), String> {
    let request = client.request("blipmq-bench.sync", Bytes::new());
    match tokio::time::timeout(SETUP_TIMEOUT, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(e)) => Err(err("NATS round trip", e)),
        Err(_) => Err(format!(
            "NATS round trip: timed out after {SETUP_TIMEOUT:?}"
        )),
    }
}

fn nats_payload(message: &async_nats::Message) -> &[u8] {
    &message.payload
}

async fn mqtt_receive(
    mut eventloop: rumqttc::EventLoop,
    mut sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = stop.wait_for(|stop| *stop) => return sink.finish(None),
        };
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                sink.record(&publish.payload)
            }
            Ok(_) => {}
            Err(e) => return sink.finish(Some(format!("MQTT connection: {e}"))),
        }
    }
}

async fn mqtt_connect(
    target: &Target,
    name: &str,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), String> {
    let (host, port) = target
        .addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("bad MQTT address {:?}", target.addr))?;
    // MQTT client ids must be unique per server.
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = format!("{name}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let mut options = rumqttc::MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, MQTT_CAPACITY);
    within("connect to Mosquitto", async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await?;
    Ok((client, eventloop))
}

type RedisReply = Pin<Box<dyn Future<Output = redis::RedisResult<()>> + Send>>;

pub enum Publisher {
    Blipmq(blipmq::Client),
    Nats(async_nats::Client),
    Redis {
        connection: redis::aio::MultiplexedConnection,
        in_flight: FuturesUnordered<RedisReply>,
    },
    Mqtt {
        client: rumqttc::AsyncClient,
        /// PUBLISH packets the event loop has written.
        written: Arc<AtomicU64>,
        eventloop: JoinHandle<Result<(), String>>,
    },
}

impl Publisher {
    pub async fn connect(target: &Target, name: &str) -> Result<Publisher, String> {
        Ok(match target.system {
            System::Blipmq => Publisher::Blipmq(connect_blipmq(target, name).await?),
            System::Nats => Publisher::Nats(connect_nats(target, name).await?),
            System::Redis => {
                let client = redis::Client::open(format!("redis://{}/", target.addr))
                    .map_err(|e| err("redis url", e))?;
                // No reply timeout: a deep pipeline may wait behind a busy server.
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                let connection = within(
                    "connect to Redis",
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await?;
                Publisher::Redis {
                    connection,
                    in_flight: FuturesUnordered::new(),
                }
            }
            System::Mqtt => {
                let (client, mut eventloop) = mqtt_connect(target, name).await?;
                let written = Arc::new(AtomicU64::new(0));
                let counter = written.clone();
                let eventloop = tokio::spawn(async move {
                    loop {
                        match eventloop.poll().await {
                            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                                counter.fetch_add(1, Ordering::Release);
                            }
                            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                                return Ok(())
                            }
                            Ok(_) => {}
                            Err(rumqttc::ConnectionError::RequestsDone) => return Ok(()),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                });
                Publisher::Mqtt {
                    client,
                    written,
                    eventloop,
                }
            }
        })
    }

    pub async fn publish(&mut self, topic: &str, payload: Bytes) -> Result<(), String> {
        match self {
            Publisher::Blipmq(client) => client
                .publish(topic, payload)
                .await
                .map_err(|e| err("publish", e)),
            Publisher::Nats(client) => client
                .publish(topic.to_string(), payload)
                .await
                .map_err(|e| err("publish", e)),
            Publisher::Redis {
                connection,
                in_flight,
            } => {
                if in_flight.len() >= REDIS_WINDOW {
                    if let Some(reply) = in_flight.next().await {
                        reply.map_err(|e| err("PUBLISH", e))?;
                    }
                }
                let mut command = redis::cmd("PUBLISH");
                command.arg(topic).arg(&payload[..]);
                let mut connection = connection.clone();
                in_flight.push(Box::pin(async move {
                    command.query_async::<()>(&mut connection).await
                }));
                // Poll the new request so that it is sent now, and collect
                // the replies that have arrived.
                while let Some(Some(reply)) = in_flight.next().now_or_never() {
                    reply.map_err(|e| err("PUBLISH", e))?;
                }
                Ok(())
            }
            Publisher::Mqtt { client, .. } => client
                .publish_bytes(topic, rumqttc::QoS::AtMostOnce, false, payload)
                .await
                .map_err(|e| err("publish", e)),
        }
    }

    /// Wait until everything published has been handed to the server (BlipMQ
    /// and NATS: the server has answered a request sent after the last
    /// message; Redis: every PUBLISH has its reply; MQTT QoS 0 has no
    /// answer: every packet has been written).
    pub async fn finish(&mut self, published: u64) -> Result<(), String> {
        match self {
            Publisher::Blipmq(client) => client.flush().await.map_err(|e| err("flush", e)),
            Publisher::Nats(client) => {
                client.flush().await.map_err(|e| err("flush", e))?;
                nats_round_trip(client).await
            }
            Publisher::Redis { in_flight, .. } => {
                while let Some(reply) = in_flight.next().await {
                    reply.map_err(|e| err("PUBLISH", e))?;
                }
                Ok(())
            }
            Publisher::Mqtt {
                written, eventloop, ..
            } => {
                while written.load(Ordering::Acquire) < published {
                    if eventloop.is_finished() {
                        return Err("the MQTT event loop ended early".into());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(())
            }
        }
    }

    pub async fn close(self) {
        match self {
            Publisher::Blipmq(client) => client.close().await,
            Publisher::Nats(client) => drop(client),
            Publisher::Redis { .. } => {}
            Publisher::Mqtt {
                client, eventloop, ..
            } => {
                let _ = client.try_disconnect();
                let abort = eventloop.abort_handle();
                if tokio::time::timeout(Duration::from_secs(1), eventloop)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
        }
    }
}
