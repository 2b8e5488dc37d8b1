//! `blipmq-cli` end to end against the real `blipmq` broker binary, each
//! test with its own broker on 127.0.0.1:0. Every wait is bounded and every
//! child process is killed on drop, so a failing test leaves nothing behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use base64::Engine;
use common::{broker_bin, clean_command, CLI};
use rand::RngCore;

/// Until the broker's readiness line or a subscriber's `subscribed to`.
const STARTUP: Duration = Duration::from_secs(30);
/// For a CLI run that should end by itself.
const RUN: Duration = Duration::from_secs(30);

/// A child process, killed (and reaped) on drop.
struct Process {
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    /// stderr line by line as written; all of it is also kept.
    stderr_lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Process {
    fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Process {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            bytes
        });
        let err = child.stderr.take().unwrap();
        let (tx, stderr_lines) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        Process {
            child,
            stdout: Some(stdout),
            stderr_lines,
            stderr: Some(stderr),
        }
    }

    /// Wait for a stderr line containing `needle`; panics after `within`.
    fn wait_for_stderr(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let out = self.finish(Duration::from_secs(5));
                    panic!("no {needle:?} on stderr within {within:?}: {out:?}");
                }
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, not yet reaped, so its pid is ours.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Wait for exit and collect the output; panics (after killing) if the
    /// child has not exited within `within`.
    fn finish(&mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|t| t.join().unwrap());
                panic!("process did not exit within {within:?}; stderr: {stderr:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: self
                .stdout
                .take()
                .map(|t| t.join().unwrap())
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|t| t.join().unwrap())
                .unwrap_or_default(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[track_caller]
    fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "{}; stderr: {}",
            self.status,
            self.stderr
        );
        self
    }

    /// Failed with `code`, saying why in one `blipmq-cli: ` line containing
    /// every needle.
    #[track_caller]
    fn assert_error(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.status.code(), Some(code), "stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("blipmq-cli: "), "{:?}", lines[0]);
        for needle in needles {
            assert!(
                lines[0].contains(needle),
                "{needle:?} not in {:?}",
                lines[0]
            );
        }
    }
}

/// A broker on ephemeral ports; killed on drop.
struct Broker {
    _process: Process,
    addr: String,
    /// The broker's write-ahead log (QoS 1) lives here.
    _data: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Broker {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cmd = clean_command(broker_bin());
        cmd.env("RUST_LOG", "error")
            .env("BLIPMQ_WAL_DIR", data.path().join("wal"))
            .env("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0")
            .env("BLIPMQ_METRICS_BIND_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn blipmq");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the broker never blocks on stdout.
            for _ in lines {}
        });
        let (_, stderr_lines) = mpsc::channel();
        let process = Process {
            child,
            stdout: None,
            stderr_lines,
            stderr: None,
        };
        let line = rx
            .recv_timeout(STARTUP)
            .unwrap_or_else(|e| panic!("no readiness line from blipmq: {e}"));
        let addr = line
            .strip_prefix("blipmq ready clients=")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("not a readiness line: {line:?}"))
            .to_string();
        Broker {
            _process: process,
            addr,
            _data: data,
        }
    }

    /// `blipmq-cli --addr <broker> args...`, not yet waited for.
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(Path::new(CLI));
        cmd.arg("--addr").arg(&self.addr).args(args);
        cmd
    }

    /// Run to exit with `stdin` as input.
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(self.cli(args), stdin)
    }

    /// Start a subscriber and wait until it is subscribed.
    fn subscribe(&self, args: &[&str]) -> Process {
        let mut cmd = self.cli(&["sub"]);
        cmd.args(args);
        let mut process = Process::spawn(cmd, None);
        process.wait_for_stderr("subscribed to", STARTUP);
        process
    }
}

fn run(cmd: Command, stdin: Option<&[u8]>) -> Output {
    Process::spawn(cmd, stdin.map(<[u8]>::to_vec)).finish(RUN)
}

#[test]
fn a_published_text_message_reaches_a_text_subscriber() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["greetings", "--count", "1", "--format", "text"]);
    broker
        .run(&["pub", "greetings", "hello, world"], None)
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "hello, world\n");
    assert_eq!(out.stderr, "subscribed to greetings\n");
}

