//! `blipmq-bench`: identical, bounded workloads against BlipMQ and the
//! brokers users would pick instead — NATS core, Redis pub/sub and Mosquitto
//! (MQTT QoS 0) — each through its usual Rust client, counting only messages
//! that subscribers received. Several rounds; the report gives medians.
//!
//! `blipmq-bench durable` runs the at-least-once workloads instead: BlipMQ
//! QoS 1 beside NATS JetStream and Redis Streams (see [`durable`]).
//!
//! The servers are started elsewhere (`scripts/bench-compare.sh` and
//! `scripts/bench-durable.sh` do it); this program is given their addresses.
//! A system without an address is left out.

mod chart;
mod cpu;
mod durable;
mod durable_chart;
mod durable_clients;
#[cfg(test)]
mod durable_live_tests;
mod durable_report;
mod durable_runs;
mod footprint;
mod report;
mod runner;
mod systems;
mod wal_metrics;

/// Every client library lives in this one process; mimalloc keeps the
/// allocator (glibc's took ~10% of this process's CPU in the many-topics
/// run) from being the harness's bottleneck, for every system alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::runner::{CellResult, CellSpec};
use crate::systems::{System, Target};

#[derive(Parser, Debug)]
#[command(
    name = "blipmq-bench",
    args_override_self = true,
    args_conflicts_with_subcommands = true,
    about = "Side-by-side benchmark: BlipMQ, NATS core, Redis pub/sub, Mosquitto",
    long_about = "Runs the same bounded workloads against every system given an address \
                  and writes a markdown table (with BlipMQ/peer ratios), a JSON file and a \
                  PNG chart. scripts/bench-compare.sh starts the servers and runs this. \
                  `blipmq-bench durable` runs the QoS 1 workloads (scripts/bench-durable.sh)."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    compare: Args,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Durable (at-least-once) workloads: BlipMQ QoS 1 under fsync `always`
    /// and `interval` beside NATS JetStream (file storage) and Redis Streams
    /// (AOF `always` and `everysec`); writes durable.md, durable.json and
    /// durable.png.
    Durable(durable::DurableArgs),
}

/// The pub/sub comparison (no subcommand).
#[derive(clap::Args, Debug)]
struct Args {
    /// BlipMQ broker address (HOST:PORT); run it with the `block` overflow
    /// policy for lossless max-rate figures.
    #[arg(long)]
    blipmq: Option<String>,
    /// nats-server address (HOST:PORT).
    #[arg(long)]
    nats: Option<String>,
    /// redis-server address (HOST:PORT).
    #[arg(long)]
    redis: Option<String>,
    /// MQTT broker (Mosquitto) address (HOST:PORT).
    #[arg(long)]
    mqtt: Option<String>,
    /// Rounds of every workload; figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Messages the publisher sends in each max-rate fan-out run.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Messages the publisher sends in the 100 topics × 10 subscribers run.
    #[arg(long, default_value_t = 250_000)]
    topics_count: u64,
    /// Publish rate of the latency run, messages per second.
    #[arg(long, default_value_t = 10_000.0)]
    latency_rate: f64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 5.0)]
    latency_secs: f64,
    /// Time cap of one max-rate run, seconds: publishing stops there.
    #[arg(long, default_value_t = 10.0)]
    cell_secs: f64,
    /// Workloads to run: fanout, topics, latency, connections (the last
    /// opens --idle-connections idle clients, reads the server's memory
    /// (needs --pid) and runs 1→1 at 16 B while they stay connected); or
    /// one fan-out cell as fanout:SUBSCRIBERS:SIZE (e.g. fanout:4:16).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fanout,topics,latency,connections"
    )]
    workloads: Vec<String>,
    /// Idle client connections of the `connections` workload.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// A server's process id, as SYSTEM=PID: its binary, shared libraries
    /// and memory go in the report's footprint table.
    #[arg(long = "pid", value_name = "SYSTEM=PID")]
    pids: Vec<String>,
    /// Every BlipMQ and NATS client speaks TLS trusting this CA (PEM): give
    /// their addresses as tls://host:port (scripts/bench-tls.sh does).
    #[arg(long, value_name = "PEM_FILE")]
    tls_ca: Option<PathBuf>,
    /// Directory for latest.md, latest.json and latest.png; without it the
    /// table is only printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Server version to show, as SYSTEM=TEXT (SYSTEM: blipmq, nats, redis, mqtt).
    #[arg(long = "server-version", value_name = "SYSTEM=TEXT")]
    server_versions: Vec<String>,
    /// Client crate versions to show, as free text.
    #[arg(long)]
    clients: Option<String>,
    /// A system left out and why, as SYSTEM=REASON.
    #[arg(long = "skipped", value_name = "SYSTEM=REASON")]
    skipped: Vec<String>,
    /// The command that produced this run, shown at the top of the report.
    #[arg(long)]
    command: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Workload {
    Fanout { subscribers: u32, size: usize },
    Topics,
    Latency,
}

