//! A reference model of the durable queues, checked by proptest: random QoS
//! 1 publishes, consumers attaching, taking deliveries, acking (also nak,
//! term and in-progress, none of which may lose a message) and detaching, forced redeliveries, injected disk faults, clean restarts,
//! kills and power losses, on the simulated disk (`wal::sim`), compared after
//! every restart with what each queue must and may still keep.
//!
//! For each queue the model holds the confirmed messages it has not had
//! acked (which it MUST keep, DUR-1) and the messages it MAY keep: acked
//! ones (an ack is logged without waiting for an fsync, DUR-5) and
//! publishes whose outcome was an error (not confirmed, but maybe written).
//! After a restart every queue keeps all it must and nothing it may not.
//!
//! `PROPTEST_CASES=2000 cargo test -p blipmq-broker --lib durable_model` for
//! a longer run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::topic;
use proptest::prelude::*;

use super::*;
use crate::config::OverflowPolicy;
use crate::outbox::Outbox;
use crate::wal::sim::{errno, Fault, Op, SimStorage};

const QUEUES: [(&str, &str, QueueKind); 3] = [
    ("all", "t.>", QueueKind::Durable),
    ("only-b", "t.b", QueueKind::Durable),
    ("workers", "t.*", QueueKind::Group),
];
const TOPICS: [&str; 4] = ["t.a", "t.b", "t.c.d", "u.x"];

#[derive(Debug, Clone, Copy)]
enum Crash {
    Clean,
    Kill,
    PowerLoss,
}

#[derive(Debug, Clone)]
enum Step {
    Publish {
        topic: usize,
    },
    Attach {
        queue: usize,
    },
    Detach {
        queue: usize,
    },
    /// The consumer's connection sends it everything queued for it.
    Take {
        queue: usize,
    },
    Ack {
        queue: usize,
        which: usize,
    },
    /// A nak of a taken delivery, at once or with a delay.
    Nak {
        queue: usize,
        which: usize,
        delayed: bool,
    },
    /// A term: the message waits for the dead-letter task, which the model
    /// never runs, so the queue keeps it.
    Term {
        queue: usize,
        which: usize,
    },
    InProgress {
        queue: usize,
        which: usize,
    },
    /// Every delivery's ack is overdue.
    Redeliver,
    Fault {
        op: usize,
        times: u64,
    },
    ClearFaults,
    Restart(Crash),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..TOPICS.len()).prop_map(|topic| Step::Publish { topic }),
        3 => (0..QUEUES.len()).prop_map(|queue| Step::Attach { queue }),
        1 => (0..QUEUES.len()).prop_map(|queue| Step::Detach { queue }),
        4 => (0..QUEUES.len()).prop_map(|queue| Step::Take { queue }),
        6 => (0..QUEUES.len(), 0..64usize).prop_map(|(queue, which)| Step::Ack { queue, which }),
        2 => (0..QUEUES.len(), 0..64usize, any::<bool>())
            .prop_map(|(queue, which, delayed)| Step::Nak { queue, which, delayed }),
        1 => (0..QUEUES.len(), 0..64usize).prop_map(|(queue, which)| Step::Term { queue, which }),
        1 => (0..QUEUES.len(), 0..64usize)
            .prop_map(|(queue, which)| Step::InProgress { queue, which }),
        1 => Just(Step::Redeliver),
        2 => (0..FAULTS.len(), 1u64..4).prop_map(|(op, times)| Step::Fault { op, times }),
        1 => Just(Step::ClearFaults),
        1 => prop_oneof![Just(Crash::Clean), Just(Crash::Kill), Just(Crash::PowerLoss)]
            .prop_map(Step::Restart),
    ]
}

const FAULTS: [(Op, i32); 6] = [
    (Op::Write, errno::EIO),
    (Op::Sync, errno::EIO),
    (Op::Write, errno::ENOSPC),
    (Op::Create, errno::EMFILE),
    (Op::Remove, errno::EPERM),
    (Op::SyncDir, errno::EIO),
];

#[derive(Default)]
struct QueueModel {
    /// Confirmed and not acked: must be kept.
    must: BTreeSet<u64>,
    /// Acked, or not confirmed: may be kept.
    may: BTreeSet<u64>,
    consumer: Option<Arc<Subscription>>,
    /// Deliveries the consumer took and has not acked: (delivery id, id).
    taken: Vec<(Lsn, u64)>,
}

