//! The durable-queue manifest's parser: it never panics, and what it
//! accepts survives `render` and a second `parse` unchanged.

#![no_main]

use blipmq_broker::fuzz_api::{parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The broker reads the file with `read_to_string`: the parser only
    // ever sees UTF-8.
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(queues) = parse(text) else {
        return;
    };
    let rendered = render(&queues);
    match parse(&rendered) {
        Ok(again) => assert_eq!(again, queues, "render wrote {rendered:?}"),
        Err(e) => panic!("render wrote {rendered:?}, which parse refuses: {e}"),
    }
});
