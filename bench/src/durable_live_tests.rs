//! The durable workloads against a live, in-process BlipMQ broker (on
//! 127.0.0.1:0, its log in a temporary directory): every message is
//! confirmed or delivered and counted, the log's counters are read from
//! `/metrics`, and `blipmq-bench durable` writes its report.

use std::time::Duration;

use blipmq_broker::wal::FsyncPolicy;
use blipmq_broker::{run_and_notify, Config, Listeners};
use tokio::sync::oneshot;

use crate::durable_clients::{DurableSystem, DurableTarget, Place};
use crate::durable_runs::{end_to_end_run, latency_run, publish_run};
use crate::wal_metrics;

struct Broker {
    addr: String,
    metrics: String,
    _data: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn start_broker(policy: FsyncPolicy) -> Broker {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.enabled = true;
    config.wal.dir = data.path().join("wal");
    config.wal.fsync_policy = policy;
    let listeners = Listeners::bind(&config).await.unwrap();
    let addr = listeners.clients.local_addr().unwrap().to_string();
    let metrics = listeners
        .metrics
        .as_ref()
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, is_ready) = oneshot::channel::<()>();
    tokio::spawn(run_and_notify(
        listeners,
        config,
        async move {
            let _ = stopped.await;
        },
        move || {
            let _ = ready.send(());
        },
    ));
    // Until the log is recovered /metrics answers 503 (recovering): wait
    // for the moment the binary prints its readiness line.
    tokio::time::timeout(CAP, is_ready)
        .await
        .expect("the broker became ready")
        .expect("the broker started");
    Broker {
        addr,
        metrics,
        _data: data,
        _stop: stop,
    }
}

fn target(broker: &Broker, system: DurableSystem) -> DurableTarget {
    DurableTarget {
        system,
        addr: broker.addr.clone(),
        metrics: Some(broker.metrics.clone()),
        pid: None,
    }
}

const CAP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_message_is_confirmed_and_logged() {
    let broker = start_broker(FsyncPolicy::Always).await;
    let target = target(&broker, DurableSystem::BlipmqAlways);
    let before = wal_metrics::read(&broker.metrics).await.unwrap();
    let result = publish_run(&target, &Place::new("t_publish"), 2_000, 100, 64, CAP)
        .await
        .unwrap();
    assert_eq!(result.errors, Vec::<String>::new());
    assert_eq!(result.ended, "complete");
    assert_eq!((result.published, result.delivered), (2_000, 2_000));
    assert!(result.msgs_per_sec > 0.0 && result.secs > 0.0);
    let wal = before.delta(wal_metrics::read(&broker.metrics).await.unwrap());
    assert!(wal.records >= 2_000, "{wal:?}");
    // Group commit under `always`: at least one fsync, at most one a record.
    assert!(wal.fsyncs >= 1 && wal.fsyncs <= wal.records, "{wal:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_latency_is_recorded_for_each_message() {
    let broker = start_broker(FsyncPolicy::Interval).await;
    let target = target(&broker, DurableSystem::BlipmqInterval);
    let result = latency_run(
        &target,
        &Place::new("t_latency"),
        500,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(result.errors, Vec::<String>::new());
    // Bounded by the count before the time ran out.
    assert_eq!((result.published, result.delivered), (500, 500));
    let (p50, p99) = (result.p50_us.unwrap(), result.p99_us.unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_receives_and_acks_everything() {
    let broker = start_broker(FsyncPolicy::Interval).await;
    let target = target(&broker, DurableSystem::BlipmqInterval);
    let place = Place::new("t_e2e");
    let result = end_to_end_run(&target, &place, 3_000, 16, 128, CAP)
        .await
        .unwrap();
    assert_eq!(result.errors, Vec::<String>::new());
    assert_eq!(result.ended, "complete");
    assert_eq!(result.expected, 3_000);
    assert_eq!(result.delivered, 3_000);
    assert_eq!(result.lost_pct, 0.0);
    // Everything was acked, and the consumer deleted its durable
    // subscription on the way out, so the log can drop the run's segments.
    let text = wal_metrics::scrape(&broker.metrics).await.unwrap();
    assert_eq!(
        wal_metrics::value(&text, "blipmq_durable_subscriptions"),
        Ok(0)
    );
    assert_eq!(
        wal_metrics::value(&text, "blipmq_durable_unacked_messages"),
        Ok(0)
    );
    // The same names again: a fresh subscription, nothing left over.
    let again = end_to_end_run(&target, &place, 100, 16, 128, CAP)
        .await
        .unwrap();
    assert_eq!((again.expected, again.delivered), (100, 100));
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // Bind a port, then free it: nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let target = DurableTarget {
        system: DurableSystem::BlipmqAlways,
        addr,
        metrics: None,
        pid: None,
    };
    let e = publish_run(&target, &Place::new("t_down"), 10, 16, 4, CAP)
        .await
        .unwrap_err();
    assert!(e.starts_with("connect to BlipMQ"), "{e}");
}

#[test]
fn the_durable_subcommand_writes_its_report() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = runtime.block_on(start_broker(FsyncPolicy::Always));
    let out = tempfile::tempdir().unwrap();
    // The broker runs in this process: its CPU time is ours.
    let pid = format!("blipmq-always={}", std::process::id());
    let args = [
        "durable",
        "--blipmq-always",
        &broker.addr,
        "--blipmq-always-metrics",
        &broker.metrics,
        "--rounds",
        "1",
        "--count",
        "500",
        "--e2e-count",
        "500",
        "--latency-secs",
        "0.2",
        "--out",
        out.path().to_str().unwrap(),
        "--recovery",
        "recovered in 90 ms",
        "--server-pid",
        &pid,
    ];
    let cli = <crate::Cli as clap::Parser>::try_parse_from(
        std::iter::once("blipmq-bench").chain(args.iter().copied()),
    )
    .unwrap();
    let Some(crate::Command::Durable(args)) = cli.command else {
        panic!("`durable` is a subcommand");
    };
    crate::durable::run(args).unwrap();
    let md = std::fs::read_to_string(out.path().join("durable.md")).unwrap();
    assert!(md.contains("| workload | BlipMQ always |"), "{md}");
    assert!(md.contains("| publish, 16 B |"), "{md}");
    assert!(md.contains("| publish, 1 KiB |"), "{md}");
    assert!(md.contains("| publish → consume + ack, 16 B |"), "{md}");
    assert!(md.contains("| p99 |"), "{md}");
    assert!(md.contains("## BlipMQ group commit"), "{md}");
    assert!(md.contains("## CPU time per message"), "{md}");
    assert!(md.contains("recovered in 90 ms"), "{md}");
    assert!(!md.contains("failed"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("durable.json")).unwrap())
            .unwrap();
    assert_eq!(json["cells"].as_array().unwrap().len(), 4);
    drop(broker);
}
