//! `blipmq-bench durable`: at-least-once workloads against BlipMQ QoS 1
//! (fsync `always` and `interval`), NATS JetStream with file storage and
//! Redis Streams with AOF (`appendfsync always` and `everysec`):
//!
//! - **publish**: one publisher, `--count` messages with a window of
//!   `--window` unconfirmed ones; confirmed msgs/s = confirms ÷ time from the
//!   first publish to the last confirm;
//! - **confirm latency**: publish one message, wait for its confirm, repeat,
//!   for `--latency-secs`;
//! - **end-to-end**: a durable consumer receives and acks every message while
//!   the publisher runs as above; delivered msgs/s = first deliveries ÷ time
//!   from the first publish to the last delivery.
//!
//! Every run is bounded by its count and by `--cell-secs`, with fresh names
//! (topic, stream, consumer) so that no run sees another's data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cpu::{CpuMeter, CpuUse};
use crate::durable_clients::{clean_up, prepare, DurableSystem, DurableTarget, Place};
pub use crate::durable_runs::LATENCY_SIZE;
use crate::durable_runs::{end_to_end_run, latency_run, publish_run};
use crate::runner::CellResult;
use crate::wal_metrics::{self, WalCounters};
use crate::{size_label, Rounds};

#[derive(clap::Args, Debug)]
pub struct DurableArgs {
    /// BlipMQ broker with `[wal] fsync_policy = always` (HOST:PORT).
    #[arg(long)]
    blipmq_always: Option<String>,
    /// Its metrics listener (HOST:PORT), to count the log's fsyncs.
    #[arg(long)]
    blipmq_always_metrics: Option<String>,
    /// BlipMQ broker with `[wal] fsync_policy = interval` (HOST:PORT).
    #[arg(long)]
    blipmq_interval: Option<String>,
    /// Its metrics listener (HOST:PORT).
    #[arg(long)]
    blipmq_interval_metrics: Option<String>,
    /// nats-server with JetStream (file storage) enabled (HOST:PORT).
    #[arg(long)]
    jetstream: Option<String>,
    /// redis-server with `--appendonly yes --appendfsync always` (HOST:PORT).
    #[arg(long)]
    redis_always: Option<String>,
    /// redis-server with `--appendonly yes --appendfsync everysec` (HOST:PORT).
    #[arg(long)]
    redis_everysec: Option<String>,
    /// Rounds of every workload; figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Messages per publish run.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Payload sizes of the publish runs, bytes.
    #[arg(long, value_delimiter = ',', default_value = "16,1024")]
    sizes: Vec<usize>,
    /// Messages published but not yet confirmed, at most.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Length of the confirm-latency run, seconds (16 B payloads).
    #[arg(long, default_value_t = 3.0)]
    latency_secs: f64,
    /// Messages per end-to-end run.
    #[arg(long, default_value_t = 50_000)]
    e2e_count: u64,
    /// Payload size of the end-to-end runs, bytes.
    #[arg(long, default_value_t = 16)]
    e2e_size: usize,
    /// Time cap of one run, seconds: publishing stops there.
    #[arg(long, default_value_t = 15.0)]
    cell_secs: f64,
    /// Workloads to run: publish, latency, e2e.
    #[arg(long, value_delimiter = ',', default_value = "publish,latency,e2e")]
    workloads: Vec<String>,
    /// Directory for durable.md, durable.json and durable.png; without it
    /// the table is only printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A server's process id, as SYSTEM=PID, to report its CPU time per
    /// message (read from /proc).
    #[arg(long = "server-pid", value_name = "SYSTEM=PID")]
    server_pids: Vec<String>,
    /// Server version and settings to show, as SYSTEM=TEXT (SYSTEM:
    /// blipmq-always, blipmq-interval, jetstream, redis-always, redis-everysec).
    #[arg(long = "server-version", value_name = "SYSTEM=TEXT")]
    server_versions: Vec<String>,
    /// Client crate versions to show, as free text.
    #[arg(long)]
    clients: Option<String>,
    /// A system left out and why, as SYSTEM=REASON.
    #[arg(long = "skipped", value_name = "SYSTEM=REASON")]
    skipped: Vec<String>,
    /// Line(s) of `wal_recovery` output to show in the report.
    #[arg(long)]
    recovery: Option<String>,
    /// The command that produced this run, shown at the top of the report.
    #[arg(long)]
    command: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DurableWorkload {
    Publish { size: usize },
    Latency,
    EndToEnd { size: usize },
}

impl DurableWorkload {
    pub fn label(&self) -> String {
        match self {
            DurableWorkload::Publish { size } => format!("publish, {}", size_label(*size)),
            DurableWorkload::Latency => {
                format!("confirm latency, {}", size_label(LATENCY_SIZE))
            }
            DurableWorkload::EndToEnd { size } => {
                format!("publish → consume + ack, {}", size_label(*size))
            }
        }
    }

