//! `blipmq-history`: records a history of QoS 1 traffic against the real
//! broker under faults, then checks it.
//!
//! The run: start the broker; attach every consumer (its queue exists from
//! then on); publish and consume for `--duration` while the nemesis kills,
//! freezes and restarts the broker; stop the nemesis, the publishers, then
//! the consumers; restart the broker cleanly and drain every queue until
//! quiet; stop it; check the history. Exit 0 when the history keeps the
//! promise and nothing else went wrong, 1 when not, 2 when the run could
//! not be set up.

mod args;
mod broker;
mod consumer;
mod delivery;
mod drain;
mod mood;
mod nemesis;
mod publisher;
mod recorder;
mod report;
mod session;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use blipmq_history::Event;
use clap::Parser;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use args::Args;
use broker::{Broker, BrokerSpec};
use recorder::Recorder;
use workload::{actor_seed, QUEUES};

/// Bounds on the phases around the faults, so that a run always ends.
const ATTACH_WITHIN: Duration = Duration::from_secs(30);
const WIND_DOWN_WITHIN: Duration = Duration::from_secs(30);
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

/// What every actor holds: where to record, where the broker is, when to stop.
#[derive(Clone)]
pub struct Shared {
    pub recorder: Arc<Recorder>,
    pub addresses: watch::Receiver<Option<SocketAddr>>,
    pub stop: CancellationToken,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("blipmq-history seed {seed}");
    println!("replay: blipmq-history {}", args.replay_line(seed));
    let Some(bin) = args.broker.clone().or_else(broker_beside_us) else {
        eprintln!("blipmq-history: no blipmq binary beside this one; pass --broker PATH");
        return ExitCode::from(2);
    };
    let mut dir = tempfile::Builder::new();
    dir.prefix("blipmq-history-");
    let dir = match &args.dir {
        Some(parent) => dir.tempdir_in(parent),
        None => dir.tempdir(),
    };
    let dir = match dir {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("blipmq-history: cannot make a temporary directory: {e}");
            return ExitCode::from(2);
        }
    };
    let recorder = Arc::new(Recorder::new());
    let wal_dir = dir.path().join("wal");
    let broker = Arc::new(Broker::new(
        broker_spec(&args, bin, dir.path(), &wal_dir),
        recorder.clone(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let drained = runtime.block_on(run(
        &args,
        seed,
        broker.clone(),
        recorder.clone(),
        dir.path().into(),
        wal_dir,
    ));
    drop(runtime);
    drop(broker);

    let history = recorder.take_events();
    let anomalies = recorder.anomalies();
    let report = blipmq_history::check(&history);
    if drained {
        report::print(&report, &anomalies, &history);
    } else {
        // Without the drain, what queues still owe cannot be told from
        // what they lost; only the anomalies are conclusive.
        let stats_only = blipmq_history::Report {
            stats: report.stats.clone(),
            violations: Vec::new(),
        };
        report::print(&stats_only, &anomalies, &[]);
        println!("(the run ended before the drain: the history was not checked)");
    }
    let failed = !drained || !anomalies.is_empty() || !report.violations.is_empty();
    if failed || args.keep {
        let path = dir.keep();
        if let Err(e) = report::write_history(&path.join("history.jsonl"), &history) {
            eprintln!("blipmq-history: cannot write the history: {e}");
        }
        println!("kept {}: broker.log, wal/, history.jsonl", path.display());
    }
    println!("seed {seed}: {}", if failed { "FAILED" } else { "passed" });
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Returns whether the run got as far as draining every queue.
async fn run(
    args: &Args,
    seed: u64,
    broker: Arc<Broker>,
    recorder: Arc<Recorder>,
    run_dir: PathBuf,
    wal_dir: PathBuf,
) -> bool {
    tokio::spawn(kill_broker_on_signal(broker.clone(), run_dir));
    if let Err(e) = blocking(&broker, |b| b.start()).await {
        recorder.anomaly(e);
        return false;
    }
    let shared = |stop: &CancellationToken| Shared {
        recorder: recorder.clone(),
        addresses: broker.addresses(),
        stop: stop.clone(),
    };
    let consumers_stop = CancellationToken::new();
    let publishers_stop = CancellationToken::new();

    // Every queue must exist before the first publish, or it is owed nothing.
    let mood = Arc::new(mood::Mood::default());
    let mut consumers = tokio::task::JoinSet::new();
    let mut attached = Vec::new();
    for plan in QUEUES {
        for &name in plan.consumers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            attached.push(rx);
            consumers.spawn(
                consumer::Consumer {
                    name,
                    plan,
                    ack_timeout: args.ack_timeout(),
                    rng: SmallRng::seed_from_u64(actor_seed(seed, name)),
                    shared: shared(&consumers_stop),
                    mood: mood.clone(),
                    attached: Some(tx),
                }
                .run(),
            );
        }
    }
    let all_attached = futures::future::join_all(attached);
    if tokio::time::timeout(ATTACH_WITHIN, all_attached)
        .await
        .is_err()
    {
        recorder.anomaly(format!(
            "the consumers did not attach within {ATTACH_WITHIN:?}"
        ));
        consumers_stop.cancel();
        return false;
    }
    for plan in QUEUES {
        recorder.record(Event::QueueCreated {
            queue: plan.name,
            pattern: plan.pattern,
            kind: plan.kind,
        });
    }
    println!("[{:7.3}s] queues attached; publishing", recorder.seconds());

    let conductor = {
        let (mood, recorder, stop) = (mood.clone(), recorder.clone(), consumers_stop.clone());
        let rng = SmallRng::seed_from_u64(actor_seed(seed, "conductor"));
        tokio::spawn(async move { mood.conduct(rng, &recorder, stop).await })
    };
    let budget = Arc::new(publisher::Budget::new(args.max_messages, args.duration()));
    let mut publishers = tokio::task::JoinSet::new();
    for index in 1..=args.publishers {
        let name: &'static str = Box::leak(format!("pub-{index}").into_boxed_str());
        publishers.spawn(
            publisher::Publisher {
                index,
                name,
                in_flight: args.in_flight.max(1),
                max_body: (args.segment_bytes / 3) as usize,
                rng: SmallRng::seed_from_u64(actor_seed(seed, name)),
                budget: budget.clone(),
                shared: shared(&publishers_stop),
            }
            .run(),
        );
    }

    let fatal = CancellationToken::new();
    let (stop_nemesis, nemesis) = nemesis::Nemesis {
        broker: broker.clone(),
        recorder: recorder.clone(),
        rng: SmallRng::seed_from_u64(actor_seed(seed, "nemesis")),
        wal_dir,
        fatal: fatal.clone(),
    }
    .spawn();
    tokio::select! {
        () = tokio::time::sleep(args.duration()) => {}
        () = fatal.cancelled() => {}
    }
    drop(stop_nemesis);
    let faults = tokio::task::spawn_blocking(move || nemesis.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    println!(
        "[{:7.3}s] {faults} faults; stopping publishers, then consumers",
        recorder.seconds()
    );

    publishers_stop.cancel();
    wind_down(&mut publishers, "publishers", &recorder).await;
    consumers_stop.cancel();
    wind_down(&mut consumers, "consumers", &recorder).await;
    let _ = conductor.await;
    if fatal.is_cancelled() {
        return false;
    }

    // A clean restart, so the drain reads the queues from the log alone.
    if let Err(e) = blocking(&broker, |b| b.terminate()).await {
        recorder.anomaly(format!("clean stop before the drain: {e}"));
    }
    if let Err(e) = blocking(&broker, |b| b.start()).await {
        recorder.anomaly(e);
        return false;
    }
    recorder.record(Event::DrainStarted);
    println!("[{:7.3}s] draining", recorder.seconds());
    // Never cancelled: each drainer is bounded by DRAIN_WITHIN instead.
    let drain_stop = CancellationToken::new();
    let taken = drain::drain_all(&shared(&drain_stop), args.quiet(), DRAIN_WITHIN).await;
    println!("[{:7.3}s] drained {taken} deliveries", recorder.seconds());
    if let Err(e) = blocking(&broker, |b| b.terminate()).await {
        recorder.anomaly(format!("clean stop after the drain: {e}"));
    }
    true
}

async fn wind_down<T: 'static>(
    tasks: &mut tokio::task::JoinSet<T>,
    who: &str,
    recorder: &Recorder,
) {
    let all = async {
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                recorder.anomaly(format!("one of the {who} failed: {e}"));
            }
        }
    };
    if tokio::time::timeout(WIND_DOWN_WITHIN, all).await.is_err() {
        recorder.anomaly(format!(
            "the {who} did not stop within {WIND_DOWN_WITHIN:?}"
        ));
        tasks.abort_all();
    }
}

