//! The on-disk format: segment file names, the segment header, record framing
//! and a streaming frame reader with a bounded buffer.

use std::io::{self, Read};

use super::Lsn;

/// First 8 bytes of every segment file. The trailing digit is the format
/// version; a new format gets a new magic.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"BLIPWAL1";
/// `[magic 8][first_lsn u64 LE]`.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// `[len u32 LE][crc32 u32 LE][lsn u64 LE][kind u8]`, then `len` payload bytes.
pub(crate) const RECORD_HEADER_LEN: usize = 17;
/// The smallest frame: a record with an empty payload.
pub(crate) const MIN_FRAME_LEN: u64 = RECORD_HEADER_LEN as u64;
/// The record kind the WAL keeps for itself: a *gap record*, written only
/// by recovery where records were lost. Its payload is the LSN the log goes
/// on at (`u64` LE, greater than its own). Replay never shows it.
pub(crate) const KIND_GAP: u8 = u8::MAX;
/// Segment files are `{first_lsn:020}.wal`.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
/// Read buffer of the recovery scan and of replay. It grows only to hold a
/// single record larger than this (a record never exceeds its segment).
pub const READ_BUFFER_BYTES: usize = 1 << 20;

pub(crate) fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment file name, or `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|lsn| (1..=LSN_CEILING).contains(lsn))
}

/// The ceiling of the LSN space: every record's LSN is below it, and every
/// segment name and gap target is at most it. LSNs start at 1 and grow by
/// one per record (2^62 records is 14,000 years at ten million a second), so
/// only a damaged or foreign file name comes near it: a file named above it
/// is not a segment, and the bound keeps every LSN sum far from overflowing.
/// One ceiling for all three keeps recovery from writing what it would
/// itself refuse to read (a gap record past the ceiling, after a cut in a
/// segment named at it), and the writer from naming a segment that the
/// next start would not see.
pub(crate) const LSN_CEILING: Lsn = 1 << 62;

pub(crate) fn segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&first_lsn.to_le_bytes());
    header
}

/// Why a segment header is not acceptable, or `None` when it is.
pub(crate) fn check_segment_header(header: &[u8], first_lsn: Lsn) -> Option<String> {
    if header[..8] != SEGMENT_MAGIC {
        return Some(
            "bad segment magic (not a BlipMQ WAL segment, or another format version)".into(),
        );
    }
    let in_header = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if in_header != first_lsn {
        return Some(format!(
            "segment header says first LSN {in_header}, file name says {first_lsn}"
        ));
    }
    None
}

/// Bytes a record with a payload of `payload_len` bytes takes on disk.
#[inline]
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    (RECORD_HEADER_LEN + payload_len) as u64
}

/// The CRC32 of a frame: over the length field and everything after the CRC
/// field (LSN, kind, payload). `frame` is the whole frame.
#[inline]
fn frame_crc(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..4]);
    hasher.update(&frame[8..]);
    hasher.finalize()
}

/// Appends one framed record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: Lsn, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length checked against the maximum");
    let start = buf.len();
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
    let crc = frame_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a gap record at `lsn` saying that the log goes on at `next`.
pub(crate) fn encode_gap(buf: &mut Vec<u8>, lsn: Lsn, next: Lsn) {
    debug_assert!(next > lsn);
    encode_record(buf, lsn, KIND_GAP, &next.to_le_bytes());
}

/// What a verified record means for the LSN sequence.
pub(crate) enum GapCheck {
    /// An ordinary record: the next one has the next LSN.
    NotAGap,
    /// A gap record: the next record has this LSN.
    To(Lsn),
    /// A gap record that does not make sense (it passed its CRC, so this is
    /// a bug or deliberate tampering): treated as corruption.
    Invalid(String),
}

impl GapCheck {
    pub(crate) fn of(record: &RecordRef<'_>) -> GapCheck {
        if record.kind != KIND_GAP {
            return if record.lsn < LSN_CEILING {
                GapCheck::NotAGap
            } else {
                GapCheck::Invalid(format!(
                    "record at LSN {}, past the last LSN a log may use ({})",
                    record.lsn,
                    LSN_CEILING - 1
                ))
            };
        }
        let next = <[u8; 8]>::try_from(record.payload).map(u64::from_le_bytes);
        match next {
            Ok(next) if next > record.lsn && next <= LSN_CEILING => GapCheck::To(next),
            _ => GapCheck::Invalid(format!("malformed gap record at LSN {}", record.lsn)),
        }
    }
}

/// Whether `tail` (bytes of a segment from the frame where the scan stopped
/// on) holds an intact record of an LSN after `expected`: then the stop was
/// damage followed by good records, not a write cut short by a crash (which
/// leaves nothing intact after it). Looks for a frame whose LSN field is in
/// the range such records could have, and checks its length and CRC.
pub(crate) fn intact_record_after(tail: &[u8], expected: Lsn) -> bool {
    let most = expected + (tail.len() / RECORD_HEADER_LEN) as Lsn + 1;
    (1..tail.len().saturating_sub(RECORD_HEADER_LEN - 1)).any(|at| {
        let frame = &tail[at..];
        let lsn = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
        if lsn <= expected || lsn > most {
            return false;
        }
        let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        let total = RECORD_HEADER_LEN + len;
        total <= frame.len()
            && u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"))
                == frame_crc(&frame[..total])
    })
}

/// One verified record, borrowed from the reader's buffer.
#[derive(Debug)]
pub(crate) struct RecordRef<'a> {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: &'a [u8],
    /// File offset just past the frame.
    pub end: u64,
}

#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A complete frame whose CRC matches.
    Record(RecordRef<'a>),
    /// Clean end: the last frame ended exactly at the end of the range.
    End,
    /// The range ends inside a frame (its header, or the payload its length
    /// announces): the signature of a write cut short by a crash.
    Torn { offset: u64 },
    /// A complete frame whose CRC does not match.
    Corrupt { offset: u64, reason: String },
}

/// Reads frames from a byte range of a segment file with one bounded buffer,
/// verifying each frame's CRC. Nothing is allocated per record.
pub(crate) struct FrameReader<R> {
    src: R,
    buf: Vec<u8>,
    /// Valid, unconsumed bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// File offset of `buf[pos]`.
    offset: u64,
    /// File offset where the range ends (the file length, or the length a
    /// replay snapshot saw). Frames reaching past it are torn.
    limit: u64,
}

impl<R: Read> FrameReader<R> {
    /// `src` must be positioned at file offset `start`; the reader never reads
    /// past `limit`.
    pub(crate) fn new(src: R, start: u64, limit: u64) -> Self {
        let span = limit.saturating_sub(start);
        let capacity = (span.min(READ_BUFFER_BYTES as u64) as usize).max(RECORD_HEADER_LEN);
        FrameReader {
            src,
            buf: vec![0; capacity],
            pos: 0,
            end: 0,
            offset: start,
            limit,
        }
    }

    /// File offset of the next frame.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Makes `need` bytes available at `buf[pos..]`. The caller has checked
    /// that they lie within the range.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.end - self.pos >= need {
            return Ok(());
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        // Bytes of the range not yet in the buffer.
        let unread = self.limit - self.offset - self.end as u64;
        let room = ((self.buf.len() - self.end) as u64).min(unread) as usize;
        let target = self.end + room;
        while self.end < need {
            match self.src.read(&mut self.buf[self.end..target]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "segment file is shorter than expected",
                    ))
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn next_frame(&mut self) -> io::Result<Frame<'_>> {
        let remaining = self.limit - self.offset;
        if remaining == 0 {
            return Ok(Frame::End);
        }
        if remaining < RECORD_HEADER_LEN as u64 {
            return Ok(Frame::Torn {
                offset: self.offset,
            });
        }
        self.fill(RECORD_HEADER_LEN)?;
        let header = &self.buf[self.pos..self.pos + RECORD_HEADER_LEN];
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let total = RECORD_HEADER_LEN + len;
        if total as u64 > remaining {
            return Ok(Frame::Torn {
                offset: self.offset,
            });
        }
        self.fill(total)?;
        let frame = &self.buf[self.pos..self.pos + total];
        let stored = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        let computed = frame_crc(frame);
        if stored != computed {
            return Ok(Frame::Corrupt {
                offset: self.offset,
                reason: format!(
                    "CRC mismatch (stored {stored:#010x}, computed {computed:#010x}) \
                     in a frame of {total} bytes"
                ),
            });
        }
        let lsn = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
        let kind = frame[16];
        let offset = self.offset;
        let start = self.pos;
        self.pos += total;
        self.offset += total as u64;
        Ok(Frame::Record(RecordRef {
            lsn,
            kind,
            payload: &self.buf[start + RECORD_HEADER_LEN..start + total],
            end: offset + total as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], start: u64) -> (Vec<(Lsn, u8, Vec<u8>)>, String) {
        let mut reader = FrameReader::new(bytes, start, start + bytes.len() as u64);
        // A tiny buffer, so that frames straddle refills.
        reader.buf = vec![0; RECORD_HEADER_LEN];
        let mut out = Vec::new();
        loop {
            match reader.next_frame().unwrap() {
                Frame::Record(r) => out.push((r.lsn, r.kind, r.payload.to_vec())),
                Frame::End => return (out, "end".into()),
                Frame::Torn { offset } => return (out, format!("torn@{offset}")),
                Frame::Corrupt { offset, .. } => return (out, format!("corrupt@{offset}")),
            }
        }
    }

    #[test]
    fn wal_format_file_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal.tmp"),
            None
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(LSN_CEILING)),
            Some(LSN_CEILING)
        );
        // Outside the LSN range: not segments.
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), None);
        assert_eq!(parse_segment_file_name(&segment_file_name(0)), None);
    }

    #[test]
    fn wal_format_round_trip_across_buffer_refills() {
        let mut buf = Vec::new();
        let payloads: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; i * 7]).collect();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut buf, 100 + i as u64, i as u8, p);
        }
        let (records, stop) = read_all(&buf, 16);
        assert_eq!(stop, "end");
        assert_eq!(records.len(), 50);
        for (i, (lsn, kind, payload)) in records.iter().enumerate() {
            assert_eq!(*lsn, 100 + i as u64);
            assert_eq!(*kind, i as u8);
            assert_eq!(payload, &payloads[i]);
        }
    }

    #[test]
    fn wal_format_detects_torn_and_corrupt_frames() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0, b"first");
        let second = buf.len();
        encode_record(&mut buf, 2, 0, b"second");
        // Every cut inside the second frame is torn, never a record.
        for cut in second + 1..buf.len() {
            let (records, stop) = read_all(&buf[..cut], 0);
            assert_eq!(records.len(), 1);
            assert_eq!(stop, format!("torn@{second}"));
        }
        // Every single-bit flip in the second frame is caught: corrupt, or
        // torn when the flip is in the length and makes the frame overrun.
        for byte in second..buf.len() {
            for bit in 0..8 {
                let mut copy = buf.clone();
                copy[byte] ^= 1 << bit;
                let (records, stop) = read_all(&copy, 0);
                assert_eq!(records.len(), 1, "flip at byte {byte} bit {bit}");
                assert!(
                    stop == format!("corrupt@{second}") || stop == format!("torn@{second}"),
                    "flip at byte {byte} bit {bit}: {stop}"
                );
            }
        }
    }

    #[test]
    fn wal_format_header_check() {
        let header = segment_header(7);
        assert_eq!(check_segment_header(&header, 7), None);
        assert!(check_segment_header(&header, 8).is_some());
        let mut bad = header;
        bad[0] ^= 1;
        assert!(check_segment_header(&bad, 7).is_some());
    }
}
