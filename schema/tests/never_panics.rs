//! The codec never panics on hostile input.
//!
//! Three properties, driven by a fixed-seed `SmallRng` so every run sees the
//! same inputs (the seed is printed; set `BLIPMQ_FUZZ_SEED` to try another,
//! and `BLIPMQ_FUZZ_ITERS` to scale the input counts):
//!
//! 1. Random byte strings through `check_frame` then `decode`, and through
//!    `decode` directly: no panic.
//! 2. Valid frames of every type, encoded with `Encoder` and then mutated
//!    (bit flips, boundary bytes and words, truncation, junk, splices): no
//!    panic, and every frame that still decodes is round-trip stable: it
//!    re-encodes, decodes again to an equal frame, and re-encodes to the same
//!    bytes.
//! 3. Every strict prefix of a valid frame is `Incomplete` for `check_frame`,
//!    with the exact number of missing bytes.
//!
//! When a panic happens inside the codec, the offending input is printed as
//! hex before the panic continues, so it can be turned into a unit test.

use std::panic::{catch_unwind, resume_unwind};

use blipmq_protocol::{
    check_frame, decode, Ack, Confirm, Delivery, Encoder, ErrorCode, ErrorFrame, Frame, FrameError,
    Header, Hello, Publish, Route, Subscribe, Subscribed, Unsubscribe, Unsubscribed, Welcome,
    LENGTH_PREFIX_LEN,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The size limit every `check_frame` call here uses.
const MAX_BODY: usize = 4096;
const DEFAULT_SEED: u64 = 0xB11D_0F0C_0DEC_5EED;
/// Inputs per fuzzing test. Both tests together feed at least 2,000,000.
const RANDOM_INPUTS: usize = 1_000_000;
const MUTATED_INPUTS: usize = 1_000_000;

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => raw.replace('_', "").parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw:?} is not a number")))
}

/// A reproducible RNG; `salt` keeps the tests' streams apart.
fn rng_for(test: &str, salt: u64) -> SmallRng {
    let seed = env_u64("BLIPMQ_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    println!("{test}: seed = {seed:#018x} (set BLIPMQ_FUZZ_SEED to change)");
    SmallRng::seed_from_u64(seed ^ salt)
}

fn iterations(default: usize) -> usize {
    env_u64("BLIPMQ_FUZZ_ITERS").map_or(default, |n| n as usize)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `check_frame`, reporting the input if it panics.
fn guarded_check(buf: &[u8], what: &str) -> Result<usize, FrameError> {
    catch_unwind(|| check_frame(buf, MAX_BODY)).unwrap_or_else(|p| {
        eprintln!("check_frame panicked on {what}: {}", hex(buf));
        resume_unwind(p)
    })
}

/// `decode`, reporting the input if it panics.
fn guarded_decode<'a>(body: &'a [u8], what: &str) -> Result<Frame<'a>, FrameError> {
    catch_unwind(|| decode(body)).unwrap_or_else(|p| {
        eprintln!("decode panicked on {what}: {}", hex(body));
        resume_unwind(p)
    })
}

/// How often each outcome happened, for one of `check_frame` and `decode`.
#[derive(Default, Debug)]
struct Outcomes {
    ok: usize,
    incomplete: usize,
    too_large: usize,
    malformed: usize,
    unknown_body: usize,
}

impl Outcomes {
    fn count<T>(&mut self, r: &Result<T, FrameError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(FrameError::Incomplete { .. }) => self.incomplete += 1,
            Err(FrameError::TooLarge { .. }) => self.too_large += 1,
            Err(FrameError::Malformed(_)) => self.malformed += 1,
            Err(FrameError::UnknownBody(_)) => self.unknown_body += 1,
        }
    }

    fn total(&self) -> usize {
        self.ok + self.incomplete + self.too_large + self.malformed + self.unknown_body
    }
}

#[derive(Default, Debug)]
struct Tally {
    inputs: usize,
    check_frame: Outcomes,
    decode: Outcomes,
}

/// A frame that decoded from arbitrary bytes must survive re-encoding: encode
/// it, decode that to an equal frame, and encode again to identical bytes.
fn assert_round_trip_stable(enc: &mut Encoder, frame: &Frame<'_>, input: &[u8]) {
    let first = enc.encode_to_bytes(frame);
    let ctx = || format!("frame {frame:?} decoded from {}", hex(input));
    let total = check_frame(&first, usize::MAX).unwrap_or_else(|e| panic!("{e}: {}", ctx()));
    assert_eq!(total, first.len(), "{}", ctx());
    let again = decode(&first[LENGTH_PREFIX_LEN..])
        .unwrap_or_else(|e| panic!("re-encoded frame does not decode ({e}): {}", ctx()));
    assert_eq!(&again, frame, "re-decoded frame differs: {}", ctx());
    let second = enc.encode_to_bytes(&again);
    assert_eq!(first, second, "re-encoding is not stable: {}", ctx());
}

