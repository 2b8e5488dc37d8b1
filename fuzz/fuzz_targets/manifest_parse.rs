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
    let again = parse(&rendered)
        .unwrap_or_else(|e| panic!("render wrote {rendered:?}, which parse refuses: {e}"));
    // Name the first queue that changed rather than dumping both lists.
    let count = queues.len().max(again.len());
    if let Some(i) = (0..count).find(|&i| queues.get(i) != again.get(i)) {
        panic!(
            "queue {i} changed through render and parse: {:?} became {:?}; render wrote {:?}",
            queues.get(i),
            again.get(i),
            rendered.split_inclusive('\n').nth(i + 1),
        );
    }
});
