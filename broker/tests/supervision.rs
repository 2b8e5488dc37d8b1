//! What a supervisor sees of the real `blipmq` binary: `blipmq healthcheck`
//! (exit 0 when `/readyz` answers 200, 1 otherwise) and systemd's
//! notifications on `NOTIFY_SOCKET` (READY, RELOADING, STOPPING), read from
//! a datagram socket the test binds.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_blipmq");
/// Until the readiness line, a notification or an exit: the machine may be
/// busy with other tests.
const PATIENCE: Duration = Duration::from_secs(20);

/// `blipmq` with `args` and `env`, none of the test's own BLIPMQ_* variables,
/// on ephemeral ports with its log in `data`.
fn command(args: &[&str], env: &[(&str, &str)], data: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BLIPMQ_") || name == "NOTIFY_SOCKET" {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", "warn")
        .env("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0")
        .env("BLIPMQ_METRICS_BIND_ADDR", "127.0.0.1:0")
        .env("BLIPMQ_WAL_DIR", data.path().join("wal"))
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// A running broker, killed on drop.
struct Broker {
    child: Child,
    metrics: SocketAddr,
    _data: tempfile::TempDir,
}

impl Broker {
    fn start(env: &[(&str, &str)]) -> Broker {
        let data = tempfile::tempdir().unwrap();
        let mut child = command(&[], env, &data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn blipmq");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(PATIENCE).expect("the readiness line");
        let metrics = line
            .split(' ')
            .find_map(|field| field.strip_prefix("metrics="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
        Broker {
            child,
            metrics,
            _data: data,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Wait for the exit and return whether it was a success.
    fn wait_for_exit(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the broker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = command(&["healthcheck"], env, &data);
    cmd.args(args);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn healthcheck_exits_0_for_a_ready_broker_and_1_with_a_reason_otherwise() {
    let broker = Broker::start(&[]);
    let addr = broker.metrics.to_string();
    let ready = healthcheck(&["--http", &addr], &[]);
    let said = String::from_utf8_lossy(&ready.stdout);
    assert!(ready.status.success(), "{said}");
    assert!(said.starts_with("ready: "), "{said}");

    // Without --http, the address comes from the config, as the broker
    // reads it (here from the environment).
    let from_config = healthcheck(&[], &[("BLIPMQ_METRICS_BIND_ADDR", &addr)]);
    assert!(
        from_config.status.success(),
        "{}",
        String::from_utf8_lossy(&from_config.stdout)
    );

    // Nobody listening: exit 1 and why.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap().to_string();
    drop(closed);
    let down = healthcheck(&["--http", &nobody], &[]);
    let said = String::from_utf8_lossy(&down.stdout);
    assert_eq!(down.status.code(), Some(1), "{said}");
    assert!(said.starts_with("not ready: cannot ask"), "{said}");

    // The HTTP port is off in the config: nothing to ask.
    let off = healthcheck(&[], &[("BLIPMQ_METRICS_ENABLED", "false")]);
    let said = String::from_utf8_lossy(&off.stdout);
    assert_eq!(off.status.code(), Some(1), "{said}");
    assert!(said.contains("metrics.enabled"), "{said}");
}

#[test]
fn healthcheck_reports_a_draining_broker_as_not_ready() {
    let mut broker = Broker::start(&[("BLIPMQ_SERVER_DRAIN_DELAY_MS", "5000")]);
    let addr = broker.metrics.to_string();
    broker.signal(libc::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    let said = loop {
        let probe = healthcheck(&["--http", &addr], &[]);
        if !probe.status.success() {
            break String::from_utf8_lossy(&probe.stdout).to_string();
        }
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(said.contains("503") && said.contains("draining"), "{said}");
    assert!(broker.wait_for_exit(), "a clean exit after the drain");
}

/// The next datagram on `socket`, as text.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let path_text = path.to_str().unwrap();
    let mut broker = Broker::start(&[("NOTIFY_SOCKET", path_text)]);

    let ready = next_notification(&socket);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=blipmq ready clients="), "{ready:?}");

    broker.signal(libc::SIGHUP);
    let reloading = next_notification(&socket);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    let micros: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(micros > 0);
    let reloaded = next_notification(&socket);
    assert!(reloaded.starts_with("READY=1\n"), "{reloaded:?}");

    broker.signal(libc::SIGTERM);
    let stopping = next_notification(&socket);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(broker.wait_for_exit(), "a clean exit");
}

#[test]
fn an_unreachable_notify_socket_does_not_stop_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody-listens.sock");
    let mut broker = Broker::start(&[("NOTIFY_SOCKET", missing.to_str().unwrap())]);
    let addr = broker.metrics.to_string();
    assert!(healthcheck(&["--http", &addr], &[]).status.success());
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_for_exit());
}

/// With `[tls]` on the HTTP port the probe speaks HTTPS and trusts exactly
/// the certificate of `tls.cert_file`: another certificate, plaintext, or a
/// port that wants client certificates fail with the reason.
#[test]
fn healthcheck_probes_an_https_port_pinned_to_the_brokers_certificate() {
    use blipmq_testkit::{files, TestPki};
    let pki = TestPki::generate();
    let path = |name: &str| pki.path(name).to_str().unwrap().to_string();
    let (cert, key) = (path(files::BROKER_CERT), path(files::BROKER_KEY));
    let tls = [
        ("BLIPMQ_TLS_CERT_FILE", cert.as_str()),
        ("BLIPMQ_TLS_KEY_FILE", key.as_str()),
    ];
    let broker = Broker::start(&tls);
    let addr = broker.metrics.to_string();

    let mut from_config = tls.to_vec();
    from_config.push(("BLIPMQ_METRICS_BIND_ADDR", &addr));
    let ready = healthcheck(&[], &from_config);
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stdout)
    );
    assert!(String::from_utf8_lossy(&ready.stdout).starts_with("ready: https://"));
    let https = format!("https://{addr}");
    assert!(healthcheck(&["--http", &https], &tls).status.success());

    // A certificate the broker does not present is not trusted.
    let other = TestPki::generate();
    let other_cert = other.path(files::BROKER_CERT).to_str().unwrap().to_string();
    let pinned_elsewhere = healthcheck(
        &["--http", &https],
        &[
            ("BLIPMQ_TLS_CERT_FILE", &other_cert),
            ("BLIPMQ_TLS_KEY_FILE", &key),
        ],
    );
    assert_eq!(pinned_elsewhere.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&pinned_elsewhere.stdout)
        .contains("not ready: cannot ask https://"));
    // Plain HTTP at the HTTPS port.
    let plain = healthcheck(&["--http", &addr], &[]);
    assert_eq!(plain.status.code(), Some(1));
    // Mutual TLS: no client certificate to present.
    let ca = path(files::CA);
    let mut mutual = from_config.clone();
    mutual.push(("BLIPMQ_TLS_CLIENT_CA_FILE", &ca));
    let refused = healthcheck(&[], &mutual);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("client certificates"));
}