/// Topics and subscribers of the many-topics workload.
pub const TOPICS: usize = 100;
pub const SUBS_PER_TOPIC: usize = 10;
/// Payload of the many-topics and latency workloads.
pub const SMALL: usize = 16;

impl Workload {
    pub fn label(&self) -> String {
        match self {
            Workload::Fanout { subscribers, size } => {
                format!("1→{subscribers}, {}", size_label(*size))
            }
            Workload::Topics => format!(
                "{TOPICS} topics × {SUBS_PER_TOPIC} subs, {}",
                size_label(SMALL)
            ),
            Workload::Latency => "latency".into(),
        }
    }
}

pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn spec(workload: Workload, args: &Args) -> CellSpec {
    let cap = Duration::from_secs_f64(args.cell_secs);
    match workload {
        Workload::Fanout { subscribers, size } => {
            let topic = format!("bench.fanout.{subscribers}.{size}");
            CellSpec {
                subscribers: vec![vec![topic.clone()]; subscribers as usize],
                topics: vec![topic],
                fanout: u64::from(subscribers),
                size,
                count: args.count,
                rate: None,
                record_latency: false,
                time_cap: cap,
            }
        }
        Workload::Topics => {
            let topics: Vec<String> = (0..TOPICS).map(|t| format!("bench.topic.{t:03}")).collect();
            // Connection c subscribes to the topics t with t ≡ c (mod 10):
            // 100 connections of 10 subscriptions, 10 subscribers per topic.
            let connections = TOPICS * SUBS_PER_TOPIC / 10;
            let subscribers = (0..connections)
                .map(|c| {
                    topics
                        .iter()
                        .enumerate()
                        .filter(|(t, _)| t % SUBS_PER_TOPIC == c % SUBS_PER_TOPIC)
                        .map(|(_, name)| name.clone())
                        .take(10)
                        .collect()
                })
                .collect();
            CellSpec {
                subscribers,
                topics,
                fanout: SUBS_PER_TOPIC as u64,
                size: SMALL,
                count: args.topics_count,
                rate: None,
                record_latency: false,
                time_cap: cap,
            }
        }
        Workload::Latency => {
            let topic = "bench.latency".to_string();
            CellSpec {
                subscribers: vec![vec![topic.clone()]],
                topics: vec![topic],
                fanout: 1,
                size: SMALL,
                count: (args.latency_rate * args.latency_secs).ceil() as u64,
                rate: Some(args.latency_rate),
                record_latency: true,
                time_cap: Duration::from_secs_f64(args.latency_secs + 10.0),
            }
        }
    }
}

fn workloads(args: &Args) -> Result<Vec<Workload>, String> {
    let mut out = Vec::new();
    for name in &args.workloads {
        match name.as_str() {
            "fanout" => {
                for subscribers in [1, 4] {
                    for size in [SMALL, 1024] {
                        out.push(Workload::Fanout { subscribers, size });
                    }
                }
            }
            // One fan-out cell, for profiling: fanout:SUBSCRIBERS:SIZE.
            cell if cell.starts_with("fanout:") => out.push(fanout_cell(cell)?),
            "topics" => out.push(Workload::Topics),
            "latency" => out.push(Workload::Latency),
            // Not a rounds workload: run once per system after them.
            "connections" => {}
            other => {
                return Err(format!(
                    "unknown workload {other:?} (expected fanout, topics, latency, connections)"
                ))
            }
        }
    }
    Ok(out)
}

