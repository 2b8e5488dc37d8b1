//! The subscription index at 10, 10k and 1M subscriptions: a publish's
//! lookup of a topic not in the cache and of one in it, and a subscribe and
//! an unsubscribe. `cargo bench -p blipmq-broker --bench matching`.
//!
//! The subscriptions are a quarter each of exact patterns (`s.K.created`),
//! `s.K.*`, `s.*.K` and `m.K.>`, over up to 25,000 keys K, so the larger
//! sizes have many subscribers per pattern as well as many patterns.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_broker::bench_api::{Outbox, Registry, Subscription};
use blipmq_broker::OverflowPolicy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 3] = [10, 10_000, 1_000_000];

fn keys(size: usize) -> usize {
    size.min(25_000)
}

fn pattern(i: usize, keys: usize) -> String {
    let k = i % keys;
    match i % 4 {
        0 => format!("s.{k}.created"),
        1 => format!("s.{k}.*"),
        2 => format!("s.*.{k}"),
        _ => format!("m.{k}.>"),
    }
}

fn subscription(id: u64, pattern: String, outbox: &Arc<Outbox>) -> Arc<Subscription> {
    Arc::new(Subscription::new(
        id,
        pattern,
        16,
        OverflowPolicy::DropOldest,
        outbox.clone(),
        None,
        None,
    ))
}

fn filled(size: usize, outbox: &Arc<Outbox>) -> Registry {
    let registry = Registry::new(usize::MAX, 2);
    let keys = keys(size);
    for i in 0..size {
        registry
            .insert(subscription(i as u64, pattern(i, keys), outbox))
            .unwrap();
    }
    registry
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let outbox = Outbox::new();
    for size in SIZES {
        let registry = filled(size, &outbox);
        let keys = keys(size);
        let mut next_id = size as u64;

        group.bench_function(BenchmarkId::new("publish lookup (uncached)", size), |b| {
            let mut n = 0usize;
            b.iter(|| {
                n += 1;
                // A new topic each time: a cache miss. It reaches the
                // `s.K.*` subscriptions of its key.
                black_box(registry.matching(&format!("s.{}.{n}", n % keys)))
            })
        });
        group.bench_function(BenchmarkId::new("publish lookup (cached)", size), |b| {
            registry.matching("s.7.created");
            b.iter(|| black_box(registry.matching(black_box("s.7.created"))))
        });
        group.bench_function(BenchmarkId::new("subscribe", size), |b| {
            b.iter_custom(|iters| {
                let subs: Vec<_> = (0..iters)
                    .map(|i| {
                        next_id += 1;
                        subscription(next_id, pattern(i as usize, keys), &outbox)
                    })
                    .collect();
                let start = Instant::now();
                for sub in &subs {
                    registry.insert(sub.clone()).unwrap();
                }
                let took = start.elapsed();
                registry.remove_all(subs.iter().map(|s| &**s));
                took
            })
        });
        group.bench_function(BenchmarkId::new("unsubscribe", size), |b| {
            b.iter_custom(|iters| {
                let subs: Vec<_> = (0..iters)
                    .map(|i| {
                        next_id += 1;
                        subscription(next_id, pattern(i as usize, keys), &outbox)
                    })
                    .collect();
                for sub in &subs {
                    registry.insert(sub.clone()).unwrap();
                }
                let start = Instant::now();
                for sub in &subs {
                    registry.remove(sub);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
