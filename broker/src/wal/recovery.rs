//! What `Wal::open` does before the writer starts: list the segments, verify
//! every record (streaming), repair damage without discarding good data, and
//! leave a log that can be appended to and whose LSNs never go back.
//!
//! The rules, and why:
//! - Only the last segment can have a torn tail: every earlier one was
//!   fsynced before its successor was created. So a torn tail of the last
//!   segment is cut (under `always` it held nothing confirmed), while any
//!   damage in an earlier (sealed) segment is corruption.
//! - Corruption may be followed by good, confirmed records, so the bytes
//!   cut off are first copied to `quarantine/`, and the segments after the
//!   damaged one are kept: one flipped bit costs the records it hides, never
//!   the rest of the log.
//! - The LSNs the cut records had may have been confirmed, delivered and
//!   acked by those numbers, and the queue manifest refers to LSNs: they are
//!   never handed out again. Where records are missing (cut, or a missing
//!   segment file) recovery appends a *gap record* saying where the log goes
//!   on, so the hole is explicit, checksummed, and reported once.
//! - A segment whose LSNs overlap the log before it cannot be part of it; it
//!   alone is moved to `quarantine/`.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{error, info};

use super::format::{
    check_segment_header, encode_gap, intact_record_after, parse_segment_file_name,
    segment_file_name, segment_header, Frame, FrameReader, GapCheck, LSN_CEILING, MIN_FRAME_LEN,
    SEGMENT_HEADER_LEN,
};
use super::storage::{OpenMode, Storage};
use super::{
    io_err, sync_dir_in, Damage, FsyncPolicy, Lsn, Recovery, SegmentMeta, WalConfig, WalError,
};

/// Subdirectory of the WAL directory that receives segments and tails cut
/// off by recovery.
pub const QUARANTINE_DIR: &str = "quarantine";

pub(crate) struct Recovered {
    /// Sorted by first LSN; the last one is the active segment.
    pub segments: Vec<SegmentMeta>,
    pub next_lsn: Lsn,
    pub report: Recovery,
}

/// How the scan of one segment ended.
enum Stop {
    Clean,
    /// The file is shorter than a segment header.
    ShortHeader,
    BadHeader(String),
    Torn,
    Corrupt(String),
}

struct Scan {
    file_len: u64,
    records: u64,
    /// The LSNs of its first and last records (gap records not counted).
    lsns: Option<(Lsn, Lsn)>,
    /// The LSN after the last good record (gaps followed).
    end_lsn: Lsn,
    /// End of the last good record (or of the header): where a cut goes.
    good_len: u64,
    stop: Stop,
}

fn scan_segment(storage: &dyn Storage, path: &Path, first_lsn: Lsn) -> Result<Scan, WalError> {
    let mut file = storage
        .open(path, OpenMode::Read)
        .map_err(io_err(format!("open {}", path.display())))?;
    let file_len = file
        .size()
        .map_err(io_err(format!("stat {}", path.display())))?;
    let mut scan = Scan {
        file_len,
        records: 0,
        lsns: None,
        end_lsn: first_lsn,
        good_len: 0,
        stop: Stop::Clean,
    };
    if file_len < SEGMENT_HEADER_LEN {
        scan.stop = Stop::ShortHeader;
        return Ok(scan);
    }
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact(&mut header)
        .map_err(io_err(format!("read {}", path.display())))?;
    if let Some(reason) = check_segment_header(&header, first_lsn) {
        scan.stop = Stop::BadHeader(reason);
        return Ok(scan);
    }
    scan.good_len = SEGMENT_HEADER_LEN;
    let mut reader = FrameReader::new(file, SEGMENT_HEADER_LEN, file_len);
    loop {
        let frame = reader
            .next_frame()
            .map_err(|e| io_err(format!("read {}", path.display()))(e))?;
        match frame {
            Frame::Record(record) => {
                if record.lsn != scan.end_lsn {
                    scan.stop = Stop::Corrupt(format!(
                        "record has LSN {}, expected {}",
                        record.lsn, scan.end_lsn
                    ));
                    return Ok(scan);
                }
                match GapCheck::of(&record) {
                    GapCheck::NotAGap => {
                        scan.records += 1;
                        let first = scan.lsns.map_or(record.lsn, |(first, _)| first);
                        scan.lsns = Some((first, record.lsn));
                        scan.end_lsn += 1;
                    }
                    GapCheck::To(next) => scan.end_lsn = next,
                    GapCheck::Invalid(reason) => {
                        scan.stop = Stop::Corrupt(reason);
                        return Ok(scan);
                    }
                }
                scan.good_len = record.end;
            }
            Frame::End => return Ok(scan),
            Frame::Torn { .. } => {
                scan.stop = Stop::Torn;
                return Ok(scan);
            }
            Frame::Corrupt { reason, .. } => {
                scan.stop = Stop::Corrupt(reason);
                return Ok(scan);
            }
        }
    }
}

