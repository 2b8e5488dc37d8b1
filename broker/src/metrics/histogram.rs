//! A latency histogram for the hot path: fixed bucket bounds, one relaxed
//! atomic add per bucket hit and one for the sum, no lock. (prometheus-client's
//! histogram takes a write lock per observation; see docs/metrics.md for the
//! measurements behind writing this by hand.)
//!
//! Rendered the Prometheus way: cumulative `_bucket{le=...}` lines, `_sum`
//! in seconds and `_count`. The count is the buckets' total, read at scrape
//! time, so an observation costs two atomic adds, not three.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds, from 50 µs (an fsync on a fast NVMe drive, a
/// delivery on loopback) to 10 s (a stuck disk, a consumer far behind).
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Bucket bounds in whole nanoseconds, so observing compares integers.
const BOUNDS_NANOS: [u64; 16] = {
    let mut nanos = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        nanos[i] = (LATENCY_BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

pub struct Histogram {
    /// One count per bound, and a last one for what is above every bound.
    buckets: [AtomicU64; 17],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts as they are now, to render or to carry in a stats struct.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }

    /// The family's HELP, TYPE and sample lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        self.snapshot().render(out, name, help);
    }
}

/// A [`Histogram`]'s counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: [u64; 17],
    sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The family's HELP, TYPE and sample lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BOUNDS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50)); // on the bound: le="5e-5"
        histogram.observe(Duration::from_micros(51));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60)); // above every bound
        let mut out = String::new();
        histogram.render(&mut out, "t_seconds", "Test.");
        assert!(out.starts_with("# HELP t_seconds Test.\n# TYPE t_seconds histogram\n"));
        assert!(
            out.contains("t_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("t_seconds_bucket{le=\"0.0001\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.0025\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("t_seconds_count 4\n"), "{out}");
        assert!(out.contains("t_seconds_sum 60.003101\n"), "{out}");
        assert_eq!(histogram.snapshot().count(), 4);
    }
}
