//! Durable (at-least-once) publishing and consuming over BlipMQ QoS 1, NATS
//! JetStream and Redis Streams, each through its usual Rust client:
//!
//! | system | publish, resolved on | consume |
//! |---|---|---|
//! | BlipMQ | `publish_with(qos: AtLeastOnce)`: the broker's confirm | durable QoS 1 subscription, `Message::ack` per message |
//! | JetStream | `jetstream::Context::publish`: the stream's publish ack | durable pull consumer, explicit `ack` per message |
//! | Redis | `XADD` (pipelined): its reply | consumer group, `XREADGROUP` + one `XACK` per batch read |
//!
//! A confirm future sends its message the first time it is polled and
//! resolves when the server has confirmed it, so a publisher can keep a
//! window of them in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::systems::{Shared, Sink};

/// Limit for connecting and setting up streams, groups and subscriptions.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a consumer takes from its server per read (JetStream pull batch,
/// Redis `COUNT`); BlipMQ's credit (`max_in_flight`) is 1,024 by default.
const CONSUMER_BATCH: usize = 1024;
/// How long a Redis consumer blocks in one `XREADGROUP` before it looks
/// whether it should stop.
const REDIS_BLOCK_MS: u64 = 100;

/// One column of the durable report: a server and how it makes data durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DurableSystem {
    BlipmqAlways,
    BlipmqInterval,
    JetStream,
    RedisAlways,
    RedisEverysec,
}

/// The client a [`DurableSystem`] is driven through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Blipmq,
    JetStream,
    Redis,
}

impl DurableSystem {
    pub const ALL: [DurableSystem; 5] = [
        DurableSystem::BlipmqAlways,
        DurableSystem::BlipmqInterval,
        DurableSystem::JetStream,
        DurableSystem::RedisAlways,
        DurableSystem::RedisEverysec,
    ];

    /// Name on the command line (`--server-version KEY=...`).
    pub fn key(self) -> &'static str {
        match self {
            DurableSystem::BlipmqAlways => "blipmq-always",
            DurableSystem::BlipmqInterval => "blipmq-interval",
            DurableSystem::JetStream => "jetstream",
            DurableSystem::RedisAlways => "redis-always",
            DurableSystem::RedisEverysec => "redis-everysec",
        }
    }

    pub fn from_key(key: &str) -> Option<DurableSystem> {
        DurableSystem::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Column heading in the report and the chart legend.
    pub fn title(self) -> &'static str {
        match self {
            DurableSystem::BlipmqAlways => "BlipMQ always",
            DurableSystem::BlipmqInterval => "BlipMQ interval",
            DurableSystem::JetStream => "JetStream file",
            DurableSystem::RedisAlways => "Redis always",
            DurableSystem::RedisEverysec => "Redis everysec",
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            DurableSystem::BlipmqAlways | DurableSystem::BlipmqInterval => Protocol::Blipmq,
            DurableSystem::JetStream => Protocol::JetStream,
            DurableSystem::RedisAlways | DurableSystem::RedisEverysec => Protocol::Redis,
        }
    }
}

/// Where one system listens.
#[derive(Clone, Debug)]
pub struct DurableTarget {
    pub system: DurableSystem,
    pub addr: String,
    /// BlipMQ's metrics listener (HOST:PORT), to count its fsyncs.
    pub metrics: Option<String>,
    /// The server's process id, to measure its CPU time.
    pub pid: Option<u32>,
}

/// The names one run uses, fresh for each run so that none sees another's
/// data: the topic (a JetStream subject, a Redis stream key), the JetStream
/// stream, and the durable consumer (BlipMQ durable name, JetStream durable
/// consumer, Redis consumer group).
#[derive(Clone, Debug)]
pub struct Place {
    pub topic: String,
    pub stream: String,
    pub consumer: String,
}

