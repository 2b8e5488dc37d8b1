//! The real `blipmq` binary as a child process: startup from the command
//! line, the environment and a config file; the readiness line; signals;
//! config and bind errors; log formats; `--help`/`--version`; /metrics.
//!
//! Every broker binds 127.0.0.1:0 (clients and metrics) so these tests run in
//! parallel with each other and with anything else on the machine.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blipmq_protocol::ErrorCode;
use common::{http_get, metric_value, parse_ready, RawClient};

const BIN: &str = env!("CARGO_BIN_EXE_blipmq");
/// Until the readiness line: generous, the machine may be busy with other tests.
const STARTUP: Duration = Duration::from_secs(20);
/// From SIGTERM/SIGINT to exit.
const SHUTDOWN: Duration = Duration::from_secs(5);
/// For runs that should end on their own (errors, --help).
const PROMPT_EXIT: Duration = Duration::from_secs(20);

/// `blipmq` with `args`, on ephemeral ports, logging at info, with `env` on top.
/// BLIPMQ_* variables of the test's own environment are not passed on.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BLIPMQ_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0")
        .env("BLIPMQ_METRICS_BIND_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running (or exited) child; killed on drop so a failing test leaves
/// nothing behind.
struct Process {
    child: Child,
    /// stdout, line by line, as it is written.
    stdout: mpsc::Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    /// All of stderr, once the child has closed it.
    stderr_reader: Option<JoinHandle<String>>,
}

impl Process {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = command(args, env).spawn().expect("spawn blipmq");
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Process {
            child,
            stdout,
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped yet (we only reap in wait/drop), so the pid is not reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Wait for the child to exit; panics (and the drop kills it) if it has
    /// not within `within`.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let (stdout, stderr) = self.output();
                panic!(
                    "blipmq did not exit within {within:?}\nstdout: {stdout:?}\nstderr:\n{stderr}"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The stdout lines not yet taken and all of stderr. Only after exit.
    fn output(&mut self) -> (Vec<String>, String) {
        if let Some(reader) = self.stdout_reader.take() {
            reader.join().expect("stdout reader");
        }
        let stdout = self.stdout.try_iter().collect();
        let stderr = match self.stderr_reader.take() {
            Some(reader) => reader.join().expect("stderr reader"),
            None => String::new(),
        };
        (stdout, stderr)
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

/// A broker that has printed its readiness line.
struct Broker {
    process: Process,
    ready_line: String,
    clients: SocketAddr,
    metrics: Option<SocketAddr>,
}

impl Broker {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Broker {
        let mut process = Process::spawn(args, env);
        let ready_line = match process.stdout.recv_timeout(STARTUP) {
            Ok(line) => line,
            Err(error) => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                let (_, stderr) = process.output();
                panic!("no readiness line ({error}); stderr:\n{stderr}");
            }
        };
        let (clients, metrics) = parse_ready(&ready_line)
            .unwrap_or_else(|| panic!("not a readiness line: {ready_line:?}"));
        Broker {
            process,
            ready_line,
            clients,
            metrics,
        }
    }

    /// Send `signal` and wait for a clean exit; returns the remaining stdout
    /// lines and all of stderr.
    fn stop_with(mut self, signal: libc::c_int) -> (Vec<String>, String) {
        self.process.signal(signal);
        let status = self.process.wait(SHUTDOWN);
        let (stdout, stderr) = self.process.output();
        assert!(status.success(), "exit {status}; stderr:\n{stderr}");
        (stdout, stderr)
    }
}

/// A run that ends by itself.
struct Outcome {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut process = Process::spawn(args, env);
    let status = process.wait(PROMPT_EXIT);
    let (stdout, stderr) = process.output();
    Outcome {
        status,
        stdout,
        stderr,
    }
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("blipmq.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Two clients through the broker at `addr`: subscribe, publish, receive.
async fn round_trip(addr: SocketAddr, api_key: Option<&str>) {
    let mut subscriber = RawClient::connect(addr).await;
    subscriber.handshake(api_key).await;
    let sub_id = subscriber.subscribe("binary.*").await;
    let mut publisher = RawClient::connect(addr).await;
    publisher.handshake(api_key).await;
    publisher
        .publish("binary.test", b"through the binary")
        .await;
    let got = subscriber.expect_delivery().await;
    assert_eq!(got.subscription_id, sub_id);
    assert_eq!(got.topic, "binary.test");
    assert_eq!(got.payload, b"through the binary");
}

#[tokio::test]
async fn starts_with_no_arguments_and_serves() {
    let broker = Broker::start(&[], &[]);
    assert!(broker.metrics.is_some(), "metrics are on by default");
    round_trip(broker.clients, None).await;
    let ready = broker.ready_line.clone();
    let (stdout, stderr) = broker.stop_with(libc::SIGTERM);
    assert!(stdout.is_empty(), "stdout after {ready:?}: {stdout:?}");
    assert!(stderr.contains("listening"), "{stderr}");
    // Text logs to a pipe carry no terminal colour codes.
    assert!(
        !stderr.contains('\x1b'),
        "ANSI escapes in piped logs:\n{stderr}"
    );
}

#[tokio::test]
async fn start_with_the_shipped_config_file_serves() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../blipmq.toml");
    // The environment (ephemeral ports) overrides the file's addresses.
    let broker = Broker::start(&["start", "--config", shipped], &[]);
    assert!(broker.metrics.is_some());
    round_trip(broker.clients, None).await;
    broker.stop_with(libc::SIGTERM);
}

#[tokio::test]
async fn start_with_a_config_file_applies_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[metrics]\nenabled = false\n[auth]\napi_keys = [\"sesame\"]\n",
    );
    let broker = Broker::start(&["start", "--config", &path], &[]);
    assert_eq!(broker.metrics, None, "{}", broker.ready_line);
    assert!(broker.ready_line.ends_with(" metrics=off"));
    round_trip(broker.clients, Some("sesame")).await;
    // Without the key from the file, the handshake is refused.
    let mut stranger = RawClient::connect(broker.clients).await;
    stranger.send_hello(Some("wrong")).await;
    let (code, _, _) = stranger.expect_error().await;
    assert_eq!(code, ErrorCode::AuthFailed);
    broker.stop_with(libc::SIGTERM);
}

async fn signal_closes_clients_and_exits_zero(signal: libc::c_int, name: &str) {
    let mut broker = Broker::start(&[], &[]);
    let mut client = RawClient::connect(broker.clients).await;
    client.handshake(None).await;
    client.subscribe("anything.>").await;
    client.sync().await;
    let sent = Instant::now();
    broker.process.signal(signal);
    let (code, _, _) = client.expect_error().await;
    assert_eq!(code, ErrorCode::ShuttingDown);
    let rest = client.expect_closed().await;
    assert!(rest.is_empty(), "frames after ShuttingDown: {rest:?}");
    let status = broker.process.wait(SHUTDOWN.saturating_sub(sent.elapsed()));
    let (stdout, stderr) = broker.process.output();
    assert_eq!(status.code(), Some(0), "{status}; stderr:\n{stderr}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(stderr.contains(&format!("{name} received")), "{stderr}");
}

#[tokio::test]
async fn sigterm_closes_clients_with_shutting_down_and_exits_zero() {
    signal_closes_clients_and_exits_zero(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test]
async fn sigint_closes_clients_with_shutting_down_and_exits_zero() {
    signal_closes_clients_and_exits_zero(libc::SIGINT, "SIGINT").await;
}

/// A script may signal the broker as soon as it has read the readiness line:
/// the handlers must already be in place by then.
#[test]
fn a_signal_right_after_the_readiness_line_is_a_clean_shutdown() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGTERM, libc::SIGINT] {
        let broker = Broker::start(&[], &[]);
        broker.stop_with(signal);
    }
}

/// The run fails with exit code 2, prints no readiness line, and says why in
/// exactly one line on stderr, which contains every one of `needles`.
fn assert_config_error(args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> String {
    let outcome = run_to_exit(args, env);
    let stderr = outcome.stderr;
    assert_eq!(
        outcome.status.code(),
        Some(2),
        "{}; stderr:\n{stderr}",
        outcome.status
    );
    assert!(outcome.stdout.is_empty(), "stdout: {:?}", outcome.stdout);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    }
    lines[0].to_string()
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[server]\nmax_conections = 5\n");
    assert_config_error(
        &["start", "--config", &path],
        &[],
        &["max_conections", &path],
    );
}

#[test]
fn a_bad_value_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[queues]\noverflow_policy = \"sometimes\"\n");
    assert_config_error(&["--config", &path], &[], &["overflow_policy", "sometimes"]);
}

#[test]
fn a_zero_capacity_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[queues]\nsubscriber_capacity = 0\n");
    assert_config_error(
        &["start", "-c", &path],
        &[],
        &["queues.subscriber_capacity"],
    );
}

#[test]
fn a_toml_syntax_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[server]\nmax_connections = \n");
    assert_config_error(&["start", "--config", &path], &[], &[&path, "line 2"]);
}