/// Decode `body` and, if it is a frame, check it round-trips.
fn decode_and_check(enc: &mut Encoder, body: &[u8], what: &str, tally: &mut Tally) {
    let result = guarded_decode(body, what);
    tally.decode.count(&result);
    if let Ok(frame) = &result {
        assert_round_trip_stable(enc, frame, body);
    }
}

/// The full receive path: `check_frame`, then `decode` of the body it
/// delimits; plus `decode` of everything after the prefix, whatever the
/// prefix says.
fn feed(enc: &mut Encoder, buf: &[u8], what: &str, tally: &mut Tally) {
    tally.inputs += 1;
    let checked = guarded_check(buf, what);
    tally.check_frame.count(&checked);
    match checked {
        Ok(total) => {
            assert!(
                (LENGTH_PREFIX_LEN..=buf.len()).contains(&total),
                "check_frame returned {total} for {} bytes: {}",
                buf.len(),
                hex(buf)
            );
            decode_and_check(enc, &buf[LENGTH_PREFIX_LEN..total], what, tally);
        }
        Err(FrameError::Incomplete { needed }) => assert!(needed > 0, "{}", hex(buf)),
        Err(FrameError::TooLarge { len, max }) => {
            assert!(len > max && max == MAX_BODY, "{}", hex(buf))
        }
        Err(e) => panic!("check_frame returned {e:?} for {}", hex(buf)),
    }
    let body = buf.get(LENGTH_PREFIX_LEN..).unwrap_or(buf);
    decode_and_check(enc, body, what, tally);
}

// ---------------------------------------------------------------------------
// A corpus of valid frames of every type.

const FRAME_KINDS: usize = 13;

struct Pool {
    strings: Vec<String>,
    payloads: Vec<Vec<u8>>,
}

