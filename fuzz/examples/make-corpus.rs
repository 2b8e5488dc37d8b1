//! Writes the seed corpus, `fuzz/corpus/<target>/`, from the real encoders:
//! segments written by the broker's `Wal` (then damaged), a manifest from
//! its `render`, frames from `blipmq_protocol`'s encoder. The directories
//! are replaced whole, so the committed corpus is exactly what this makes:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make-corpus
//! ```

use std::path::{Path, PathBuf};

use blipmq_broker::fuzz_api::{render, QueueDefinition};
use blipmq_broker::wal::{Wal, WalConfig, MIN_SEGMENT_BYTES};
use blipmq_fuzz::frames::{self, Op};
use blipmq_fuzz::wal_format::encode_record;
use blipmq_fuzz::wal_input::{self, Segment, CUT, FIX_CRC, FLIP, HEADER, RENUMBER};
use blipmq_protocol::PROTOCOL_VERSION;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write_all(&root.join("wal_recovery"), wal_seeds());
    write_all(&root.join("manifest_parse"), manifest_seeds());
    write_all(&root.join("connection_frames"), frame_seeds());
}

fn write_all(dir: &Path, seeds: Vec<(&str, Vec<u8>)>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove the old corpus");
    }
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

/// The segments of a log the real `Wal` wrote: three small segments.
fn real_segments() -> Vec<Segment> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = WalConfig {
        dir: dir.path().to_path_buf(),
        segment_bytes: MIN_SEGMENT_BYTES,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(config).expect("open a new log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    for i in 0..45u8 {
        // Sizes that vary, so that records straddle the reader's refills.
        let payload = vec![i; 50 + usize::from(i) * 13 % 300];
        runtime
            .block_on(wal.append(i % 3, payload))
            .expect("append");
    }
    wal.close().expect("close");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list the log")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "three segments at least: {paths:?}");
    paths
        .iter()
        .map(|path| {
            let stem = path.file_stem().and_then(|s| s.to_str()).expect("a name");
            let bytes = std::fs::read(path).expect("read a segment");
            Segment::raw(stem.parse().expect("an LSN name"), &bytes)
        })
        .collect()
}

fn wal_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let real = real_segments();
    let encode = wal_input::encode;
    let with = |change: &dyn Fn(&mut Vec<Segment>)| {
        let mut segments = real.clone();
        change(&mut segments);
        encode(&segments)
    };
    let last = real.len() - 1;
    // Records to renumber and fix up, for the structured seeds.
    let mut records = Vec::new();
    for (i, payload) in [&b"one"[..], b"two", &[0; 40]].into_iter().enumerate() {
        encode_record(&mut records, 0, i as u8, payload);
    }
    let structured = |name: u64, flags: u8| Segment {
        flags: HEADER | RENUMBER | FIX_CRC | flags,
        name,
        body: records.clone(),
        at: 30,
        xor: 0x04,
        cut: 70,
    };
    vec![
        ("empty-dir", Vec::new()),
        ("real-intact", encode(&real)),
        (
            "real-torn-tail",
            with(&|s| {
                let len = s[last].body.len();
                s[last].body.truncate(len - 5);
            }),
        ),
        (
            "real-flip-in-middle-segment",
            with(&|s| {
                let len = s[1].body.len();
                s[1].body[len / 2] ^= 0x20;
            }),
        ),
        ("real-missing-middle", with(&|s| drop(s.remove(1)))),
        ("real-empty-last", with(&|s| s[last].body.clear())),
        ("real-torn-header", with(&|s| s[last].body.truncate(5))),
        ("real-bad-magic", with(&|s| s[0].body[0] = b'X')),
        (
            "structured-two-segments",
            encode(&[structured(1, 0), structured(4, 0)]),
        ),
        ("structured-flip", encode(&[structured(1, FLIP)])),
        (
            "structured-cut",
            encode(&[structured(1, 0), structured(4, CUT)]),
        ),
    ]
}

