//! Microbenchmarks of the protocol's hot path: encoding and decoding the
//! frames every message crosses (Publish in, Delivery out), the shared
//! delivery encoding, and the topic checks. `cargo bench -p blipmq-protocol`.

use std::hint::black_box;

use blipmq_protocol::{
    decode, decode_verified, topic, Delivery, Encoder, Frame, Header, Publish, Route,
    LENGTH_PREFIX_LEN,
};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn publish(payload: &[u8]) -> Frame<'_> {
    Frame::Publish(Publish {
        publish_id: 7,
        topic: "orders.eu.created",
        payload,
        ttl_ms: 0,
        qos: 0,
        headers: vec![],
    })
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for size in [16usize, 1024] {
        let payload = vec![0xA5u8; size];
        let frame = publish(&payload);
        let mut encoder = Encoder::new();
        let mut out = BytesMut::with_capacity(4096);
        group.bench_function(format!("encode publish {size} B"), |b| {
            b.iter(|| {
                out.clear();
                encoder.encode(black_box(&frame), &mut out);
            })
        });
        group.bench_function(format!("encode publish {size} B (builder)"), |b| {
            b.iter(|| {
                out.clear();
                encoder.encode_with_builder(black_box(&frame), &mut out);
            })
        });
        let bytes = encoder.encode_to_bytes(&frame);
        let body = &bytes[LENGTH_PREFIX_LEN..];
        group.bench_function(format!("decode publish {size} B"), |b| {
            b.iter(|| decode(black_box(body)).unwrap())
        });
        group.bench_function(format!("decode publish {size} B (verifier)"), |b| {
            b.iter(|| decode_verified(black_box(body)).unwrap())
        });
        group.bench_function(format!("shared delivery {size} B"), |b| {
            b.iter(|| encoder.shared_delivery("orders.eu.created", black_box(&payload), &[], 1, 2))
        });
        let shared = encoder.shared_delivery("orders.eu.created", &payload, &[], 1, 2);
        let mut batch = BytesMut::with_capacity(64 * 1024);
        group.bench_function(
            format!("write shared delivery {size} B into a batch"),
            |b| {
                b.iter(|| {
                    if batch.len() > 60 * 1024 {
                        batch.clear();
                    }
                    let route = Route {
                        subscription_id: 7,
                        delivery_id: 0,
                        delivery_count: 1,
                    };
                    black_box(&shared).write_to(route, &mut batch);
                })
            },
        );
        let delivery = encoder.encode_to_bytes(&Frame::Delivery(Delivery {
            route: Route {
                subscription_id: 1,
                delivery_id: 0,
                delivery_count: 1,
            },
            topic: "orders.eu.created",
            payload: &payload,
            message_id: 9,
            timestamp_ms: 10,
            headers: vec![],
        }));
        let body = &delivery[LENGTH_PREFIX_LEN..];
        group.bench_function(format!("decode delivery {size} B"), |b| {
            b.iter(|| decode(black_box(body)).unwrap())
        });
    }
    let with_headers = Frame::Publish(Publish {
        headers: vec![Header {
            key: "traceparent",
            value: b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        }],
        ..match publish(b"0123456789abcdef") {
            Frame::Publish(p) => p,
            _ => unreachable!(),
        }
    });
    let mut encoder = Encoder::new();
    let bytes = encoder.encode_to_bytes(&with_headers);
    group.bench_function("decode publish 16 B + traceparent", |b| {
        b.iter(|| decode(black_box(&bytes[LENGTH_PREFIX_LEN..])).unwrap())
    });
    group.finish();
}

fn topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic");
    group.throughput(Throughput::Elements(1));
    group.bench_function("validate ascii topic", |b| {
        b.iter(|| topic::validate_topic(black_box("orders.eu-west.created")))
    });
    group.bench_function("validate unicode topic", |b| {
        b.iter(|| topic::validate_topic(black_box("bestellungen.über.größe")))
    });
    group.bench_function("match wildcard", |b| {
        b.iter(|| {
            topic::matches(
                black_box("orders.*.created"),
                black_box("orders.eu.created"),
            )
        })
    });
    group.bench_function("match tail", |b| {
        b.iter(|| topic::matches(black_box("orders.>"), black_box("orders.eu.created")))
    });
    group.finish();
}

criterion_group!(benches, codec, topics);
criterion_main!(benches);