struct Harness {
    sim: SimStorage,
    durable: Durable,
    _dead: mpsc::UnboundedReceiver<DeadLetter>,
    queues: Vec<QueueModel>,
    next_id: u64,
    next_consumer: u64,
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        ack_timeout: Duration::from_secs(30),
        max_deliveries: 0,
        max_in_flight: 8,
        max_queues: 100,
        limits: QueueLimits::default(),
    }
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        max_bytes: 0,
        ..WalConfig::new("/data/wal")
    }
}

async fn open(sim: &SimStorage) -> (Durable, mpsc::UnboundedReceiver<DeadLetter>) {
    // Faults a step left may hit the start; an operator's restart loop
    // would try again.
    for _ in 0..10 {
        match Durable::open_with(config(), settings(), Arc::new(sim.clone())).await {
            Ok(opened) => return opened,
            Err(_) => sim.clear_faults(),
        }
    }
    panic!("the durable store never opened");
}

fn message(id: u64, topic: &str) -> MessageRef {
    let mut encoder = blipmq_protocol::Encoder::new();
    let payload = format!("message {id}");
    Arc::new(QueuedMessage {
        delivery: encoder.shared_delivery(topic, payload.as_bytes(), &[], id, 0),
        published_at: std::time::Instant::now(),
        expires_at: None,
        message_id: id,
        trace_id: None,
        charge: Default::default(),
    })
}

impl Harness {
    async fn new(seed: u64) -> Harness {
        let sim = SimStorage::new(seed);
        let (durable, dead) = open(&sim).await;
        for (name, pattern, kind) in QUEUES {
            durable.prepare(name, pattern, kind).await.expect("prepare");
        }
        Harness {
            sim,
            durable,
            _dead: dead,
            queues: QUEUES.iter().map(|_| QueueModel::default()).collect(),
            next_id: 0,
            next_consumer: 0,
        }
    }