impl Pool {
    fn new(rng: &mut SmallRng) -> Pool {
        let mut strings: Vec<String> = [
            "",
            "a",
            "a.b",
            "orders.eu.created",
            "a.*.>",
            ">",
            "ünïcødé.τοπικ.名前",
            "nul\0inside",
            "client-1",
            "0.1.0",
            "secret-api-key",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        strings.push("x".repeat(300));
        strings.push((0..40).map(|_| rng.gen_range('a'..='z')).collect());
        let mut payloads = vec![
            Vec::new(),
            vec![0],
            vec![0xff; 3],
            (0..=255u8).collect(),
            b"hello".to_vec(),
        ];
        let mut big = vec![0u8; 1000];
        rng.fill(&mut big[..]);
        payloads.push(big);
        let mut small = vec![0u8; 17];
        rng.fill(&mut small[..]);
        payloads.push(small);
        Pool { strings, payloads }
    }
}

fn any_u64(rng: &mut SmallRng) -> u64 {
    *[0, 1, u64::MAX, u64::MAX - 1, 1 << 63, rng.gen(), rng.gen()]
        .choose(rng)
        .unwrap()
}

fn any_u32(rng: &mut SmallRng) -> u32 {
    *[0, 1, u32::MAX, 1 << 31, rng.gen(), rng.gen()]
        .choose(rng)
        .unwrap()
}

fn any_u16(rng: &mut SmallRng) -> u16 {
    *[0, 1, u16::MAX, rng.gen()].choose(rng).unwrap()
}

fn random_frame<'a>(kind: usize, rng: &mut SmallRng, pool: &'a Pool) -> Frame<'a> {
    let s = |rng: &mut SmallRng| pool.strings.choose(rng).unwrap().as_str();
    let opt = |rng: &mut SmallRng| rng.gen_bool(0.7).then(|| s(rng));
    let p = |rng: &mut SmallRng| pool.payloads.choose(rng).unwrap().as_slice();
    let headers = |rng: &mut SmallRng| -> Vec<Header<'a>> {
        let n = if rng.gen_bool(0.5) {
            0
        } else {
            rng.gen_range(1..=4)
        };
        (0..n)
            .map(|_| Header {
                key: s(rng),
                value: p(rng),
            })
            .collect()
    };
    match kind {
        0 => Frame::Hello(Hello {
            protocol_version: any_u16(rng),
            client_name: opt(rng),
            api_key: opt(rng),
            drop_notices: false,
        }),
        1 => Frame::Welcome(Welcome {
            protocol_version: any_u16(rng),
            server_name: s(rng),
            server_version: s(rng),
            max_message_size: any_u32(rng),
            connection_id: any_u64(rng),
            max_headers: any_u16(rng),
            max_header_key_size: any_u16(rng),
            max_headers_size: any_u32(rng),
        }),
        2 => Frame::Publish(Publish {
            publish_id: any_u64(rng),
            topic: s(rng),
            payload: p(rng),
            ttl_ms: any_u32(rng),
            qos: rng.gen_range(0..=2),
            headers: headers(rng),
        }),
        3 => Frame::Confirm(Confirm {
            publish_id: any_u64(rng),
            message_id: any_u64(rng),
        }),
        4 => Frame::Subscribe(Subscribe {
            request_id: any_u64(rng),
            pattern: s(rng),
            qos: rng.gen_range(0..=2),
            durable_name: opt(rng),
            queue_group: opt(rng),
            ack_timeout_ms: any_u32(rng),
            max_deliveries: any_u32(rng),
        }),
        5 => Frame::Subscribed(Subscribed {
            request_id: any_u64(rng),
            subscription_id: any_u64(rng),
        }),
        6 => Frame::Unsubscribe(Unsubscribe {
            request_id: any_u64(rng),
            subscription_id: any_u64(rng),
            keep_durable: rng.gen_bool(0.5),
        }),
        7 => Frame::Unsubscribed(Unsubscribed {
            request_id: any_u64(rng),
            subscription_id: any_u64(rng),
        }),
        8 => Frame::Delivery(Delivery {
            route: Route {
                subscription_id: any_u64(rng),
                delivery_id: any_u64(rng),
                delivery_count: any_u32(rng),
            },
            topic: s(rng),
            payload: p(rng),
            message_id: any_u64(rng),
            timestamp_ms: any_u64(rng),
            headers: headers(rng),
        }),
        9 => Frame::Ack(Ack {
            subscription_id: any_u64(rng),
            delivery_id: any_u64(rng),
            kind: rng.gen_range(0..=4),
            delay_ms: any_u32(rng),
        }),
        10 => Frame::Ping {
            nonce: any_u64(rng),
        },
        11 => Frame::Pong {
            nonce: any_u64(rng),
        },
        12 => Frame::Error(ErrorFrame {
            code: *[
                ErrorCode::Unknown,
                ErrorCode::MalformedFrame,
                ErrorCode::AuthFailed,
                ErrorCode::ClientClosed,
                ErrorCode(9999),
                ErrorCode(u16::MAX),
            ]
            .choose(rng)
            .unwrap(),
            message: s(rng),
            request_id: any_u64(rng),
        }),
        _ => unreachable!("only {FRAME_KINDS} frame kinds"),
    }
}

/// Encoded frames (length prefix included) of every type, each checked to
/// decode back to the frame it came from.
fn corpus(rng: &mut SmallRng, per_kind: usize) -> Vec<Vec<u8>> {
    let pool = Pool::new(rng);
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    for kind in 0..FRAME_KINDS {
        for i in 0..per_kind {
            let frame = if i == 0 {
                default_frame(kind)
            } else {
                random_frame(kind, rng, &pool)
            };
            let bytes = enc.encode_to_bytes(&frame).to_vec();
            let total = check_frame(&bytes, MAX_BODY).expect("corpus frame fits the limit");
            assert_eq!(total, bytes.len());
            let decoded = decode(&bytes[LENGTH_PREFIX_LEN..]).expect("corpus frame decodes");
            // `Welcome`/`Publish`/... decode an absent string as "", and the
            // encoder always writes one, so the corpus round-trips exactly.
            assert_eq!(decoded, frame);
            out.push(bytes);
        }
    }
    assert_eq!(out.len(), FRAME_KINDS * per_kind);
    out
}

/// The all-defaults frame of each kind (smallest encodings).
fn default_frame(kind: usize) -> Frame<'static> {
    match kind {
        0 => Frame::Hello(Hello::default()),
        1 => Frame::Welcome(Welcome::default()),
        2 => Frame::Publish(Publish::default()),
        3 => Frame::Confirm(Confirm::default()),
        4 => Frame::Subscribe(Subscribe::default()),
        5 => Frame::Subscribed(Subscribed::default()),
        6 => Frame::Unsubscribe(Unsubscribe::default()),
        7 => Frame::Unsubscribed(Unsubscribed::default()),
        8 => Frame::Delivery(Delivery::default()),
        9 => Frame::Ack(Ack::default()),
        10 => Frame::Ping { nonce: 0 },
        11 => Frame::Pong { nonce: 0 },
        12 => Frame::Error(ErrorFrame {
            code: ErrorCode::Unknown,
            message: "",
            request_id: 0,
        }),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// Mutations.

const BOUNDARY_BYTES: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x04, 0x08];