impl Place {
    /// `tag` must be made of letters, digits and `_` (it names a JetStream
    /// stream, which may not contain `.`).
    pub fn new(tag: &str) -> Place {
        Place {
            topic: format!("bench.durable.{tag}"),
            stream: format!("BENCH_DURABLE_{tag}"),
            consumer: format!("bench_consumer_{tag}"),
        }
    }
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

async fn blipmq_connect(addr: &str, name: &str) -> Result<blipmq::Client, String> {
    within(
        "connect to BlipMQ",
        blipmq::Client::builder()
            .name(name)
            .reconnect(blipmq::ReconnectPolicy::disabled())
            .connect(addr.to_string()),
    )
    .await
}

async fn jetstream_connect(addr: &str, name: &str) -> Result<async_nats::Client, String> {
    within(
        "connect to NATS",
        async_nats::ConnectOptions::new().name(name).connect(addr),
    )
    .await
}

async fn redis_connect(addr: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client =
        redis::Client::open(format!("redis://{addr}/")).map_err(|e| err("redis url", e))?;
    // No reply timeout: a deep pipeline or a blocking read may wait longer
    // than the default.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    within(
        "connect to Redis",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
}

/// Make the server ready for a run at `place`: JetStream needs its stream
/// (file storage) before anything is published to it; Redis starts from an
/// empty key.
pub async fn prepare(target: &DurableTarget, place: &Place) -> Result<(), String> {
    match target.system.protocol() {
        Protocol::Blipmq => Ok(()),
        Protocol::JetStream => {
            let client = jetstream_connect(&target.addr, "blipmq-bench-setup").await?;
            let context = async_nats::jetstream::new(client);
            let config = async_nats::jetstream::stream::Config {
                name: place.stream.clone(),
                subjects: vec![place.topic.clone()],
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            };
            within("create JetStream stream", context.create_stream(config)).await?;
            Ok(())
        }
        Protocol::Redis => {
            let mut connection = redis_connect(&target.addr).await?;
            within(
                "DEL",
                redis::cmd("DEL")
                    .arg(&place.topic)
                    .query_async::<()>(&mut connection),
            )
            .await
        }
    }
}

/// Delete what a run stored, so that runs do not pile up data on the
/// server (BlipMQ: the durable subscription is deleted by its consumer, and
/// the log drops segments nobody needs).
pub async fn clean_up(target: &DurableTarget, place: &Place) -> Result<(), String> {
    match target.system.protocol() {
        Protocol::Blipmq => Ok(()),
        Protocol::JetStream => {
            let client = jetstream_connect(&target.addr, "blipmq-bench-setup").await?;
            let context = async_nats::jetstream::new(client);
            within(
                "delete JetStream stream",
                context.delete_stream(&place.stream),
            )
            .await?;
            Ok(())
        }
        Protocol::Redis => {
            let mut connection = redis_connect(&target.addr).await?;
            within(
                "DEL",
                redis::cmd("DEL")
                    .arg(&place.topic)
                    .query_async::<()>(&mut connection),
            )
            .await
        }
    }
}

/// Resolves when the server has confirmed one message.
pub type Confirm = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

pub enum DurablePublisher {
    Blipmq {
        client: blipmq::Client,
        topic: Arc<str>,
    },
    JetStream {
        context: Arc<async_nats::jetstream::Context>,
        subject: async_nats::Subject,
    },
    Redis {
        connection: redis::aio::MultiplexedConnection,
        key: Arc<str>,
    },
}

impl DurablePublisher {
    pub async fn connect(target: &DurableTarget, place: &Place) -> Result<Self, String> {
        let name = "blipmq-bench-durable-pub";
        Ok(match target.system.protocol() {
            Protocol::Blipmq => DurablePublisher::Blipmq {
                client: blipmq_connect(&target.addr, name).await?,
                topic: place.topic.as_str().into(),
            },
            Protocol::JetStream => DurablePublisher::JetStream {
                context: Arc::new(async_nats::jetstream::new(
                    jetstream_connect(&target.addr, name).await?,
                )),
                subject: place.topic.as_str().into(),
            },
            Protocol::Redis => DurablePublisher::Redis {
                connection: redis_connect(&target.addr).await?,
                key: place.topic.as_str().into(),
            },
        })
    }

    /// Publish `payload` durably: the message is sent when the returned
    /// future is first polled, which resolves on the server's confirm.
    pub fn send(&self, payload: Bytes) -> Confirm {
        match self {
            DurablePublisher::Blipmq { client, topic } => {
                let (client, topic) = (client.clone(), topic.clone());
                Box::pin(async move {
                    let options = blipmq::PublishOptions {
                        qos: blipmq::Qos::AtLeastOnce,
                        ..Default::default()
                    };
                    client
                        .publish_with(&topic, payload, options)
                        .await
                        .map(|_| ())
                        .map_err(|e| err("QoS 1 publish", e))
                })
            }
            DurablePublisher::JetStream { context, subject } => {
                let (context, subject) = (context.clone(), subject.clone());
                Box::pin(async move {
                    let ack = context
                        .publish(subject, payload)
                        .await
                        .map_err(|e| err("JetStream publish", e))?;
                    ack.await
                        .map(|_| ())
                        .map_err(|e| err("JetStream publish ack", e))
                })
            }
            DurablePublisher::Redis { connection, key } => {
                let mut connection = connection.clone();
                let mut command = redis::cmd("XADD");
                command.arg(&**key).arg("*").arg("d").arg(&payload[..]);
                Box::pin(async move {
                    command
                        .query_async::<()>(&mut connection)
                        .await
                        .map_err(|e| err("XADD", e))
                })
            }
        }
    }

