//! What recovery must leave of a directory, derived from the promises in
//! broker/src/wal/mod.rs ("Recovery, corruption and quarantine") alone:
//!
//! - files named with an LSN outside 1..=2^62 are not segments (left alone);
//! - no record has an LSN at or past 2^62, and no gap record points past
//!   it: such a record is damage like a failed CRC;
//! - segments are taken in LSN order of their names; a segment keeps the
//!   records from its start up to the first one that is incomplete, fails
//!   its CRC or has the wrong LSN (none if its header is short or wrong); a
//!   gap record (kind 255, payload the next LSN) moves the expected LSN on
//!   and is never replayed;
//! - damage costs only the records it hides: the segments after a damaged
//!   one are kept, and a hole between two segments is fine;
//! - a segment whose name is below the LSN the kept log before it ends at
//!   overlaps it, and is quarantined whole (alone).

use std::collections::BTreeMap;

use crate::wal_format::{frame_crc, frame_lsn, Record, HEADER_LEN, MAGIC, RECORD_HEADER_LEN};

/// The ceiling of the LSN space: the highest segment name and gap target,
/// one past the highest record LSN.
pub const LSN_CEILING: u64 = 1 << 62;
/// The record kind the WAL keeps for its gap records.
pub const KIND_GAP: u8 = u8::MAX;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Every record recovery keeps, in log order.
    pub records: Vec<Record>,
    /// Names (first LSNs) of the segments left in the log.
    pub kept: Vec<u64>,
    /// Names of the segments moved to quarantine whole.
    pub quarantined: Vec<u64>,
}

/// The records a segment named `first_lsn` keeps, and the LSN after them.
fn scan(first_lsn: u64, file: &[u8]) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let mut expected = first_lsn;
    if file.len() < HEADER_LEN || file[..8] != MAGIC || file[8..16] != first_lsn.to_le_bytes() {
        return (records, expected);
    }
    let mut at = HEADER_LEN;
    while file.len() - at >= RECORD_HEADER_LEN {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(frame) = file.get(at..at + RECORD_HEADER_LEN + len) else {
            break;
        };
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        if crc != frame_crc(frame) || frame_lsn(frame) != expected {
            break;
        }
        let (kind, payload) = (frame[16], &frame[RECORD_HEADER_LEN..]);
        if kind == KIND_GAP {
            let next = <[u8; 8]>::try_from(payload).map(u64::from_le_bytes);
            match next {
                Ok(next) if next > expected && next <= LSN_CEILING => expected = next,
                _ => break,
            }
        } else {
            if expected >= LSN_CEILING {
                break;
            }
            records.push((expected, kind, payload.to_vec()));
            expected += 1;
        }
        at += frame.len();
    }
    (records, expected)
}

pub fn recover(files: &BTreeMap<u64, Vec<u8>>) -> Expected {
    let mut expected = Expected::default();
    let mut end: Option<u64> = None;
    for (&name, file) in files.range(1..=LSN_CEILING) {
        if end.is_some_and(|end| name < end) {
            expected.quarantined.push(name);
            continue;
        }
        let (records, segment_end) = scan(name, file);
        end = Some(segment_end);
        expected.kept.push(name);
        expected.records.extend(records);
    }
    expected
}