fn fanout_cell(name: &str) -> Result<Workload, String> {
    let bad = || {
        format!("bad fan-out cell {name:?} (expected fanout:SUBSCRIBERS:SIZE, e.g. fanout:4:16)")
    };
    let mut parts = name.split(':').skip(1);
    let (Some(subscribers), Some(size), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let subscribers: u32 = subscribers.parse().map_err(|_| bad())?;
    let size: usize = size.parse().map_err(|_| bad())?;
    if subscribers == 0 || size == 0 {
        return Err(bad());
    }
    Ok(Workload::Fanout { subscribers, size })
}

fn pairs(items: &[String], what: &str) -> Result<Vec<(System, String)>, String> {
    items
        .iter()
        .map(|item| {
            let (key, text) = item
                .split_once('=')
                .ok_or_else(|| format!("{what} {item:?}: expected SYSTEM=TEXT"))?;
            let system = System::from_key(key)
                .ok_or_else(|| format!("{what} {item:?}: unknown system {key:?}"))?;
            Ok((system, text.to_string()))
        })
        .collect()
}

/// Every round of one workload on one system.
pub type Rounds = Vec<Result<CellResult, String>>;

pub struct Outcome {
    pub targets: Vec<Target>,
    pub workloads: Vec<Workload>,
    pub results: BTreeMap<(Workload, System), Rounds>,
    pub elapsed: Duration,
    pub latency_rate: f64,
    /// /proc/loadavg (1, 5, 15 min) before and after measuring.
    pub load: (String, String),
    /// Each server with a known PID, read before any workload ran.
    pub idle: BTreeMap<System, footprint::Idle>,
    /// The `connections` workload, when it ran.
    pub loaded: BTreeMap<System, footprint::Loaded>,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Durable(args)) => durable::run(args),
        None => run(cli.compare),
    };
    if let Err(e) = result {
        eprintln!("blipmq-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.rounds == 0 || args.count == 0 || args.topics_count == 0 {
        return Err("--rounds, --count and --topics-count must be at least 1".into());
    }
    if !(args.latency_rate > 0.0 && args.latency_secs > 0.0 && args.cell_secs > 0.0) {
        return Err("--latency-rate, --latency-secs and --cell-secs must be positive".into());
    }
    if let Some(ca) = &args.tls_ca {
        // async-nats brings no crypto provider of its own here: ring, as
        // the BlipMQ client uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        systems::TLS_CA
            .set(ca.clone())
            .map_err(|_| "--tls-ca given twice".to_string())?;
    }
    let workloads = workloads(&args)?;
    let versions = pairs(&args.server_versions, "--server-version")?;
    let pids = pairs(&args.pids, "--pid")?
        .into_iter()
        .map(|(system, pid)| {
            pid.parse::<u32>()
                .map(|pid| (system, pid))
                .map_err(|_| format!("--pid {}={pid}: not a process id", system.key()))
        })
        .collect::<Result<BTreeMap<System, u32>, String>>()?;
    let skipped = pairs(&args.skipped, "--skipped")?;
    let targets: Vec<Target> = [
        (System::Blipmq, &args.blipmq),
        (System::Nats, &args.nats),
        (System::Redis, &args.redis),
        (System::Mqtt, &args.mqtt),
    ]
    .into_iter()
    .filter_map(|(system, addr)| addr.clone().map(|addr| Target { system, addr }))
    .collect();
    if targets.is_empty() {
        return Err(
            "no system to measure: give at least one of --blipmq, --nats, --redis, --mqtt".into(),
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let outcome = runtime.block_on(measure(&args, &targets, &workloads, &pids));
    // Stray client tasks must not hold the process open.
    runtime.shutdown_timeout(Duration::from_secs(1));

    let info = report::Info {
        command: args.command.clone(),
        versions,
        clients: args.clients.clone(),
        skipped,
        rounds: args.rounds,
        count: args.count,
        topics_count: args.topics_count,
        latency_rate: args.latency_rate,
        latency_secs: args.latency_secs,
        cell_secs: args.cell_secs,
    };
    let markdown = report::markdown(&info, &outcome);
    println!("{markdown}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let md = dir.join("latest.md");
        std::fs::write(&md, &markdown).map_err(|e| format!("{}: {e}", md.display()))?;
        let json = dir.join("latest.json");
        std::fs::write(&json, report::json(&info, &outcome))
            .map_err(|e| format!("{}: {e}", json.display()))?;
        eprintln!(
            "blipmq-bench: wrote {} and {}",
            md.display(),
            json.display()
        );
        let png = dir.join("latest.png");
        match chart::draw(&png, &outcome) {
            Ok(()) => eprintln!("blipmq-bench: wrote {}", png.display()),
            Err(e) => eprintln!("blipmq-bench: no chart: {e}"),
        }
    }
    Ok(())
}

async fn measure(
    args: &Args,
    targets: &[Target],
    workloads: &[Workload],
    pids: &BTreeMap<System, u32>,
) -> Outcome {
    let started = Instant::now();
    let load_before = load_average();
    let idle = targets
        .iter()
        .filter_map(|t| {
            pids.get(&t.system)
                .map(|&pid| (t.system, footprint::idle(pid)))
        })
        .collect();
    // Idle connections first, on servers that have run nothing else: after
    // the max-rate cells a server's RSS holds what its allocator kept from
    // deep queues (for BlipMQ 26 to 66 MB from run to run), which would
    // swamp what the connections themselves cost.
    let mut loaded = BTreeMap::new();
    if args.workloads.iter().any(|w| w == "connections") && args.idle_connections > 0 {
        let one_to_one = spec(
            Workload::Fanout {
                subscribers: 1,
                size: SMALL,
            },
            args,
        );
        for target in targets {
            let pid = pids.get(&target.system).copied();
            let result =
                footprint::with_idle_connections(target, pid, args.idle_connections, &one_to_one)
                    .await;
            eprintln!(
                "{} idle connections  {:<16} opened {} in {:.1} s, RSS {} KiB, 1→1 16 B {} msg/s{}",
                args.idle_connections,
                target.system.title(),
                result.idle_connections,
                result.connect_secs,
                result.rss_kib.map_or("?".into(), |k| k.to_string()),
                result
                    .delivered_per_sec
                    .map_or("?".into(), |r| format!("{r:.0}")),
                result
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  [{e}]"))
            );
            loaded.insert(target.system, result);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let mut results: BTreeMap<(Workload, System), Rounds> = BTreeMap::new();
    for round in 0..args.rounds {
        for &workload in workloads {
            let spec = spec(workload, args);
            // Rotate the order each round, so no system always goes first.
            let mut order = targets.to_vec();
            order.rotate_left(round as usize % targets.len());
            for target in &order {
                let result = runner::run_cell(target, &spec).await;
                match &result {
                    Ok(r) => eprintln!(
                        "round {}/{} {:<28} {:<16} {:>10.0} msg/s  delivered {}/{} ({:.2}% lost, {}){}{}",
                        round + 1,
                        args.rounds,
                        workload.label(),
                        target.system.title(),
                        r.msgs_per_sec,
                        r.delivered,
                        r.expected,
                        r.lost_pct,
                        r.ended,
                        r.p99_us
                            .map(|p99| format!("  p50 {:.0} p99 {:.0} p99.9 {:.0} us", r.p50_us.unwrap_or(0.0), p99, r.p999_us.unwrap_or(0.0)))
                            .unwrap_or_default(),
                        if r.errors.is_empty() {
                            String::new()
                        } else {
                            format!("  [{}]", r.errors.join("; "))
                        }
                    ),
                    Err(e) => eprintln!(
                        "round {}/{} {:<28} {:<16} failed: {e}",
                        round + 1,
                        args.rounds,
                        workload.label(),
                        target.system.title()
                    ),
                }
                results
                    .entry((workload, target.system))
                    .or_default()
                    .push(result);
                // Let the server settle (closed connections, freed buffers).
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Outcome {
        targets: targets.to_vec(),
        workloads: workloads.to_vec(),
        results,
        elapsed: started.elapsed(),
        latency_rate: args.latency_rate,
        load: (load_before, load_average()),
        idle,
        loaded,
    }
}