fn boundary_u32(rng: &mut SmallRng, len: usize) -> u32 {
    let len = len as u32;
    *[
        0,
        1,
        4,
        8,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0xffff_fffc,
        len,
        len.wrapping_sub(4),
        len.wrapping_add(4),
        rng.gen_range(0..=len.max(1)),
        rng.gen(),
    ]
    .choose(rng)
    .unwrap()
}

fn boundary_u16(rng: &mut SmallRng) -> u16 {
    *[
        0,
        1,
        4,
        0x7fff,
        0x8000,
        0xffff,
        rng.gen_range(0..64),
        rng.gen(),
    ]
    .choose(rng)
    .unwrap()
}

/// Apply one random mutation to `buf`. `other` is another valid frame, for
/// splices.
fn mutate(buf: &mut Vec<u8>, other: &[u8], rng: &mut SmallRng) {
    let len = buf.len();
    match rng.gen_range(0..12) {
        // Flip one to eight random bits.
        0 if len > 0 => {
            for _ in 0..rng.gen_range(1..=8) {
                let i = rng.gen_range(0..len);
                buf[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        // Overwrite a byte with a random value.
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            buf[i] = rng.gen();
        }
        // Overwrite a byte with a boundary value.
        2 if len > 0 => {
            let i = rng.gen_range(0..len);
            buf[i] = *BOUNDARY_BYTES.choose(rng).unwrap();
        }
        // Overwrite a (usually aligned) 32-bit word: offsets, lengths.
        3 if len >= 4 => {
            let mut i = rng.gen_range(0..=len - 4);
            if rng.gen_bool(0.8) {
                i &= !3;
            }
            let v = boundary_u32(rng, len);
            buf[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Overwrite a 16-bit word: vtable sizes and field offsets.
        4 if len >= 2 => {
            let i = rng.gen_range(0..=len - 2) & !1;
            let v = boundary_u16(rng);
            buf[i..i + 2].copy_from_slice(&v.to_le_bytes());
        }
        // Truncate.
        5 if len > 0 => buf.truncate(rng.gen_range(0..len)),
        // Extend with junk (random or one repeated boundary byte).
        6 => {
            let n = rng.gen_range(1..=64);
            if rng.gen_bool(0.5) {
                buf.extend((0..n).map(|_| rng.gen::<u8>()));
            } else {
                let b = *BOUNDARY_BYTES.choose(rng).unwrap();
                buf.resize(len + n, b);
            }
        }
        // Splice: our head, the other frame's tail.
        7 => {
            let cut = rng.gen_range(0..=len);
            let from = rng.gen_range(0..=other.len());
            buf.truncate(cut);
            buf.extend_from_slice(&other[from..]);
        }
        // Splice: the other frame's head, our tail.
        8 => {
            let cut = rng.gen_range(0..=len);
            let upto = rng.gen_range(0..=other.len());
            let mut spliced = other[..upto].to_vec();
            spliced.extend_from_slice(&buf[cut..]);
            *buf = spliced;
        }
        // Insert random bytes somewhere.
        9 => {
            let at = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=8);
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            buf.splice(at..at, junk);
        }
        // Delete a range.
        10 if len > 0 => {
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len.min(start + 16));
            buf.drain(start..end);
        }
        // Copy a chunk of the buffer over another place in it.
        11 if len > 1 => {
            let n = rng.gen_range(1..=len.min(16));
            let src = rng.gen_range(0..=len - n);
            let dst = rng.gen_range(0..=len - n);
            buf.copy_within(src..src + n, dst);
        }
        _ => {
            if len > 0 {
                let i = rng.gen_range(0..len);
                buf[i] = !buf[i];
            }
        }
    }
}

/// Make the length prefix announce exactly the bytes behind it (so that the
/// mutated body reaches `decode` through `check_frame`).
fn fix_prefix(buf: &mut Vec<u8>) {
    if buf.len() < LENGTH_PREFIX_LEN {
        buf.resize(LENGTH_PREFIX_LEN, 0);
    }
    let body_len = (buf.len() - LENGTH_PREFIX_LEN) as u32;
    buf[..LENGTH_PREFIX_LEN].copy_from_slice(&body_len.to_le_bytes());
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn random_bytes_never_panic() {
    let mut rng = rng_for("random_bytes_never_panic", 0x7261_6e64);
    let n = iterations(RANDOM_INPUTS);
    let mut enc = Encoder::new();
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(512);
    for _ in 0..n {
        // Mostly short strings, some long, some at the maximum.
        let len = match rng.gen_range(0..10) {
            0..=4 => rng.gen_range(0..=32),
            5..=8 => rng.gen_range(0..=512),
            _ => rng.gen_range(480..=512),
        };
        buf.clear();
        buf.resize(len, 0);
        rng.fill(&mut buf[..]);
        match rng.gen_range(0..4) {
            // A length prefix that fits, so check_frame lets the body through.
            0 if len >= 4 => {
                let body_len = rng.gen_range(0..=len - 4) as u32;
                buf[..4].copy_from_slice(&body_len.to_le_bytes());
            }
            // A small root offset, so the verifier gets past the first check.
            1 if len >= 8 => {
                let root = rng.gen_range(0..(len - 4) as u32);
                buf[4..8].copy_from_slice(&root.to_le_bytes());
            }
            _ => {}
        }
        feed(&mut enc, &buf, "random bytes", &mut tally);
    }
    println!("random_bytes_never_panic: {tally:?}");
    assert_eq!(tally.inputs, n);
    assert_eq!(tally.check_frame.total(), n);
    let c = &tally.check_frame;
    assert!(c.ok > 0 && c.too_large > 0 && c.incomplete > 0, "{tally:?}");
    assert!(tally.decode.total() > n, "{tally:?}");
}

#[test]
fn mutated_frames_never_panic_and_round_trip() {
    let mut rng = rng_for("mutated_frames_never_panic_and_round_trip", 0x6d75_7461);
    let corpus = corpus(&mut rng, 24);
    let n = iterations(MUTATED_INPUTS);
    let mut enc = Encoder::new();
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(2048);
    for _ in 0..n {
        let original = corpus.choose(&mut rng).unwrap();
        let other = corpus.choose(&mut rng).unwrap();
        buf.clear();
        buf.extend_from_slice(original);
        for _ in 0..rng.gen_range(1..=4) {
            mutate(&mut buf, other, &mut rng);
        }
        // Usually the prefix matches the mutated body, as a peer that builds
        // bad bodies would send it; sometimes it is whatever the mutation left.
        if rng.gen_bool(0.7) {
            fix_prefix(&mut buf);
        }
        feed(&mut enc, &buf, "mutated frame", &mut tally);
    }
    println!("mutated_frames_never_panic_and_round_trip: {tally:?}");
    assert_eq!(tally.inputs, n);
    // The mutations must both break frames and leave some decodable.
    let d = &tally.decode;
    assert!(d.ok > n / 100, "too few mutated frames decoded: {tally:?}");
    assert!(d.malformed > n / 100, "too few frames broken: {tally:?}");
}

#[test]
fn every_strict_prefix_of_a_frame_is_incomplete() {
    let mut rng = rng_for("every_strict_prefix_of_a_frame_is_incomplete", 0x7072_6566);
    let corpus = corpus(&mut rng, 8);
    let mut enc = Encoder::new();
    let mut tally = Tally::default();
    for frame in &corpus {
        let total = frame.len();
        assert_eq!(check_frame(frame, MAX_BODY), Ok(total));
        // Two frames back to back: the first is delimited exactly.
        let mut two = frame.clone();
        two.extend_from_slice(frame);
        assert_eq!(check_frame(&two, MAX_BODY), Ok(total));
        for cut in 0..total {
            let prefix = &frame[..cut];
            let needed = if cut < LENGTH_PREFIX_LEN {
                LENGTH_PREFIX_LEN - cut
            } else {
                total - cut
            };
            assert_eq!(
                guarded_check(prefix, "truncated frame"),
                Err(FrameError::Incomplete { needed }),
                "prefix of {cut}/{total} bytes: {}",
                hex(prefix)
            );
            // A truncated body must not panic either (and must stay stable
            // if, by chance, it still decodes).
            if cut >= LENGTH_PREFIX_LEN {
                decode_and_check(
                    &mut enc,
                    &prefix[LENGTH_PREFIX_LEN..],
                    "truncated body",
                    &mut tally,
                );
            }
        }
    }
    println!("every_strict_prefix_of_a_frame_is_incomplete: {tally:?}");
}