/// Segment files in `dir`, sorted by first LSN. Other files are ignored.
fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let entries = storage
        .list(dir)
        .map_err(io_err(format!("list {}", dir.display())))?;
    let mut segments: Vec<(Lsn, PathBuf)> = entries
        .into_iter()
        .filter(|entry| entry.is_file)
        .filter_map(|entry| Some((parse_segment_file_name(&entry.name)?, dir.join(entry.name))))
        .collect();
    segments.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(segments)
}

/// Recovery's file work, with the log directory and its storage.
struct Repairs<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
}

impl Repairs<'_> {
    /// A free name for `name` in the quarantine directory.
    fn quarantine_path(&self, quarantine: &Path, name: &str) -> PathBuf {
        let mut candidate = quarantine.join(name);
        let mut n = 1;
        while self.storage.exists(&candidate) {
            candidate = quarantine.join(format!("{name}.{n}"));
            n += 1;
        }
        candidate
    }

    /// The quarantine directory, its own entry durable before anything is
    /// put in it (or a power loss could take the saved copies with it).
    fn ensure_quarantine(&self) -> Result<PathBuf, WalError> {
        let quarantine = self.dir.join(QUARANTINE_DIR);
        if !self.storage.exists(&quarantine) {
            self.storage
                .create_dir_all(&quarantine)
                .map_err(io_err(format!("create {}", quarantine.display())))?;
            sync_dir_in(self.storage, self.dir)?;
        }
        Ok(quarantine)
    }

    /// Copies `path[from..]` into the quarantine directory, durably.
    fn save_tail(&self, path: &Path, from: u64) -> Result<PathBuf, WalError> {
        let quarantine = self.ensure_quarantine()?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment");
        let target = self.quarantine_path(&quarantine, &format!("{name}.cut-at-{from}"));
        let mut source = self
            .storage
            .open(path, OpenMode::Read)
            .map_err(io_err(format!("open {}", path.display())))?;
        source
            .seek(SeekFrom::Start(from))
            .map_err(io_err(format!("seek {}", path.display())))?;
        let mut out = self
            .storage
            .open(&target, OpenMode::CreateNew)
            .map_err(io_err(format!("create {}", target.display())))?;
        io::copy(&mut source, &mut out).map_err(io_err(format!("copy to {}", target.display())))?;
        out.sync_all()
            .map_err(io_err(format!("fsync {}", target.display())))?;
        sync_dir_in(self.storage, &quarantine)?;
        Ok(target)
    }

    /// Moves a whole segment into the quarantine directory, durably.
    fn quarantine_segment(&self, path: &Path) -> Result<PathBuf, WalError> {
        let quarantine = self.ensure_quarantine()?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment")
            .to_string();
        let target = self.quarantine_path(&quarantine, &name);
        self.storage.rename(path, &target).map_err(io_err(format!(
            "move {} to {}",
            path.display(),
            target.display()
        )))?;
        sync_dir_in(self.storage, &quarantine)?;
        sync_dir_in(self.storage, self.dir)?;
        Ok(target)
    }

    /// Truncates a segment to `len` (rewriting its header when `len` is
    /// shorter than one) and makes that durable before anything is
    /// appended to it.
    fn cut_segment(&self, path: &Path, first_lsn: Lsn, len: u64) -> Result<u64, WalError> {
        let mut file = self
            .storage
            .open(path, OpenMode::ReadWrite)
            .map_err(io_err(format!("open {}", path.display())))?;
        let new_len = if len < SEGMENT_HEADER_LEN {
            file.set_len(0)
                .map_err(io_err(format!("truncate {}", path.display())))?;
            file.write_all(&segment_header(first_lsn))
                .map_err(io_err(format!("write header of {}", path.display())))?;
            SEGMENT_HEADER_LEN
        } else {
            file.set_len(len)
                .map_err(io_err(format!("truncate {}", path.display())))?;
            len
        };
        file.sync_all()
            .map_err(io_err(format!("fsync {}", path.display())))?;
        Ok(new_len)
    }

    /// Appends a gap record at `lsn` (the end of `segment`) saying the log
    /// goes on at `next`; durable before the writer starts.
    fn append_gap(&self, segment: &mut SegmentMeta, next: Lsn) -> Result<(), WalError> {
        let mut frame = Vec::new();
        encode_gap(&mut frame, segment.end_lsn, next);
        let mut file = self
            .storage
            .open(&segment.path, OpenMode::Append)
            .map_err(io_err(format!("open {}", segment.path.display())))?;
        file.write_all(&frame)
            .map_err(io_err(format!("write {}", segment.path.display())))?;
        file.sync_data()
            .map_err(io_err(format!("fsync {}", segment.path.display())))?;
        segment.len += frame.len() as u64;
        segment.end_lsn = next;
        Ok(())
    }

    /// Whether an intact record follows where the scan of `path` stopped.
    fn intact_record_after(&self, path: &Path, scan: &Scan) -> Result<bool, WalError> {
        let mut file = self
            .storage
            .open(path, OpenMode::Read)
            .map_err(io_err(format!("open {}", path.display())))?;
        file.seek(SeekFrom::Start(scan.good_len))
            .map_err(io_err(format!("seek {}", path.display())))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)
            .map_err(io_err(format!("read {}", path.display())))?;
        Ok(intact_record_after(&tail, scan.end_lsn))
    }

    /// fsyncs a file's data.
    fn sync_file(&self, path: &Path) -> Result<(), WalError> {
        self.storage
            .open(path, OpenMode::Read)
            .and_then(|file| file.sync_data())
            .map_err(io_err(format!("fsync {}", path.display())))
    }

    /// Creates an empty segment starting at `first_lsn`, durably.
    fn create_segment(&self, first_lsn: Lsn) -> Result<SegmentMeta, WalError> {
        let path = self.dir.join(segment_file_name(first_lsn));
        let mut file = self
            .storage
            .open(&path, OpenMode::CreateNew)
            .map_err(io_err(format!("create {}", path.display())))?;
        file.write_all(&segment_header(first_lsn))
            .map_err(io_err(format!("write header of {}", path.display())))?;
        file.sync_all()
            .map_err(io_err(format!("fsync {}", path.display())))?;
        sync_dir_in(self.storage, self.dir)?;
        Ok(SegmentMeta {
            first_lsn,
            path,
            len: SEGMENT_HEADER_LEN,
            end_lsn: first_lsn,
            records: 0,
        })
    }
}

