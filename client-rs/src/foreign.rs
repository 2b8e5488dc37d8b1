//! What every foreign-language binding needs and a Rust user does not: the
//! logic the Python, Node, browser and Kotlin/Swift bindings share, so that
//! each of them is only an adapter to its runtime and its idiom.
//!
//! - [`ConnectOptions`]: the flat options record every binding takes, turned
//!   into a [`ClientBuilder`] in one place.
//! - [`SharedSubscription`]: a subscription that many callers may hold at
//!   once (a foreign object is shared, never owned), with a cancel-safe
//!   `next_batch(max, timeout)`, `try_next_batch`, `unsubscribe` and
//!   `detach`. A foreign runtime may drop a pending call at any time (a
//!   Python task cancelled, a Kotlin coroutine cancelled, a JS promise
//!   nobody awaits): no message is lost when it does.
//!
//! - [`CallQueue`]: calls made on a thread that cannot wait (JavaScript's)
//!   carried out in call order: a publish is queued on the spot when
//!   nothing waits before it, and otherwise behind the calls before it,
//!   waiting only for its place in the outgoing queue (never for a
//!   confirm), so QoS 1 publishes are in flight together.
//!
//! Nothing here depends on a runtime: timeouts go through the client's own
//! [`crate::transport::Runtime`], so the same code serves tokio and the
//! browser.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::lock::Mutex;
use futures::StreamExt;

use crate::batch::PublishBatch;
use crate::client::{Client, ClientBuilder};
use crate::confirm::PublishConfirm;
use crate::error::{Failure, PublishError, PublishErrorKind, RequestError};
use crate::message::Message;
use crate::options::{PublishOptions, ReconnectPolicy};
use crate::subscription::Subscription;
use crate::transport::{BoxFuture, MaybeSend};

/// How a binding connects: every field optional, as a foreign caller gives
/// them (a keyword argument, a JS options object, a Kotlin data class).
/// `None` keeps [`crate::ClientOptions`]' default.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub api_key: Option<String>,
    pub name: Option<String>,
    /// `Some(false)` turns reconnecting off; the default reconnects.
    pub reconnect: Option<bool>,
    pub connect_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub subscription_capacity: Option<usize>,
    pub outgoing_capacity: Option<usize>,
}

impl ConnectOptions {
    /// `builder` with these options applied (a binding starts from
    /// [`crate::Client::builder`] and connects with its own transport).
    pub fn apply(self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(key) = self.api_key {
            builder = builder.api_key(key);
        }
        if let Some(name) = self.name {
            builder = builder.name(name);
        }
        if self.reconnect == Some(false) {
            builder = builder.reconnect(ReconnectPolicy::disabled());
        }
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            builder = builder.request_timeout(timeout);
        }
        if let Some(capacity) = self.subscription_capacity {
            builder = builder.subscription_capacity(capacity);
        }
        if let Some(capacity) = self.outgoing_capacity {
            builder = builder.outgoing_capacity(capacity);
        }
        builder
    }
}

/// A [`Subscription`] for callers that share it. Clones are handles to the
/// same subscription. Readers take turns (one `next_batch` at a time, in
/// the order they asked); `unsubscribe` and `detach` wake a reader that is
/// waiting, so neither ever waits for a message that may never come.
#[derive(Clone)]
pub struct SharedSubscription {
    shared: Arc<Shared>,
}

struct Shared {
    pattern: String,
    /// `None` once unsubscribed or detached.
    slot: Mutex<Option<Subscription>>,
    /// Closed to wake readers: the subscription is ending.
    stop: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Ending by `detach`: the reader holding the lock drops the
    /// subscription on its way out (an `unsubscribe` takes it instead, to
    /// tell the broker).
    detached: AtomicBool,
}

impl std::fmt::Debug for SharedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSubscription")
            .field("pattern", &self.shared.pattern)
            .field("ended", &self.is_ended())
            .finish()
    }
}

impl From<Subscription> for SharedSubscription {
    fn from(subscription: Subscription) -> SharedSubscription {
        SharedSubscription::new(subscription)
    }
}