#[test]
fn a_bad_environment_value_is_named() {
    assert_config_error(
        &[],
        &[("BLIPMQ_SERVER_MAX_CONNECTIONS", "lots")],
        &["max_connections", "lots"],
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.toml");
    let path = path.to_str().unwrap();
    assert_config_error(&["start", "--config", path], &[], &[path]);
    // The config path can come from the environment too.
    assert_config_error(&[], &[("BLIPMQ_CONFIG", path)], &[path]);
}

#[test]
fn a_config_error_is_reported_even_with_logging_off() {
    assert_config_error(
        &[],
        &[("RUST_LOG", "off"), ("BLIPMQ_QUEUES_TOPIC_CAPACITY", "0")],
        &["queues.topic_capacity"],
    );
}

#[test]
fn a_config_error_in_json_mode_is_one_json_line() {
    let line = assert_config_error(
        &["--log-format", "json"],
        &[("BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY", "0")],
        &["queues.subscriber_capacity"],
    );
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["level"], "ERROR", "{line}");
}

#[test]
fn a_port_in_use_fails_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let outcome = run_to_exit(&[], &[("BLIPMQ_SERVER_BIND_ADDR", &addr)]);
    assert!(!outcome.status.success(), "{}", outcome.status);
    assert!(outcome.stdout.is_empty(), "{:?}", outcome.stdout);
    assert!(
        outcome.stderr.contains("server.bind_addr"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains(&addr), "{}", outcome.stderr);
    assert_eq!(outcome.stderr.lines().count(), 1, "{}", outcome.stderr);

    let outcome = run_to_exit(&[], &[("BLIPMQ_METRICS_BIND_ADDR", &addr)]);
    assert!(!outcome.status.success(), "{}", outcome.status);
    assert!(outcome.stdout.is_empty(), "{:?}", outcome.stdout);
    assert!(
        outcome.stderr.contains("metrics.bind_addr"),
        "{}",
        outcome.stderr
    );
    drop(taken);
}