/// examples/cli/quickstart.sh, run as a user runs it: it prints what every
/// language's quickstart prints (examples/expected-output.txt).
#[test]
fn the_cli_quickstart_example_prints_what_every_example_prints() {
    let broker = Broker::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cli/quickstart.sh");
    let mut cmd = clean_command(Path::new("bash"));
    cmd.arg(script).arg(&broker.addr).env("BLIPMQ_CLI", CLI);
    let out = run(cmd, None);
    out.assert_success();
    assert_eq!(
        out.stdout_text(),
        include_str!("../../examples/expected-output.txt"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn pubfile_is_binary_safe() {
    let broker = Broker::start();
    let mut payload: Vec<u8> = (0..=255u8).collect();
    let mut random = vec![0u8; 8 * 1024];
    rand::thread_rng().fill_bytes(&mut random);
    payload.extend_from_slice(&random);
    payload.extend((0..=255u8).rev());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.bin");
    std::fs::write(&path, &payload).unwrap();

    let mut sub = broker.subscribe(&["files.bin", "--count", "1", "--format", "raw"]);
    broker
        .run(
            &[
                "pubfile",
                "files.bin",
                path.to_str().unwrap(),
                "--ttl",
                "60000",
            ],
            None,
        )
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout.len(), payload.len());
    assert!(out.stdout == payload, "payload differs");
}

#[test]
fn pubfile_of_a_missing_file_fails() {
    let broker = Broker::start();
    broker
        .run(
            &["pubfile", "files.bin", "/nonexistent/blipmq-cli-test"],
            None,
        )
        .assert_error(1, &["cannot read", "/nonexistent/blipmq-cli-test"]);
}

#[test]
fn pub_lines_publishes_each_stdin_line() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["lines", "--count", "5"]);
    broker
        .run(
            &["pub", "--lines", "lines", "-"],
            Some(b"one\ntwo\r\nthree\n\nfive"),
        )
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "one\ntwo\nthree\n\nfive\n");
}

#[test]
fn pub_dash_publishes_all_of_stdin_as_one_message() {
    let broker = Broker::start();
    let input: Vec<u8> = b"line one\nline two\n\x00\xff\xfe binary\n".to_vec();
    let mut sub = broker.subscribe(&["whole", "--count", "1", "--format", "raw"]);
    broker
        .run(&["pub", "whole", "-"], Some(&input))
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout, input);
}

#[test]
fn json_format_has_every_field_and_a_base64_payload() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["json.test", "--count", "2", "--format", "json"]);
    broker
        .run(&["pub", "json.test", "first"], None)
        .assert_success();
    broker
        .run(&["pub", "json.test", "-"], Some(b"\x00\x01\xff"))
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let mut ids = Vec::new();
    for (line, expected) in lines.iter().zip([&b"first"[..], b"\x00\x01\xff"]) {
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(value["topic"], "json.test");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(value["payload"].as_str().expect("payload string"))
            .expect("base64");
        assert_eq!(payload, expected);
        assert!(value["timestamp_ms"].as_u64().expect("timestamp") > 1_600_000_000_000);
        assert_eq!(value["delivery_count"], 1);
        ids.push(value["id"].as_u64().expect("id"));
    }
    assert!(ids[0] < ids[1], "{ids:?}");
}

#[test]
fn headers_from_pub_appear_in_json_output_in_order() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["hdr.test", "--count", "2", "--format", "json"]);
    broker
        .run(
            &[
                "pub",
                "hdr.test",
                "--header",
                "content-type=text/plain",
                "--header",
                "x-tenant=acme",
                "--header",
                "x-tenant=a=b",
                "hello",
            ],
            None,
        )
        .assert_success();
    broker
        .run(&["pub", "hdr.test", "plain"], None)
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    let text = out.stdout_text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        lines[0]["headers"],
        serde_json::json!([
            {"key": "content-type", "value": "text/plain"},
            {"key": "x-tenant", "value": "acme"},
            {"key": "x-tenant", "value": "a=b"},
        ])
    );
    assert_eq!(lines[1]["headers"], serde_json::json!([]));
}

#[test]
fn a_bad_header_is_refused_with_its_code() {
    let broker = Broker::start();
    broker
        .run(&["pub", "t", "--header", "bad key=v", "x"], None)
        .assert_error(1, &["InvalidHeader (304)"]);
    let out = broker.run(&["pub", "t", "--header", "novalue", "x"], None);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn a_wildcard_subscription_gets_matching_topics_only() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["a.*", "--count", "2", "--format", "json"]);
    broker.run(&["pub", "a.one", "1"], None).assert_success();
    broker.run(&["pub", "b.one", "x"], None).assert_success();
    broker
        .run(&["pub", "a.one.deep", "x"], None)
        .assert_success();
    broker.run(&["pub", "a.two", "2"], None).assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    let topics: Vec<String> = out
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["topic"].to_string())
        .collect();
    assert_eq!(topics, ["\"a.one\"", "\"a.two\""]);
}

