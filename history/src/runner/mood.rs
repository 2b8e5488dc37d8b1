//! The consumers' shared mood, which a conductor task changes at seeded
//! random times. While calm, every consumer stays attached and acks each
//! message at once, so every queue is caught up and the log's retention may
//! release everything up to the newest message: the moment a message that
//! is confirmed but not yet handed to its queues is most at risk. While
//! mixed, each consumer follows its own manner (late and missing acks,
//! stalls, detaches), so queues pile up and are then released in bulk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

#[derive(Default)]
pub struct Mood {
    calm: AtomicBool,
}

impl Mood {
    pub fn is_calm(&self) -> bool {
        self.calm.load(Ordering::Relaxed)
    }

    /// Alternate calm (from the start, when every queue is empty) and mixed
    /// spells until `stop`.
    pub async fn conduct(&self, mut rng: SmallRng, recorder: &Recorder, stop: CancellationToken) {
        let mut calm = true;
        loop {
            self.calm.store(calm, Ordering::Relaxed);
            println!(
                "[{:7.3}s] consumers: {}",
                recorder.seconds(),
                if calm { "calm" } else { "mixed" }
            );
            let spell = Duration::from_millis(rng.gen_range(2_000..8_000));
            tokio::select! {
                () = tokio::time::sleep(spell) => calm = !calm,
                () = stop.cancelled() => return,
            }
        }
    }
}
