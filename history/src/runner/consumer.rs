//! A consumer of one stored queue during the faults. While the consumers'
//! mood is calm (see `mood.rs`) it acks everything at once and stays
//! attached. Otherwise each attachment follows a manner: mostly diligent,
//! sometimes sloppy (acks some late, after the broker's ack timeout, when
//! the message has maybe been sent again; some never, so the broker must
//! send them again; stalls while holding its credit); and now and then it
//! drops its subscription and attaches again, or closes its connection.

use std::sync::Arc;
use std::time::Duration;

use blipmq::{Client, Message, Subscription};
use blipmq_history::{Detach, Event, Key};
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::delivery;
use crate::mood::Mood;
use crate::recorder::Recorder;
use crate::session;
use crate::workload::QueuePlan;
use crate::Shared;

/// How one attachment treats its messages, in percent.
#[derive(Debug, Clone, Copy)]
struct Manner {
    ack_late: u32,
    ack_never: u32,
    stall: u32,
}

/// Everyone, while the mood is calm.
const PROMPT: Manner = Manner {
    ack_late: 0,
    ack_never: 0,
    stall: 0,
};

const DILIGENT: Manner = Manner {
    ack_late: 1,
    ack_never: 1,
    stall: 0,
};

const SLOPPY: Manner = Manner {
    ack_late: 15,
    ack_never: 15,
    stall: 1,
};

pub struct Consumer {
    pub name: &'static str,
    pub plan: &'static QueuePlan,
    pub ack_timeout: Duration,
    pub rng: SmallRng,
    pub shared: Shared,
    pub mood: Arc<Mood>,
    /// Told once this consumer first attached: its queue then exists.
    pub attached: Option<oneshot::Sender<()>>,
}

impl Consumer {
    pub async fn run(mut self) {
        let stop = self.shared.stop.clone();
        let mut addresses = self.shared.addresses.clone();
        // Acks waiting for their time; aborted when the consumer stops.
        let mut late_acks = JoinSet::new();
        while let Some(client) = session::connect(self.name, &mut addresses, &stop).await {
            self.session(&client, &mut late_acks).await;
            client.close().await;
            if stop.is_cancelled() {
                break;
            }
            tokio::time::sleep(self.absence()).await;
        }
        late_acks.shutdown().await;
    }

    /// Attach, consume, detach, maybe attach again, on one connection.
    async fn session(&mut self, client: &Client, late_acks: &mut JoinSet<()>) {
        let stop = self.shared.stop.clone();
        loop {
            let recorder = &self.shared.recorder;
            let Some(subscription) =
                session::attach(client, self.name, self.plan, recorder, &stop).await
            else {
                return;
            };
            if let Some(attached) = self.attached.take() {
                let _ = attached.send(());
            }
            let manner = if self.rng.gen_ratio(3, 4) {
                DILIGENT
            } else {
                SLOPPY
            };
            let why = self.consume(subscription, manner, late_acks).await;
            self.shared.recorder.record(Event::ConsumerDetached {
                consumer: self.name,
                queue: self.plan.name,
                why,
            });
            if why != Detach::Unsubscribed || stop.is_cancelled() {
                return;
            }
            tokio::time::sleep(self.absence()).await;
        }
    }

    /// Take messages until it is time to detach; the subscription is
    /// dropped on return (detached, not deleted: the queue keeps its
    /// messages).
    async fn consume(
        &mut self,
        mut subscription: Subscription,
        manner: Manner,
        late_acks: &mut JoinSet<()>,
    ) -> Detach {
        let stop = self.shared.stop.clone();
        let mut detach_at =
            Instant::now() + Duration::from_millis(self.rng.gen_range(1_000..10_000));
        loop {
            tokio::select! {
                message = subscription.next_message() => match message {
                    Some(message) => {
                        let manner = if self.mood.is_calm() { PROMPT } else { manner };
                        self.take(message, manner, late_acks).await;
                    }
                    None => return Detach::ConnectionLost,
                },
                () = tokio::time::sleep_until(detach_at) => {
                    if self.mood.is_calm() {
                        // Stay: a calm queue keeps up.
                        detach_at = Instant::now() + Duration::from_millis(self.rng.gen_range(500..3_000));
                        continue;
                    }
                    return if self.rng.gen_bool(0.5) { Detach::Unsubscribed } else { Detach::Closed };
                }
                () = stop.cancelled() => return Detach::Closed,
            }
        }
    }

    async fn take(&mut self, message: Message, manner: Manner, late_acks: &mut JoinSet<()>) {
        let recorder = self.shared.recorder.clone();
        let (consumer, queue) = (self.name, self.plan.name);
        let key = delivery::record(&recorder, consumer, queue, &message);
        let roll = self.rng.gen_range(0..100);
        if roll < manner.ack_late {
            // Up to twice the ack timeout: often the broker has sent it
            // again (maybe to the other group member) by then.
            let after = self.random_up_to(self.ack_timeout * 2);
            late_acks.spawn(late_ack(recorder, consumer, queue, key, message, after));
        } else if roll >= manner.ack_late + manner.ack_never {
            delivery::ack(&recorder, consumer, queue, key, &message).await;
        }
        // Otherwise never acked: the broker must send it again.
        if self.rng.gen_range(0..100) < manner.stall {
            // Sit on the credit held; the queue must redeliver elsewhere or later.
            let stall = self.random_up_to(self.ack_timeout * 2);
            tokio::time::sleep(stall).await;
        }
        // Reap finished late acks so the set stays small.
        while late_acks.try_join_next().is_some() {}
    }

    /// How long to stay away between attachments: mostly a moment; now and
    /// then long enough for the queue to pile up and a fault to pass.
    fn absence(&mut self) -> Duration {
        let ms = if self.rng.gen_ratio(1, 5) {
            self.rng.gen_range(1_000..4_000)
        } else {
            self.rng.gen_range(0..500)
        };
        Duration::from_millis(ms)
    }

    fn random_up_to(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.rng.gen_range(0..=max.as_millis() as u64))
    }
}

async fn late_ack(
    recorder: Arc<Recorder>,
    consumer: &'static str,
    queue: &'static str,
    key: Option<Key>,
    message: Message,
    after: Duration,
) {
    tokio::time::sleep(after).await;
    delivery::ack(&recorder, consumer, queue, key, &message).await;
}
