//! A running testee process and the request/reply exchange with it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
pub struct TesteeSpec {
    pub name: String,
    pub command: Vec<String>,
    /// How the SDK names its error classes: `{}` stands for the stem the
    /// error table gives each code (e.g. `"{}Error"`). Testees that report
    /// an error's `class` are held to it; see judge.rs.
    #[serde(default)]
    pub error_class: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TesteeList {
    pub testee: Vec<TesteeSpec>,
}

/// What `hello` told us.
#[derive(Debug, Clone)]
pub struct Hello {
    pub sdk: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

/// A reply, as the contract defines it.
#[derive(Debug, Clone)]
pub enum Reply {
    Ok(Value),
    Err {
        code: i64,
        message: String,
        /// The SDK's class of the error, when the testee reports it.
        class: Option<String>,
    },
    Skipped(String),
}

pub struct Testee {
    pub name: String,
    /// The spec's `error_class` pattern.
    pub error_class: Option<String>,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    next_id: u64,
}

/// Lines of a testee's stderr kept for failure reports.
const STDERR_TAIL_LINES: usize = 20;

impl Testee {
    pub fn spawn(spec: &TesteeSpec) -> Result<Testee, String> {
        // `{target}` is cargo's target directory, so that testee commands
        // work with CARGO_TARGET_DIR set.
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
        let command: Vec<String> = spec
            .command
            .iter()
            .map(|part| part.replace("{target}", &target))
            .collect();
        let (program, args) = command
            .split_first()
            .ok_or_else(|| format!("testee {} has an empty command", spec.name))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start testee {} ({program}): {e}", spec.name))?;
        // Keep the end of the testee's log for failure reports instead of
        // interleaving every testee's stderr with the matrix.
        let stderr = child.stderr.take().expect("piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                if log.len() == STDERR_TAIL_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Testee {
            name: spec.name.clone(),
            error_class: spec.error_class.clone(),
            child,
            stdin,
            lines,
            log,
            next_id: 1,
        })
    }

    /// The last lines the testee wrote to stderr, indented, for a report.
    pub fn stderr_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        if log.is_empty() {
            return String::new();
        }
        let lines: Vec<String> = log.iter().map(|l| format!("      | {l}")).collect();
        format!("\n    testee stderr (last lines):\n{}", lines.join("\n"))
    }

    pub fn hello(&mut self) -> Result<Hello, String> {
        match self.request(None, "hello", json!({}), Duration::from_secs(20))? {
            Reply::Ok(v) => Ok(Hello {
                sdk: v["sdk"].as_str().unwrap_or_default().to_string(),
                version: v["version"].as_str().unwrap_or_default().to_string(),
                capabilities: v["capabilities"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            other => Err(format!("hello answered {other:?}")),
        }
    }

    /// Send one request and wait for its reply. `Err` means the testee broke
    /// the contract (crashed, hung, answered garbage or the wrong id).
    pub fn request(
        &mut self,
        actor: Option<&str>,
        op: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let mut request = json!({ "id": id, "op": op, "args": args });
        if let Some(actor) = actor {
            request["actor"] = Value::String(actor.to_string());
        }
        let line = format!("{request}\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("testee {} stopped reading: {e}", self.name))?;
        let answer = match self.lines.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "testee {} did not answer {op} within {timeout:?}",
                    self.name
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("testee {} exited during {op}", self.name))
            }
        };
        let reply: Value = serde_json::from_str(&answer)
            .map_err(|e| format!("testee {} wrote non-JSON {answer:?}: {e}", self.name))?;
        if reply["id"] != Value::String(id.clone()) {
            return Err(format!(
                "testee {} answered id {} to request {id}",
                self.name, reply["id"]
            ));
        }
        if let Some(ok) = reply.get("ok") {
            return Ok(Reply::Ok(ok.clone()));
        }
        if let Some(err) = reply.get("err") {
            return Ok(Reply::Err {
                code: err["code"].as_i64().unwrap_or(-1),
                message: err["message"].as_str().unwrap_or_default().to_string(),
                class: err["class"].as_str().map(str::to_string),
            });
        }
        if let Some(why) = reply.get("skipped") {
            return Ok(Reply::Skipped(why.as_str().unwrap_or_default().to_string()));
        }
        Err(format!(
            "testee {} reply has no ok, err or skipped: {answer}",
            self.name
        ))
    }
}

impl Drop for Testee {
    fn drop(&mut self) {
        // Closing stdin asks it to exit; a testee that lingers is killed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
