//! Microbenchmarks of the broker's hot path: the topic-match cache, a
//! subscriber queue's enqueue and pop, and the write-ahead log's append
//! path (group commit, fsync off so the disk does not dominate).
//! `cargo bench -p blipmq-broker`.

use std::hint::black_box;
use std::sync::Arc;

use blipmq_broker::bench_api::{Metrics, Outbox, QueuedMessage, Registry, Subscription};
use blipmq_broker::wal::{FsyncPolicy, Wal, WalConfig};
use blipmq_broker::OverflowPolicy;
use blipmq_protocol::Encoder;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn subscription(id: u64, pattern: &str, capacity: usize) -> Arc<Subscription> {
    Arc::new(Subscription::new(
        id,
        pattern.to_string(),
        capacity,
        OverflowPolicy::DropOldest,
        Outbox::new(),
        None,
        None,
    ))
}

fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    group.throughput(Throughput::Elements(1));
    let registry = Registry::new(100_000, 2);
    for i in 0..1000u64 {
        let pattern = match i % 3 {
            0 => format!("orders.{i}.created"),
            1 => format!("orders.{i}.*"),
            _ => format!("metrics.{i}.>"),
        };
        registry.insert(subscription(i, &pattern, 16)).unwrap();
    }
    registry
        .insert(subscription(5000, "orders.7.created", 16))
        .unwrap();
    group.bench_function("matching (cached), 1000 patterns", |b| {
        b.iter(|| registry.matching(black_box("orders.7.created")))
    });
    group.bench_function("matching (uncached), 1000 patterns", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            // A new topic each time misses the cache and scans the wildcards.
            registry.matching(&format!("orders.{n}.shipped"))
        })
    });
    group.finish();
}

fn queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscriber queue");
    group.throughput(Throughput::Elements(1));
    let metrics = Metrics::default();
    let message = Arc::new(QueuedMessage {
        delivery: Encoder::new().shared_delivery("t", &[0u8; 16], &[], 1, 2),
        published_at: std::time::Instant::now(),
        expires_at: None,
        message_id: 1,
        trace_id: None,
        charge: Default::default(),
    });
    let sub = subscription(1, "t", 1024);
    group.bench_function("enqueue + pop", |b| {
        b.iter(|| {
            sub.enqueue_now(black_box(message.clone()), &metrics);
            black_box(sub.pop())
        })
    });
    let fanout: Vec<_> = (0..4).map(|i| subscription(i, "t", 1024)).collect();
    group.bench_function("fan-out to 4 + pop", |b| {
        b.iter(|| {
            for s in &fanout {
                s.enqueue_now(message.clone(), &metrics);
            }
            for s in &fanout {
                black_box(s.pop());
            }
        })
    });
    group.finish();
}

fn wal(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    const RECORDS: u64 = 1000;
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("append 1000 records of 100 B (fsync never)", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let config = WalConfig {
                    dir: dir.path().join("wal"),
                    fsync_policy: FsyncPolicy::Never,
                    ..WalConfig::default()
                };
                let (wal, _) = Wal::open(config).unwrap();
                (dir, wal)
            },
            |(_dir, wal)| {
                runtime.block_on(async {
                    let record = Bytes::from_static(&[7u8; 100]);
                    let mut pending = Vec::with_capacity(RECORDS as usize);
                    for _ in 0..RECORDS {
                        pending.push(wal.submit(1, record.clone()).await.unwrap());
                    }
                    for p in pending {
                        p.await.unwrap();
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, registry, queue, wal);
criterion_main!(benches);
