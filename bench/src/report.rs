//! The markdown table (BlipMQ beside each peer, with the ratio), and the
//! raw rounds as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::runner::CellResult;
use crate::systems::System;
use crate::{size_label, Outcome, Rounds, Workload, SMALL, SUBS_PER_TOPIC, TOPICS};

pub struct Info {
    pub command: Option<String>,
    pub versions: Vec<(System, String)>,
    pub clients: Option<String>,
    pub skipped: Vec<(System, String)>,
    pub rounds: u32,
    pub count: u64,
    pub topics_count: u64,
    pub latency_rate: f64,
    pub latency_secs: f64,
    pub cell_secs: f64,
}

/// The median of the values that are there (mean of the middle two for an
/// even number).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The median over the rounds that completed of one figure.
pub fn median_of(
    rounds: Option<&Rounds>,
    figure: impl Fn(&CellResult) -> Option<f64>,
) -> Option<f64> {
    let values = rounds?
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter_map(figure)
        .collect();
    median(values)
}

pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn us(value: f64) -> String {
    if value >= 100.0 {
        thousands(value)
    } else {
        format!("{value:.1}")
    }
}

pub fn ratio(blipmq: Option<f64>, peer: Option<f64>) -> String {
    match (blipmq, peer) {
        (Some(b), Some(p)) if p > 0.0 => format!("{:.2}×", b / p),
        _ => "–".into(),
    }
}

pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| format!(", {:.0} GiB memory", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| format!(", Linux {}", k.trim()))
        .unwrap_or_default();
    format!("{cores} cores (nproc), CPU model \"{model}\"{memory}{kernel}")
}

/// `YYYY-MM-DD HH:MM UTC` for now.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

