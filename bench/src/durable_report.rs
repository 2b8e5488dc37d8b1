//! `durable.md` (BlipMQ's two fsync policies beside JetStream and Redis
//! Streams, with ratios) and `durable.json` (every round).

use std::fmt::Write as _;

use serde::Serialize;

use crate::durable::{DurableInfo, DurableOutcome, DurableWorkload, LATENCY_SIZE};
use crate::durable_clients::DurableSystem;
use crate::report::{
    machine, median, median_of, now_utc, ratio, round_errors, round_figure, rounds_header,
    thousands, us,
};
use crate::runner::CellResult;
use crate::size_label;

/// The ratios worth reading: like-for-like durability first (both confirm
/// after an fsync; both fsync on a timer), then BlipMQ against JetStream.
const RATIOS: [(DurableSystem, DurableSystem); 4] = [
    (DurableSystem::BlipmqAlways, DurableSystem::RedisAlways),
    (DurableSystem::BlipmqInterval, DurableSystem::RedisEverysec),
    (DurableSystem::BlipmqInterval, DurableSystem::JetStream),
    (DurableSystem::BlipmqAlways, DurableSystem::JetStream),
];

/// What a confirm means on each system, as configured by the script.
fn confirm_meaning(system: DurableSystem) -> &'static str {
    match system {
        DurableSystem::BlipmqAlways => {
            "after the fsync that covers the message (group commit: one write and one \
             fsync for everything queued meanwhile); nothing confirmed is lost in an OS crash"
        }
        DurableSystem::BlipmqInterval => {
            "after the message is written to the log (page cache); the log is fsynced at \
             most `fsync_interval_ms` (10 ms) later: an OS crash may lose the last ~10 ms"
        }
        DurableSystem::JetStream => {
            "after the message is written to the stream's file store (page cache); the \
             server fsyncs on a background timer, not per message (nats-server 2.9 has no \
             option to fsync each write; `sync_interval` arrived in 2.10): an OS crash may \
             lose recently confirmed messages"
        }
        DurableSystem::RedisAlways => {
            "after the AOF is written and fsynced (Redis fsyncs once per event-loop \
             iteration, before replying, so pipelined XADDs share an fsync)"
        }
        DurableSystem::RedisEverysec => {
            "after the AOF write (page cache); fsynced once a second: an OS crash may lose \
             about the last second"
        }
    }
}

fn rate_cell(rounds: Option<&crate::Rounds>) -> String {
    let rate = median_of(rounds, |r| Some(r.msgs_per_sec));
    let missing = median_of(rounds, |r| Some(r.lost_pct)).unwrap_or(0.0);
    match rate {
        Some(rate) if missing >= 0.005 => format!("{} ({missing:.1}% missing)", thousands(rate)),
        Some(rate) => thousands(rate),
        None => "failed".into(),
    }
}

/// Median server and client CPU µs per message of one workload on one
/// system, as "server + client".
fn cpu_cell(outcome: &DurableOutcome, w: DurableWorkload, s: DurableSystem) -> String {
    let (Some(cpu), Some(rounds)) = (outcome.cpu.get(&(w, s)), outcome.results.get(&(w, s))) else {
        return "–".into();
    };
    let per_message: Vec<(f64, f64)> = cpu
        .iter()
        .zip(rounds)
        .filter_map(|(cpu, result)| {
            let (cpu, result) = (cpu.as_ref()?, result.as_ref().ok()?);
            (result.delivered > 0).then(|| {
                let n = result.delivered as f64;
                (cpu.server_secs * 1e6 / n, cpu.client_secs * 1e6 / n)
            })
        })
        .collect();
    let server = median(per_message.iter().map(|p| p.0).collect());
    let client = median(per_message.iter().map(|p| p.1).collect());
    match (server, client) {
        (Some(server), Some(client)) => format!("{server:.1} + {client:.1}"),
        _ => "–".into(),
    }
}

