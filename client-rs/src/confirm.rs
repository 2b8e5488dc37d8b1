//! The second half of a publish: the broker's confirm, awaited apart from
//! queueing the message, so that many can be in flight in call order.

use std::sync::Arc;

use futures::channel::oneshot;

use crate::error::PublishError;
use crate::state::{Inner, Reply};

/// A queued publish, waiting for the broker's confirm (from
/// [`crate::Client::submit_publish`]). Dropping it stops nothing: the
/// message is sent either way, and a confirm nobody waits for is ignored.
#[must_use = "a QoS 1 publish is only known to be stored once `confirmed` resolves"]
pub struct PublishConfirm {
    /// `None` at QoS 0: nothing to wait for.
    awaiting: Option<Awaiting>,
}

struct Awaiting {
    inner: Arc<Inner>,
    publish_id: u64,
    reply: oneshot::Receiver<Reply>,
}

impl std::fmt::Debug for PublishConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfirm")
            .field("publish_id", &self.awaiting.as_ref().map(|a| a.publish_id))
            .finish()
    }
}

impl PublishConfirm {
    /// A QoS 0 publish, done once queued.
    pub(crate) fn queued() -> PublishConfirm {
        PublishConfirm { awaiting: None }
    }

    pub(crate) fn awaiting(
        inner: &Arc<Inner>,
        publish_id: u64,
        reply: oneshot::Receiver<Reply>,
    ) -> PublishConfirm {
        PublishConfirm {
            awaiting: Some(Awaiting {
                inner: Arc::clone(inner),
                publish_id,
                reply,
            }),
        }
    }

    /// Whether there is a confirm to wait for (QoS 1).
    pub fn is_qos1(&self) -> bool {
        self.awaiting.is_some()
    }

    /// The broker's message id once it has stored the message (QoS 1,
    /// within the request timeout, counted from this call); `None` at
    /// QoS 0, at once.
    pub async fn confirmed(self) -> Result<Option<u64>, PublishError> {
        let Some(awaiting) = self.awaiting else {
            return Ok(None);
        };
        let message_id = awaiting
            .inner
            .await_reply(awaiting.publish_id, awaiting.reply)
            .await?;
        Ok(Some(message_id))
    }
}