#[test]
fn ttl_is_accepted() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["ttl.test", "--count", "2"]);
    broker
        .run(&["pub", "--ttl", "60000", "ttl.test", "kept"], None)
        .assert_success();
    broker
        .run(&["pub", "ttl.test", "--ttl", "0", "default"], None)
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "kept\ndefault\n");
}

#[test]
fn an_oversized_payload_names_both_sizes() {
    let broker = Broker::start_with(&[("BLIPMQ_SERVER_MAX_MESSAGE_SIZE_BYTES", "100")]);
    let big = "x".repeat(101);
    broker
        .run(&["pub", "big", &big], None)
        .assert_error(1, &["MessageTooLarge", "101", "100"]);
    broker
        .run(
            &["pub", "--lines", "big", "-"],
            Some(format!("ok\n{big}\n").as_bytes()),
        )
        .assert_error(1, &["MessageTooLarge", "101", "100", "line 2"]);
    broker
        .run(&["pub", "big", &"x".repeat(100)], None)
        .assert_success();
    broker
        .run(&["bench", "--size", "101", "--count", "10"], None)
        .assert_error(1, &["MessageTooLarge", "101", "100"]);
}

#[test]
fn api_keys_are_checked() {
    let broker = Broker::start_with(&[("BLIPMQ_AUTH_API_KEYS", "k1")]);
    broker
        .run(&["pub", "secure", "x"], None)
        .assert_error(1, &["AuthFailed"]);
    broker
        .run(&["--api-key", "wrong", "pub", "secure", "x"], None)
        .assert_error(1, &["AuthFailed"]);
    broker
        .run(&["sub", "--api-key", "wrong", "secure"], None)
        .assert_error(1, &["AuthFailed"]);

    // The right key, from the flag (subscriber) and from the environment
    // (publisher, which also takes its address from the environment).
    let mut sub = broker.subscribe(&["--api-key", "k1", "secure", "--count", "1"]);
    let mut publisher = clean_command(Path::new(CLI));
    publisher
        .env("BLIPMQ_API_KEY", "k1")
        .env("BLIPMQ_ADDR", &broker.addr)
        .args(["pub", "secure", "let me in"]);
    run(publisher, None).assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "let me in\n");
}

#[test]
fn an_unreachable_broker_fails_quickly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let started = Instant::now();
    let mut cmd = clean_command(Path::new(CLI));
    cmd.args(["--addr", &addr, "pub", "t", "x"]);
    let out = run(cmd, None);
    out.assert_error(1, &["ConnectFailed", &addr]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn qos_1_publishes_are_confirmed_and_a_durable_sub_resumes() {
    let broker = Broker::start();
    // Create the durable subscription and take one message.
    let mut sub = broker.subscribe(&["q", "--durable", "d", "--count", "1"]);
    broker
        .run(&["pub", "--qos", "1", "q", "one"], None)
        .assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "one\n");
    // While nobody is attached, confirmed messages wait for it.
    broker
        .run(
            &["pub", "--lines", "--qos", "1", "q", "-"],
            Some(b"two\nthree\n"),
        )
        .assert_success();
    let mut sub = broker.subscribe(&["q", "--durable", "d", "--count", "2"]);
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "two\nthree\n");
    // A bad durable name is the broker's InvalidArgument, with its code.
    broker
        .run(&["sub", "--durable", "two words", "q"], None)
        .assert_error(1, &["InvalidArgument"]);
}

#[test]
fn workers_in_a_queue_group_share_the_jobs() {
    let broker = Broker::start();
    let mut first = broker.subscribe(&["jobs", "--qos", "1", "--group", "w", "--count", "2"]);
    let mut second = broker.subscribe(&["jobs", "--qos", "1", "--group", "w", "--count", "2"]);
    broker
        .run(
            &["pub", "--lines", "--qos", "1", "jobs", "-"],
            Some(b"a\nb\nc\nd\n"),
        )
        .assert_success();
    let mut done = String::new();
    for worker in [&mut first, &mut second] {
        let out = worker.finish(RUN);
        out.assert_success();
        assert_eq!(
            out.stdout_text().lines().count(),
            2,
            "each worker takes its share"
        );
        done.push_str(&out.stdout_text());
    }
    let mut jobs: Vec<&str> = done.lines().collect();
    jobs.sort();
    assert_eq!(jobs, ["a", "b", "c", "d"], "every job done exactly once");
    // With no worker attached, unsub removes the group and what it kept.
    broker
        .run(&["pub", "--qos", "1", "jobs", "left over"], None)
        .assert_success();
    broker
        .run(&["unsub", "jobs", "--group", "w"], None)
        .assert_success();
    let mut fresh = broker.subscribe(&["jobs", "--qos", "1", "--group", "w", "--count", "1"]);
    broker
        .run(&["pub", "--qos", "1", "jobs", "new"], None)
        .assert_success();
    let out = fresh.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "new\n", "the group started empty");
}