fn manifest_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let queues = [
        QueueDefinition {
            name: "worker".into(),
            pattern: "jobs.>".into(),
            group: false,
            since: 0,
            detached_ms: None,
        },
        QueueDefinition {
            name: "resizers".into(),
            pattern: "images.*".into(),
            group: true,
            since: 12345,
            detached_ms: Some(1_700_000_000_000),
        },
    ];
    vec![
        ("empty", render(&[]).into_bytes()),
        ("two-queues", render(&queues).into_bytes()),
        // The checksum no longer matches: refused, past the version line.
        ("crlf", render(&queues).replace('\n', "\r\n").into_bytes()),
        // Version 1 (no checksum, no detach times) is still read; `render`
        // writes only version 2, so this one is written out.
        (
            "two-queues-v1",
            b"blipmq-subscriptions 1\ndurable 0 worker jobs.>\ngroup 12345 resizers images.*\n"
                .to_vec(),
        ),
        (
            "bad-kind",
            b"blipmq-subscriptions 1\nother 1 a b\n".to_vec(),
        ),
    ]
}

fn hello() -> Op {
    Op::Hello {
        version: PROTOCOL_VERSION,
        client_name: Some("seed".into()),
        api_key: None,
    }
}

fn publish(topic: &str, qos: u8, headers: Vec<(String, Vec<u8>)>) -> Op {
    Op::Publish {
        publish_id: 7,
        topic: topic.into(),
        payload: b"payload".to_vec(),
        ttl_ms: 0,
        qos,
        headers,
    }
}

fn subscribe(pattern: &str, qos: u8, durable: Option<&str>, group: Option<&str>) -> Op {
    Op::Subscribe {
        request_id: 3,
        pattern: pattern.into(),
        qos,
        durable_name: durable.map(str::to_string),
        queue_group: group.map(str::to_string),
    }
}

fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let seeds = vec![
        ("hello-ping", vec![hello(), Op::Ping(1)]),
        (
            "pubsub-qos0",
            vec![
                hello(),
                subscribe("a.b", 0, None, None),
                publish("a.b", 0, vec![]),
                Op::Ping(2),
            ],
        ),
        (
            "durable-qos1-ack-detach",
            vec![
                hello(),
                subscribe("orders.>", 1, Some("seed-durable"), None),
                publish("orders.eu", 1, vec![]),
                Op::Ack {
                    subscription_id: 1,
                    delivery_id: 1,
                },
                Op::Unsubscribe {
                    request_id: 4,
                    subscription_id: 1,
                    keep_durable: true,
                },
            ],
        ),
        (
            "queue-group-qos1",
            vec![
                hello(),
                subscribe("jobs.*", 1, None, Some("workers")),
                publish("jobs.resize", 1, vec![]),
                Op::Unsubscribe {
                    request_id: 5,
                    subscription_id: 1,
                    keep_durable: false,
                },
            ],
        ),
        (
            "headers",
            vec![
                hello(),
                subscribe(">", 0, None, None),
                publish(
                    "t",
                    0,
                    vec![(
                        "traceparent".into(),
                        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
                    )],
                ),
            ],
        ),
        ("publish-before-hello", vec![publish("a", 0, vec![])]),
        (
            "wrong-version",
            vec![Op::Hello {
                version: 99,
                client_name: None,
                api_key: None,
            }],
        ),
        (
            "garbage-frame",
            vec![
                hello(),
                Op::RawFrame(b"not a flatbuffer".to_vec()),
                Op::Ping(3),
            ],
        ),
        (
            "oversized-prefix",
            vec![hello(), Op::Raw(vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3])],
        ),
        (
            "client-sends-broker-frames",
            std::iter::once(hello())
                .chain((0..6).map(|kind| Op::ToClient { kind, id: 1 }))
                .collect(),
        ),
    ];
    seeds
        .into_iter()
        .map(|(name, ops)| (name, frames::encode(&ops)))
        .collect()
}
