//! The nemesis: a thread that, at seeded random times, SIGKILLs and
//! restarts the broker (sometimes again during recovery, sometimes several
//! times in a row, sometimes the moment its log's files change: a segment
//! deleted by retention or a new one begun), freezes it with SIGSTOP for a
//! while, or restarts it cleanly with SIGTERM. Every fault ends with the
//! broker running again, so stopping the nemesis leaves a healthy broker.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::recorder::Recorder;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Freeze,
    Terminate,
    FreezeThenKill,
    KillDuringRecovery,
    KillBurst,
    KillWhenFilesChange,
}

impl Fault {
    fn pick(rng: &mut SmallRng) -> Fault {
        match rng.gen_range(0..100) {
            0..25 => Fault::Kill,
            25..40 => Fault::Freeze,
            40..55 => Fault::Terminate,
            55..65 => Fault::FreezeThenKill,
            65..75 => Fault::KillDuringRecovery,
            75..85 => Fault::KillBurst,
            _ => Fault::KillWhenFilesChange,
        }
    }
}

pub struct Nemesis {
    pub broker: Arc<Broker>,
    pub recorder: Arc<Recorder>,
    pub rng: SmallRng,
    /// The broker's log directory, watched for files coming and going.
    pub wal_dir: PathBuf,
    /// Cancelled when the broker cannot be brought back: the run is over.
    pub fatal: CancellationToken,
}

impl Nemesis {
    /// Run until `stop` is sent to or dropped, on a thread of its own.
    pub fn spawn(self) -> (mpsc::Sender<()>, std::thread::JoinHandle<u32>) {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nemesis".into())
            .spawn(move || self.run(stopped))
            .expect("spawn the nemesis thread");
        (stop, thread)
    }

    /// Returns how many faults it caused.
    fn run(mut self, stopped: mpsc::Receiver<()>) -> u32 {
        let mut faults = 0;
        loop {
            // The wait before the next fault is the only interruptible part:
            // a fault, once begun, always ends with the broker running.
            let gap = Duration::from_millis(self.rng.gen_range(200..3_000));
            if !matches!(
                stopped.recv_timeout(gap),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return faults;
            }
            if let Some(exit) = self.broker.exited_by_itself() {
                self.recorder.anomaly(exit);
                if !self.restart() {
                    return faults;
                }
            }
            let fault = Fault::pick(&mut self.rng);
            println!("[{:7.3}s] nemesis: {fault:?}", self.recorder.seconds());
            faults += 1;
            if !self.cause(fault) {
                return faults;
            }
        }
    }

    /// False when the broker could not be brought back.
    fn cause(&mut self, fault: Fault) -> bool {
        match fault {
            Fault::Kill => {
                self.broker.kill();
                self.pause(0..800);
                self.restart()
            }
            Fault::Freeze => {
                self.broker.freeze();
                // Now and then longer than the clients' request timeout.
                let long = self.rng.gen_ratio(1, 10);
                self.pause(if long { 5_000..7_000 } else { 50..4_000 });
                self.broker.thaw();
                true
            }
            Fault::Terminate => {
                if let Err(e) = self.broker.terminate() {
                    self.recorder.anomaly(format!("clean stop: {e}"));
                }
                self.pause(0..300);
                self.restart()
            }
            Fault::FreezeThenKill => {
                self.broker.freeze();
                self.pause(50..1_500);
                self.broker.kill();
                self.restart()
            }
            Fault::KillDuringRecovery => {
                self.broker.kill();
                let after = Duration::from_millis(self.rng.gen_range(0..80));
                if let Err(e) = self.broker.kill_while_starting(after) {
                    self.recorder.anomaly(e);
                }
                self.restart()
            }
            Fault::KillWhenFilesChange => {
                self.wait_for_files_to_change(Duration::from_secs(3));
                // At once, or a moment into the file work that follows.
                if self.rng.gen_bool(0.5) {
                    let micros = self.rng.gen_range(0..3_000);
                    std::thread::sleep(Duration::from_micros(micros));
                }
                self.broker.kill();
                self.restart()
            }
            Fault::KillBurst => {
                for _ in 0..self.rng.gen_range(2..=4) {
                    self.broker.kill();
                    if !self.restart() {
                        return false;
                    }
                    self.pause(0..300);
                }
                true
            }
        }
    }

    fn restart(&self) -> bool {
        match self.broker.start() {
            Ok(()) => true,
            Err(e) => {
                self.recorder.anomaly(e);
                self.fatal.cancel();
                false
            }
        }
    }

    /// Poll the log directory until its set of files changes (retention
    /// deleted a segment, or the log began a new one), or `limit` passes:
    /// a kill then lands in the middle of the file work, where a log is
    /// most fragile.
    fn wait_for_files_to_change(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let before = files(&self.wal_dir);
        while Instant::now() < deadline && files(&self.wal_dir) == before {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn pause(&mut self, range_ms: std::ops::Range<u64>) {
        std::thread::sleep(Duration::from_millis(self.rng.gen_range(range_ms)));
    }
}

fn files(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect()
        })
        .unwrap_or_default()
}
