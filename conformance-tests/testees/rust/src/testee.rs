//! The operations of the testee contract, as calls on the `blipmq` crate.
//! One `Testee` holds every actor's client and its named subscriptions.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use blipmq::{
    Client, ClientEvent, PublishOptions, Qos, ReconnectPolicy, SubscribeOptions, Subscription,
    SubscriptionEvent,
};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::protocol::{encode_bytes, Args, Failure, Outcome, Request};

/// 603 ClientClosed: the answer for an actor without a client.
const CLIENT_CLOSED: u16 = 603;

/// The longest `receive` wait honoured (about 49 days): keeps the deadline
/// arithmetic far from overflow.
const MAX_RECEIVE_WAIT_MS: u64 = u32::MAX as u64;

struct Actor {
    client: Client,
    subscriptions: HashMap<String, Subscription>,
    /// Received QoS 1 messages not acked yet: (sub, delivery id) -> message.
    unacked: HashMap<(String, u64), blipmq::Message>,
    /// The client's events since its connect, for `events`.
    events: Pin<Box<dyn Stream<Item = ClientEvent> + Send>>,
}

impl Actor {
    async fn close(self) {
        self.client.close().await;
        // Dropped after the client closed: nothing more goes to the broker.
        drop(self.subscriptions);
    }
}

#[derive(Default)]
pub struct Testee {
    actors: HashMap<String, Actor>,
}

impl Testee {
    /// Carry out one request.
    pub async fn handle(&mut self, request: Request) -> Outcome {
        let Request {
            actor, op, args, ..
        } = request;
        match op.as_str() {
            "send_raw" | "read_frame" => Outcome::Skipped(format!(
                "`{op}` needs raw protocol access, which the Rust client does not expose"
            )),
            "hello" | "connect" | "close" | "publish" | "subscribe" | "unsubscribe" | "receive"
            | "ack" | "nak" | "term" | "in_progress" | "flush" | "events" => {
                match self.dispatch(actor, &op, &args).await {
                    Ok(value) => Outcome::Ok(value),
                    Err(failure) => Outcome::Err(failure),
                }
            }
            other => Outcome::Skipped(format!("unknown op `{other}`")),
        }
    }

    /// Close every client (at the end of input).
    pub async fn close_all(&mut self) {
        for (_, actor) in self.actors.drain() {
            actor.close().await;
        }
    }

    async fn dispatch(
        &mut self,
        actor: Option<String>,
        op: &str,
        args: &Args,
    ) -> Result<Value, Failure> {
        if op == "hello" {
            return Ok(hello());
        }
        let name = actor.ok_or_else(|| Failure::invalid(format!("`{op}` needs an `actor`")))?;
        match op {
            "connect" => self.connect(name, args).await,
            "close" => {
                let actor = self.actors.remove(&name).ok_or_else(|| no_client(&name))?;
                actor.close().await;
                Ok(json!({}))
            }
            _ => {
                let actor = self.actors.get_mut(&name).ok_or_else(|| no_client(&name))?;
                match op {
                    "publish" => publish(actor, args).await,
                    "subscribe" => subscribe(actor, args).await,
                    "unsubscribe" => unsubscribe(actor, args).await,
                    "receive" => receive(actor, args).await,
                    "ack" => ack(actor, args).await,
                    "nak" | "term" | "in_progress" => settle(actor, op, args).await,
                    "events" => events(actor, args).await,
                    _ => flush(actor).await,
                }
            }
        }
    }

    async fn connect(&mut self, name: String, args: &Args) -> Result<Value, Failure> {
        // A list of addresses to try in order, or the one broker.
        let addresses = match args.opt_str_list("addresses")? {
            Some(list) => list,
            None => vec![args.str("addr")?.to_string()],
        };
        let api_key = args.opt_str("api_key")?;
        let client_name = args.opt_str("name")?;
        if let Some(previous) = self.actors.remove(&name) {
            previous.close().await;
        }
        let mut builder = Client::builder();
        if !args.opt_bool("reconnect")?.unwrap_or(false) {
            builder = builder.reconnect(ReconnectPolicy::disabled());
        }
        if let Some(key) = api_key {
            builder = builder.api_key(key);
        }
        if let Some(client_name) = client_name {
            builder = builder.name(client_name);
        }
        if let Some(capacity) = args.opt_u64("subscription_capacity")? {
            builder = builder.subscription_capacity(capacity as usize);
        }
        // The runner's TLS mode: a `tls://` address and the test CA.
        if let Some(ca) = args.opt_str("tls_ca")? {
            builder = builder.tls(blipmq::tls::TlsOptions {
                ca: Some(blipmq::tls::Pem::File(ca.into())),
                ..Default::default()
            });
        }
        let client = builder
            .connect(addresses)
            .await
            .map_err(|e| Failure::from_sdk(&e))?;
        let events = Box::pin(client.events());
        self.actors.insert(
            name,
            Actor {
                client,
                subscriptions: HashMap::new(),
                unacked: HashMap::new(),
                events,
            },
        );
        Ok(json!({}))
    }
}

