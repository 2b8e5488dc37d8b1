//! The hand-checked `Publish` and `Delivery` fast path agrees with the full FlatBuffers
//! verifier: on valid frames of every shape it decodes the same fields, and
//! on mutated frames it never accepts one the verifier refuses or reads one
//! differently (fixed seed; `BLIPMQ_FUZZ_SEED` tries another).

use blipmq_protocol::{
    decode, decode_verified, Delivery, Encoder, Frame, Header, Publish, Route, LENGTH_PREFIX_LEN,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn random_frame(rng: &mut SmallRng, topic: &str, payload: &[u8], headers: bool) -> Vec<u8> {
    let headers = if headers {
        vec![Header {
            key: "k",
            value: b"v",
        }]
    } else {
        vec![]
    };
    let frame = if rng.gen_bool(0.5) {
        Frame::Publish(Publish {
            publish_id: if rng.gen_bool(0.3) { 0 } else { rng.gen() },
            topic,
            payload,
            ttl_ms: if rng.gen_bool(0.5) { 0 } else { rng.gen() },
            qos: rng.gen_range(0..3),
            headers,
        })
    } else {
        Frame::Delivery(Delivery {
            route: Route {
                subscription_id: rng.gen(),
                delivery_id: if rng.gen_bool(0.5) { 0 } else { rng.gen() },
                delivery_count: rng.gen_range(1..5),
            },
            topic,
            payload,
            message_id: rng.gen(),
            timestamp_ms: rng.gen(),
            headers,
        })
    };
    // Both layouts: the fixed one this crate writes, and the builder's (what
    // other implementations write).
    let mut out = bytes::BytesMut::new();
    if rng.gen_bool(0.5) {
        Encoder::new().encode(&frame, &mut out);
    } else {
        Encoder::new().encode_with_builder(&frame, &mut out);
    }
    let body = out[LENGTH_PREFIX_LEN..].to_vec();
    assert_eq!(decode_verified(&body).unwrap(), frame, "encoded as given");
    body
}

#[test]
fn the_fast_path_matches_the_verifier_on_valid_and_mutated_frames() {
    let seed = std::env::var("BLIPMQ_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_FA57);
    let mut rng = SmallRng::seed_from_u64(seed);
    let topics = ["a", "orders.eu.created", "ü.ñ", "x.y.z.w"];
    let mut accepted_mutants = 0;
    for i in 0..200_000 {
        let topic = topics[i % topics.len()];
        let payload: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
        let valid = random_frame(&mut rng, topic, &payload, i % 7 == 0);
        assert_eq!(
            decode(&valid).unwrap(),
            decode_verified(&valid).unwrap(),
            "seed {seed}, valid frame {i}"
        );
        let mut mutant = valid.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..mutant.len());
            match rng.gen_range(0..4) {
                0 => mutant[at] ^= 1 << rng.gen_range(0..8),
                1 => mutant[at] = rng.gen(),
                2 => mutant.truncate(at),
                _ => mutant[at] = [0, 0xff, 0x80, 0x7f][rng.gen_range(0..4)],
            }
            if mutant.is_empty() {
                break;
            }
        }
        let fast = decode(&mutant);
        let verified = decode_verified(&mutant);
        match (&fast, &verified) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "seed {seed}, mutant {i}: {mutant:02x?}");
                accepted_mutants += 1;
            }
            (Err(_), Err(_)) => {}
            _ => panic!(
                "seed {seed}, mutant {i}: fast {fast:?} but verifier {verified:?}: {mutant:02x?}"
            ),
        }
    }
    // The mutations must have produced frames that still decode (e.g. a
    // changed payload byte), or the comparison above proves little.
    assert!(accepted_mutants > 10_000, "{accepted_mutants}");
}
