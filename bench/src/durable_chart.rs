//! `durable.png`: confirmed (publish) and delivered (end-to-end) msgs/s and
//! confirm latency percentiles, a bar per system, from the medians in the
//! report; drawn with the comparison chart's pieces.

use std::path::Path;

use plotters::prelude::*;

use crate::chart::{bars, legend, register_font, Series};
use crate::durable::{DurableOutcome, DurableWorkload};
use crate::durable_clients::DurableSystem;
use crate::report::median_of;
use crate::runner::CellResult;

fn colour(system: DurableSystem) -> RGBColor {
    match system {
        DurableSystem::BlipmqAlways => RGBColor(232, 119, 34),
        DurableSystem::BlipmqInterval => RGBColor(245, 180, 110),
        DurableSystem::JetStream => RGBColor(52, 111, 196),
        DurableSystem::RedisAlways => RGBColor(178, 42, 48),
        DurableSystem::RedisEverysec => RGBColor(225, 130, 135),
    }
}

fn short_label(workload: DurableWorkload) -> String {
    match workload {
        DurableWorkload::Publish { size } => format!("publish {}", crate::size_label(size)),
        DurableWorkload::Latency => "latency".into(),
        DurableWorkload::EndToEnd { size } => format!("pub→ack {}", crate::size_label(size)),
    }
}

pub fn draw(path: &Path, outcome: &DurableOutcome) -> Result<(), String> {
    register_font()?;
    let systems: Vec<DurableSystem> = outcome.targets.iter().map(|t| t.system).collect();
    let series: Vec<Series> = systems
        .iter()
        .map(|s| Series {
            name: s.title(),
            colour: colour(*s),
        })
        .collect();
    let root = BitMapBackend::new(path, (1500, 660)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, body) = root.split_vertically(40);
    legend(&top, &series)?;
    let (left, right) = body.split_horizontally(900);
    let median = |w: DurableWorkload, s: DurableSystem, pick: fn(&CellResult) -> Option<f64>| {
        median_of(outcome.results.get(&(w, s)), pick)
    };

    let groups: Vec<(String, Vec<Option<f64>>)> = outcome
        .workloads
        .iter()
        .filter(|w| **w != DurableWorkload::Latency)
        .map(|w| {
            let values = systems
                .iter()
                .map(|s| median(*w, *s, |r| Some(r.msgs_per_sec)))
                .collect();
            (short_label(*w), values)
        })
        .collect();
    if !groups.is_empty() {
        bars(
            &root,
            &left,
            "Durable msgs/s: confirmed / delivered+acked (median; higher is better)",
            &groups,
            &series,
            false,
        )?;
    }
    if outcome.workloads.contains(&DurableWorkload::Latency) {
        type Pick = fn(&CellResult) -> Option<f64>;
        let picks: [(&str, Pick); 3] = [
            ("p50", |r| r.p50_us),
            ("p99", |r| r.p99_us),
            ("p99.9", |r| r.p999_us),
        ];
        let groups: Vec<(String, Vec<Option<f64>>)> = picks
            .iter()
            .map(|(name, pick)| {
                let values = systems
                    .iter()
                    .map(|s| median(DurableWorkload::Latency, *s, *pick))
                    .collect();
                (name.to_string(), values)
            })
            .collect();
        bars(
            &root,
            &right,
            "Publish → confirm latency, µs (log; lower is better)",
            &groups,
            &series,
            true,
        )?;
    }
    root.present().map_err(|e| e.to_string())
}