    pub async fn close(self) {
        match self {
            DurablePublisher::Blipmq { client, .. } => client.close().await,
            DurablePublisher::JetStream { .. } | DurablePublisher::Redis { .. } => {}
        }
    }
}

/// A durable consumer receiving and acking in its own task.
pub struct DurableConsumer {
    pub task: JoinHandle<ConsumerOutcome>,
}

pub struct ConsumerOutcome {
    /// First deliveries received and acked (redeliveries are not counted).
    pub received: u64,
    pub error: Option<String>,
}

/// Create a durable consumer at `place` and start receiving: returns once
/// the server has the consumer, so that nothing published afterwards is
/// missed. Every first delivery is recorded in `shared` and acked; the task
/// ends when `stop` turns true, deleting the consumer where that is how its
/// data is released (BlipMQ).
pub async fn consume(
    target: &DurableTarget,
    place: &Place,
    shared: Arc<Shared>,
    epoch: std::time::Instant,
    stop: watch::Receiver<bool>,
) -> Result<DurableConsumer, String> {
    let sink = Sink::new(epoch, shared, false);
    let task = match target.system.protocol() {
        Protocol::Blipmq => {
            let client = blipmq_connect(&target.addr, "blipmq-bench-durable-sub").await?;
            let options = blipmq::SubscribeOptions {
                qos: blipmq::Qos::AtLeastOnce,
                durable: Some(place.consumer.clone()),
                ..Default::default()
            };
            let subscription = within(
                "durable subscribe",
                client.subscribe_with(&place.topic, options),
            )
            .await?;
            tokio::spawn(blipmq_consume(client, subscription, sink, stop))
        }
        Protocol::JetStream => {
            let client = jetstream_connect(&target.addr, "blipmq-bench-durable-sub").await?;
            let context = async_nats::jetstream::new(client);
            let stream = within("get JetStream stream", context.get_stream(&place.stream)).await?;
            let consumer: async_nats::jetstream::consumer::PullConsumer = within(
                "create JetStream consumer",
                stream.create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(place.consumer.clone()),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                }),
            )
            .await?;
            let messages = within(
                "JetStream pull",
                consumer
                    .stream()
                    .max_messages_per_batch(CONSUMER_BATCH)
                    .messages(),
            )
            .await?;
            tokio::spawn(jetstream_consume(messages, sink, stop))
        }
        Protocol::Redis => {
            let mut connection = redis_connect(&target.addr).await?;
            // `$`: the group starts at the end of the (new, empty) stream.
            within(
                "XGROUP CREATE",
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&place.topic)
                    .arg(&place.consumer)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut connection),
            )
            .await?;
            tokio::spawn(redis_consume(
                connection,
                place.topic.clone(),
                place.consumer.clone(),
                sink,
                stop,
            ))
        }
    };
    Ok(DurableConsumer { task })
}

async fn blipmq_consume(
    client: blipmq::Client,
    mut subscription: blipmq::Subscription,
    mut sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> ConsumerOutcome {
    let mut error = None;
    'receive: loop {
        let first = tokio::select! {
            message = subscription.next_message() => message,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(first) = first else {
            error = Some("BlipMQ subscription ended".to_string());
            break;
        };
        let mut batch = vec![first];
        batch.extend(subscription.try_next_batch(CONSUMER_BATCH));
        for message in batch {
            if message.delivery_count() == 1 {
                sink.record(message.payload());
            }
            if let Err(e) = message.ack().await {
                error = Some(err("ack", e));
                break 'receive;
            }
        }
    }
    // Delete the durable subscription: the log may then drop its segments.
    if error.is_none() {
        if let Err(e) = subscription.unsubscribe().await {
            error = Some(err("unsubscribe", e));
        }
    }
    client.close().await;
    finish(sink, error)
}

async fn jetstream_consume(
    messages: async_nats::jetstream::consumer::pull::Stream,
    mut sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> ConsumerOutcome {
    let mut batches = messages.ready_chunks(CONSUMER_BATCH);
    let mut error = None;
    'receive: loop {
        let batch = tokio::select! {
            batch = batches.next() => batch,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(batch) = batch else {
            error = Some("JetStream consumer ended".to_string());
            break;
        };
        for message in batch {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    error = Some(err("JetStream consumer", e));
                    break 'receive;
                }
            };
            if message.info().map(|i| i.delivered == 1).unwrap_or(true) {
                sink.record(&message.payload);
            }
            if let Err(e) = message.ack().await {
                error = Some(err("JetStream ack", e));
                break 'receive;
            }
        }
    }
    finish(sink, error)
}

