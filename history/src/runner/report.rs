//! The end of a run on the terminal: counts, anomalies, violations by kind,
//! and for the first few violations the trail of their message through the
//! history (its events, and what happened to the broker meanwhile), which is
//! usually enough to tell which bug it is. The full history can be written
//! out as JSON lines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use blipmq_history::{Event, Key, Record, Report, Violation};

/// Violations shown with their trail.
const DETAILED: usize = 8;
/// Events shown per trail.
const TRAIL: usize = 40;

pub fn print(report: &Report, anomalies: &[String], history: &[Record]) {
    let s = &report.stats;
    println!();
    println!("== summary");
    println!(
        "publishes  {} ({} confirmed, {} refused, {} indeterminate)",
        s.published, s.confirmed, s.refused, s.indeterminate
    );
    println!(
        "deliveries {} ({} with delivery_count > 1, {} repeats, {} in the drain); acks {}",
        s.deliveries, s.redeliveries, s.repeats, s.drain_deliveries, s.acks
    );
    println!("owed       {} (queue, confirmed message) pairs", s.owed);
    println!(
        "broker     {} starts, {} SIGKILL, {} SIGTERM, {} SIGSTOP",
        s.starts, s.kills, s.terminations, s.stops
    );
    if !anomalies.is_empty() {
        println!();
        println!("== {} anomalies", anomalies.len());
        for anomaly in anomalies {
            println!("- {anomaly}");
        }
    }
    if report.violations.is_empty() {
        println!();
        println!("== no violations");
        return;
    }
    println!();
    println!("== {} violations", report.violations.len());
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &report.violations {
        *by_kind.entry(kind(v)).or_default() += 1;
    }
    for (kind, count) in by_kind {
        println!("{count:8} {kind}");
    }
    print_restarts_not_survived(&report.violations, history);
    for v in report.violations.iter().take(DETAILED) {
        println!();
        println!("- {v:?}");
        if let Some(key) = key(v) {
            for line in trail(history, key) {
                println!("    {line}");
            }
        }
    }
    if report.violations.len() > DETAILED {
        println!();
        println!(
            "({} more; all in history.jsonl)",
            report.violations.len() - DETAILED
        );
    }
}

/// Group the messages queues lost by the first broker start after each was
/// last seen (confirmed or delivered): the restart it did not survive, as
/// a rule. Each start's pid is also in the broker log's start markers.
fn print_restarts_not_survived(violations: &[Violation], history: &[Record]) {
    let lost: HashSet<Key> = violations
        .iter()
        .filter(|v| {
            matches!(
                v,
                Violation::NeverDelivered { .. }
                    | Violation::GroupNeverDelivered { .. }
                    | Violation::LostAfterDelivery { .. }
            )
        })
        .filter_map(key)
        .collect();
    if lost.is_empty() {
        return;
    }
    let mut last_seen: HashMap<Key, usize> = HashMap::new();
    let mut starts = Vec::new();
    for (index, record) in history.iter().enumerate() {
        match record.event {
            Event::BrokerStarted { pid } => starts.push((index, record.at_us, pid)),
            Event::DrainStarted => break,
            ref event => {
                if let Some(key) = event.key().filter(|k| lost.contains(k)) {
                    last_seen.insert(key, index);
                }
            }
        }
    }
    let mut by_start: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    for index in last_seen.values() {
        let next = starts.partition_point(|&(start, _, _)| start < *index);
        if let Some(&(_, at_us, pid)) = starts.get(next) {
            *by_start.entry((at_us, pid)).or_default() += 1;
        }
    }
    println!("lost messages by the first broker start after they were last seen:");
    for ((at_us, pid), count) in by_start {
        println!("{count:8} start at {:.3}s, pid {pid}", at_us as f64 / 1e6);
    }
}

/// One JSON object per line, in history order.
pub fn write_history(path: &Path, history: &[Record]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in history {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn kind(v: &Violation) -> &'static str {
    match v {
        Violation::NeverDelivered { .. } => "never delivered to a durable subscription",
        Violation::GroupNeverDelivered { .. } => "never delivered to any member of a group",
        Violation::LostAfterDelivery { .. } => "delivered, then lost before an ack",
        Violation::Corrupt { .. } => "corrupt delivery",
        Violation::IdReused { .. } => "one message id for two messages",
        Violation::IdChanged { .. } => "one message under two ids",
        Violation::NeverPublished { .. } => "delivery of a message never published",
        Violation::DeliveredAfterRefusal { .. } => "delivery of a refused message",
        Violation::Misrouted { .. } => "delivery to a queue that does not match",
    }
}

fn key(v: &Violation) -> Option<Key> {
    match *v {
        Violation::NeverDelivered { key, .. }
        | Violation::GroupNeverDelivered { key, .. }
        | Violation::LostAfterDelivery { key, .. }
        | Violation::IdChanged { key, .. }
        | Violation::NeverPublished { key, .. }
        | Violation::DeliveredAfterRefusal { key, .. }
        | Violation::Misrouted { key, .. } => Some(key),
        Violation::IdReused { second, .. } => Some(second),
        Violation::Corrupt { key, .. } => key,
    }
}

/// The message's own events, and what happened to the broker from its
/// first event up to the first start after it was last seen before the
/// drain (later faults are beside the point), and the drain.
fn trail(history: &[Record], key: Key) -> Vec<String> {
    let ours = |r: &Record| r.event.key() == Some(key);
    let Some(first) = history.iter().position(ours) else {
        return vec!["(no event names this key)".into()];
    };
    let drain = history
        .iter()
        .position(|r| r.event == Event::DrainStarted)
        .unwrap_or(history.len());
    let last_seen = history[..drain].iter().rposition(ours).unwrap_or(first);
    let survived_until = history[last_seen..drain]
        .iter()
        .position(|r| matches!(r.event, Event::BrokerStarted { .. }))
        .map_or(drain, |i| last_seen + i);
    let mut lines: Vec<String> = history
        .iter()
        .enumerate()
        .skip(first)
        .filter(|&(i, r)| {
            ours(r)
                || r.event == Event::DrainStarted
                || (i <= survived_until && about_the_broker(&r.event))
        })
        .map(|(_, r)| format!("{:9.3}s {:?}", r.at_us as f64 / 1e6, r.event))
        .collect();
    if lines.len() > TRAIL {
        let more = lines.len() - TRAIL;
        lines.truncate(TRAIL);
        lines.push(format!("... {more} more"));
    }
    lines
}

fn about_the_broker(event: &Event) -> bool {
    matches!(
        event,
        Event::BrokerStarted { .. }
            | Event::BrokerKilled
            | Event::BrokerTerminated
            | Event::BrokerStopped
            | Event::BrokerContinued
            | Event::DrainStarted
    )
}
