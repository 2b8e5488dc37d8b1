//! What `Wal::open` does before the writer starts: list the segments, verify
//! every record (streaming), cut a torn or corrupt tail, quarantine what comes
//! after a gap, and leave a log that can be appended to.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{info, warn};

use super::format::{
    check_segment_header, parse_segment_file_name, segment_file_name, segment_header, Frame,
    FrameReader, SEGMENT_HEADER_LEN,
};
use super::{io_err, sync_dir, Damage, Lsn, Recovery, SegmentMeta, WalConfig, WalError};

/// Subdirectory of the WAL directory that receives segments and tails cut
/// off by recovery.
pub const QUARANTINE_DIR: &str = "quarantine";

pub(crate) struct Recovered {
    /// Sorted by first LSN, contiguous; the last one is the active segment.
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
    /// End of the last good record (or of the header): where a cut goes.
    good_len: u64,
    stop: Stop,
}

fn scan_segment(path: &Path, first_lsn: Lsn) -> Result<Scan, WalError> {
    let mut file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let file_len = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    let mut scan = Scan {
        file_len,
        records: 0,
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
    let mut expected = first_lsn;
    loop {
        let frame = reader
            .next_frame()
            .map_err(|e| io_err(format!("read {}", path.display()))(e))?;
        match frame {
            Frame::Record(record) => {
                if record.lsn != expected {
                    scan.stop = Stop::Corrupt(format!(
                        "record has LSN {}, expected {expected}",
                        record.lsn
                    ));
                    return Ok(scan);
                }
                expected += 1;
                scan.records += 1;
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
fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let Some(first_lsn) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        let is_file = entry
            .file_type()
            .map_err(io_err(format!("stat {}", entry.path().display())))?
            .is_file();
        if is_file {
            segments.push((first_lsn, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(segments)
}

/// A free name for `name` in the quarantine directory.
fn quarantine_path(quarantine: &Path, name: &str) -> PathBuf {
    let mut candidate = quarantine.join(name);
    let mut n = 1;
    while candidate.exists() {
        candidate = quarantine.join(format!("{name}.{n}"));
        n += 1;
    }
    candidate
}

fn ensure_quarantine(dir: &Path) -> Result<PathBuf, WalError> {
    let quarantine = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&quarantine).map_err(io_err(format!("create {}", quarantine.display())))?;
    Ok(quarantine)
}

/// Copies `path[from..]` into the quarantine directory.
fn save_tail(dir: &Path, path: &Path, from: u64) -> Result<PathBuf, WalError> {
    let quarantine = ensure_quarantine(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let target = quarantine_path(&quarantine, &format!("{name}.cut-at-{from}"));
    let mut source = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    source
        .seek(SeekFrom::Start(from))
        .map_err(io_err(format!("seek {}", path.display())))?;
    let mut out = File::create(&target).map_err(io_err(format!("create {}", target.display())))?;
    io::copy(&mut source, &mut out).map_err(io_err(format!("copy to {}", target.display())))?;
    out.sync_all()
        .map_err(io_err(format!("fsync {}", target.display())))?;
    sync_dir(&quarantine)?;
    Ok(target)
}

/// Truncates a segment to `len` (rewriting its header when `len` is shorter
/// than one) and makes that durable before anything is appended to it.
fn cut_segment(path: &Path, first_lsn: Lsn, len: u64) -> Result<u64, WalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
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

pub(crate) fn recover(config: &WalConfig) -> Result<Recovered, WalError> {
    let started = Instant::now();
    let dir = config.dir.as_path();
    fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let listed = list_segments(dir)?;

    let mut report = Recovery::default();
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(listed.len().max(1));
    let mut expected: Option<Lsn> = None;
    let mut quarantine_from: Option<usize> = None;

    for (index, (first_lsn, path)) in listed.iter().enumerate() {
        let first_lsn = *first_lsn;
        if let Some(expected) = expected {
            if first_lsn != expected {
                // A gap (or overlap) in the LSN sequence: what follows cannot
                // be appended to what precedes. Keep the prefix.
                report.damage.push(Damage {
                    segment: path.clone(),
                    offset: 0,
                    reason: format!("segment starts at LSN {first_lsn}, expected {expected}"),
                    torn: false,
                    truncated_bytes: 0,
                    saved_to: None,
                });
                quarantine_from = Some(index);
                break;
            }
        }
        let scan = scan_segment(path, first_lsn)?;
        let mut len = scan.file_len;
        let cut = match &scan.stop {
            Stop::Clean => None,
            Stop::ShortHeader if scan.file_len == 0 => {
                // Created, crashed before its header was written: nothing lost.
                len = cut_segment(path, first_lsn, 0)?;
                None
            }
            Stop::ShortHeader => Some((true, "segment header is incomplete".to_string())),
            Stop::Torn => Some((true, "incomplete record at the end of the segment".into())),
            Stop::BadHeader(reason) | Stop::Corrupt(reason) => Some((false, reason.clone())),
        };
        if let Some((torn, reason)) = cut {
            let truncated_bytes = scan.file_len - scan.good_len;
            // A corrupt record may be followed by good, once-confirmed data:
            // keep a copy of everything cut. A torn write holds nothing that
            // was ever confirmed under `always`.
            let saved_to = if torn {
                None
            } else {
                Some(save_tail(dir, path, scan.good_len)?)
            };
            len = cut_segment(path, first_lsn, scan.good_len)?;
            warn!(
                segment = %path.display(),
                offset = scan.good_len,
                truncated_bytes,
                records_kept = scan.records,
                saved_to = saved_to.as_ref().map(|p| p.display().to_string()),
                "WAL recovery: cut a {} tail: {reason}",
                if torn { "torn" } else { "corrupt" },
            );
            report.truncated_bytes += truncated_bytes;
            report.torn_tail = true;
            report.damage.push(Damage {
                segment: path.clone(),
                offset: scan.good_len,
                reason,
                torn,
                truncated_bytes,
                saved_to,
            });
        }
        segments.push(SegmentMeta {
            first_lsn,
            path: path.clone(),
            len,
            records: scan.records,
        });
        report.records += scan.records;
        expected = Some(first_lsn + scan.records);
    }

    if let Some(from) = quarantine_from {
        let quarantine = ensure_quarantine(dir)?;
        for (_, path) in &listed[from..] {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("segment")
                .to_string();
            let target = quarantine_path(&quarantine, &name);
            fs::rename(path, &target).map_err(io_err(format!(
                "move {} to {}",
                path.display(),
                target.display()
            )))?;
            warn!(
                segment = %path.display(),
                to = %target.display(),
                "WAL recovery: quarantined a segment that follows a gap or corruption"
            );
            report.quarantined_segments.push(target);
        }
        sync_dir(&quarantine)?;
        sync_dir(dir)?;
    }

    if segments.is_empty() {
        let first_lsn = 1;
        let path = dir.join(segment_file_name(first_lsn));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(format!("create {}", path.display())))?;
        file.write_all(&segment_header(first_lsn))
            .map_err(io_err(format!("write header of {}", path.display())))?;
        file.sync_all()
            .map_err(io_err(format!("fsync {}", path.display())))?;
        sync_dir(dir)?;
        segments.push(SegmentMeta {
            first_lsn,
            path,
            len: SEGMENT_HEADER_LEN,
            records: 0,
        });
    }

    let first = &segments[0];
    let last = segments.last().expect("at least one segment");
    let next_lsn = last.first_lsn + last.records;
    report.segments = segments.len();
    report.bytes = segments.iter().map(|s| s.len).sum();
    report.next_lsn = next_lsn;
    if report.records > 0 {
        report.first_lsn = Some(first.first_lsn);
        report.last_lsn = Some(next_lsn - 1);
    }
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