#[tokio::test]
async fn json_logs_go_to_stderr_and_the_readiness_line_to_stdout() {
    let broker = Broker::start(&["start", "--log-format", "json"], &[]);
    let clients = broker.clients.to_string();
    round_trip(broker.clients, None).await;
    let (stdout, stderr) = broker.stop_with(libc::SIGTERM);
    assert!(
        stdout.is_empty(),
        "stdout beyond the readiness line: {stdout:?}"
    );
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line:?}"))
        })
        .collect();
    let listening = events
        .iter()
        .find(|e| e["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no listening event in:\n{stderr}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["clients"], clients.as_str());
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "SIGTERM received"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_log_format_can_come_from_the_environment() {
    let broker = Broker::start(&[], &[("BLIPMQ_LOG_FORMAT", "json")]);
    let (_, stderr) = broker.stop_with(libc::SIGTERM);
    let first = stderr.lines().next().expect("some log lines");
    serde_json::from_str::<serde_json::Value>(first).expect("JSON log lines");
}

#[test]
fn help_and_version_exit_zero() {
    for args in [&["--help"][..], &["start", "--help"], &["help"]] {
        let outcome = run_to_exit(args, &[]);
        assert_eq!(
            outcome.status.code(),
            Some(0),
            "{args:?}: {}",
            outcome.stderr
        );
        let text = outcome.stdout.join("\n");
        assert!(text.contains("Usage"), "{args:?}: {text}");
        assert!(text.contains("--config"), "{args:?}: {text}");
    }
    let outcome = run_to_exit(&["--version"], &[]);
    assert_eq!(outcome.status.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(
        outcome.stdout,
        [format!("blipmq {}", env!("CARGO_PKG_VERSION"))]
    );
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let outcome = run_to_exit(&["--log-format", "xml"], &[]);
    assert_eq!(outcome.status.code(), Some(2), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty(), "{:?}", outcome.stdout);
    assert!(outcome.stderr.contains("xml"), "{}", outcome.stderr);
}

#[tokio::test]
async fn the_metrics_address_serves_metrics() {
    let broker = Broker::start(&[], &[]);
    let metrics = broker.metrics.expect("metrics on");
    let mut client = RawClient::connect(broker.clients).await;
    client.handshake(None).await;
    client.sync().await;
    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric_value(&body, "blipmq_connections"), Some(1), "{body}");
    assert!(body.contains("blipmq_messages_published_total"), "{body}");
    drop(client);
    broker.stop_with(libc::SIGTERM);
}

#[test]
fn a_rust_log_that_does_not_parse_is_reported_and_info_applies() {
    let broker = Broker::start(&[], &[("RUST_LOG", "blipmq_broker=loud")]);
    let (_, stderr) = broker.stop_with(libc::SIGTERM);
    let warning = stderr
        .lines()
        .find(|l| l.contains("RUST_LOG"))
        .unwrap_or_else(|| panic!("no RUST_LOG warning in:\n{stderr}"));
    assert!(
        warning.contains("WARN") && warning.contains("loud"),
        "{warning}"
    );
    // Info lines still appear: the default level took over.
    assert!(stderr.contains("listening"), "{stderr}");
}

/// The metrics endpoint speaks enough HTTP/1.1 for scrapers and curl:
/// keep-alive and pipelining, HEAD, and clear refusals of the rest.
#[tokio::test]
async fn the_metrics_endpoint_answers_like_an_http_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("the endpoint answers and closes")
            .unwrap();
        String::from_utf8(response).unwrap()
    }

    let broker = Broker::start(&[], &[]);
    let metrics = broker.metrics.expect("metrics on");
    // Two pipelined requests on one kept-alive connection, then a close.
    let text = exchange(
        metrics,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert!(text.contains("ok\n"), "{text}");
    assert!(
        text.contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    assert!(text.contains("blipmq_connections"), "{text}");
    // Every body is exactly as long as its content-length says.
    let first_body_at = text.find("\r\n\r\n").unwrap() + 4;
    assert!(
        text[..first_body_at].contains("content-length: 3\r\n"),
        "{text}"
    );
    assert!(
        text[first_body_at..].starts_with("ok\nHTTP/1.1 200 OK"),
        "{text}"
    );

    let head = exchange(metrics, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");

    for (request, status) in [
        (
            &b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
            "405 Method Not Allowed",
        ),
        (b"GET /nothing HTTP/1.0\r\n\r\n", "404 Not Found"),
        (b"GET /metrics\r\n\r\n", "400 Bad Request"),
        (b"\x16\x03\x01 not http at all\r\n\r\n", "400 Bad Request"),
    ] {
        let text = exchange(metrics, request).await;
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{text}"
        );
    }
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(
        std::iter::repeat_n(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 400).flatten(),
    );
    huge.extend_from_slice(b"\r\n");
    let text = exchange(metrics, &huge).await;
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    // None of it disturbed the broker.
    let (status, _) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    broker.stop_with(libc::SIGTERM);
}

/// HDR-4: a message with a valid `traceparent` is logged at debug level on
/// publish (fan-out) and on each delivery with the caller's trace id, so the
/// broker's log lines join the user's trace.
#[tokio::test]
async fn debug_logs_carry_the_trace_id_of_a_traced_message() {
    use blipmq_protocol::{Frame, Header, Publish};
    let broker = Broker::start(
        &["--log-format", "json"],
        &[("RUST_LOG", "info,blipmq_broker=debug")],
    );
    let mut subscriber = RawClient::connect(broker.clients).await;
    subscriber.handshake(None).await;
    subscriber.subscribe("traced").await;
    let mut publisher = RawClient::connect(broker.clients).await;
    publisher.handshake(None).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    publisher
        .send(&Frame::Publish(Publish {
            publish_id: 0,
            topic: "traced",
            payload: b"x",
            ttl_ms: 0,
            qos: 0,
            headers: vec![Header {
                key: "traceparent",
                value: traceparent.as_bytes(),
            }],
        }))
        .await;
    publisher.publish("traced", b"untraced").await;
    subscriber.expect_delivery().await;
    subscriber.expect_delivery().await;
    let (_, stderr) = broker.stop_with(libc::SIGTERM);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let traced = |message: &str| {
        events.iter().any(|e| {
            e["fields"]["message"] == message
                && e["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == trace_id))
        })
    };
    assert!(
        traced("fan-out"),
        "no fan-out event with the trace id:\n{stderr}"
    );
    assert!(
        traced("delivered"),
        "no delivered event with the trace id:\n{stderr}"
    );
    // Only the traced message is logged per message.
    let delivered = events
        .iter()
        .filter(|e| e["fields"]["message"] == "delivered")
        .count();
    assert_eq!(delivered, 1, "{stderr}");
}

#[tokio::test]
async fn a_second_broker_on_the_same_data_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    // An existing log is opened (and locked) at start.
    std::fs::create_dir_all(&wal).unwrap();
    let wal = wal.to_str().unwrap();
    let first = Broker::start(&[], &[("BLIPMQ_WAL_DIR", wal)]);
    let metrics = first.metrics.expect("metrics on");
    let deadline = Instant::now() + STARTUP;
    loop {
        let (status, body) = http_get(metrics, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(body.contains("recovering"), "{status}: {body}");
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = run_to_exit(&[], &[("BLIPMQ_WAL_DIR", wal)]);
    assert!(!second.status.success(), "{}", second.status);
    assert!(
        second.stderr.contains("in use by another process")
            && second
                .stderr
                .contains(&format!("pid {}", first.process.child.id())),
        "{}",
        second.stderr
    );
    // The first one is unharmed.
    round_trip(first.clients, None).await;
    first.stop_with(libc::SIGTERM);
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    // Start under a low soft limit (the hard one unchanged), and read the
    // limit the broker runs with from /proc.
    let mut cmd = command(&[], &[]);
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = 256.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("blipmq ready"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    // "Max open files <soft> <hard> files"
    assert_eq!(open_files[3], open_files[4], "{limits}");
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGHUP reads the TLS files again: a renewed certificate reaches new
/// connections while open ones go on; without TLS it is a no-op, not a
/// stop (SIGHUP's default action would end the process).
#[tokio::test]
async fn sighup_reloads_the_tls_certificate_and_keeps_serving() {
    use blipmq_testkit::{files, Authority, TestPki, BROKER_NAMES};
    use common::tls_client::{client_config, hello_over, tls_connect};
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(pki.path(files::BROKER_CERT), &cert).unwrap();
    std::fs::copy(pki.path(files::BROKER_KEY), &key).unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n[metrics]\ntls = false\n[wal]\ndir = {:?}\n",
            cert,
            key,
            dir.path().join("wal")
        ),
    );
    let broker = Broker::start(&["start", "--config", &path], &[]);
    let first_ca = pki.ca.cert_pem.as_bytes();
    let stream = tls_connect(broker.clients, client_config(first_ca, None), "localhost")
        .await
        .expect("TLS with the first certificate");
    let mut open = hello_over(stream).await.unwrap();

    let renewed_ca = Authority::new("Renewed CA");
    let renewed = renewed_ca.server(BROKER_NAMES);
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    broker.process.signal(libc::SIGHUP);
    let deadline = Instant::now() + STARTUP;
    let mut fresh = loop {
        let attempt = tls_connect(
            broker.clients,
            client_config(renewed_ca.cert_pem.as_bytes(), None),
            "localhost",
        )
        .await;
        if let Ok(stream) = attempt {
            break hello_over(stream).await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    open.subscribe("renewed").await;
    fresh.publish("renewed", b"after SIGHUP").await;
    assert_eq!(open.expect_delivery().await.payload, b"after SIGHUP");
    let (_, stderr) = broker.stop_with(libc::SIGTERM);
    assert!(stderr.contains("reloaded"), "{stderr}");

    // No [tls]: SIGHUP reloads the users and the broker goes on serving.
    let plain = Broker::start(&[], &[]);
    plain.process.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(200)).await;
    round_trip(plain.clients, None).await;
    let (_, stderr) = plain.stop_with(libc::SIGTERM);
    assert!(
        stderr.contains("no TLS files to reload") && stderr.contains("users reloaded"),
        "{stderr}"
    );
}

/// `blipmq keygen NAME` prints a fresh key and the user entry whose
/// key_sha256 admits it; a broker configured with that entry lets the key
/// in and refuses another.
#[tokio::test]
async fn keygen_prints_a_key_and_the_user_entry_that_admits_it() {
    let first = run_to_exit(&["keygen", "orders"], &[]);
    assert!(first.status.success(), "{}", first.stderr);
    let second = run_to_exit(&["keygen"], &[]);
    let text = first.stdout.join("\n");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("# bmq_"))
        .map(|k| format!("bmq_{k}"))
        .unwrap_or_else(|| panic!("no key in {text}"));
    assert!(!second.stdout.join("\n").contains(&key), "keys are random");
    let entry: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(entry.contains("name = \"orders\""), "{entry}");
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &entry);
    let broker = Broker::start(&["start", "--config", &path], &[]);
    round_trip(broker.clients, Some(&key)).await;
    let mut stranger = RawClient::connect(broker.clients).await;
    stranger.send_hello(Some("bmq_0000")).await;
    assert_eq!(stranger.expect_error().await.0, ErrorCode::AuthFailed);
    broker.stop_with(libc::SIGTERM);
}