async fn redis_consume(
    mut connection: redis::aio::MultiplexedConnection,
    key: String,
    group: String,
    mut sink: Sink,
    stop: watch::Receiver<bool>,
) -> ConsumerOutcome {
    let mut error = None;
    while !*stop.borrow() {
        // `>`: messages never delivered to this group.
        let reply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&group)
            .arg("bench")
            .arg("COUNT")
            .arg(CONSUMER_BATCH)
            .arg("BLOCK")
            .arg(REDIS_BLOCK_MS)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async::<redis::Value>(&mut connection)
            .await;
        let entries = match reply {
            Ok(reply) => stream_entries(reply),
            Err(e) => Err(err("XREADGROUP", e)),
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        if entries.is_empty() {
            continue;
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(&key).arg(&group);
        for (id, payload) in &entries {
            sink.record(payload);
            ack.arg(&id[..]);
        }
        if let Err(e) = ack.query_async::<()>(&mut connection).await {
            error = Some(err("XACK", e));
            break;
        }
    }
    finish(sink, error)
}

/// An entry id and its payload.
pub type StreamEntry = (Vec<u8>, Vec<u8>);

/// The (id, payload) pairs of an `XREADGROUP` reply for one stream whose
/// entries have one field: `[[key, [[id, [field, value]], ...]]]`; nil when
/// the read timed out.
pub fn stream_entries(reply: redis::Value) -> Result<Vec<StreamEntry>, String> {
    use redis::Value;
    let bad = |what: &str| format!("unexpected XREADGROUP reply: {what}");
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        // RESP3 answers with a map of key → entries.
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => return Err(bad(&format!("{other:?}"))),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut key_entries) = stream else {
            return Err(bad("a stream is not [key, entries]"));
        };
        let Some(Value::Array(entries)) = key_entries.pop() else {
            return Err(bad("no entries"));
        };
        for entry in entries {
            let Value::Array(mut id_fields) = entry else {
                return Err(bad("an entry is not [id, fields]"));
            };
            if id_fields.len() != 2 {
                return Err(bad("an entry is not [id, fields]"));
            }
            let fields = id_fields.pop();
            let id = id_fields.pop();
            let (Some(Value::BulkString(id)), Some(Value::Array(mut fields))) = (id, fields) else {
                return Err(bad("an entry's id or fields"));
            };
            let Some(Value::BulkString(payload)) = fields.pop() else {
                return Err(bad("an entry without a value"));
            };
            out.push((id, payload));
        }
    }
    Ok(out)
}

fn finish(sink: Sink, error: Option<String>) -> ConsumerOutcome {
    let outcome = sink.finish(error);
    ConsumerOutcome {
        received: outcome.received,
        error: outcome.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xreadgroup_reply_gives_ids_and_payloads() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("bench.durable.x"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("d"), bulk("one")]),
                ]),
                Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("d"), bulk("two")]),
                ]),
            ]),
        ])]);
        let entries = stream_entries(reply).unwrap();
        assert_eq!(
            entries,
            vec![
                (b"1-0".to_vec(), b"one".to_vec()),
                (b"1-1".to_vec(), b"two".to_vec())
            ]
        );
    }

    #[test]
    fn xreadgroup_timeout_is_no_entries() {
        assert!(stream_entries(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn xreadgroup_reply_of_the_wrong_shape_is_an_error() {
        let e = stream_entries(Value::Int(3)).unwrap_err();
        assert!(e.contains("unexpected XREADGROUP reply"), "{e}");
        let e = stream_entries(Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![Value::Array(vec![bulk("1-0")])]),
        ])]))
        .unwrap_err();
        assert!(e.contains("[id, fields]"), "{e}");
    }

    #[test]
    fn system_keys_round_trip() {
        for system in DurableSystem::ALL {
            assert_eq!(DurableSystem::from_key(system.key()), Some(system));
        }
        assert_eq!(DurableSystem::from_key("kafka"), None);
    }

    #[test]
    fn places_are_valid_names() {
        let place = Place::new("r1_publish_16");
        assert_eq!(place.topic, "bench.durable.r1_publish_16");
        assert!(!place.stream.contains('.'));
    }
}
