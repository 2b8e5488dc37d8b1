//! The broker's connections fed arbitrary frame sequences (see
//! `blipmq_fuzz::frames` for what an input means): the broker never panics,
//! answers only in whole, well-formed frames, closes a connection whose
//! client is done, and keeps serving a fresh client afterwards.

#![no_main]

use blipmq_fuzz::broker::{whole_frames, Broker};
use blipmq_fuzz::frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let broker = Broker::get();
    let answer = broker.exchange(&frames::wire(&frames::decode(input)));
    let (bodies, used) = whole_frames(&answer.bytes);
    if answer.clean_close {
        assert_eq!(
            used,
            answer.bytes.len(),
            "the broker's answer ends inside a frame"
        );
    }
    for body in &bodies {
        if let Err(e) = blipmq_protocol::decode(body) {
            panic!("the broker sent a frame that does not decode ({e}): {body:?}");
        }
    }
    broker.check_serving();
});
