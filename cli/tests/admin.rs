//! `blipmq-cli server|conns|queues|topics` against the real `blipmq` broker
//! binary, each test with its own broker on 127.0.0.1:0. Every wait is
//! bounded and every child process is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{broker_bin, clean_command, CLI};

/// Until the broker's readiness line or a subscriber's `subscribed to`.
const STARTUP: Duration = Duration::from_secs(30);

/// A child killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Broker {
    _process: Killed,
    clients: String,
    http: String,
    _data: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(None)
    }

    /// With `config` as its config file, when given.
    fn start_with(config: Option<&str>) -> Broker {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cmd = clean_command(broker_bin());
        if let Some(config) = config {
            let path = data.path().join("blipmq.toml");
            std::fs::write(&path, config).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.env("RUST_LOG", "error")
            .env("BLIPMQ_WAL_DIR", data.path().join("wal"))
            .env("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0")
            .env("BLIPMQ_METRICS_BIND_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn blipmq");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let process = Killed(child);
        let line = rx.recv_timeout(STARTUP).expect("the readiness line");
        let field = |name: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        Broker {
            clients: field("clients="),
            http: field("metrics="),
            _process: process,
            _data: data,
        }
    }

    /// `blipmq-cli args... --http <this broker>`, run to its exit.
    fn admin(&self, args: &[&str]) -> Output {
        self.admin_with(args, &[])
    }

    fn admin_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = clean_command(Path::new(CLI));
        cmd.args(args)
            .args(["--http", &self.http])
            .envs(env.iter().copied());
        run(cmd)
    }

    /// A `blipmq-cli sub` subscriber, once it is subscribed.
    fn subscriber(&self, args: &[&str]) -> Killed {
        let mut cmd = clean_command(Path::new(CLI));
        cmd.args(["--addr", &self.clients, "sub"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn a subscriber");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let child = Killed(child);
        let line = rx
            .recv_timeout(STARTUP)
            .expect("the subscriber says it is subscribed");
        assert!(line.contains("subscribed to"), "{line}");
        child
    }

    fn publish(&self, args: &[&str]) {
        let mut cmd = clean_command(Path::new(CLI));
        cmd.args(["--addr", &self.clients, "pub"]).args(args);
        assert_success(&run(cmd));
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn blipmq-cli");
    child.wait_with_output().expect("blipmq-cli runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "failed: {}{}",
        stdout(output),
        stderr(output)
    );
}

/// Exit 1 and one `blipmq-cli: ...` line holding every needle.
fn assert_fails_with(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{err}{}", stdout(output));
    assert!(err.starts_with("blipmq-cli: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

fn json(output: &Output) -> serde_json::Value {
    assert_success(output);
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// Run `args` until `done` holds for its JSON (the broker's counters move
/// as the clients' frames arrive).
fn wait_for(
    broker: &Broker,
    args: &[&str],
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + STARTUP;
    loop {
        let value = json(&broker.admin(args));
        if done(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "never: {value:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn server_info_prints_a_summary_or_the_json() {
    let broker = Broker::start();
    let table = broker.admin(&["server", "info"]);
    assert_success(&table);
    let text = stdout(&table);
    assert!(
        text.contains(&format!("version           {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("clients           {}", broker.clients)),
        "{text}"
    );
    assert!(text.contains("auth              off"), "{text}");
    let value = json(&broker.admin(&["server", "info", "--json"]));
    assert_eq!(
        value["config"]["listeners"]["http"]["addr"],
        broker.http.as_str()
    );
}

#[test]
fn conns_and_topics_list_the_connected_subscribers() {
    let broker = Broker::start();
    let _first = broker.subscriber(&["prices.>"]);
    let _second = broker.subscriber(&["prices.>"]);
    let conns = broker.admin(&["conns", "ls"]);
    assert_success(&conns);
    let text = stdout(&conns);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID  REMOTE"), "{text}");
    assert_eq!(lines.len(), 3, "a header and two connections: {text}");
    assert!(
        lines[1].contains("blipmq-cli sub") && lines[1].contains("tcp"),
        "{text}"
    );

    // One per page: the table says how to see the rest.
    let first = broker.admin(&["conns", "ls", "--limit", "1"]);
    assert!(
        stdout(&first).contains("(showing 1-1 of 2; --offset 1 for more)"),
        "{}",
        stdout(&first)
    );
    let second = json(&broker.admin(&["conns", "ls", "--limit", "1", "--offset", "1", "--json"]));
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["truncated"], false);

    let topics = broker.admin(&["topics", "ls"]);
    assert_success(&topics);
    let text = stdout(&topics);
    assert!(
        text.lines()
            .any(|l| l.starts_with("prices.>") && l.contains(" 2 ")),
        "{text}"
    );
}

#[test]
fn queues_show_a_durable_and_rm_deletes_it_once_its_consumer_is_gone() {
    let broker = Broker::start();
    let consumer = broker.subscriber(&["--qos", "1", "--durable", "billing", "orders.*"]);
    broker.publish(&["--qos", "1", "orders.new", "one"]);
    let listed = wait_for(&broker, &["queues", "ls", "--json"], |v| {
        v["items"][0]["name"] == "billing" && v["items"][0]["kept"] == 0
    });
    assert_eq!(listed["total"], 1);
    let table = stdout(&broker.admin(&["queues", "ls"]));
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("billing  durable  orders.*")),
        "{table}"
    );
    let info = broker.admin(&["queues", "info", "billing"]);
    assert_success(&info);
    assert!(
        stdout(&info).contains("consumers       1"),
        "{}",
        stdout(&info)
    );

    // Attached: refused with the reason.
    assert_fails_with(
        &broker.admin(&["queues", "rm", "billing"]),
        &["conflict (409)", "attached"],
    );

    // Messages published while it is detached are kept for it.
    drop(consumer);
    wait_for(&broker, &["queues", "info", "billing", "--json"], |q| {
        q["consumers"] == 0
    });
    broker.publish(&["--qos", "1", "orders.new", "two"]);
    let kept = json(&broker.admin(&["queues", "info", "billing", "--json"]));
    assert_eq!(kept["pending"], 1);
    assert_eq!(kept["kept"], 1);

    let removed = broker.admin(&["queues", "rm", "billing"]);
    assert_success(&removed);
    assert!(
        stdout(&removed).contains("deleted \"billing\""),
        "{}",
        stdout(&removed)
    );
    assert_fails_with(
        &broker.admin(&["queues", "info", "billing"]),
        &["not found (404)", "billing"],
    );
    assert_fails_with(
        &broker.admin(&["queues", "rm", "billing"]),
        &["not found (404)"],
    );
}

#[test]
fn a_broker_with_users_needs_an_admin_key() {
    // sha256("k-ops") and sha256("k-app").
    let config = format!(
        "[[auth.users]]\nname = \"ops\"\nkey_sha256 = \"{}\"\nadmin = true\n\n\
         [[auth.users]]\nname = \"app\"\nkey_sha256 = \"{}\"\n",
        sha256_hex("k-ops"),
        sha256_hex("k-app")
    );
    let broker = Broker::start_with(Some(&config));
    assert_fails_with(
        &broker.admin(&["server", "info"]),
        &["unauthorised (401)", "--key"],
    );
    assert_fails_with(
        &broker.admin(&["server", "info", "--key", "wrong"]),
        &["unauthorised (401)"],
    );
    assert_fails_with(
        &broker.admin(&["queues", "ls", "--key", "k-app"]),
        &["forbidden (403)", "\"app\""],
    );
    assert_success(&broker.admin(&["conns", "ls", "--key", "k-ops"]));
    assert_success(&broker.admin_with(&["topics", "ls"], &[("BLIPMQ_KEY", "k-ops")]));
    // The client key (--api-key) serves when --key is not given.
    assert_success(&broker.admin(&["--api-key", "k-ops", "server", "info"]));
}

#[test]
fn unreachable_brokers_and_bad_arguments_fail_clearly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut cmd = clean_command(Path::new(CLI));
    cmd.args(["server", "info", "--http", &nobody]);
    assert_fails_with(&run(cmd), &["cannot reach the broker's HTTP port", &nobody]);

    let broker = Broker::start();
    assert_fails_with(
        &broker.admin(&["conns", "ls", "--limit", "0"]),
        &["bad request (400)", "limit"],
    );
    // The client port is not the HTTP port.
    let mut cmd = clean_command(Path::new(CLI));
    cmd.args(["server", "info", "--http", &broker.clients]);
    let wrong_port = run(cmd);
    assert_eq!(wrong_port.status.code(), Some(1), "{}", stderr(&wrong_port));
}

/// With `[tls]` the HTTP port speaks HTTPS: the admin commands reach it
/// with `--tls-ca` (an `https://` address, or any `--tls-*` option), and
/// say why when the CA is not trusted or the address is plaintext.
#[test]
fn the_admin_commands_reach_an_https_port() {
    use blipmq_testkit::{files, TestPki};
    let pki = TestPki::generate();
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.path(files::BROKER_CERT),
        pki.path(files::BROKER_KEY)
    );
    let broker = Broker::start_with(Some(&config));
    let port = broker.http.rsplit_once(':').unwrap().1;
    let https = format!("https://localhost:{port}");
    let ca = pki.path(files::CA);
    let admin = |args: &[&str]| {
        let mut cmd = clean_command(Path::new(CLI));
        cmd.args(args).args(["--http", &https]);
        run(cmd)
    };
    let info = admin(&["server", "info", "--json", "--tls-ca", ca.to_str().unwrap()]);
    assert_success(&info);
    assert_eq!(json(&info)["version"], env!("CARGO_PKG_VERSION"));
    // `--tls-ca` alone implies HTTPS, as it implies TLS for `--addr`.
    let mut implied = clean_command(Path::new(CLI));
    implied
        .args(["queues", "ls", "--tls-ca", ca.to_str().unwrap()])
        .args(["--http", &format!("localhost:{port}")]);
    assert_success(&run(implied));
    // The system's roots do not know the test CA.
    assert_fails_with(
        &admin(&["server", "info"]),
        &["TLS to the broker's HTTP port", "TLS handshake failed"],
    );
    // Plaintext HTTP at the HTTPS port.
    let mut plain = clean_command(Path::new(CLI));
    plain.args(["server", "info", "--http", &format!("127.0.0.1:{port}")]);
    let plain = run(plain);
    assert_eq!(plain.status.code(), Some(1), "{}", stderr(&plain));
}

/// The SHA-256 of `text` as hex, from `blipmq keygen`'s own code path:
/// the broker crate's digest function.
fn sha256_hex(text: &str) -> String {
    blipmq_broker::auth::key_digest_hex(text)
}