fn no_client(name: &str) -> Failure {
    Failure::new(CLIENT_CLOSED, format!("actor `{name}` has no client"))
}

fn hello() -> Value {
    json!({
        "sdk": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": ["pubsub", "headers", "qos1", "events", "tls", "addresses", "job_queue"],
    })
}

fn qos(args: &Args) -> Result<Qos, Failure> {
    match args.opt_u64("qos")? {
        None => Ok(Qos::default()),
        Some(value) => u8::try_from(value)
            .ok()
            .and_then(Qos::from_wire)
            .ok_or_else(|| Failure::invalid(format!("qos {value} is not 0 or 1"))),
    }
}

async fn publish(actor: &Actor, args: &Args) -> Result<Value, Failure> {
    let topic = args.str("topic")?;
    let payload = args.bytes("payload")?;
    let ttl_ms = match args.opt_u64("ttl_ms")? {
        None => 0,
        Some(ttl) => u32::try_from(ttl)
            .map_err(|_| Failure::invalid(format!("ttl_ms {ttl} does not fit in 32 bits")))?,
    };
    let options = PublishOptions {
        ttl_ms,
        qos: qos(args)?,
        headers: args.headers()?.into_iter().collect(),
    };
    let message_id = actor
        .client
        .publish_with(topic, payload, options)
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    Ok(match message_id {
        Some(id) => json!({ "message_id": id.to_string() }),
        None => json!({}),
    })
}

async fn subscribe(actor: &mut Actor, args: &Args) -> Result<Value, Failure> {
    let sub = args.str("sub")?;
    let pattern = args.str("pattern")?;
    let options = SubscribeOptions {
        qos: qos(args)?,
        durable: args.opt_str("durable")?.map(str::to_owned),
        group: args.opt_str("group")?.map(str::to_owned),
        ack_timeout: args.opt_u64("ack_timeout_ms")?.map(Duration::from_millis),
        max_deliveries: match args.opt_u64("max_deliveries")? {
            None => 0,
            Some(max) => u32::try_from(max).map_err(|_| {
                Failure::invalid(format!("max_deliveries {max} does not fit in 32 bits"))
            })?,
        },
    };
    let subscription = actor
        .client
        .subscribe_with(pattern, options)
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    // A name used again names the new subscription; the old one is dropped,
    // which unsubscribes it.
    actor.subscriptions.insert(sub.to_owned(), subscription);
    Ok(json!({}))
}

async fn flush(actor: &Actor) -> Result<Value, Failure> {
    actor
        .client
        .flush()
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    Ok(json!({}))
}

async fn unsubscribe(actor: &mut Actor, args: &Args) -> Result<Value, Failure> {
    let sub = args.str("sub")?;
    let subscription = actor
        .subscriptions
        .remove(sub)
        .ok_or_else(|| Failure::invalid(format!("no subscription `{sub}`")))?;
    subscription
        .unsubscribe()
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    Ok(json!({}))
}