pub fn markdown(info: &DurableInfo, outcome: &DurableOutcome) -> String {
    let systems: Vec<DurableSystem> = outcome.targets.iter().map(|t| t.system).collect();
    let get = |w: DurableWorkload, s: DurableSystem| outcome.results.get(&(w, s));
    let rate =
        |w: DurableWorkload, s: DurableSystem| median_of(get(w, s), |r| Some(r.msgs_per_sec));
    let mut md = String::new();

    let _ = writeln!(
        md,
        "# BlipMQ durable (QoS 1) beside NATS JetStream and Redis Streams\n"
    );
    let _ = writeln!(
        md,
        "Generated {} in {:.0} s of measuring by:\n\n```\n{}\n```\n",
        now_utc(),
        outcome.elapsed.as_secs_f64(),
        info.command
            .as_deref()
            .unwrap_or("blipmq-bench durable (run by hand)")
    );
    let _ = writeln!(
        md,
        "- **Machine**: {}. Servers and the load generator share these cores, and the \
         machine is shared with other builds: it is noisy (load average {} before \
         measuring, {} after). Every server keeps its data in a fresh directory on the \
         same disk.",
        machine(),
        outcome.load.0,
        outcome.load.1
    );
    for system in &systems {
        let version = info
            .versions
            .iter()
            .find(|(v, _)| v == system)
            .map(|(_, t)| t.as_str())
            .unwrap_or("version not given");
        let _ = writeln!(
            md,
            "- **{}**: {version}. Confirmed {}.",
            system.title(),
            confirm_meaning(*system)
        );
    }
    if let Some(clients) = &info.clients {
        let _ = writeln!(
            md,
            "- **Clients** (all in one process, tokio multi-thread runtime, mimalloc allocator): {clients}."
        );
    }
    for (system, reason) in &info.skipped {
        let _ = writeln!(md, "- **Skipped**: {} — {reason}.", system.title());
    }
    let _ = writeln!(
        md,
        "- **Method**: {rounds} round{plural}, every figure the median over rounds (systems \
         take turns within a round, in rotated order), each run on a fresh topic / stream / \
         key. *Publish*: one publisher sends {count} messages keeping at most {window} \
         unconfirmed (BlipMQ QoS 1 publish, JetStream publish + ack future, pipelined \
         Redis `XADD`); msgs/s = confirms ÷ time from the first publish to the last \
         confirm. *Confirm latency*: one {lat} message at a time, publish then wait for \
         its confirm, for {lat_secs:.0} s. *Publish → consume + ack*: a durable consumer \
         (BlipMQ durable QoS 1 subscription, JetStream durable pull consumer with explicit \
         acks, Redis consumer group with `XREADGROUP` and one `XACK` per batch read) \
         exists before the publisher sends {e2e} messages as above; msgs/s = first \
         deliveries ÷ time from the first publish to the last delivery. Each run is \
         capped at {cap:.0} s of publishing.",
        rounds = info.rounds,
        plural = if info.rounds == 1 { "" } else { "s" },
        count = thousands(info.count as f64),
        window = info.window,
        lat = size_label(LATENCY_SIZE),
        lat_secs = info.latency_secs,
        e2e = thousands(info.e2e_count as f64),
        cap = info.cell_secs,
    );
    if let Some(recovery) = &info.recovery {
        let _ = writeln!(
            md,
            "- **WAL recovery** (`cargo run --release -p blipmq-broker --example \
             wal_recovery`, 1,000,000 records of 100 B): {recovery}"
        );
    }
    md.push('\n');

    let throughput: Vec<DurableWorkload> = outcome
        .workloads
        .iter()
        .copied()
        .filter(|w| *w != DurableWorkload::Latency)
        .collect();
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    for s in &systems {
        let _ = write!(header, " {} |", s.title());
        rule.push_str("---:|");
    }
    if !throughput.is_empty() {
        let _ = writeln!(
            md,
            "## Durable messages per second (higher is better)\n\n\
             Publish: confirmed msgs/s; publish → consume + ack: delivered and acked msgs/s.\n\n\
             {header}\n{rule}"
        );
        for w in &throughput {
            let _ = write!(md, "| {} |", w.label());
            for s in &systems {
                let _ = write!(md, " {} |", rate_cell(get(*w, *s)));
            }
            md.push('\n');
        }
        md.push('\n');

        let pairs: Vec<_> = RATIOS
            .iter()
            .filter(|(a, b)| systems.contains(a) && systems.contains(b))
            .collect();
        if !pairs.is_empty() {
            let _ = writeln!(md, "### Ratios (BlipMQ ÷ peer, of the medians)\n");
            let mut head = String::from("| workload |");
            let mut line = String::from("|---|");
            for (a, b) in &pairs {
                let _ = write!(head, " {} ÷ {} |", a.title(), b.title());
                line.push_str("---:|");
            }
            let _ = writeln!(md, "{head}\n{line}");
            for w in &throughput {
                let _ = write!(md, "| {} |", w.label());
                for (a, b) in &pairs {
                    let _ = write!(md, " {} |", ratio(rate(*w, *a), rate(*w, *b)));
                }
                md.push('\n');
            }
            md.push('\n');
        }
    }

    if !outcome.cpu.is_empty() && !throughput.is_empty() {
        let _ = writeln!(
            md,
            "## CPU time per message (µs, lower is better)\n\n\
             Server + load generator (this process: the publisher, and the consumer where \
             there is one), from `/proc/<pid>/stat` around each run (10 ms ticks), divided \
             by the messages confirmed (publish) or delivered (consume + ack); medians over \
             rounds. Steadier than msgs/s on a busy machine, and it shows which side \
             spends the time.\n\n{header}\n{rule}"
        );
        for w in &throughput {
            let _ = write!(md, "| {} |", w.label());
            for s in &systems {
                let _ = write!(md, " {} |", cpu_cell(outcome, *w, *s));
            }
            md.push('\n');
        }
        md.push('\n');
    }

    if outcome.workloads.contains(&DurableWorkload::Latency) {
        let w = DurableWorkload::Latency;
        let _ = writeln!(
            md,
            "## Publish → confirm latency, one message at a time, {} (µs, lower is better)\n\n{}\n{}",
            size_label(LATENCY_SIZE),
            header.replacen("workload", "percentile", 1),
            rule
        );
        type Pick = fn(&CellResult) -> Option<f64>;
        let rows: [(&str, Pick); 3] = [
            ("p50", |r| r.p50_us),
            ("p99", |r| r.p99_us),
            ("p99.9", |r| r.p999_us),
        ];
        for (name, pick) in rows {
            let _ = write!(md, "| {name} |");
            for s in &systems {
                let value = median_of(get(w, *s), pick);
                let _ = write!(
                    md,
                    " {} |",
                    value.map(us).unwrap_or_else(|| "failed".into())
                );
            }
            md.push('\n');
        }
        let _ = write!(md, "| confirms/s |");
        for s in &systems {
            let _ = write!(
                md,
                " {} |",
                rate(w, *s)
                    .map(thousands)
                    .unwrap_or_else(|| "failed".into())
            );
        }
        md.push_str("\n\n");
    }

    if !outcome.wal.is_empty() {
        let _ = writeln!(
            md,
            "## BlipMQ group commit\n\nFrom the broker's `/metrics` before and after each \
             run (`blipmq_wal_records_total`, `blipmq_wal_fsyncs_total`; records include \
             the consumers' ack records); medians over rounds.\n\n\
             | workload | system | WAL records | fsyncs | records per fsync |\n|---|---|---:|---:|---:|"
        );
        for ((w, s), deltas) in &outcome.wal {
            let records = median(deltas.iter().map(|d| d.records as f64).collect());
            let fsyncs = median(deltas.iter().map(|d| d.fsyncs as f64).collect());
            let per = median(
                deltas
                    .iter()
                    .filter(|d| d.fsyncs > 0)
                    .map(|d| d.records as f64 / d.fsyncs as f64)
                    .collect(),
            );
            let show = |v: Option<f64>| v.map(thousands).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                w.label(),
                s.title(),
                show(records),
                show(fsyncs),
                per.map(|p| format!("{p:.1}")).unwrap_or_else(|| "–".into())
            );
        }
        md.push('\n');
    }

    let _ = writeln!(
        md,
        "## Every round\n\nmsgs/s (confirm latency: p99 µs) per round, with what ended \
         the run when it was not complete.\n"
    );
    let _ = writeln!(md, "{}", rounds_header(info.rounds));
    for w in &outcome.workloads {
        for s in &systems {
            let _ = write!(md, "| {} | {} |", w.label(), s.title());
            for result in get(*w, *s).into_iter().flatten() {
                let cell = match result {
                    Ok(r) => {
                        let figure = round_figure(r, *w == DurableWorkload::Latency);
                        if r.ended == "complete" {
                            figure
                        } else {
                            format!("{figure} ({}, {:.1}% missing)", r.ended, r.lost_pct)
                        }
                    }
                    Err(e) => format!("failed: {}", e.replace('|', "/")),
                };
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }
    round_errors(
        &mut md,
        outcome
            .results
            .iter()
            .map(|((w, s), rounds)| (format!("{} / {}", w.label(), s.title()), rounds)),
    );
    md
}

#[derive(Serialize)]
struct JsonCell<'a> {
    workload: &'a DurableWorkload,
    system: DurableSystem,
    rounds: Vec<serde_json::Value>,
    wal: Option<&'a Vec<crate::wal_metrics::WalCounters>>,
    cpu: Option<&'a Vec<Option<crate::cpu::CpuUse>>>,
}

pub fn json(info: &DurableInfo, outcome: &DurableOutcome) -> String {
    let cells: Vec<JsonCell> = outcome
        .results
        .iter()
        .map(|((workload, system), rounds)| JsonCell {
            workload,
            system: *system,
            rounds: rounds
                .iter()
                .map(|r| match r {
                    Ok(r) => serde_json::to_value(r).expect("a result serializes"),
                    Err(e) => serde_json::json!({ "error": e }),
                })
                .collect(),
            wal: outcome.wal.get(&(*workload, *system)),
            cpu: outcome.cpu.get(&(*workload, *system)),
        })
        .collect();
    let value = serde_json::json!({
        "command": info.command,
        "machine": machine(),
        "load": [outcome.load.0, outcome.load.1],
        "rounds": info.rounds,
        "count": info.count,
        "window": info.window,
        "latency_secs": info.latency_secs,
        "e2e_count": info.e2e_count,
        "recovery": info.recovery,
        "cells": cells,
    });
    serde_json::to_string_pretty(&value).expect("a report serializes") + "\n"
}
