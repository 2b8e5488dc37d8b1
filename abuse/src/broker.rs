//! The real `blipmq` binary as a child process: every listener on
//! 127.0.0.1 port 0, its log directory and config in a temporary directory,
//! and what the abuse cases measure of it (resident memory, open file
//! descriptors, CPU time) read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A debug build recovers an empty log in well under this.
const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct Broker {
    child: Child,
    pub clients: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub websocket: Option<SocketAddr>,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Start `bin` with `extra` appended to a config that binds every
    /// listener to port 0 (a case's own sections: `[server]` keys go in
    /// `server`, anything else as whole sections in `sections`).
    pub fn start(bin: &Path, server: &str, sections: &str) -> Result<Broker, String> {
        Broker::start_with_wal(bin, server, "", sections)
    }

    /// [`Broker::start`] with `wal` added to the `[wal]` section (whose
    /// `dir` is the case's scratch directory).
    pub fn start_with_wal(
        bin: &Path,
        server: &str,
        wal_keys: &str,
        sections: &str,
    ) -> Result<Broker, String> {
        Broker::start_with_env(bin, server, wal_keys, sections, &[])
    }

    /// [`Broker::start_with_wal`] with environment variables for the
    /// process (e.g. `TOKIO_WORKER_THREADS=1`: the runtime of a broker on
    /// one core, where a blocked worker is the whole runtime).
    pub fn start_with_env(
        bin: &Path,
        server: &str,
        wal_keys: &str,
        sections: &str,
        env: &[(&str, &str)],
    ) -> Result<Broker, String> {
        let dir = tempfile::Builder::new()
            .prefix("blipmq-abuse-")
            .tempdir_in(scratch_dir())
            .map_err(|e| format!("cannot make a scratch directory: {e}"))?;
        let wal = dir.path().join("wal");
        let config = format!(
            "[server]\nbind_addr = \"127.0.0.1:0\"\n{server}\n\n\
             [metrics]\nbind_addr = \"127.0.0.1:0\"\n\n\
             [websocket]\nbind_addr = \"127.0.0.1:0\"\n\n\
             [wal]\ndir = {wal:?}\n{wal_keys}\n\n{sections}\n"
        );
        let config_path = dir.path().join("blipmq.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("cannot write config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("broker.log"))
            .map_err(|e| format!("cannot create the broker log: {e}"))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut broker = Broker {
            child,
            clients: "0.0.0.0:0".parse().expect("literal"),
            metrics: None,
            websocket: None,
            dir,
        };
        let line = rx.recv_timeout(READY_WITHIN).map_err(|_| {
            format!(
                "the broker did not start within {READY_WITHIN:?}; its log:\n{}",
                broker.log_tail()
            )
        })?;
        for field in line.split_whitespace() {
            let parsed = |value: &str| value.parse::<SocketAddr>().ok();
            if let Some(value) = field.strip_prefix("clients=") {
                broker.clients = parsed(value).ok_or_else(|| format!("bad ready line {line:?}"))?;
            } else if let Some(value) = field.strip_prefix("metrics=") {
                broker.metrics = parsed(value);
            } else if let Some(value) = field.strip_prefix("websocket=") {
                broker.websocket = parsed(value);
            }
        }
        Ok(broker)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (a case fails if its attack killed it).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory, bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        status
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024)
    }

    /// CPU time the process has used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The fields after the command name, which is in parentheses and
        // may contain spaces: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // USER_HZ is 100 on every Linux this runs on.
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Everything the broker has logged so far (its stderr, at `warn`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // utime and stime are the 14th and 15th fields of the line, the
        // 12th and 13th after the parenthesised command name.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
    }

    /// The end of the broker's stderr, for a failure report.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On the repository's disk (under the target directory) when there is one,
/// like the history checker: /tmp may be a small tmpfs.
fn scratch_dir() -> PathBuf {
    let dir = std::env::var_os("BLIPMQ_ABUSE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}
