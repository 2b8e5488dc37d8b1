//! The real `blipmq` binary as a child process on 127.0.0.1 port 0, its log
//! in a directory that outlives it, and every way the run mistreats it:
//! SIGKILL, SIGTERM, SIGSTOP/SIGCONT, a kill while it recovers. Each change
//! is recorded in the history and published to the clients as the address
//! to connect to (`None` while it is down): a restart gets a new port.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use blipmq_history::Event;
use tokio::sync::watch;

use crate::recorder::Recorder;

/// Recovering a log made of thousands of small segments takes a debug build
/// a while; longer than this is reported as a failure to start.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// A clean stop that takes longer than this is reported (then killed).
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// How to start the broker, the same way every time.
pub struct BrokerSpec {
    pub bin: PathBuf,
    /// Its stderr, appended to across restarts.
    pub log: PathBuf,
    /// `BLIPMQ_*` settings; nothing else from the runner's environment
    /// reaches the broker.
    pub env: Vec<(&'static str, String)>,
}

pub struct Broker {
    spec: BrokerSpec,
    state: Mutex<State>,
    address: watch::Sender<Option<SocketAddr>>,
    recorder: Arc<Recorder>,
}

#[derive(Default)]
struct State {
    child: Option<Child>,
    /// Between SIGSTOP and SIGCONT.
    frozen: bool,
    starts: u32,
}

impl Broker {
    pub fn new(spec: BrokerSpec, recorder: Arc<Recorder>) -> Broker {
        Broker {
            spec,
            state: Mutex::new(State::default()),
            address: watch::Sender::new(None),
            recorder,
        }
    }

    /// Where clients should connect now; changes with every (re)start.
    pub fn addresses(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.address.subscribe()
    }

    /// Start it and wait for its readiness line.
    pub fn start(&self) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        assert!(state.child.is_none(), "start while running");
        let (mut child, ready) = self.spawn(&mut state)?;
        match ready.recv_timeout(READY_WITHIN) {
            Ok(addr) => {
                let pid = child.id();
                state.child = Some(child);
                self.recorder.record(Event::BrokerStarted { pid });
                self.address.send_replace(Some(addr));
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!(
                    "the broker did not start within {READY_WITHIN:?} ({status}); its log ends:\n{}",
                    self.log_tail()
                ))
            }
        }
    }

    /// SIGKILL: no shutdown path runs. Works on a frozen broker too.
    pub fn kill(&self) {
        let mut state = self.state.lock().unwrap();
        self.address.send_replace(None);
        if let Some(mut child) = state.child.take() {
            // A broker that already died would otherwise pass for killed.
            if let Ok(Some(status)) = child.try_wait() {
                self.recorder.anomaly(format!(
                    "the broker exited by itself ({status}); its log ends:\n{}",
                    self.log_tail()
                ));
            }
            let _ = child.kill();
            let _ = child.wait();
            self.recorder.record(Event::BrokerKilled);
        }
        state.frozen = false;
    }

    /// Start a broker and SIGKILL it `after` later, ready or not: a crash
    /// in the middle of recovery.
    pub fn kill_while_starting(&self, after: Duration) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        assert!(state.child.is_none(), "start while running");
        let (mut child, _ready) = self.spawn(&mut state)?;
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
        self.recorder.record(Event::BrokerKilled);
        Ok(())
    }

    /// SIGTERM and wait for a clean exit. Err says what went wrong (it did
    /// not exit in time and was killed, or exited with a failure).
    pub fn terminate(&self) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        self.address.send_replace(None);
        let Some(mut child) = state.child.take() else {
            return Ok(());
        };
        if std::mem::take(&mut state.frozen) {
            signal(&child, libc::SIGCONT);
            self.recorder.record(Event::BrokerContinued);
        }
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + EXIT_WITHIN;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break Ok(()),
                Ok(Some(status)) => break Err(format!("exited with {status} after SIGTERM")),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "did not exit within {EXIT_WITHIN:?} of SIGTERM (killed)"
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(format!("cannot wait for it: {e}")),
            }
        };
        self.recorder.record(Event::BrokerTerminated);
        outcome
    }

    /// SIGSTOP: frozen with its sockets open; clients see silence, not a close.
    pub fn freeze(&self) {
        let mut state = self.state.lock().unwrap();
        let State { child, frozen, .. } = &mut *state;
        if let Some(child) = child {
            if !*frozen {
                signal(child, libc::SIGSTOP);
                *frozen = true;
                self.recorder.record(Event::BrokerStopped);
            }
        }
    }

    pub fn thaw(&self) {
        let mut state = self.state.lock().unwrap();
        let State { child, frozen, .. } = &mut *state;
        if let Some(child) = child {
            if std::mem::take(frozen) {
                signal(child, libc::SIGCONT);
                self.recorder.record(Event::BrokerContinued);
            }
        }
    }

    /// If the broker exited without being told to, how (and it is then
    /// considered down).
    pub fn exited_by_itself(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap();
        let status = state.child.as_mut()?.try_wait().ok()??;
        state.child = None;
        state.frozen = false;
        self.address.send_replace(None);
        Some(format!(
            "the broker exited by itself ({status}); its log ends:\n{}",
            self.log_tail()
        ))
    }

    /// Spawn with stdout piped; the receiver gets the address from the
    /// readiness line (and nothing if the broker dies first).
    fn spawn(&self, state: &mut State) -> Result<(Child, mpsc::Receiver<SocketAddr>), String> {
        state.starts += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(|e| format!("cannot open {}: {e}", self.spec.log.display()))?;
        let stderr = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", self.spec.log.display()))?;
        let _ = writeln!(
            &log,
            "--- blipmq-history: start {} at {:.3}s",
            state.starts,
            self.recorder.seconds()
        );
        let mut child = Command::new(&self.spec.bin)
            .env_clear()
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.spec.bin.display()))?;
        // The pid ties the history's BrokerStarted to this part of the log.
        let _ = writeln!(
            &log,
            "--- blipmq-history: start {} is pid {}",
            state.starts,
            child.id()
        );
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                if let Some(addr) = parse_ready(&line) {
                    let _ = tx.send(addr);
                }
            }
            // Keep draining, so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        Ok((child, rx))
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.spec.log) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Broker {
    /// Never leave a broker behind, whatever ended the run.
    fn drop(&mut self) {
        if let Ok(state) = self.state.get_mut() {
            if let Some(child) = state.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet, so the
    // pid cannot have been reused by another process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// `blipmq ready clients=ADDR metrics=...`
fn parse_ready(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("blipmq ready clients=")?;
    rest.split_whitespace().next()?.parse().ok()
}