    /// Letters, digits and `_`, for names on the servers.
    fn tag(&self) -> String {
        match self {
            DurableWorkload::Publish { size } => format!("pub{size}"),
            DurableWorkload::Latency => "lat".into(),
            DurableWorkload::EndToEnd { size } => format!("e2e{size}"),
        }
    }
}

/// Everything measured, for the report and the chart.
pub struct DurableOutcome {
    pub targets: Vec<DurableTarget>,
    pub workloads: Vec<DurableWorkload>,
    pub results: BTreeMap<(DurableWorkload, DurableSystem), Rounds>,
    /// BlipMQ's log counters over each run (where its metrics were given).
    pub wal: BTreeMap<(DurableWorkload, DurableSystem), Vec<WalCounters>>,
    /// CPU time of the server and of this process over each run (where the
    /// server's pid was given).
    /// One entry per round, like `results`.
    pub cpu: BTreeMap<(DurableWorkload, DurableSystem), Vec<Option<CpuUse>>>,
    pub elapsed: Duration,
    /// /proc/loadavg (1, 5, 15 min) before and after measuring.
    pub load: (String, String),
}

/// What the report says about the run besides the figures.
pub struct DurableInfo {
    pub command: Option<String>,
    pub versions: Vec<(DurableSystem, String)>,
    pub clients: Option<String>,
    pub skipped: Vec<(DurableSystem, String)>,
    pub recovery: Option<String>,
    pub rounds: u32,
    pub count: u64,
    pub window: usize,
    pub latency_secs: f64,
    pub e2e_count: u64,
    pub cell_secs: f64,
}

fn pairs(items: &[String], what: &str) -> Result<Vec<(DurableSystem, String)>, String> {
    items
        .iter()
        .map(|item| {
            let (key, text) = item
                .split_once('=')
                .ok_or_else(|| format!("{what} {item:?}: expected SYSTEM=TEXT"))?;
            let system = DurableSystem::from_key(key)
                .ok_or_else(|| format!("{what} {item:?}: unknown system {key:?}"))?;
            Ok((system, text.to_string()))
        })
        .collect()
}

fn workloads(args: &DurableArgs) -> Result<Vec<DurableWorkload>, String> {
    let mut out = Vec::new();
    for name in &args.workloads {
        match name.as_str() {
            "publish" => out.extend(
                args.sizes
                    .iter()
                    .map(|&size| DurableWorkload::Publish { size }),
            ),
            "latency" => out.push(DurableWorkload::Latency),
            "e2e" => out.push(DurableWorkload::EndToEnd {
                size: args.e2e_size,
            }),
            other => {
                return Err(format!(
                    "unknown workload {other:?} (expected publish, latency, e2e)"
                ))
            }
        }
    }
    Ok(out)
}

fn targets(args: &DurableArgs) -> Result<Vec<DurableTarget>, String> {
    let pids = pairs(&args.server_pids, "--server-pid")?
        .into_iter()
        .map(|(system, pid)| {
            pid.parse::<u32>()
                .map(|pid| (system, pid))
                .map_err(|_| format!("--server-pid {}={pid}: not a process id", system.key()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let given = [
        (
            DurableSystem::BlipmqAlways,
            &args.blipmq_always,
            &args.blipmq_always_metrics,
        ),
        (
            DurableSystem::BlipmqInterval,
            &args.blipmq_interval,
            &args.blipmq_interval_metrics,
        ),
        (DurableSystem::JetStream, &args.jetstream, &None),
        (DurableSystem::RedisAlways, &args.redis_always, &None),
        (DurableSystem::RedisEverysec, &args.redis_everysec, &None),
    ];
    Ok(given
        .into_iter()
        .filter_map(|(system, addr, metrics)| {
            addr.clone().map(|addr| DurableTarget {
                system,
                addr,
                metrics: metrics.clone(),
                pid: pids.iter().find(|(s, _)| *s == system).map(|(_, p)| *p),
            })
        })
        .collect())
}

/// Check the arguments, measure, write the report.
pub fn run(args: DurableArgs) -> Result<(), String> {
    if args.rounds == 0 || args.count == 0 || args.e2e_count == 0 || args.window == 0 {
        return Err("--rounds, --count, --e2e-count and --window must be at least 1".into());
    }
    if !(args.latency_secs > 0.0 && args.cell_secs > 0.0) {
        return Err("--latency-secs and --cell-secs must be positive".into());
    }
    if args.sizes.iter().chain([&args.e2e_size]).any(|&s| s == 0) {
        return Err("--sizes and --e2e-size must be at least 1 byte".into());
    }
    let workloads = workloads(&args)?;
    let versions = pairs(&args.server_versions, "--server-version")?;
    let skipped = pairs(&args.skipped, "--skipped")?;
    let targets = targets(&args)?;
    if targets.is_empty() {
        return Err(
            "no system to measure: give at least one of --blipmq-always, \
             --blipmq-interval, --jetstream, --redis-always, --redis-everysec"
                .into(),
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let outcome = runtime.block_on(measure(&args, &targets, &workloads));
    runtime.shutdown_timeout(Duration::from_secs(1));

    let info = DurableInfo {
        command: args.command.clone(),
        versions,
        clients: args.clients.clone(),
        skipped,
        recovery: args.recovery.clone(),
        rounds: args.rounds,
        count: args.count,
        window: args.window,
        latency_secs: args.latency_secs,
        e2e_count: args.e2e_count,
        cell_secs: args.cell_secs,
    };
    let markdown = crate::durable_report::markdown(&info, &outcome);
    println!("{markdown}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("blipmq-bench: wrote {}", path.display());
            Ok::<_, String>(())
        };
        write("durable.md", &markdown)?;
        write(
            "durable.json",
            &crate::durable_report::json(&info, &outcome),
        )?;
        let png = dir.join("durable.png");
        match crate::durable_chart::draw(&png, &outcome) {
            Ok(()) => eprintln!("blipmq-bench: wrote {}", png.display()),
            Err(e) => eprintln!("blipmq-bench: no chart: {e}"),
        }
    }
    Ok(())
}

async fn measure(
    args: &DurableArgs,
    targets: &[DurableTarget],
    workloads: &[DurableWorkload],
) -> DurableOutcome {
    let started = Instant::now();
    let load_before = crate::load_average();
    let mut results: BTreeMap<(DurableWorkload, DurableSystem), Rounds> = BTreeMap::new();
    let mut wal: BTreeMap<(DurableWorkload, DurableSystem), Vec<WalCounters>> = BTreeMap::new();
    let mut cpu: BTreeMap<(DurableWorkload, DurableSystem), Vec<Option<CpuUse>>> = BTreeMap::new();
    // Names stay unique across invocations against the same servers.
    let run_id = std::process::id();
    for round in 0..args.rounds {
        for &workload in workloads {
            let mut order = targets.to_vec();
            order.rotate_left(round as usize % targets.len());
            for target in &order {
                let place = Place::new(&format!(
                    "{run_id}_r{}_{}_{}",
                    round + 1,
                    workload.tag(),
                    target.system.key().replace('-', "_")
                ));
                let before = match &target.metrics {
                    Some(addr) => wal_metrics::read(addr).await.ok(),
                    None => None,
                };
                let meter = target.pid.and_then(|pid| CpuMeter::start(pid).ok());
                let result = run_one(target, &place, workload, args).await;
                if target.pid.is_some() {
                    let used = meter.and_then(|m| m.stop().ok());
                    cpu.entry((workload, target.system)).or_default().push(used);
                }
                if let (Some(before), Some(addr)) = (before, &target.metrics) {
                    if let Ok(after) = wal_metrics::read(addr).await {
                        wal.entry((workload, target.system))
                            .or_default()
                            .push(before.delta(after));
                    }
                }
                log_result(round, args.rounds, workload, target.system, &result);
                results
                    .entry((workload, target.system))
                    .or_default()
                    .push(result);
                // Let the server settle (closed connections, deleted data).
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    DurableOutcome {
        targets: targets.to_vec(),
        workloads: workloads.to_vec(),
        results,
        wal,
        cpu,
        elapsed: started.elapsed(),
        load: (load_before, crate::load_average()),
    }
}

fn log_result(
    round: u32,
    rounds: u32,
    workload: DurableWorkload,
    system: DurableSystem,
    result: &Result<CellResult, String>,
) {
    let head = format!(
        "round {}/{rounds} {:<30} {:<16}",
        round + 1,
        workload.label(),
        system.title()
    );
    match result {
        Ok(r) => eprintln!(
            "{head} {:>9.0} msg/s  {}/{} ({}){}{}",
            r.msgs_per_sec,
            r.delivered,
            r.expected,
            r.ended,
            r.p99_us
                .map(|p99| format!(
                    "  p50 {:.0} p99 {p99:.0} p99.9 {:.0} us",
                    r.p50_us.unwrap_or(0.0),
                    r.p999_us.unwrap_or(0.0)
                ))
                .unwrap_or_default(),
            if r.errors.is_empty() {
                String::new()
            } else {
                format!("  [{}]", r.errors.join("; "))
            }
        ),
        Err(e) => eprintln!("{head} failed: {e}"),
    }
}

/// One run: set up, measure, clean up (also after a failure).
async fn run_one(
    target: &DurableTarget,
    place: &Place,
    workload: DurableWorkload,
    args: &DurableArgs,
) -> Result<CellResult, String> {
    prepare(target, place).await?;
    let cap = Duration::from_secs_f64(args.cell_secs);
    let result = match workload {
        DurableWorkload::Publish { size } => {
            publish_run(target, place, args.count, size, args.window, cap).await
        }
        DurableWorkload::Latency => {
            latency_run(
                target,
                place,
                args.count,
                Duration::from_secs_f64(args.latency_secs),
            )
            .await
        }
        DurableWorkload::EndToEnd { size } => {
            end_to_end_run(target, place, args.e2e_count, size, args.window, cap).await
        }
    };
    let cleaned = clean_up(target, place).await;
    let mut result = result?;
    if let Err(e) = cleaned {
        result.errors.push(format!("clean-up: {e}"));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DurableArgs,
    }

    fn parse(line: &[&str]) -> DurableArgs {
        Cli::try_parse_from(std::iter::once("durable").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn workloads_follow_the_flags() {
        let args = parse(&["--sizes", "16,1024", "--e2e-size", "64"]);
        assert_eq!(
            workloads(&args).unwrap(),
            vec![
                DurableWorkload::Publish { size: 16 },
                DurableWorkload::Publish { size: 1024 },
                DurableWorkload::Latency,
                DurableWorkload::EndToEnd { size: 64 },
            ]
        );
        let args = parse(&["--workloads", "latency,fsync"]);
        let e = workloads(&args).unwrap_err();
        assert!(e.contains("unknown workload \"fsync\""), "{e}");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let e = run(parse(&["--window", "0", "--jetstream", "127.0.0.1:1"])).unwrap_err();
        assert!(e.contains("--window"), "{e}");
        let e = run(parse(&["--sizes", "0", "--jetstream", "127.0.0.1:1"])).unwrap_err();
        assert!(e.contains("--sizes"), "{e}");
        let e = run(parse(&[])).unwrap_err();
        assert!(e.contains("no system to measure"), "{e}");
        let e = run(parse(&[
            "--jetstream",
            "x:1",
            "--server-version",
            "kafka=3",
        ]))
        .unwrap_err();
        assert!(e.contains("unknown system \"kafka\""), "{e}");
    }

    #[test]
    fn only_the_given_systems_are_targets() {
        let args = parse(&[
            "--blipmq-always",
            "127.0.0.1:1",
            "--blipmq-always-metrics",
            "127.0.0.1:2",
            "--redis-everysec",
            "127.0.0.1:3",
        ]);
        let given = targets(&args).unwrap();
        assert_eq!(given.len(), 2);
        assert_eq!(given[0].system, DurableSystem::BlipmqAlways);
        assert_eq!(given[0].metrics.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(given[1].system, DurableSystem::RedisEverysec);
        assert_eq!(given[1].metrics, None);
        assert_eq!(given[1].pid, None);
        let args = parse(&[
            "--jetstream",
            "127.0.0.1:1",
            "--server-pid",
            "jetstream=4242",
        ]);
        assert_eq!(targets(&args).unwrap()[0].pid, Some(4242));
        let args = parse(&["--jetstream", "127.0.0.1:1", "--server-pid", "jetstream=x"]);
        let e = targets(&args).unwrap_err();
        assert!(e.contains("not a process id"), "{e}");
    }
}
