//! The `wal_recovery` input: a recipe for the files of a WAL directory.
//!
//! Raw bytes alone make poor segment files: a mutation almost never yields a
//! frame whose CRC matches, so the fuzzer would only ever see "the first
//! record is corrupt". Each segment therefore carries flags that let the
//! harness write a valid header, renumber the LSNs and fix the CRCs, and
//! *then* damage the result (one byte changed, a cut), so that mutations
//! reach the paths behind valid records. With no flags the body is the file
//! verbatim, which is how the seed corpus carries segments written by the
//! real `Wal`.
//!
//! ```text
//! input   := segment*                       (the first MAX_SEGMENTS count)
//! segment := flags u8, name u64 LE, len u16 LE, body[len],
//!            at u16 LE, xor u8              (only with FLIP)
//!            cut u16 LE                     (only with CUT)
//! ```
//!
//! The file is `{name:020}.wal`; a later segment of the same name replaces
//! an earlier one. A field the input ends inside reads as zero (a body as
//! the bytes that are left), so every input means something.

use std::collections::BTreeMap;

use crate::wal_format::{frame_crc, frame_ranges, header, HEADER_LEN};

/// The file is `header(name) ++ body` instead of `body`.
pub const HEADER: u8 = 0x01;
/// Every complete frame gets LSN `name + i`, as a writer would have given.
pub const RENUMBER: u8 = 0x02;
/// Every complete frame gets the CRC that matches it.
pub const FIX_CRC: u8 = 0x04;
/// Then one byte is XORed (`at` modulo the file's length).
pub const FLIP: u8 = 0x08;
/// Then the file is cut to `cut` modulo its length + 1 bytes.
pub const CUT: u8 = 0x10;

/// More files make no new recovery paths, only slower runs.
pub const MAX_SEGMENTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    pub flags: u8,
    pub name: u64,
    pub body: Vec<u8>,
    /// With [`FLIP`]: where, and the XOR mask.
    pub at: u16,
    pub xor: u8,
    /// With [`CUT`].
    pub cut: u16,
}

impl Segment {
    /// A file taken verbatim.
    pub fn raw(name: u64, file: &[u8]) -> Segment {
        Segment {
            name,
            body: file.to_vec(),
            ..Segment::default()
        }
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut file = Vec::with_capacity(HEADER_LEN + self.body.len());
        if self.flags & HEADER != 0 {
            file.extend_from_slice(&header(self.name));
        }
        file.extend_from_slice(&self.body);
        for (i, range) in frame_ranges(&file).into_iter().enumerate() {
            let frame = &mut file[range];
            if self.flags & RENUMBER != 0 {
                let lsn = self.name.wrapping_add(i as u64);
                frame[8..16].copy_from_slice(&lsn.to_le_bytes());
            }
            if self.flags & FIX_CRC != 0 {
                let crc = frame_crc(frame);
                frame[4..8].copy_from_slice(&crc.to_le_bytes());
            }
        }
        if self.flags & FLIP != 0 && !file.is_empty() {
            let at = usize::from(self.at) % file.len();
            file[at] ^= self.xor;
        }
        if self.flags & CUT != 0 {
            file.truncate(usize::from(self.cut) % (file.len() + 1));
        }
        file
    }
}

/// Reads fields from the front of the input; past its end, zeros.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let taken = self.bytes(N);
        out[..taken.len()].copy_from_slice(taken);
        out
    }
}

pub fn decode(input: &[u8]) -> Vec<Segment> {
    let mut reader = Reader(input);
    let mut segments = Vec::new();
    while !reader.0.is_empty() && segments.len() < MAX_SEGMENTS {
        let [flags] = reader.array::<1>();
        let name = u64::from_le_bytes(reader.array());
        let len = u16::from_le_bytes(reader.array());
        let body = reader.bytes(usize::from(len)).to_vec();
        let mut segment = Segment {
            flags,
            name,
            body,
            ..Segment::default()
        };
        if flags & FLIP != 0 {
            segment.at = u16::from_le_bytes(reader.array());
            [segment.xor] = reader.array();
        }
        if flags & CUT != 0 {
            segment.cut = u16::from_le_bytes(reader.array());
        }
        segments.push(segment);
    }
    segments
}

/// The input that [`decode`]s to `segments` (bodies longer than `u16::MAX`
/// are not representable and panic).
pub fn encode(segments: &[Segment]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        let len = u16::try_from(s.body.len()).expect("a body fits the u16 length");
        out.push(s.flags);
        out.extend_from_slice(&s.name.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&s.body);
        if s.flags & FLIP != 0 {
            out.extend_from_slice(&s.at.to_le_bytes());
            out.push(s.xor);
        }
        if s.flags & CUT != 0 {
            out.extend_from_slice(&s.cut.to_le_bytes());
        }
    }
    out
}

/// The directory the input describes: file name LSN to contents.
pub fn files(input: &[u8]) -> BTreeMap<u64, Vec<u8>> {
    decode(input)
        .into_iter()
        .map(|segment| (segment.name, segment.build()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_format::{encode_record, frame_lsn};

    #[test]
    fn encode_then_decode_is_identity() {
        let segments = vec![
            Segment::raw(1, b"anything"),
            Segment {
                flags: HEADER | RENUMBER | FIX_CRC | FLIP | CUT,
                name: u64::MAX,
                body: vec![7; 40],
                at: 300,
                xor: 0x80,
                cut: 9,
            },
        ];
        assert_eq!(decode(&encode(&segments)), segments);
    }

    #[test]
    fn a_short_input_still_decodes() {
        assert_eq!(decode(&[]), vec![]);
        let one = decode(&[HEADER, 5]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, 5);
        assert!(one[0].body.is_empty());
    }

    #[test]
    fn fixups_make_a_valid_segment() {
        let mut body = Vec::new();
        encode_record(&mut body, 0, 1, b"a");
        encode_record(&mut body, 0, 2, b"bc");
        body[5] ^= 1;
        let segment = Segment {
            flags: HEADER | RENUMBER | FIX_CRC,
            name: 10,
            body,
            ..Segment::default()
        };
        let file = segment.build();
        let frames = frame_ranges(&file);
        assert_eq!(frames.len(), 2);
        for (i, range) in frames.into_iter().enumerate() {
            let frame = &file[range];
            assert_eq!(frame_lsn(frame), 10 + i as u64);
            assert_eq!(
                u32::from_le_bytes(frame[4..8].try_into().unwrap()),
                frame_crc(frame)
            );
        }
    }
}