pub fn markdown(info: &Info, outcome: &Outcome) -> String {
    let systems: Vec<System> = outcome.targets.iter().map(|t| t.system).collect();
    let has_blipmq = systems.contains(&System::Blipmq);
    let get = |w: Workload, s: System| outcome.results.get(&(w, s));
    let mut md = String::new();

    let _ = writeln!(md, "# BlipMQ beside NATS, Redis and Mosquitto\n");
    let _ = writeln!(
        md,
        "Generated {} in {:.0} s of measuring by:\n",
        now_utc(),
        outcome.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "```\n{}\n```\n",
        info.command
            .as_deref()
            .unwrap_or("blipmq-bench (run by hand)")
    );
    let _ = writeln!(
        md,
        "- **Machine**: {}. Servers and the load generator share these cores; \
         the machine is shared and noisy (load average {} before measuring, {} after).",
        machine(),
        outcome.load.0,
        outcome.load.1
    );
    let versions: Vec<String> = systems
        .iter()
        .map(|s| {
            let version = info
                .versions
                .iter()
                .find(|(v, _)| v == s)
                .map(|(_, t)| t.as_str())
                .unwrap_or("version not given");
            format!("{}: {version}", s.title())
        })
        .collect();
    let _ = writeln!(
        md,
        "- **Servers** (each alone on 127.0.0.1, started by the script): {}.",
        versions.join("; ")
    );
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
        "- **Method**: {rounds} round{plural}; every figure is the median over rounds \
         (systems take turns within a round, in rotated order). Only messages that \
         subscribers received count. Max-rate runs: one publisher sends {count} messages \
         ({topics_count} in the many-topics run) as fast as its client lets it; delivered \
         msgs/s = messages received, summed over subscribers ÷ time from the first publish \
         to the last delivery; each run is capped at {cap:.0} s of publishing and ends \
         2 s after the last delivery if messages are missing (reported as lost). BlipMQ runs \
         with the `block` overflow policy, so its max-rate figures are lossless (the \
         publisher is slowed to what subscribers take); the peers run with their default \
         slow-consumer handling. \"lost\" beside a figure is the median loss over rounds.",
        rounds = info.rounds,
        plural = if info.rounds == 1 { "" } else { "s" },
        count = thousands(info.count as f64),
        topics_count = thousands(info.topics_count as f64),
        cap = info.cell_secs,
    );
    let _ = writeln!(
        md,
        "- **Many topics**: {TOPICS} topics × {SUBS_PER_TOPIC} subscribers = {} \
         subscriptions on {} subscriber connections (10 topics each); the publisher \
         cycles through the topics; {} payloads.",
        TOPICS * SUBS_PER_TOPIC,
        TOPICS * SUBS_PER_TOPIC / 10,
        size_label(SMALL)
    );
    let _ = writeln!(
        md,
        "- **Latency**: one publisher, one subscriber, {} payloads carrying the send \
         time, {} msgs/s for {:.0} s; end-to-end from before the publish call to receipt \
         in the subscriber (same process, same clock). Pacing uses tokio's 1 ms timer, so \
         messages leave in bursts of ~{:.0} per ms.\n",
        size_label(SMALL),
        thousands(info.latency_rate),
        info.latency_secs,
        info.latency_rate / 1000.0
    );

    let throughput: Vec<Workload> = outcome
        .workloads
        .iter()
        .copied()
        .filter(|w| *w != Workload::Latency)
        .collect();
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    for s in &systems {
        let _ = write!(header, " {} |", s.title());
        rule.push_str("---:|");
        if *s != System::Blipmq && has_blipmq {
            let _ = write!(header, " BlipMQ/{} |", s.short());
            rule.push_str("---:|");
        }
    }
    if !throughput.is_empty() {
        let _ = writeln!(
            md,
            "## Delivered messages per second (higher is better)\n\n{header}\n{rule}"
        );
        for w in &throughput {
            let _ = write!(md, "| {} |", w.label());
            let blip = median_of(get(*w, System::Blipmq), |r| Some(r.msgs_per_sec));
            for s in &systems {
                let rounds = get(*w, *s);
                let rate = median_of(rounds, |r| Some(r.msgs_per_sec));
                let lost = median_of(rounds, |r| Some(r.lost_pct)).unwrap_or(0.0);
                let cell = match rate {
                    Some(rate) if lost >= 0.005 => {
                        format!("{} (lost {lost:.1}%)", thousands(rate))
                    }
                    Some(rate) => thousands(rate),
                    None => "failed".into(),
                };
                let _ = write!(md, " {cell} |");
                if *s != System::Blipmq && has_blipmq {
                    let _ = write!(md, " {} |", ratio(blip, rate));
                }
            }
            md.push('\n');
        }
        md.push('\n');
    }

    if outcome.workloads.contains(&Workload::Latency) {
        let _ = writeln!(
            md,
            "## End-to-end latency at {} msgs/s, {} (µs, lower is better; \
             a ratio below 1 means BlipMQ is faster)\n\n{}\n{}",
            thousands(info.latency_rate),
            size_label(SMALL),
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
            let blip = median_of(get(Workload::Latency, System::Blipmq), pick);
            for s in &systems {
                let value = median_of(get(Workload::Latency, *s), pick);
                let _ = write!(
                    md,
                    " {} |",
                    value.map(us).unwrap_or_else(|| "failed".into())
                );
                if *s != System::Blipmq && has_blipmq {
                    let _ = write!(md, " {} |", ratio(blip, value));
                }
            }
            md.push('\n');
        }
        let _ = write!(md, "| delivered |");
        for s in &systems {
            let rounds = get(Workload::Latency, *s);
            let lost = median_of(rounds, |r| Some(r.lost_pct));
            let _ = write!(
                md,
                " {} |",
                lost.map(|l| format!("{:.2}% lost", l))
                    .unwrap_or_else(|| "failed".into())
            );
            if *s != System::Blipmq && has_blipmq {
                md.push_str(" |");
            }
        }
        md.push_str("\n\n");
    }

    footprint_section(&mut md, &systems, outcome);

    let _ = writeln!(
        md,
        "## Every round\n\nDelivered msgs/s (latency: p99 µs) per round, with what \
         ended the run when it was not complete.\n"
    );
    let _ = writeln!(md, "{}", rounds_header(info.rounds));
    for w in &outcome.workloads {
        for s in &systems {
            let _ = write!(md, "| {} | {} |", w.label(), s.title());
            for result in get(*w, *s).into_iter().flatten() {
                let cell = match result {
                    Ok(r) => {
                        let figure = round_figure(r, *w == Workload::Latency);
                        if r.ended == "complete" {
                            figure
                        } else {
                            format!("{figure} ({}, lost {:.1}%)", r.ended, r.lost_pct)
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

/// The header rows of an "Every round" table with `rounds` round columns.
pub fn rounds_header(rounds: u32) -> String {
    let mut head = String::from("| workload | system |");
    let mut line = String::from("|---|---|");
    for round in 1..=rounds {
        let _ = write!(head, " round {round} |");
        line.push_str("---:|");
    }
    format!("{head}\n{line}")
}

/// One round's figure: the p99 in µs for a latency run, msgs/s otherwise.
pub fn round_figure(result: &CellResult, latency: bool) -> String {
    if latency {
        result.p99_us.map(us).unwrap_or_else(|| "–".into())
    } else {
        thousands(result.msgs_per_sec)
    }
}

/// The errors runs reported, one line per round, under a heading (nothing
/// when there were none). `rows` names each (workload, system) run.
pub fn round_errors<'a>(md: &mut String, rows: impl Iterator<Item = (String, &'a Rounds)>) {
    let errors: Vec<String> = rows
        .flat_map(|(name, rounds)| {
            rounds.iter().enumerate().filter_map(move |(i, r)| match r {
                Ok(r) if !r.errors.is_empty() => {
                    Some(format!("- {name} round {}: {}", i + 1, r.errors.join("; ")))
                }
                _ => None,
            })
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(
            md,
            "\nErrors reported during runs:\n\n{}",
            errors.join("\n")
        );
    }
}

#[derive(Serialize)]
struct JsonCell<'a> {
    workload: &'a Workload,
    system: System,
    rounds: Vec<JsonRound<'a>>,
}

/// The footprint table: binary, libraries, memory idle and with many idle
/// connections, and throughput with those connected.
fn footprint_section(md: &mut String, systems: &[System], outcome: &Outcome) {
    if outcome.idle.is_empty() && outcome.loaded.is_empty() {
        return;
    }
    let idle_connections = outcome
        .loaded
        .values()
        .map(|l| l.idle_connections)
        .max()
        .unwrap_or(0);
    let _ = writeln!(md, "## Footprint (lower is better, except msg/s)\n");
    let _ = writeln!(
        md,
        "Read from `/proc/PID` of each server: the executable's size, the shared \
         libraries it has mapped besides libc, libm and the loader (which every \
         process maps), resident memory before any workload ran, and with \
         {idle_connections} idle clients connected (each through its usual client, \
         handshake done), measured first, before the max-rate runs; then a 1→1 \
         16 B max-rate run while they stay connected.\n"
    );
    let _ = write!(md, "| |");
    for s in systems {
        let _ = write!(md, " {} |", s.title());
    }
    md.push('\n');
    md.push_str(&"|---".repeat(systems.len() + 1));
    md.push_str("|\n");
    let idle = |s: &System| outcome.idle.get(s);
    let loaded = |s: &System| outcome.loaded.get(s);
    type Cell<'a> = Box<dyn Fn(&System) -> String + 'a>;
    let rows: Vec<(&str, Cell)> = vec![
        (
            "executable",
            Box::new(|s| bytes(idle(s).and_then(|i| i.binary_bytes))),
        ),
        (
            "+ shared libraries",
            Box::new(|s| {
                idle(s).map_or("–".into(), |i| {
                    format!("{} ({} files)", bytes(i.library_bytes), i.libraries.len())
                })
            }),
        ),
        (
            "idle RSS",
            Box::new(|s| kib(idle(s).and_then(|i| i.rss_kib))),
        ),
        (
            "RSS with idle connections",
            Box::new(|s| kib(loaded(s).and_then(|l| l.rss_kib))),
        ),
        (
            "1→1 16 B with idle connections (msg/s)",
            Box::new(|s| {
                loaded(s)
                    .and_then(|l| l.delivered_per_sec)
                    .map_or("–".into(), thousands)
            }),
        ),
    ];
    for (label, cell) in rows {
        let _ = write!(md, "| {label} |");
        for s in systems {
            let _ = write!(md, " {} |", cell(s));
        }
        md.push('\n');
    }
    for (system, l) in &outcome.loaded {
        if let Some(error) = &l.error {
            let _ = writeln!(md, "\n- {}: {error}", system.title());
        }
    }
    md.push('\n');
}

fn bytes(value: Option<u64>) -> String {
    match value {
        None => "–".into(),
        Some(b) if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        Some(b) => format!("{} KB", b / 1000),
    }
}

fn kib(value: Option<u64>) -> String {
    bytes(value.map(|k| k * 1024))
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonRound<'a> {
    Ok(&'a CellResult),
    Failed { error: &'a str },
}

pub fn json(info: &Info, outcome: &Outcome) -> String {
    let cells: Vec<JsonCell> = outcome
        .results
        .iter()
        .map(|((workload, system), rounds)| JsonCell {
            workload,
            system: *system,
            rounds: rounds
                .iter()
                .map(|r| match r {
                    Ok(r) => JsonRound::Ok(r),
                    Err(e) => JsonRound::Failed { error: e },
                })
                .collect(),
        })
        .collect();
    let value = serde_json::json!({
        "command": info.command,
        "machine": machine(),
        "rounds": info.rounds,
        "count": info.count,
        "topics_count": info.topics_count,
        "latency_rate": info.latency_rate,
        "latency_secs": info.latency_secs,
        "cells": cells,
        "footprint": {
            "idle": outcome.idle.iter().map(|(s, i)| (s.key(), i)).collect::<std::collections::BTreeMap<_, _>>(),
            "idle_connections": outcome.loaded.iter().map(|(s, l)| (s.key(), l)).collect::<std::collections::BTreeMap<_, _>>(),
        },
    });
    serde_json::to_string_pretty(&value).expect("a report serializes") + "\n"
}
