//! The segment format as broker/src/wal/mod.rs documents it, written again
//! here from the documentation rather than imported: the fuzz targets use it
//! to build inputs and, in [`crate::wal_model`], as the oracle that the real
//! recovery is compared with, so it must not share the code under test.

/// `magic "BLIPWAL1"`, then the segment's first LSN (u64 LE).
pub const MAGIC: [u8; 8] = *b"BLIPWAL1";
pub const HEADER_LEN: usize = 16;
/// `len u32, crc u32, lsn u64, kind u8`, then `len` payload bytes.
pub const RECORD_HEADER_LEN: usize = 17;

/// One record: LSN, kind, payload.
pub type Record = (u64, u8, Vec<u8>);

pub fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

pub fn header(first_lsn: u64) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..].copy_from_slice(&first_lsn.to_le_bytes());
    header
}

/// The CRC of a whole frame: over `len` and everything after `crc`.
pub fn frame_crc(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..4]);
    hasher.update(&frame[8..]);
    hasher.finalize()
}

pub fn encode_record(out: &mut Vec<u8>, lsn: u64, kind: u8, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The byte ranges of the complete frames after the segment header, in
/// order, whatever their CRC; stops at the first frame the file cuts short.
pub fn frame_ranges(file: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut at = HEADER_LEN;
    while let Some(len_field) = file.get(at..at + 4) {
        let len = u32::from_le_bytes(len_field.try_into().expect("4 bytes")) as usize;
        let end = at + RECORD_HEADER_LEN + len;
        if end > file.len() {
            break;
        }
        ranges.push(at..end);
        at = end;
    }
    ranges
}

pub fn frame_lsn(frame: &[u8]) -> u64 {
    u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"))
}
