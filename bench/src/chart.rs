//! `latest.png`: delivered msgs/s per max-rate workload and latency
//! percentiles, a bar per system, from the medians in the report. Text needs
//! a TrueType font from the system (DejaVu or Liberation); without one there
//! is no chart.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::median_of;
use crate::systems::System;
use crate::{Outcome, Workload};

const FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

pub fn register_font() -> Result<(), String> {
    let bytes = FONTS
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .ok_or("no TrueType font found (install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font file could not be read".to_string())
}

/// One bar colour and legend entry.
pub struct Series {
    pub name: &'static str,
    pub colour: RGBColor,
}

fn colour(system: System) -> RGBColor {
    match system {
        System::Blipmq => RGBColor(232, 119, 34),
        System::Nats => RGBColor(52, 111, 196),
        System::Redis => RGBColor(178, 42, 48),
        System::Mqtt => RGBColor(64, 150, 86),
    }
}

fn short_label(workload: Workload) -> String {
    match workload {
        Workload::Fanout { subscribers, size } => {
            format!("1→{subscribers}, {}", crate::size_label(size))
        }
        Workload::Topics => "100 topics × 10".into(),
        Workload::Latency => "latency".into(),
    }
}

pub fn compact(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

pub fn draw(path: &Path, outcome: &Outcome) -> Result<(), String> {
    register_font()?;
    let systems: Vec<System> = outcome.targets.iter().map(|t| t.system).collect();
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
    let (left, right) = body.split_horizontally(960);

    let groups: Vec<(String, Vec<Option<f64>>)> = outcome
        .workloads
        .iter()
        .filter(|w| **w != Workload::Latency)
        .map(|w| {
            let values = systems
                .iter()
                .map(|s| median_of(outcome.results.get(&(*w, *s)), |r| Some(r.msgs_per_sec)))
                .collect();
            (short_label(*w), values)
        })
        .collect();
    if !groups.is_empty() {
        bars(
            &root,
            &left,
            "Delivered messages/s (median; higher is better)",
            &groups,
            &series,
            false,
        )?;
    }

    if outcome.workloads.contains(&Workload::Latency) {
        type Pick = fn(&crate::runner::CellResult) -> Option<f64>;
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
                    .map(|s| median_of(outcome.results.get(&(Workload::Latency, *s)), pick))
                    .collect();
                (name.to_string(), values)
            })
            .collect();
        bars(
            &root,
            &right,
            &format!(
                "Latency at {} msgs/s, µs (log; lower is better)",
                compact(outcome.latency_rate)
            ),
            &groups,
            &series,
            true,
        )?;
    }
    root.present().map_err(|e| e.to_string())
}

/// One row: a swatch and a name per series.
pub fn legend(area: &DrawingArea<BitMapBackend, Shift>, series: &[Series]) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let step = 170;
    let (width, _) = area.dim_in_pixel();
    let mut x = (width as i32 - step * series.len() as i32) / 2;
    for one in series {
        area.draw(&Rectangle::new(
            [(x, 14), (x + 16, 30)],
            one.colour.filled(),
        ))
        .map_err(e)?;
        area.draw(&Text::new(
            one.name,
            (x + 24, 14),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))
        .map_err(e)?;
        x += step;
    }
    Ok(())
}

/// Grouped bars: one group per entry, one bar per series in it (the values
/// of a group are in series order).
pub fn bars(
    root: &DrawingArea<BitMapBackend, Shift>,
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    groups: &[(String, Vec<Option<f64>>)],
    series: &[Series],
    log: bool,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let values = || groups.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let max = values().fold(0.0f64, f64::max).max(1.0);
    let n = groups.len() as f64;
    let width = 0.8 / series.len() as f64;
    let bar = |g: usize, i: usize| {
        let x0 = g as f64 + 0.1 + i as f64 * width;
        (x0 + width * 0.06, x0 + width * 0.94)
    };
    let label_style = ("sans-serif", 12).into_font().color(&BLACK);
    let group_style = ("sans-serif", 14).into_font().color(&BLACK);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(70);

    // Axis labels of each group, drawn under the bars by pixel position.
    let mut group_labels = Vec::new();
    if log {
        let min = values().fold(f64::INFINITY, f64::min).min(max);
        let lo = 10f64.powf((min / 2.0).max(1.0).log10().floor());
        let hi = 10f64.powf((max * 2.0).log10().ceil());
        let mut chart = builder
            .build_cartesian_2d(0.0..n, (lo..hi).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("µs")
            .y_label_formatter(&|v| compact(*v))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        for (i, one) in series.iter().enumerate() {
            let colour = one.colour;
            chart
                .draw_series(groups.iter().enumerate().filter_map(|(g, (_, v))| {
                    let value = v[i]?;
                    let (x0, x1) = bar(g, i);
                    Some(Rectangle::new([(x0, lo), (x1, value)], colour.filled()))
                }))
                .map_err(e)?;
            for (g, (_, v)) in groups.iter().enumerate() {
                if let Some(value) = v[i] {
                    let (x0, x1) = bar(g, i);
                    let (px, py) = chart.backend_coord(&((x0 + x1) / 2.0, value));
                    let text = if value >= 10_000.0 {
                        compact(value)
                    } else {
                        format!("{value:.0}")
                    };
                    root.draw(&Text::new(text, (px - 12, py - 15), label_style.clone()))
                        .map_err(e)?;
                }
            }
        }
        for (g, (name, _)) in groups.iter().enumerate() {
            group_labels.push((chart.backend_coord(&(g as f64 + 0.5, lo)), name.clone()));
        }
    } else {
        let hi = max * 1.15;
        let mut chart = builder.build_cartesian_2d(0.0..n, 0.0..hi).map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("delivered msgs/s")
            .y_label_formatter(&|v| compact(*v))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        for (i, one) in series.iter().enumerate() {
            let colour = one.colour;
            chart
                .draw_series(groups.iter().enumerate().filter_map(|(g, (_, v))| {
                    let value = v[i]?;
                    let (x0, x1) = bar(g, i);
                    Some(Rectangle::new([(x0, 0.0), (x1, value)], colour.filled()))
                }))
                .map_err(e)?;
            for (g, (_, v)) in groups.iter().enumerate() {
                if let Some(value) = v[i] {
                    let (x0, x1) = bar(g, i);
                    let (px, py) = chart.backend_coord(&((x0 + x1) / 2.0, value));
                    root.draw(&Text::new(
                        compact(value),
                        (px - 14, py - 15),
                        label_style.clone(),
                    ))
                    .map_err(e)?;
                }
            }
        }
        for (g, (name, _)) in groups.iter().enumerate() {
            group_labels.push((chart.backend_coord(&(g as f64 + 0.5, 0.0)), name.clone()));
        }
    }
    for ((px, py), name) in group_labels {
        let half = (name.chars().count() as i32 * 7) / 2;
        root.draw(&Text::new(name, (px - half, py + 10), group_style.clone()))
            .map_err(e)?;
    }
    Ok(())
}
