//! The WAL's recovery over damaged segment files: see
//! `blipmq_fuzz::wal_input` for what an input means and
//! `blipmq_fuzz::wal_check` for what is checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| blipmq_fuzz::wal_check::run(input));