#[test]
fn unsub_explains_what_it_can_and_cannot_do() {
    let broker = Broker::start();
    let out = broker.run(&["unsub", "orders.*"], None);
    out.assert_error(2, &["--durable", "--group", "connection"]);
    broker
        .run(&["unsub", "orders.*", "--durable", "d1"], None)
        .assert_success();
}

#[test]
fn usage_errors_exit_2() {
    let broker = Broker::start();
    assert_eq!(broker.run(&["pub"], None).status.code(), Some(2));
    assert_eq!(
        broker
            .run(&["pub", "t", "x", "--qos", "2"], None)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        broker
            .run(&["sub", "t", "--format", "xml"], None)
            .status
            .code(),
        Some(2)
    );
    broker
        .run(&["pub", "--lines", "t", "not-dash"], None)
        .assert_error(2, &["--lines"]);
    broker
        .run(&["bench", "--size", "7"], None)
        .assert_error(2, &["--size", "8"]);
    broker
        .run(&["pub", "a.*", "x"], None)
        .assert_error(1, &["InvalidTopic"]);
}

#[test]
fn a_subscriber_that_fell_behind_says_how_many_messages_it_lost() {
    const TOTAL: usize = 30_000;
    // drop_new with a queue of 4, one delivery per write.
    let broker = Broker::start_with(&[
        ("BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY", "4"),
        ("BLIPMQ_QUEUES_OVERFLOW_POLICY", "drop_new"),
        ("BLIPMQ_DELIVERY_MAX_BATCH", "1"),
        ("BLIPMQ_DELIVERY_MAX_BATCH_BYTES", "1"),
    ]);
    // Its stdout is not read until the flood is over: the subscriber
    // blocks writing it, stops reading from the broker and falls behind.
    let mut cmd = broker.cli(&["sub", "flood"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut sub = Process {
        child: cmd.spawn().expect("spawn"),
        stdout: None,
        stderr_lines: mpsc::channel().1,
        stderr: None,
    };
    let stdout = sub.child.stdout.take().unwrap();
    let (tx, stderr_lines) = mpsc::channel();
    let err = sub.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    sub.stderr_lines = stderr_lines;
    sub.wait_for_stderr("subscribed to", STARTUP);
    // 30,000 lines of 4 KB, 120 MB: more than the subscriber's buffer
    // (8192 messages) and the sockets hold.
    let flood: String = (0..TOTAL)
        .map(|i| format!("{i:05} {}\n", "x".repeat(4000)))
        .collect();
    broker
        .run(&["pub", "--lines", "flood", "-"], Some(flood.as_bytes()))
        .assert_success();
    // Now read: stdout line by line, in order with the `dropped N` lines
    // on stderr (the CLI flushes stdout before each).
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let index: usize = line[..5].parse().expect("an indexed line");
            let _ = lines_tx.send(index);
        }
    });
    let (mut received, mut dropped, mut last) = (0, 0, None);
    let deadline = Instant::now() + RUN;
    while received + dropped < TOTAL {
        assert!(
            Instant::now() < deadline,
            "{received} received and {dropped} reported dropped of {TOTAL}"
        );
        while let Ok(index) = lines_rx.try_recv() {
            assert!(last.is_none_or(|l| index > l), "in order");
            last = Some(index);
            received += 1;
        }
        while let Ok(line) = sub.stderr_lines.try_recv() {
            let count = line
                .strip_prefix("dropped ")
                .unwrap_or_else(|| panic!("unexpected stderr line {line:?}"));
            dropped += count.parse::<usize>().expect("a count");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(received + dropped, TOTAL);
    assert!(dropped > 0, "the subscriber fell behind");
    sub.signal(libc::SIGINT);
    sub.finish(Duration::from_secs(5)).assert_success();
}

#[test]
fn sub_exits_cleanly_on_ctrl_c() {
    let broker = Broker::start();
    let mut sub = broker.subscribe(&["quiet.topic"]);
    sub.signal(libc::SIGINT);
    let out = sub.finish(Duration::from_secs(5));
    out.assert_success();
    assert!(out.stdout.is_empty());
}

fn bench_json(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "--json"];
    all.extend_from_slice(args);
    let out = broker.run(&all, None);
    out.assert_success();
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout: {text}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[track_caller]
fn assert_latency(report: &serde_json::Value) {
    for field in ["min", "mean", "p50", "p90", "p99", "p99_9", "max"] {
        let value = report["latency_us"][field]
            .as_f64()
            .unwrap_or_else(|| panic!("latency_us.{field} in {report}"));
        assert!(value > 0.0, "latency_us.{field} in {report}");
    }
    let l = &report["latency_us"];
    assert!(l["p50"].as_f64() <= l["p99"].as_f64(), "{report}");
    assert!(l["p99"].as_f64() <= l["max"].as_f64(), "{report}");
}

#[test]
fn bench_one_publisher_two_subscribers() {
    let broker = Broker::start();
    let report = bench_json(
        &broker,
        &["--count", "2000", "--publishers", "1", "--subscribers", "2"],
    );
    assert_eq!(report["published"], 2000, "{report}");
    assert_eq!(report["delivered"], 4000, "{report}");
    assert_eq!(report["expected"], 4000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["ended"], "complete", "{report}");
    assert_eq!(report["size"], 16, "{report}");
    assert!(report["msgs_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["mb_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["publish_msgs_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_latency(&report);
}

#[test]
fn bench_at_a_fixed_rate() {
    let broker = Broker::start();
    let started = Instant::now();
    let report = bench_json(
        &broker,
        &[
            "--rate",
            "2000",
            "--count",
            "1000",
            "--size",
            "64",
            "--publishers",
            "2",
        ],
    );
    // Two publishers at 1000/s each: 1000 messages each take about a second.
    assert_eq!(report["published"], 2000, "{report}");
    assert_eq!(report["delivered"], 2000, "{report}");
    let publish_secs = report["publish_secs"].as_f64().unwrap();
    assert!((0.9..10.0).contains(&publish_secs), "{report}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_latency(&report);
}

#[test]
fn bench_duration_bounds_the_run() {
    let broker = Broker::start();
    let started = Instant::now();
    let report = bench_json(
        &broker,
        &["--rate", "1000", "--count", "1000000", "--duration", "0.5"],
    );
    assert_eq!(report["ended"], "duration", "{report}");
    let published = report["published"].as_u64().unwrap();
    assert!((100..5000).contains(&published), "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(published), "{report}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bench_text_output_and_progress() {
    let broker = Broker::start();
    let out = broker.run(&["bench", "--count", "1500", "--rate", "1000"], None);
    out.assert_success();
    let text = out.stdout_text();
    for needle in [
        "delivered 1500 of 1500",
        "msg/s",
        "MB/s",
        "p50",
        "p99.9",
        "max",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(
        out.stderr.contains("bench:"),
        "progress lines: {}",
        out.stderr
    );
}

/// `--addr tls://…` with `--tls-ca`: a round trip over TLS; without the CA
/// (the system's roots) or at the plaintext address, a clear error.
#[test]
fn pub_and_sub_speak_tls_with_a_ca_file() {
    use blipmq_testkit::{files, TestPki};
    let pki = TestPki::generate();
    let cert = pki.path(files::BROKER_CERT);
    let key = pki.path(files::BROKER_KEY);
    let broker = Broker::start_with(&[
        ("BLIPMQ_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("BLIPMQ_TLS_KEY_FILE", key.to_str().unwrap()),
    ]);
    let port = broker.addr.rsplit_once(':').unwrap().1.to_string();
    let tls_addr = format!("tls://localhost:{port}");
    let ca = pki.path(files::CA);
    let tls_cli = |args: &[&str]| {
        let mut cmd = clean_command(Path::new(CLI));
        cmd.arg("--addr")
            .arg(&tls_addr)
            .arg("--tls-ca")
            .arg(&ca)
            .args(args);
        cmd
    };
    let mut sub_cmd = tls_cli(&["sub", "sealed", "--count", "1", "--format", "text"]);
    sub_cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut sub = Process::spawn(sub_cmd, None);
    sub.wait_for_stderr("subscribed to sealed", RUN);
    run(tls_cli(&["pub", "sealed", "over tls"]), None).assert_success();
    let out = sub.finish(RUN);
    out.assert_success();
    assert_eq!(out.stdout_text(), "over tls\n");

    // The system's roots do not know the test CA.
    let mut untrusted = clean_command(Path::new(CLI));
    untrusted.args(["--addr", &tls_addr, "pub", "sealed", "x"]);
    run(untrusted, None).assert_error(1, &["ConnectFailed (600)", "TLS handshake failed"]);
    // Plaintext at the TLS port.
    broker
        .run(&["pub", "sealed", "x"], None)
        .assert_error(1, &["ConnectFailed (600)", "speaks TLS"]);
}