impl SharedSubscription {
    // On wasm32 a subscription is neither Send nor Sync, and there is one
    // thread: the Arc is only for sharing.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn new(subscription: Subscription) -> SharedSubscription {
        SharedSubscription {
            shared: Arc::new(Shared {
                pattern: subscription.pattern().to_owned(),
                slot: Mutex::new(Some(subscription)),
                stop: async_channel::bounded(1),
                detached: AtomicBool::new(false),
            }),
        }
    }

    /// The topic or pattern it was made with.
    pub fn pattern(&self) -> &str {
        &self.shared.pattern
    }

    /// Whether `unsubscribe` or `detach` was called.
    pub fn is_ended(&self) -> bool {
        self.shared.stop.0.is_closed()
    }

    /// Wait for one message (at most `timeout`, when given), then take up to
    /// `max` in all from what is already buffered.
    ///
    /// `Some` of an empty batch when the time passed (or `max` is 0); `None`
    /// once the subscription has ended: unsubscribed, detached, or the
    /// client closed and its buffer drained. Cancel-safe: a call dropped
    /// while it waits has taken no message.
    pub async fn next_batch(&self, max: usize, timeout: Option<Duration>) -> Option<Vec<Message>> {
        let shared = &self.shared;
        let mut guard = shared.slot.lock().await;
        if self.is_ended() {
            // Ended while this call waited for its turn.
            shared.finish(&mut guard);
            return None;
        }
        let subscription = guard.as_mut()?;
        if max == 0 {
            return Some(Vec::new());
        }
        let timer = timeout.map(|timeout| subscription.sleep(timeout));
        let woken = {
            let next = subscription.next_message();
            let stop = shared.stop.1.recv();
            let timer = match timer {
                Some(timer) => Either::Left(timer),
                None => Either::Right(future::pending()),
            };
            futures::pin_mut!(next, stop);
            // A message that is ready wins over the stop and the timeout.
            match future::select(next, future::select(stop, timer)).await {
                Either::Left((message, _)) => Woken::Message(message),
                Either::Right((Either::Left(_stopped), _)) => Woken::Stopped,
                Either::Right((Either::Right(((), _)), _)) => Woken::TimedOut,
            }
        };
        let first = match woken {
            Woken::Message(message) => message,
            Woken::Stopped => {
                shared.finish(&mut guard);
                return None;
            }
            Woken::TimedOut => return Some(Vec::new()),
        };
        // `None`: the client closed and the buffer is drained.
        let first = first?;
        let subscription = guard.as_mut()?;
        let mut batch = Vec::with_capacity(max.min(1024));
        batch.push(first);
        batch.extend(subscription.try_next_batch(max - 1));
        Some(batch)
    }

    /// Up to `max` messages that are buffered now, without waiting. Empty
    /// when there are none, when another caller is reading, or when the
    /// subscription has ended (`next_batch` tells which). Saves a trip
    /// through a foreign runtime while messages stream in.
    pub fn try_next_batch(&self, max: usize) -> Vec<Message> {
        if self.is_ended() {
            return Vec::new();
        }
        match self.shared.slot.try_lock() {
            Some(mut guard) => guard
                .as_mut()
                .map(|subscription| subscription.try_next_batch(max))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded and a durable subscription is deleted with
    /// every message it held. A waiting `next_batch` returns `None`. A
    /// second call (or one after `detach`) does nothing.
    pub async fn unsubscribe(&self) -> Result<(), RequestError> {
        self.shared.stop.0.close();
        let taken = self.shared.slot.lock().await.take();
        match taken {
            Some(subscription) => subscription.unsubscribe().await,
            None => Ok(()),
        }
    }

    /// Stop receiving without deleting anything, without waiting: a plain
    /// subscription ends, a durable one keeps its unacked messages for the
    /// next subscribe with its name (what dropping a [`Subscription`]
    /// does). A waiting `next_batch` returns `None`.
    pub fn detach(&self) {
        self.shared.detached.store(true, Ordering::Release);
        self.shared.stop.0.close();
        // A reader holding the lock drops the subscription itself on its
        // way out (it sees `stop` and `detached`).
        if let Some(mut guard) = self.shared.slot.try_lock() {
            guard.take();
        }
    }
}

/// What ended a reader's wait.
enum Woken {
    Message(Option<Message>),
    Stopped,
    TimedOut,
}

impl Shared {
    /// A reader leaving because the subscription ended: after a `detach`
    /// the subscription goes now (no one else may come for it); after an
    /// `unsubscribe` it stays for that call to take.
    fn finish(&self, slot: &mut Option<Subscription>) {
        if self.detached.load(Ordering::Acquire) {
            slot.take();
        }
    }
}

/// A call waiting its turn in a [`CallQueue`].
#[cfg(not(target_arch = "wasm32"))]
type Job = Box<dyn FnOnce(Client) -> BoxFuture<'static, ()> + Send>;
#[cfg(target_arch = "wasm32")]
type Job = Box<dyn FnOnce(Client) -> BoxFuture<'static, ()>>;

/// Calls from a thread that cannot wait, carried out in call order.
///
/// JavaScript calls `publish` many times without awaiting and expects the
/// messages to go out in call order, and `flush` or `close` to come after
/// them. Each call's future would be a task of its own, and a task that
/// waits for room in the outgoing queue could be overtaken by a later one;
/// so a call that cannot be done on the spot is queued here and carried out
/// by one task, one after the other. A publish is done once it is queued
/// for sending: its confirm is awaited apart.
pub struct CallQueue {
    client: Client,
    jobs: mpsc::UnboundedSender<Job>,
    /// Jobs sent and not yet done: a call may skip the queue only when
    /// none waits before it.
    queued: Arc<AtomicUsize>,
}

/// How [`CallQueue::publish`] went: queued already, or waiting its turn.
pub enum Publishing {
    /// Queued for sending on the spot.
    Queued(PublishConfirm),
    /// Queued behind earlier calls: resolves once queued for sending.
    InOrder(BoxFuture<'static, Result<PublishConfirm, PublishError>>),
}

impl CallQueue {
    /// A queue for `client`'s calls; its task runs on the client's runtime
    /// and ends when the `CallQueue` is dropped (after the calls queued).
    pub fn new(client: Client) -> CallQueue {
        let (jobs, mut queue) = mpsc::unbounded::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let pump = {
            let (client, queued) = (client.clone(), Arc::clone(&queued));
            async move {
                while let Some(job) = queue.next().await {
                    job(client.clone()).await;
                    // Release: what the job queued is visible to a call
                    // that sees 0.
                    queued.fetch_sub(1, Ordering::Release);
                }
            }
        };
        client.runtime().spawn(Box::pin(pump));
        CallQueue {
            client,
            jobs,
            queued,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether no call waits in the queue: a call may then be done on the
    /// spot without overtaking any.
    pub fn is_idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    /// Run `work` after every call queued before it. The future resolves
    /// with its output, or with `None` when the queue stopped first (the
    /// binding's client went away): see [`queue_stopped`].
    pub fn in_order<T, F, Fut>(&self, work: F) -> impl Future<Output = Option<T>> + 'static
    where
        T: MaybeSend + 'static,
        F: FnOnce(Client) -> Fut + MaybeSend + 'static,
        Fut: Future<Output = T> + MaybeSend + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                let _ = done.send(work(client).await);
            })
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.unbounded_send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        async move { result.await.ok() }
    }

    /// Publish in call order: queued on the spot when no call waits before
    /// it and the outgoing queue has room, else queued behind the calls
    /// before it. Fails at once when the publish is invalid (topic, size,
    /// headers) or the client is closed.
    pub fn publish(
        &self,
        topic: String,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<Publishing, PublishError> {
        if self.is_idle() {
            match self
                .client
                .try_submit_publish(&topic, payload.clone(), options.clone())
            {
                Ok(confirm) => return Ok(Publishing::Queued(confirm)),
                Err(e) if e.kind() == PublishErrorKind::QueueFull => {}
                Err(e) => return Err(e),
            }
        }
        let queued = self.in_order(move |client| async move {
            client.submit_publish(&topic, payload, options).await
        });
        Ok(Publishing::InOrder(Box::pin(async move {
            queued.await.unwrap_or_else(|| Err(publish_queue_stopped()))
        })))
    }

    /// Publish on the spot or not at all: `QueueFull` (402) when the
    /// outgoing queue is full or calls wait before this one (it would
    /// overtake them).
    pub fn try_publish_now(
        &self,
        topic: &str,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishConfirm, PublishError> {
        if !self.is_idle() {
            return Err(crate::client::queue_full());
        }
        self.client.try_submit_publish(topic, payload, options)
    }

    /// Queue every message of `batch` in call order and empty it: `None`
    /// when queued on the spot, else a future that resolves once queued.
    pub fn publish_batch(
        &self,
        batch: &mut PublishBatch,
    ) -> Result<Option<BoxFuture<'static, Result<(), PublishError>>>, PublishError> {
        if self.is_idle() {
            match self.client.try_publish_batch(batch) {
                Ok(()) => return Ok(None),
                Err(e) if e.kind() == PublishErrorKind::QueueFull => {}
                Err(e) => return Err(e),
            }
        }
        // The batch waits its turn; the caller gets a new one.
        let batch = std::mem::replace(batch, self.client.batch());
        let queued = self.in_order(move |client| async move { client.publish_batch(batch).await });
        Ok(Some(Box::pin(async move {
            queued.await.unwrap_or_else(|| Err(publish_queue_stopped()))
        })))
    }
}

/// The error of a call whose [`CallQueue`] stopped before carrying it out:
/// `ClientClosed` (603), like any call on a closed client.
pub fn queue_stopped() -> RequestError {
    Failure::Closed.error(QUEUE_STOPPED).into()
}

const QUEUE_STOPPED: &str = "the client's call queue has stopped";

fn publish_queue_stopped() -> PublishError {
    Failure::Closed.error(QUEUE_STOPPED).into()
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;
    use crate::Client;

    /// A broker on a free port with its log in a temporary directory (kept
    /// while the returned guard lives).
    async fn broker() -> (String, tempfile::TempDir) {
        let data = tempfile::tempdir().unwrap();
        let mut config = blipmq_broker::Config::default();
        config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
        config.metrics.enabled = false;
        config.wal.dir = data.path().join("wal");
        let listeners = blipmq_broker::Listeners::bind(&config).await.unwrap();
        let addr = listeners.clients.local_addr().unwrap().to_string();
        tokio::spawn(blipmq_broker::run(
            listeners,
            config,
            std::future::pending(),
        ));
        (addr, data)
    }

    async fn connect(addr: &str) -> Client {
        ConnectOptions {
            name: Some("foreign-test".into()),
            reconnect: Some(false),
            ..ConnectOptions::default()
        }
        .apply(Client::builder())
        .connect(addr)
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_queue_keeps_call_order_when_the_outgoing_queue_is_full() {
        let (addr, _data) = broker().await;
        let client = ConnectOptions {
            outgoing_capacity: Some(1),
            ..ConnectOptions::default()
        }
        .apply(Client::builder())
        .connect(&addr)
        .await
        .unwrap();
        let subscription = SharedSubscription::new(client.subscribe("order").await.unwrap());
        let calls = CallQueue::new(client.clone());
        // Made one after another without waiting, as JavaScript does: the
        // first is queued on the spot, the queue of one is then full, and
        // the rest wait their turn (QoS 0, QoS 1 and batches alike).
        let (mut on_the_spot, mut waiting) = (0, Vec::new());
        for i in 0..60u32 {
            let (topic, payload) = ("order".to_string(), Bytes::from(i.to_string()));
            if i % 10 == 9 {
                let mut batch = client.batch();
                batch.push(&topic, &payload, 0).unwrap();
                match calls.publish_batch(&mut batch).unwrap() {
                    None => on_the_spot += 1,
                    Some(queued) => waiting
                        .push(Box::pin(async move { queued.await.map(|()| None) })
                            as BoxFuture<'static, Result<Option<u64>, PublishError>>),
                }
                assert!(batch.is_empty());
                continue;
            }
            let options = PublishOptions {
                qos: if i % 2 == 0 {
                    crate::Qos::AtLeastOnce
                } else {
                    crate::Qos::AtMostOnce
                },
                ..Default::default()
            };
            match calls.publish(topic, payload, options).unwrap() {
                Publishing::Queued(confirm) => {
                    on_the_spot += 1;
                    waiting.push(Box::pin(confirm.confirmed()));
                }
                Publishing::InOrder(queued) => {
                    waiting.push(Box::pin(async move { queued.await?.confirmed().await }))
                }
            }
        }
        assert_eq!(on_the_spot, 1, "only the first found room");
        let flushed = calls.in_order(|client| async move { client.flush().await });
        for outcome in futures::future::join_all(waiting).await {
            outcome.unwrap();
        }
        flushed.await.expect("carried out").unwrap();
        assert!(calls.is_idle());
        let mut got = Vec::new();
        while got.len() < 60 {
            let batch = subscription
                .next_batch(100, Some(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(!batch.is_empty(), "only {} arrived", got.len());
            got.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8_lossy(m.payload()).into_owned()),
            );
        }
        let expected: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        assert_eq!(got, expected);
        // An invalid publish fails at once, queued or not.
        let error = calls
            .publish("bad topic".into(), Bytes::new(), PublishOptions::default())
            .err()
            .expect("refused");
        assert_eq!(error.code(), crate::ErrorCode::InvalidTopic);
        assert_eq!(queue_stopped().code(), crate::ErrorCode::ClientClosed);
        client.close().await;
    }

    #[tokio::test]
    async fn next_batch_times_out_empty_then_takes_what_is_buffered() {
        let (addr, _data) = broker().await;
        let client = connect(&addr).await;
        let subscription = SharedSubscription::new(client.subscribe("t.>").await.unwrap());
        let empty = subscription
            .next_batch(10, Some(Duration::from_millis(20)))
            .await;
        assert_eq!(empty.map(|b| b.len()), Some(0));
        for i in 0..5 {
            client.publish("t.a", format!("{i}")).await.unwrap();
        }
        client.flush().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            let batch = subscription
                .next_batch(3, Some(Duration::from_secs(5)))
                .await
                .expect("not ended");
            assert!(!batch.is_empty() && batch.len() <= 3, "{}", batch.len());
            got.extend(batch.into_iter().map(|m| m.payload().to_vec()));
        }
        let expected: Vec<Vec<u8>> = (0..5).map(|i| format!("{i}").into_bytes()).collect();
        assert_eq!(got, expected);
        assert_eq!(
            subscription.next_batch(0, None).await.map(|b| b.len()),
            Some(0)
        );
        client.close().await;
    }

    #[tokio::test]
    async fn a_cancelled_next_batch_loses_no_message() {
        let (addr, _data) = broker().await;
        let client = connect(&addr).await;
        let subscription = SharedSubscription::new(client.subscribe("c").await.unwrap());
        // Cancelled while it waits: nothing has arrived, nothing is taken.
        let waiting = subscription.next_batch(10, None);
        assert!(tokio::time::timeout(Duration::from_millis(30), waiting)
            .await
            .is_err());
        client.publish("c", "kept").await.unwrap();
        let batch = subscription
            .next_batch(10, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(&batch[0].payload()[..], b"kept");
        client.close().await;
    }

    #[tokio::test]
    async fn unsubscribe_and_detach_wake_a_waiting_reader() {
        let (addr, _data) = broker().await;
        let client = connect(&addr).await;
        for end in ["unsubscribe", "detach"] {
            let subscription = SharedSubscription::new(client.subscribe("w").await.unwrap());
            let reader = tokio::spawn({
                let subscription = subscription.clone();
                async move { subscription.next_batch(10, None).await }
            });
            tokio::time::sleep(Duration::from_millis(30)).await;
            match end {
                "unsubscribe" => subscription.unsubscribe().await.unwrap(),
                _ => subscription.detach(),
            }
            let woken = tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("the reader was woken")
                .unwrap();
            assert!(woken.is_none(), "{end}");
            assert!(subscription.is_ended());
            assert!(subscription.next_batch(1, None).await.is_none(), "{end}");
            assert!(subscription.try_next_batch(1).is_empty());
            // A second end does nothing.
            subscription.unsubscribe().await.unwrap();
            subscription.detach();
        }
        client.close().await;
    }

    #[tokio::test]
    async fn unsubscribe_while_a_reader_waits_tells_the_broker() {
        // The reader woken by `unsubscribe` must leave the subscription for
        // `unsubscribe` to take and send, rather than drop it (which only
        // detaches): a durable subscription is then deleted, not kept.
        let (addr, _data) = broker().await;
        let client = connect(&addr).await;
        let options = crate::SubscribeOptions {
            qos: crate::Qos::AtLeastOnce,
            durable: Some("jobs".into()),
            ..Default::default()
        };
        let subscription = SharedSubscription::new(
            client
                .subscribe_with("jobs.*", options.clone())
                .await
                .unwrap(),
        );
        let reader = tokio::spawn({
            let subscription = subscription.clone();
            async move { subscription.next_batch(10, None).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        subscription.unsubscribe().await.unwrap();
        assert!(reader.await.unwrap().is_none());
        // Deleted: a message published now is kept by no one, so a new
        // durable subscription with the name starts empty.
        client
            .publish_with(
                "jobs.a",
                "after",
                crate::PublishOptions {
                    qos: crate::Qos::AtLeastOnce,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let again =
            SharedSubscription::new(client.subscribe_with("jobs.*", options).await.unwrap());
        let batch = again
            .next_batch(10, Some(Duration::from_millis(200)))
            .await
            .unwrap();
        assert!(
            batch.is_empty(),
            "the durable subscription outlived unsubscribe"
        );
        client.close().await;
    }
}
