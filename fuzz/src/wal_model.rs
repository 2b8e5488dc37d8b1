//! What recovery must leave of a directory, derived from the promises in
//! broker/src/wal/mod.rs ("Recovery, corruption and quarantine") alone:
//!
//! - segments are taken in LSN order of their names; a segment keeps the
//!   records from its start up to the first one that is incomplete, fails
//!   its CRC or has the wrong LSN (none if its header is short or wrong);
//! - a segment whose name is not the LSN that the one before it ends at, and
//!   every later one, are quarantined whole;
//! - what is kept is the longest intact prefix of the log.

use std::collections::BTreeMap;

use crate::wal_format::{frame_crc, frame_lsn, Record, HEADER_LEN, MAGIC, RECORD_HEADER_LEN};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Every record recovery keeps, in log order.
    pub records: Vec<Record>,
    /// Names (first LSNs) of the segments left in the log.
    pub kept: Vec<u64>,
    /// Names of the segments moved to quarantine whole.
    pub quarantined: Vec<u64>,
}

/// The records a segment named `first_lsn` keeps.
fn scan(first_lsn: u64, file: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    if file.len() < HEADER_LEN || file[..8] != MAGIC || file[8..16] != first_lsn.to_le_bytes() {
        return records;
    }
    let mut at = HEADER_LEN;
    let mut expected = first_lsn;
    while file.len() - at >= RECORD_HEADER_LEN {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(frame) = file.get(at..at + RECORD_HEADER_LEN + len) else {
            break;
        };
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        if crc != frame_crc(frame) || frame_lsn(frame) != expected {
            break;
        }
        records.push((expected, frame[16], frame[RECORD_HEADER_LEN..].to_vec()));
        at += frame.len();
        // Wrapping: the model must not panic where the broker might not;
        // an LSN past u64::MAX is the broker's to handle, and any answer it
        // gives that differs from this one is reported by the comparison.
        expected = expected.wrapping_add(1);
    }
    records
}

pub fn recover(files: &BTreeMap<u64, Vec<u8>>) -> Expected {
    let mut expected = Expected::default();
    let mut next: Option<u64> = None;
    for (&name, file) in files {
        if next.is_some_and(|next| next != name) || !expected.quarantined.is_empty() {
            expected.quarantined.push(name);
            continue;
        }
        let records = scan(name, file);
        next = Some(name.wrapping_add(records.len() as u64));
        expected.kept.push(name);
        expected.records.extend(records);
    }
    expected
}