pub(crate) fn recover(config: &WalConfig, storage: &dyn Storage) -> Result<Recovered, WalError> {
    let started = Instant::now();
    let dir = config.dir.as_path();
    let repairs = Repairs { storage, dir };
    let listed = list_segments(storage, dir)?;

    let mut report = Recovery::default();
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(listed.len().max(1));
    // Where the log must go on after a cut that ended the last segment.
    let mut resume_at: Option<Lsn> = None;

    for (index, (first_lsn, path)) in listed.iter().enumerate() {
        let first_lsn = *first_lsn;
        let is_last = index + 1 == listed.len();
        if let Some(previous) = segments.last_mut() {
            if first_lsn < previous.end_lsn {
                // Its LSNs overlap what is already in the log: it cannot
                // belong to it. Nothing is deleted: the file is set aside.
                let saved_to = repairs.quarantine_segment(path)?;
                let reason = format!(
                    "segment starts at LSN {first_lsn}, inside the log before it (which ends at {})",
                    previous.end_lsn
                );
                error!(segment = %path.display(), to = %saved_to.display(), "WAL recovery: quarantined a segment: {reason}");
                report.quarantined_segments.push(saved_to.clone());
                report.damage.push(Damage {
                    segment: path.clone(),
                    offset: 0,
                    reason,
                    torn: false,
                    truncated_bytes: 0,
                    saved_to: Some(saved_to),
                    skipped: None,
                });
                continue;
            }
            if first_lsn > previous.end_lsn {
                // Records are missing between the two: a segment file gone,
                // or a cut in the previous one. Keep both; mark the hole.
                let missing = previous.end_lsn..first_lsn;
                let reason = format!(
                    "LSNs {}..{} are missing before this segment",
                    missing.start, missing.end
                );
                error!(segment = %path.display(), "WAL recovery: {reason}; the log goes on after them");
                repairs.append_gap(previous, first_lsn)?;
                report.damage.push(Damage {
                    segment: path.clone(),
                    offset: 0,
                    reason,
                    torn: false,
                    truncated_bytes: 0,
                    saved_to: None,
                    skipped: Some(missing),
                });
            }
        }
        let scan = scan_segment(storage, path, first_lsn)?;
        let mut len = scan.file_len;
        let cut = match &scan.stop {
            Stop::Clean => None,
            Stop::ShortHeader if scan.file_len == 0 => {
                // Created, crashed before its header was written: nothing lost.
                len = repairs.cut_segment(path, first_lsn, 0)?;
                None
            }
            // Only the last segment can be torn: the others were fsynced
            // before the next one existed.
            Stop::ShortHeader if is_last => {
                Some((true, "segment header is incomplete".to_string()))
            }
            // A length field that is damaged looks torn too; good records
            // after it give it away.
            Stop::Torn if is_last && !repairs.intact_record_after(path, &scan)? => {
                Some((true, "incomplete record at the end of the log".into()))
            }
            Stop::ShortHeader => Some((false, "segment header is incomplete".into())),
            Stop::Torn if is_last => Some((
                false,
                "a record's length runs past the end of the log, and intact records follow it"
                    .into(),
            )),
            Stop::Torn => Some((
                false,
                "a record runs past the end of a sealed segment".into(),
            )),
            Stop::BadHeader(reason) | Stop::Corrupt(reason) => Some((false, reason.clone())),
        };
        let mut segment = SegmentMeta {
            first_lsn,
            path: path.clone(),
            len,
            end_lsn: scan.end_lsn,
            records: scan.records,
        };
        if let Some((torn, reason)) = cut {
            let truncated_bytes = scan.file_len - scan.good_len;
            // A torn write held nothing ever confirmed under `always`;
            // anything else may hide confirmed records: keep a copy.
            let saved_to = if torn {
                None
            } else {
                Some(repairs.save_tail(path, scan.good_len)?)
            };
            segment.len = repairs.cut_segment(path, first_lsn, scan.good_len)?;
            // In the last segment, each cut record took at least
            // MIN_FRAME_LEN bytes, so no LSN past this bound was handed out
            // from these bytes. Before a later segment, that segment's first
            // LSN says exactly where the log goes on (a hole, reported when
            // it is reached). No LSN at or past the ceiling was ever handed
            // out, so the bound stops there (and a segment that ends at the
            // ceiling needs no gap record: the log cannot go on anyway).
            let skipped = (!torn && is_last)
                .then(|| {
                    let bound = scan.end_lsn + (truncated_bytes / MIN_FRAME_LEN).max(1);
                    scan.end_lsn..bound.min(LSN_CEILING)
                })
                .filter(|skipped| !skipped.is_empty());
            if let Some(skipped) = &skipped {
                resume_at = Some(skipped.end);
            }
            if torn {
                info!(
                    segment = %path.display(),
                    offset = scan.good_len,
                    truncated_bytes,
                    "WAL recovery: cut a torn tail: {reason}"
                );
            } else {
                error!(
                    segment = %path.display(),
                    offset = scan.good_len,
                    truncated_bytes,
                    records_kept = scan.records,
                    saved_to = saved_to.as_ref().map(|p| p.display().to_string()),
                    "WAL recovery: CORRUPTION: cut a damaged segment: {reason}"
                );
            }
            report.truncated_bytes += truncated_bytes;
            report.torn_tail |= torn;
            report.damage.push(Damage {
                segment: path.clone(),
                offset: scan.good_len,
                reason,
                torn,
                truncated_bytes,
                saved_to,
                skipped,
            });
        }
        report.records += segment.records;
        if let Some((first, last)) = scan.lsns {
            report.first_lsn.get_or_insert(first);
            report.last_lsn = Some(last);
        }
        segments.push(segment);
    }

    if segments.is_empty() {
        segments.push(repairs.create_segment(1)?);
    }
    // What a killed process wrote may still be only in the page cache: its
    // data, and the names of the segments it created (when the fsync of
    // the directory failed, say). New appends are confirmed on top of it,
    // so all of it must be durable first.
    if config.fsync_policy != FsyncPolicy::Never {
        for segment in &segments {
            repairs.sync_file(&segment.path)?;
        }
        sync_dir_in(storage, dir)?;
    }
    if let Some(next) = resume_at {
        let last = segments.last_mut().expect("at least one segment");
        repairs.append_gap(last, next)?;
    }

    let next_lsn = segments.last().expect("at least one segment").end_lsn;
    report.segments = segments.len();
    report.bytes = segments.iter().map(|s| s.len).sum();
    report.next_lsn = next_lsn;
    report.duration = started.elapsed();
    info!(
        dir = %dir.display(),
        records = report.records,
        segments = report.segments,
        bytes = report.bytes,
        truncated_bytes = report.truncated_bytes,
        quarantined = report.quarantined_segments.len(),
        elapsed_ms = report.duration.as_secs_f64() * 1e3,
        "WAL recovered"
    );
    Ok(Recovered {
        segments,
        next_lsn,
        report,
    })
}