/// Interrupted (Ctrl-C, or a CI step's timeout): take the broker down
/// with us, since an exiting process runs no destructors, and give up the
/// run, leaving its directory behind.
async fn kill_broker_on_signal(broker: Arc<Broker>, run_dir: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    blocking(&broker, |b| b.kill()).await;
    eprintln!(
        "blipmq-history: interrupted; broker stopped, its log and data left in {}",
        run_dir.display()
    );
    std::process::exit(130);
}

/// Broker control waits on processes; keep it off the runtime's workers.
async fn blocking<T: Send + 'static>(
    broker: &Arc<Broker>,
    f: impl FnOnce(&Broker) -> T + Send + 'static,
) -> T {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || f(&broker))
        .await
        .expect("broker control does not panic")
}

fn broker_beside_us() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.parent()?.join("blipmq");
    path.is_file().then_some(path)
}

fn broker_spec(args: &Args, bin: PathBuf, dir: &Path, wal: &Path) -> BrokerSpec {
    BrokerSpec {
        bin,
        log: dir.join("broker.log"),
        env: vec![
            ("RUST_LOG", "warn".into()),
            ("BLIPMQ_SERVER_BIND_ADDR", "127.0.0.1:0".into()),
            ("BLIPMQ_METRICS_ENABLED", "false".into()),
            ("BLIPMQ_WAL_DIR", wal.display().to_string()),
            ("BLIPMQ_WAL_FSYNC_POLICY", args.fsync.as_str().into()),
            ("BLIPMQ_WAL_SEGMENT_BYTES", args.segment_bytes.to_string()),
            (
                "BLIPMQ_DELIVERY_ACK_TIMEOUT_MS",
                args.ack_timeout_ms.to_string(),
            ),
            // Little credit: consumers that stall or never ack hold it all,
            // and every ack makes room for the next delivery.
            ("BLIPMQ_DELIVERY_MAX_IN_FLIGHT", "64".into()),
        ],
    }
}
