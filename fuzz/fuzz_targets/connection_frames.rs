//! The broker's connections fed arbitrary frame sequences (see
//! `blipmq_fuzz::frames` for what an input means): the broker never panics,
//! answers only in whole, well-formed broker-to-client frames with error
//! codes from the table, closes a connection whose client is done, and
//! keeps serving a fresh client afterwards.

#![no_main]

use blipmq_fuzz::broker::{check_answer, Broker};
use blipmq_fuzz::frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let broker = Broker::get();
    let answer = broker.exchange(&frames::wire(&frames::decode(input)));
    check_answer(&answer);
    broker.check_serving();
});
