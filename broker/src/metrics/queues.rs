//! Per-queue gauges for durable subscriptions and queue groups, labelled
//! `queue` and `kind`. A label value per queue makes a series per queue, so
//! the count is capped: past [`MAX_QUEUE_SERIES`] queues only the furthest
//! behind (most messages kept) are exported, and
//! `blipmq_queue_series_omitted` says how many were left out (the JSON of
//! `GET /v1/queues` lists them all).

use std::fmt::Write;

use crate::durable::QueueStats;

/// The most queues exported with their own series.
pub const MAX_QUEUE_SERIES: usize = 200;

/// A per-queue family: its name, its help, and its value for one queue.
type Family = (&'static str, &'static str, fn(&QueueStats) -> String);

pub fn render(out: &mut String, queues: &[QueueStats]) {
    let mut shown: Vec<&QueueStats> = queues.iter().collect();
    let omitted = shown.len().saturating_sub(MAX_QUEUE_SERIES);
    if omitted > 0 {
        shown.sort_unstable_by(|a, b| b.kept.cmp(&a.kept).then_with(|| a.name.cmp(&b.name)));
        shown.truncate(MAX_QUEUE_SERIES);
        shown.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    }
    let families: [Family; 6] = [
        (
            "blipmq_queue_pending_messages",
            "Messages waiting to be sent to a consumer of the queue.",
            |q| q.pending.to_string(),
        ),
        (
            "blipmq_queue_unacked_messages",
            "Messages sent to a consumer of the queue and not acked yet.",
            |q| q.unacked.to_string(),
        ),
        (
            "blipmq_queue_oldest_unacked_age_seconds",
            "Age of the oldest message the queue keeps (0 when it keeps none): how far behind its consumers are.",
            |q| q.oldest_unacked_age.unwrap_or_default().as_secs_f64().to_string(),
        ),
        (
            "blipmq_queue_consumers",
            "Consumers attached to the queue.",
            |q| q.consumers.to_string(),
        ),
        (
            "blipmq_queue_pinned_bytes",
            "Bytes of the messages the queue keeps, which the log cannot release.",
            |q| q.bytes_pinned.to_string(),
        ),
        (
            "blipmq_queue_dead_letters_total",
            "Messages of the queue moved to the dead-letter topic since the broker started.",
            |q| q.dead_letters.to_string(),
        ),
    ];
    for (name, help, value) in families {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for queue in &shown {
            let _ = writeln!(
                out,
                "{name}{{queue=\"{}\",kind=\"{}\"}} {}",
                escape_label(&queue.name),
                queue.kind.as_str(),
                value(queue)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP blipmq_queue_series_omitted Queues left out of the per-queue series (more than {MAX_QUEUE_SERIES}).\n# TYPE blipmq_queue_series_omitted gauge\nblipmq_queue_series_omitted {omitted}"
    );
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::QueueKind;

    fn queue(name: &str, kept: u64) -> QueueStats {
        QueueStats {
            name: name.into(),
            pattern: "jobs.>".into(),
            kind: QueueKind::Group,
            consumers: 2,
            pending: kept,
            unacked: 0,
            kept,
            oldest_unacked_age: Some(std::time::Duration::from_millis(1500)),
            redeliveries: 0,
            dead_letters: 3,
            bytes_pinned: 100 * kept,
            detached_for: None,
        }
    }

    #[test]
    fn one_series_per_queue_with_escaped_names() {
        let mut out = String::new();
        render(&mut out, &[queue("a\"b\\c", 4)]);
        assert!(
            out.contains("blipmq_queue_pending_messages{queue=\"a\\\"b\\\\c\",kind=\"group\"} 4\n")
        );
        assert!(out.contains(
            "blipmq_queue_oldest_unacked_age_seconds{queue=\"a\\\"b\\\\c\",kind=\"group\"} 1.5\n"
        ));
        assert!(out.contains("# TYPE blipmq_queue_dead_letters_total counter\n"));
        assert!(out.contains("blipmq_queue_series_omitted 0\n"));
    }

    #[test]
    fn past_the_cap_only_the_queues_furthest_behind_are_exported() {
        let queues: Vec<QueueStats> = (0..MAX_QUEUE_SERIES as u64 + 5)
            .map(|i| queue(&format!("q{i:04}"), i))
            .collect();
        let mut out = String::new();
        render(&mut out, &queues);
        let series = out
            .lines()
            .filter(|l| l.starts_with("blipmq_queue_pending_messages{"))
            .count();
        assert_eq!(series, MAX_QUEUE_SERIES);
        // q0000..q0004 keep the fewest messages: they are the ones left out.
        assert!(!out.contains("queue=\"q0004\""));
        assert!(out.contains("queue=\"q0005\""));
        assert!(out.contains("blipmq_queue_series_omitted 5\n"));
    }
}
