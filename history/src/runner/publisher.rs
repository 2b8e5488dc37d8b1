//! A QoS 1 publisher: bursts of pipelined publishes (many unconfirmed at
//! once) to random topics, with payload sizes from tiny to a third of a
//! segment, until told to stop. Every publish is recorded before it is sent
//! and settles as confirmed, refused or indeterminate; none is ever retried,
//! so a key is published at most once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blipmq::{Client, Headers, PublishError, PublishErrorKind, PublishOptions, Qos};
use blipmq_history::{payload, Event, Key};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use crate::recorder::Recorder;
use crate::session;
use crate::workload::TOPICS;
use crate::Shared;

/// The run's publishes, shared by all publishers: at most `total`, spread
/// over the run's duration so that a long run keeps publishing to its end
/// (and its history fits in memory) while bursts stay possible.
pub struct Budget {
    total: u64,
    taken: AtomicU64,
    start: Instant,
    spread: Duration,
}

/// What a publisher may do now.
enum Allowance {
    Publish,
    /// Not yet: the run's rate is used up for the moment.
    Later,
    /// Never again: the run's total is used up.
    Exhausted,
}

impl Budget {
    pub fn new(total: u64, spread: Duration) -> Budget {
        Budget {
            total,
            taken: AtomicU64::new(0),
            start: Instant::now(),
            spread,
        }
    }

    fn take(&self) -> Allowance {
        let elapsed = self.start.elapsed().as_secs_f64() / self.spread.as_secs_f64().max(1.0);
        // A fiftieth up front, then the rest at an even rate.
        let allowed = (self.total / 50 + (self.total as f64 * elapsed) as u64).min(self.total);
        let taken = self
            .taken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < allowed).then_some(n + 1)
            });
        match taken {
            Ok(_) => Allowance::Publish,
            Err(n) if n >= self.total => Allowance::Exhausted,
            Err(_) => Allowance::Later,
        }
    }
}

pub struct Publisher {
    pub index: u16,
    pub name: &'static str,
    pub in_flight: usize,
    /// Largest body; a record must fit in a log segment.
    pub max_body: usize,
    pub rng: SmallRng,
    pub budget: Arc<Budget>,
    pub shared: Shared,
}

/// How a settled publish affects its session.
enum Settled {
    Fine,
    /// The connection is gone: the session is over.
    Lost,
}

impl Publisher {
    /// Publish until stopped; returns how many publishes were sent.
    pub async fn run(mut self) -> u32 {
        let mut seq = 0;
        let mut addresses = self.shared.addresses.clone();
        let stop = self.shared.stop.clone();
        loop {
            let Some(client) = session::connect(self.name, &mut addresses, &stop).await else {
                return seq;
            };
            let exhausted = self.session(&client, &mut seq).await;
            client.close().await;
            if exhausted {
                stop.cancelled().await;
                return seq;
            }
        }
    }

    /// One connection's worth of publishing. Returns whether the run's
    /// budget of messages is used up.
    async fn session(&mut self, client: &Client, seq: &mut u32) -> bool {
        // Each session has its own shape: how deep the pipeline, how long
        // the pauses between bursts.
        let window = self.rng.gen_range(1..=self.in_flight);
        let max_pause_ms = *[0u64, 1, 5, 20, 60].choose(&mut self.rng).unwrap();
        let stop = self.shared.stop.clone();
        let mut in_flight = FuturesUnordered::new();
        let mut lost = false;
        let mut exhausted = false;
        let mut next_burst = Instant::now();
        loop {
            let sending = !lost && !exhausted && !stop.is_cancelled();
            if sending && in_flight.len() < window && Instant::now() >= next_burst {
                let burst = self.rng.gen_range(1..=window - in_flight.len());
                let mut pause = Duration::from_millis(self.rng.gen_range(0..=max_pause_ms));
                for _ in 0..burst {
                    match self.budget.take() {
                        Allowance::Publish => {}
                        Allowance::Later => {
                            pause = pause.max(Duration::from_millis(50));
                            break;
                        }
                        Allowance::Exhausted => {
                            exhausted = true;
                            break;
                        }
                    }
                    *seq += 1;
                    let key = Key::new(self.index, *seq);
                    let topic = *TOPICS.choose(&mut self.rng).unwrap();
                    let body = payload::encode(key, topic, self.body_len());
                    self.recorder().record(Event::Publish { key, topic });
                    in_flight.push(publish(client, key, topic, body));
                }
                next_burst = Instant::now() + pause;
                continue;
            }
            if !sending && in_flight.is_empty() {
                return exhausted;
            }
            tokio::select! {
                Some((key, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Settled::Lost = self.settle(key, result) {
                        lost = true;
                    }
                }
                () = tokio::time::sleep_until(next_burst), if sending && in_flight.len() < window => {}
                () = stop.cancelled(), if sending => {}
            }
        }
    }

    fn settle(&self, key: Key, result: Result<Option<u64>, PublishError>) -> Settled {
        let recorder = self.recorder();
        match result {
            Ok(Some(message_id)) => {
                recorder.record(Event::Confirmed { key, message_id });
                Settled::Fine
            }
            Ok(None) => {
                recorder.anomaly(format!("QoS 1 publish of {key} resolved without a confirm"));
                recorder.record(Event::Indeterminate { key });
                Settled::Fine
            }
            Err(e) => match e.kind() {
                PublishErrorKind::Rejected => {
                    recorder.record(Event::PublishFailed {
                        key,
                        code: e.code().0,
                    });
                    Settled::Fine
                }
                PublishErrorKind::TimedOut => {
                    recorder.record(Event::Indeterminate { key });
                    Settled::Fine
                }
                PublishErrorKind::Disconnected | PublishErrorKind::Closed => {
                    recorder.record(Event::Indeterminate { key });
                    Settled::Lost
                }
                // Refused before sending: a bug in this runner, not the
                // broker; it was never sent, so it must never arrive.
                _ => {
                    recorder.anomaly(format!("publish of {key} refused by the client: {e}"));
                    recorder.record(Event::PublishFailed {
                        key,
                        code: e.code().0,
                    });
                    Settled::Fine
                }
            },
        }
    }

    /// Mostly small bodies, some large: several messages share a segment,
    /// and some take a good part of one.
    fn body_len(&mut self) -> usize {
        let len = match self.rng.gen_range(0..100) {
            0..70 => self.rng.gen_range(0..200),
            70..95 => self.rng.gen_range(200..2000),
            _ => self.rng.gen_range(2000..6000),
        };
        len.min(self.max_body)
    }

    fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }
}

async fn publish(
    client: &Client,
    key: Key,
    topic: &'static str,
    body: Vec<u8>,
) -> (Key, Result<Option<u64>, PublishError>) {
    let mut headers = Headers::new();
    headers.append(payload::KEY_HEADER, payload::key_header(key));
    let options = PublishOptions {
        qos: Qos::AtLeastOnce,
        headers,
        ttl_ms: 0,
    };
    (key, client.publish_with(topic, body, options).await)
}