/// Up to `count` messages, waiting at most `timeout_ms` in all. A message is
/// taken from the subscription only when it is returned, so one that arrives
/// after the deadline stays queued for the next `receive`. Discards come as
/// the crate reports them: in each message's `dropped_before`, and as a
/// `Dropped` event when no message has followed them.
async fn receive(actor: &mut Actor, args: &Args) -> Result<Value, Failure> {
    let sub = args.str("sub")?;
    let count = args.u64("count")?;
    let count_dropped = args.opt_bool("count_dropped")?.unwrap_or(false);
    let timeout_ms = args.u64("timeout_ms")?.min(MAX_RECEIVE_WAIT_MS);
    let subscription = actor
        .subscriptions
        .get_mut(sub)
        .ok_or_else(|| Failure::invalid(format!("no subscription `{sub}`")))?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut messages = Vec::new();
    let mut dropped = 0;
    let counted = |messages: &Vec<Value>, dropped: u64| {
        messages.len() as u64 + if count_dropped { dropped } else { 0 }
    };
    while counted(&messages, dropped) < count {
        // `timeout_at` polls the subscription before the timer, so what is
        // already buffered is returned even once the deadline has passed.
        let message = match tokio::time::timeout_at(deadline, subscription.next_event()).await {
            Ok(Some(SubscriptionEvent::Message(message))) => message,
            Ok(Some(SubscriptionEvent::Dropped(count))) => {
                dropped += count;
                continue;
            }
            // The client closed and the buffer is drained, or time is up.
            Ok(None) | Err(_) => break,
        };
        dropped += message.dropped_before();
        messages.push(json!({
            "delivery_id": message.delivery_id().to_string(),
            "topic": message.topic(),
            "payload": encode_bytes(message.payload()),
            "id": message.id().to_string(),
            "timestamp_ms": message.timestamp_ms().to_string(),
            "delivery_count": message.delivery_count(),
            "headers": message
                .headers()
                .iter()
                .map(|(key, value)| json!({ "key": key, "value": encode_bytes(value) }))
                .collect::<Vec<_>>(),
            "dropped_before": message.dropped_before(),
        }));
        if message.delivery_id() != 0 {
            actor
                .unacked
                .insert((sub.to_string(), message.delivery_id()), message);
        }
    }
    Ok(json!({
        "messages": messages,
        "dropped": dropped,
        "dropped_total": subscription.dropped(),
    }))
}

/// The actor's events since its connect or the last `events`, in order,
/// up to the first of kind `until` (or until `timeout_ms` passes), leaving
/// out failed reconnect attempts (how many there are depends on timing).
async fn events(actor: &mut Actor, args: &Args) -> Result<Value, Failure> {
    let until = args.str("until")?;
    let timeout_ms = args.u64("timeout_ms")?.min(MAX_RECEIVE_WAIT_MS);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, actor.events.next()).await {
        let event = match event {
            ClientEvent::ServerError { code, .. } => {
                json!({ "kind": "server_error", "code": code.0 })
            }
            ClientEvent::Disconnected { .. } => json!({ "kind": "disconnected" }),
            ClientEvent::Connected { .. } => json!({ "kind": "reconnected" }),
            ClientEvent::Closed => json!({ "kind": "closed" }),
            ClientEvent::ReconnectFailed { .. } => continue,
        };
        let done = event["kind"] == until;
        events.push(event);
        if done {
            break;
        }
    }
    Ok(json!({ "events": events }))
}

/// Ack a message `receive` returned, by its delivery id.
async fn ack(actor: &mut Actor, args: &Args) -> Result<Value, Failure> {
    let sub = args.str("sub")?;
    let delivery_id: u64 = args
        .str("delivery_id")?
        .parse()
        .map_err(|_| Failure::invalid("`delivery_id` must be a decimal string"))?;
    let message = actor
        .unacked
        .remove(&(sub.to_string(), delivery_id))
        .ok_or_else(|| Failure::invalid(format!("no unacked delivery {delivery_id} on `{sub}`")))?;
    message.ack().await.map_err(|e| Failure::from_sdk(&e))?;
    Ok(json!({}))
}

/// `nak` (with `delay_ms`), `term` or `in_progress` of a message `receive`
/// returned. After a nak or a term the message is not this consumer's any
/// more (a redelivery comes back through `receive`); in progress, it still is.
async fn settle(actor: &mut Actor, op: &str, args: &Args) -> Result<Value, Failure> {
    let sub = args.str("sub")?;
    let delivery_id: u64 = args
        .str("delivery_id")?
        .parse()
        .map_err(|_| Failure::invalid("`delivery_id` must be a decimal string"))?;
    let key = (sub.to_string(), delivery_id);
    let message = if op == "in_progress" {
        actor.unacked.get(&key).cloned()
    } else {
        actor.unacked.remove(&key)
    }
    .ok_or_else(|| Failure::invalid(format!("no unacked delivery {delivery_id} on `{sub}`")))?;
    let sent = match op {
        "nak" => {
            let delay = Duration::from_millis(args.opt_u64("delay_ms")?.unwrap_or(0));
            message.nak_with_delay(delay).await
        }
        "term" => message.term().await,
        _ => message.in_progress().await,
    };
    sent.map_err(|e| Failure::from_sdk(&e))?;
    Ok(json!({}))
}
