//! The quickstart binary, run as a user runs it, against a broker in this
//! process (127.0.0.1:0, a write-ahead log of its own for the QoS 1 half):
//! it must exit 0 by itself and print exactly what every language's
//! quickstart prints (examples/expected-output.txt).

use std::process::Command;
use std::time::Duration;

use blipmq_broker::{run, Config, Listeners};

const EXPECTED: &str = include_str!("../../expected-output.txt");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_prints_what_every_example_prints() {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.enabled = false;
    config.wal.dir = data.path().join("wal");
    let listeners = Listeners::bind(&config).await.unwrap();
    let addr = listeners.clients.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(run(listeners, config, async move {
        let _ = stopped.await;
    }));

    let mut example = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    example.arg(addr.to_string());
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || example.output()),
    )
    .await
    .expect("the quickstart exits by itself")
    .unwrap()
    .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    assert_eq!(stdout, EXPECTED, "stderr:\n{stderr}");

    stop.send(()).unwrap();
    broker.await.unwrap().unwrap();
}
