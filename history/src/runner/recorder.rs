//! The run's log: every event, timestamped, in one order all actors share;
//! and the anomalies that are not about messages (a broker that would not
//! start, or exited by itself, a drain that never went quiet).

use std::sync::Mutex;
use std::time::Instant;

use blipmq_history::{Event, Record};

pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Record>>,
    anomalies: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            anomalies: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, event: Event) {
        let mut events = self.events.lock().unwrap();
        // Stamped under the lock, so timestamps never go backwards along
        // the history's order.
        let at_us = self.start.elapsed().as_micros() as u64;
        events.push(Record::new(at_us, event));
    }

    pub fn anomaly(&self, what: String) {
        eprintln!("blipmq-history: anomaly at {:.3}s: {what}", self.seconds());
        self.anomalies.lock().unwrap().push(what);
    }

    /// Seconds since the run began, for progress lines.
    pub fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn take_events(&self) -> Vec<Record> {
        std::mem::take(&mut self.events.lock().unwrap())
    }

    pub fn anomalies(&self) -> Vec<String> {
        self.anomalies.lock().unwrap().clone()
    }
}