    async fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Publish { topic } => {
                let topic = TOPICS[topic];
                self.next_id += 1;
                let id = self.next_id;
                let message = message(id, topic);
                let confirmed = match self.durable.submit(&message).await {
                    Ok((pending, hold)) => match pending.await {
                        Ok(lsn) => {
                            self.durable.stored(lsn, topic, message, hold);
                            true
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                for (i, (_, pattern, _)) in QUEUES.iter().enumerate() {
                    if topic::matches(pattern, topic) {
                        let model = &mut self.queues[i];
                        if confirmed {
                            model.must.insert(id);
                        } else {
                            model.may.insert(id);
                        }
                    }
                }
            }
            Step::Attach { queue } => {
                if self.queues[queue].consumer.is_none() {
                    self.next_consumer += 1;
                    let (name, pattern, kind) = QUEUES[queue];
                    let group = (kind == QueueKind::Group).then(|| name.to_string());
                    let consumer = Arc::new(Subscription::new(
                        self.next_consumer,
                        pattern.into(),
                        64,
                        OverflowPolicy::DropNew,
                        Outbox::new(),
                        Some(name.into()),
                        group,
                    ));
                    self.durable.attach(name, consumer.clone());
                    self.queues[queue].consumer = Some(consumer);
                }
            }
            Step::Detach { queue } => {
                let model = &mut self.queues[queue];
                if let Some(consumer) = model.consumer.take() {
                    self.durable.detach(QUEUES[queue].0, &consumer);
                    model.taken.clear();
                }
            }
            Step::Take { queue } => {
                let model = &mut self.queues[queue];
                if let Some(consumer) = &model.consumer {
                    while let Some(queued) = consumer.pop() {
                        let id = queued.message.message_id;
                        prop_assert!(
                            model.must.contains(&id) || model.may.contains(&id),
                            "queue {} delivered message {id}, which it does not keep",
                            QUEUES[queue].0
                        );
                        model.taken.push((queued.delivery_id, id));
                    }
                }
            }
            Step::Ack { queue, which } => {
                let model = &mut self.queues[queue];
                if let (Some(consumer), false) = (&model.consumer, model.taken.is_empty()) {
                    let (lsn, id) = model.taken.remove(which % model.taken.len());
                    let outcome = self.durable.ack(QUEUES[queue].0, consumer.id, lsn);
                    if outcome == AckOutcome::Acked {
                        model.must.remove(&id);
                        model.may.insert(id);
                    }
                }
            }
            Step::Nak {
                queue,
                which,
                delayed,
            } => {
                let model = &mut self.queues[queue];
                if let (Some(consumer), false) = (&model.consumer, model.taken.is_empty()) {
                    let (lsn, _) = model.taken.remove(which % model.taken.len());
                    let delay = Duration::from_secs(if delayed { 60 } else { 0 });
                    self.durable.nak(QUEUES[queue].0, consumer.id, lsn, delay);
                }
            }
            Step::Term { queue, which } => {
                let model = &mut self.queues[queue];
                if let (Some(consumer), false) = (&model.consumer, model.taken.is_empty()) {
                    let (lsn, _) = model.taken.remove(which % model.taken.len());
                    self.durable.term(QUEUES[queue].0, consumer.id, lsn);
                }
            }
            Step::InProgress { queue, which } => {
                let model = &self.queues[queue];
                if let (Some(consumer), false) = (&model.consumer, model.taken.is_empty()) {
                    let (lsn, _) = model.taken[which % model.taken.len()];
                    self.durable.in_progress(QUEUES[queue].0, consumer.id, lsn);
                }
            }
            Step::Redeliver => {
                self.durable
                    .redeliver_overdue(Instant::now() + Duration::from_secs(3600));
            }
            Step::Fault { op, times } => {
                let (op, errno) = FAULTS[op];
                self.sim.inject(Fault::new(op, errno).times(times));
            }
            Step::ClearFaults => self.sim.clear_faults(),
            Step::Restart(how) => self.restart(how).await?,
        }
        Ok(())
    }

    async fn restart(&mut self, how: Crash) -> Result<(), TestCaseError> {
        match how {
            Crash::Clean => {}
            Crash::Kill => self.sim.crash(),
            Crash::PowerLoss => self.sim.power_loss(),
        }
        for model in &mut self.queues {
            model.consumer = None;
            model.taken.clear();
        }
        let (fresh, dead) = {
            // The old store goes first: it holds the directory's lock.
            let placeholder = open_placeholder().await;
            let old = std::mem::replace(&mut self.durable, placeholder.0);
            drop(old);
            self.sim.restart();
            open(&self.sim).await
        };
        self.durable = fresh;
        self._dead = dead;
        self.check()
    }

    /// Every queue keeps all it must and nothing it may not; what came back
    /// must be acked again.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let state = self.durable.state.lock();
        for (i, (name, _, _)) in QUEUES.iter().enumerate() {
            let queue = state.queues.get(name);
            prop_assert!(queue.is_some(), "queue {name} is gone");
            let kept: BTreeSet<u64> = queue
                .expect("checked")
                .kept_lsns()
                .into_iter()
                .map(|lsn| state.store.message(lsn).message_id)
                .collect();
            let model = &mut self.queues[i];
            let lost: Vec<&u64> = model.must.difference(&kept).collect();
            prop_assert!(
                lost.is_empty(),
                "queue {name} lost confirmed, unacked messages {lost:?}"
            );
            let extra: Vec<&u64> = kept
                .iter()
                .filter(|id| !model.must.contains(id) && !model.may.contains(id))
                .collect();
            prop_assert!(
                extra.is_empty(),
                "queue {name} keeps messages it never had {extra:?}"
            );
            for id in &kept {
                model.may.remove(id);
            }
            model.must = kept;
        }
        Ok(())
    }
}

/// A store on a disk of its own, to stand in while the real one restarts.
async fn open_placeholder() -> (Durable, mpsc::UnboundedReceiver<DeadLetter>) {
    Durable::open_with(config(), settings(), Arc::new(SimStorage::new(0)))
        .await
        .expect("an empty store")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn durable_model_queues_keep_every_confirmed_unacked_message(
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 1..100),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut harness = Harness::new(seed).await;
            for step in steps {
                harness.run(step).await?;
            }
            harness.sim.clear_faults();
            harness.restart(Crash::PowerLoss).await
        })?;
    }
}
