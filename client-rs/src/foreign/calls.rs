//! Calls from a thread that cannot wait, in call order.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use crate::batch::PublishBatch;
use crate::client::Client;
use crate::confirm::PublishConfirm;
use crate::error::{Failure, PublishError, PublishErrorKind, RequestError};
use crate::options::PublishOptions;
use crate::transport::{BoxFuture, MaybeSend};

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
        let now =
            self.now(|client| client.try_submit_publish(&topic, payload.clone(), options.clone()))?;
        if let Some(confirm) = now {
            return Ok(Publishing::Queued(confirm));
        }
        Ok(Publishing::InOrder(self.in_line(
            move |client| async move { client.submit_publish(&topic, payload, options).await },
        )))
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
        self.now(|client| client.try_submit_publish(topic, payload, options))?
            .ok_or_else(crate::client::queue_full)
    }

    /// Queue every message of `batch` in call order and empty it: `None`
    /// when queued on the spot, else a future that resolves once queued.
    pub fn publish_batch(
        &self,
        batch: &mut PublishBatch,
    ) -> Result<Option<BoxFuture<'static, Result<(), PublishError>>>, PublishError> {
        if self
            .now(|client| client.try_publish_batch(batch))?
            .is_some()
        {
            return Ok(None);
        }
        // The batch waits its turn; the caller gets a new one.
        let batch = std::mem::replace(batch, self.client.batch());
        Ok(Some(self.in_line(move |client| async move {
            client.publish_batch(batch).await
        })))
    }

    /// `attempt` on the spot when no call waits before it: `Some` of its
    /// output, or `None` when it must wait its turn instead (calls are
    /// waiting, or it found the outgoing queue full and sent nothing).
    fn now<T>(
        &self,
        attempt: impl FnOnce(&Client) -> Result<T, PublishError>,
    ) -> Result<Option<T>, PublishError> {
        if !self.is_idle() {
            return Ok(None);
        }
        match attempt(&self.client) {
            Ok(done) => Ok(Some(done)),
            Err(e) if e.kind() == PublishErrorKind::QueueFull => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`CallQueue::in_order`] for a send: a stopped queue is `ClientClosed`.
    fn in_line<T, F, Fut>(&self, work: F) -> BoxFuture<'static, Result<T, PublishError>>
    where
        T: MaybeSend + 'static,
        F: FnOnce(Client) -> Fut + MaybeSend + 'static,
        Fut: Future<Output = Result<T, PublishError>> + MaybeSend + 'static,
    {
        let queued = self.in_order(work);
        Box::pin(async move { queued.await.unwrap_or_else(|| Err(publish_queue_stopped())) })
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
