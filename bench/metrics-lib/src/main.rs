//! What moving the broker's metrics to `prometheus-client` would cost: the
//! same 60 counter families and 3 latency histograms, written by hand (as
//! the broker does) or with the crate (`--features lib`). Prints the cost of
//! one counter increment plus one histogram observation, uncontended and
//! from two threads at once, and of one render. Compare the two binaries'
//! sizes for the crate's weight (docs/metrics.md has the figures):
//!
//!     cargo build --release && cp target/release/metrics-lib-experiment /tmp/by-hand
//!     cargo build --release --features lib && cp target/release/metrics-lib-experiment /tmp/with-lib
//!     stat -c '%n %s' /tmp/by-hand /tmp/with-lib; /tmp/by-hand; /tmp/with-lib
use std::time::Instant;

const N: usize = 60;

#[cfg(not(feature = "lib"))]
mod imp {
    use super::*;
    use std::fmt::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    pub struct M {
        pub c: Vec<AtomicU64>,
        pub h: Vec<(Vec<AtomicU64>, AtomicU64, AtomicU64)>,
    }
    const BOUNDS: [f64; 12] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
    impl M {
        pub fn new() -> M {
            M {
                c: (0..N).map(|_| AtomicU64::new(0)).collect(),
                h: (0..3)
                    .map(|_| {
                        (
                            (0..13).map(|_| AtomicU64::new(0)).collect(),
                            AtomicU64::new(0),
                            AtomicU64::new(0),
                        )
                    })
                    .collect(),
            }
        }
        pub fn bump(&self, i: usize, v: f64) {
            self.c[i % N].fetch_add(1, Ordering::Relaxed);
            let h = &self.h[i % 3];
            let b = BOUNDS.iter().position(|b| v <= *b).unwrap_or(12);
            h.0[b].fetch_add(1, Ordering::Relaxed);
            h.1.fetch_add((v * 1e9) as u64, Ordering::Relaxed);
            h.2.fetch_add(1, Ordering::Relaxed);
        }
        pub fn render(&self) -> String {
            let mut o = String::with_capacity(8192);
            for (i, c) in self.c.iter().enumerate() {
                let _ = writeln!(o, "# HELP blipmq_metric_{i}_total Some help text.\n# TYPE blipmq_metric_{i}_total counter\nblipmq_metric_{i}_total {}", c.load(Ordering::Relaxed));
            }
            for (i, h) in self.h.iter().enumerate() {
                let _ = writeln!(o, "# HELP blipmq_hist_{i}_seconds Some help.\n# TYPE blipmq_hist_{i}_seconds histogram");
                let mut cum = 0;
                for (j, b) in BOUNDS.iter().enumerate() {
                    cum += h.0[j].load(Ordering::Relaxed);
                    let _ = writeln!(o, "blipmq_hist_{i}_seconds_bucket{{le=\"{b}\"}} {cum}");
                }
                cum += h.0[12].load(Ordering::Relaxed);
                let _ = writeln!(o, "blipmq_hist_{i}_seconds_bucket{{le=\"+Inf\"}} {cum}\nblipmq_hist_{i}_seconds_sum {}\nblipmq_hist_{i}_seconds_count {}", h.1.load(Ordering::Relaxed) as f64 / 1e9, h.2.load(Ordering::Relaxed));
            }
            o
        }
    }
}

#[cfg(feature = "lib")]
mod imp {
    use super::*;
    use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
    use prometheus_client::registry::Registry;
    pub struct M {
        pub r: Registry,
        pub c: Vec<Counter>,
        pub h: Vec<Histogram>,
    }
    impl M {
        pub fn new() -> M {
            let mut r = Registry::default();
            let c: Vec<Counter> = (0..N)
                .map(|i| {
                    let c = Counter::default();
                    r.register(format!("blipmq_metric_{i}"), "Some help text", c.clone());
                    c
                })
                .collect();
            let h: Vec<Histogram> = (0..3)
                .map(|i| {
                    let h = Histogram::new([
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]);
                    r.register(format!("blipmq_hist_{i}_seconds"), "Some help", h.clone());
                    h
                })
                .collect();
            M { r, c, h }
        }
        pub fn bump(&self, i: usize, v: f64) {
            self.c[i % N].inc();
            self.h[i % 3].observe(v);
        }
        pub fn render(&self) -> String {
            let mut o = String::new();
            prometheus_client::encoding::text::encode(&mut o, &self.r).unwrap();
            o
        }
    }
}

fn main() {
    let m = imp::M::new();
    let t = Instant::now();
    for i in 0..10_000_000usize {
        m.bump(i, (i % 1000) as f64 * 1e-4);
    }
    let bump_ns = t.elapsed().as_nanos() as f64 / 1e7;
    let t = Instant::now();
    let mut len = 0;
    for _ in 0..10_000 {
        len += m.render().len();
    }
    let render_us = t.elapsed().as_micros() as f64 / 1e4;
    let m = std::sync::Arc::new(m);
    let t = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|k| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..5_000_000usize {
                    m.bump(i * 2 + k, (i % 1000) as f64 * 1e-4);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let contended_ns = t.elapsed().as_nanos() as f64 / 1e7;
    println!("contended (2 threads, same histogram) {contended_ns:.2} ns/op");
    println!(
        "bump {bump_ns:.2} ns, render {render_us:.1} us, {} bytes",
        len / 10_000
    );
}
