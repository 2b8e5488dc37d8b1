//! The real `blipmq` binary, started per scenario on 127.0.0.1:0, restarted
//! (gracefully or with SIGKILL) on the same ports, and scraped for metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Broker {
    binary: PathBuf,
    env: Vec<(String, String)>,
    data_dir: PathBuf,
    child: Option<Child>,
    pub addr: String,
    pub metrics_addr: String,
    /// The WebSocket listener (for testees of SDKs that speak WebSocket).
    pub websocket_addr: String,
}

impl Broker {
    /// Start the broker with `env` overrides and a fresh data directory.
    pub fn start(
        binary: &Path,
        env: Vec<(String, String)>,
        data_dir: PathBuf,
    ) -> Result<Broker, String> {
        // The broker runs in its data directory, so resolve the path first.
        let binary = binary
            .canonicalize()
            .map_err(|e| format!("broker binary {}: {e}", binary.display()))?;
        let mut broker = Broker {
            binary,
            env,
            data_dir,
            child: None,
            addr: "127.0.0.1:0".to_string(),
            metrics_addr: "127.0.0.1:0".to_string(),
            websocket_addr: "127.0.0.1:0".to_string(),
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| format!("{}: {e}", self.data_dir.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut command = Command::new(&self.binary);
            command
                .current_dir(&self.data_dir)
                .env_remove("RUST_LOG")
                .env("RUST_LOG", "warn")
                .env("BLIPMQ_SERVER_BIND_ADDR", &self.addr)
                .env("BLIPMQ_METRICS_BIND_ADDR", &self.metrics_addr)
                .env("BLIPMQ_WEBSOCKET_BIND_ADDR", &self.websocket_addr)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (key, value) in &self.env {
                command.env(key, value);
            }
            let mut child = command
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
            let stdout = child.stdout.take().expect("piped");
            // Drain stderr all the time (a full pipe would stall the broker),
            // keeping the start of it for error messages.
            let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let stderr = child.stderr.take().expect("piped");
            let sink = stderr_text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut text = sink.lock().unwrap();
                    if text.len() < 16 * 1024 {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            });
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("blipmq ready ") => {
                    for field in line.split_whitespace() {
                        if let Some(a) = field.strip_prefix("clients=") {
                            self.addr = a.to_string();
                        } else if let Some(a) = field.strip_prefix("metrics=") {
                            self.metrics_addr = a.to_string();
                        } else if let Some(a) = field.strip_prefix("websocket=") {
                            self.websocket_addr = a.to_string();
                        }
                    }
                    self.child = Some(child);
                    return Ok(());
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Give the drain thread a moment to collect the last words.
                    std::thread::sleep(Duration::from_millis(50));
                    let stderr = stderr_text.lock().unwrap().clone();
                    // A restart on the same port can race the old socket's
                    // release; retry until the deadline.
                    if Instant::now() < deadline && stderr.contains("in use") {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    return Err(format!("broker did not become ready: {}", stderr.trim()));
                }
            }
        }
    }

    /// SIGTERM, wait for a clean exit, start again on the same ports.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop(libc::SIGTERM)?;
        self.spawn()
    }

    /// SIGKILL, then start again on the same ports.
    pub fn kill_and_restart(&mut self) -> Result<(), String> {
        self.stop(libc::SIGKILL)?;
        self.spawn()
    }

    fn stop(&mut self, signal: i32) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                if signal == libc::SIGTERM && !status.success() {
                    return Err(format!("broker exited with {status} after SIGTERM"));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("broker did not exit within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Result<String, String> {
        let mut stream =
            TcpStream::connect(&self.metrics_addr).map_err(|e| format!("metrics: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        Ok(response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }

    /// The value of one sample, e.g. `blipmq_connections` or
    /// `blipmq_messages_dropped_total{reason="ttl"}`.
    pub fn metric(&self, sample: &str) -> Result<f64, String> {
        let text = self.metrics()?;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("no sample {sample} in /metrics"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
