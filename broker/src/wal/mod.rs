//! The write-ahead log: a storage engine for opaque records.
//!
//! This module knows nothing of topics, subscriptions or the network. It
//! stores records — a `kind` byte chosen by the caller and an opaque payload —
//! under log sequence numbers ([`Lsn`]) it assigns, makes them durable under
//! a configured fsync policy with group commit, recovers them on start, and
//! deletes them when the caller says they are no longer needed. QoS 1
//! (publisher confirms, acks, durable subscriptions) is meant to be built on
//! top of it.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), blipmq_broker::wal::WalError> {
//! use std::ops::ControlFlow;
//! use blipmq_broker::wal::{Wal, WalConfig};
//!
//! let (wal, recovery) = Wal::open(WalConfig::new("/var/lib/blipmq/wal"))?;
//! // Rebuild state (blocking, streaming, bounded memory).
//! wal.replay(0, |lsn, kind, payload| {
//!     let _ = (lsn, kind, payload);
//!     ControlFlow::Continue(())
//! })?;
//! // Durable under the policy once this resolves.
//! let lsn = wal.append(1, &b"hello"[..]).await?;
//! // Later: nothing below `lsn` is needed any more.
//! wal.release_before(lsn)?;
//! wal.close()?;
//! # let _ = recovery;
//! # Ok(()) }
//! ```
//!
//! # On-disk format
//!
//! The WAL directory holds segment files named `{first_lsn:020}.wal` (the LSN
//! of their first record, zero-padded so that names sort in log order), at
//! most one of them active (the last). All integers are little-endian.
//!
//! ```text
//! segment := header record*
//! header  := magic "BLIPWAL1" (8 bytes, the last byte is the format version)
//!            first_lsn u64                                  (16 bytes)
//! record  := len u32        payload length
//!            crc u32        CRC32 (IEEE, crc32fast) of len, lsn, kind, payload:
//!                           every byte of the frame except the crc field
//!            lsn u64        assigned by the writer, +1 per record, no gaps
//!            kind u8        the caller's
//!            payload        len bytes                       (17 + len bytes)
//! ```
//!
//! LSNs start at 1 and increase by exactly one per record across segments:
//! a segment's first record has the LSN of its name, and the next segment
//! starts where it ends. Recovery checks both, so a missing or misplaced
//! segment is detected like a bad CRC. A segment is rotated before it would
//! grow past `segment_bytes`, which also bounds a record (payload up to
//! `segment_bytes - 33`, see [`WalConfig::max_payload_bytes`]).
//!
//! # Appends and group commit
//!
//! One writer thread (a `std::thread`, because `write` and `fsync` block)
//! owns the active segment. [`Wal::append`] puts the record on a channel
//! whose total size is bounded ([`QUEUE_BYTES`]; a full queue makes appends
//! wait, which is the backpressure) and returns a future. The writer takes
//! everything queued, encodes it into one buffer, issues one `write` and —
//! under `always` — one `fsync`, and only then completes every append of the
//! batch. Appends that arrive while it is in `fsync` form the next batch, so
//! the number of fsyncs tracks the disk's fsync rate, not the append rate
//! ([`WalStats::fsyncs`] against [`WalStats::records_appended`]).
//!
//! LSN order is queue order. [`Wal::append_batch`] keeps a group of records
//! contiguous. A task that must pipeline appends in a fixed order without
//! waiting for each to be durable uses [`Wal::submit`], which returns once
//! the record has its place in the queue, and awaits the [`Pending`] later.
//!
//! # Fsync policies and their loss windows
//!
//! | policy | an append is confirmed | process crash (kill -9) | OS crash / power loss |
//! |---|---|---|---|
//! | `always` (default) | after the fsync covering it | loses nothing confirmed | loses nothing confirmed |
//! | `interval` | after its `write` | loses nothing confirmed | loses at most the appends confirmed in the last `fsync_interval_ms` (plus the duration of up to two fsyncs: they run on a thread of their own, one at a time) |
//! | `never` | after its `write` | loses nothing confirmed | can lose anything not yet written back by the kernel |
//!
//! Under `always` and `interval`, a segment is fsynced before the next one is
//! started and the directory is fsynced when a segment is created, so only
//! the active segment can have a torn tail after a crash. Every policy
//! fsyncs on [`Wal::close`].
//!
//! # Recovery, corruption and quarantine
//!
//! [`Wal::open`] scans every segment in LSN order with one bounded read
//! buffer ([`READ_BUFFER_BYTES`], growing only to hold one record larger than
//! it), verifying each record's CRC and LSN. It never refuses to start
//! because of damage, and never throws good data away: it repairs, logs,
//! counts ([`WalStats::torn_tail_truncations`], [`WalStats::corruptions`])
//! and reports it in [`Recovery`]:
//!
//! - **Torn tail** (the *last* segment ends inside a record or its header):
//!   the segment is truncated at the end of the last good record and the
//!   truncation is fsynced before anything is appended. Under `always` a
//!   torn record was never confirmed. Only the last segment can be torn:
//!   each earlier one was fsynced before the next was created.
//! - **Corruption** (a CRC mismatch, a wrong LSN, a bad segment header, or
//!   a record that runs past the end of a *sealed* segment): the segment is
//!   cut the same way, but the bytes cut off are first copied to
//!   `quarantine/{segment}.cut-at-{offset}`, because good, confirmed records
//!   may follow a flipped bit. The segments after it are kept.
//! - **Holes.** Where records are lost (a cut, a missing segment file) the
//!   LSNs they had are never given out again: confirmed messages, their
//!   delivery ids and the queue manifest refer to them. Recovery appends a
//!   *gap record* (a kind the WAL keeps for itself, checksummed like any
//!   record) saying where the log goes on: at the next segment's first LSN,
//!   or, after a cut in the last segment, past every LSN the cut bytes could
//!   have held. The hole is reported once; later starts read the gap record.
//! - **The ceiling.** LSNs stay below 2^62 (`LSN_CEILING`; fourteen
//!   thousand years at ten million records a second): a record at or past
//!   it is corruption, a gap record never points past it, a file named past
//!   it is not a segment, and an append that would cross it fails with
//!   [`WalError::Exhausted`]. Only a damaged or foreign file name gets a log
//!   there; the one bound keeps recovery from writing what it cannot read.
//! - A segment whose LSNs overlap the log before it is moved, whole, into
//!   `quarantine/`. An operator can inspect quarantined files; the WAL never
//!   reads them again.
//! - An empty (zero-length) segment file, left by a crash right after it was
//!   created, gets its header written; nothing was lost.
//!
//! Under `interval` and `never`, records confirmed and then lost in an OS
//! crash from the torn tail of the last segment have their LSNs reused by
//! later appends; under `always` a reused LSN was never returned to anyone.
//!
//! One process at a time: [`Wal::open`] takes an exclusive `flock` on
//! [`LOCK_FILE`] in the directory (released when the process exits, however
//! it exits) and fails with [`WalError::Locked`] while another holds it.
//!
//! # Replay
//!
//! [`Wal::replay`] streams the records from a given LSN to the callback,
//! re-verifying CRCs and LSN continuity (a record damaged after `open` is an
//! error, never delivered), with the same bounded buffer. It sees what was
//! written when it started; it is blocking I/O (use `spawn_blocking` from
//! async code).
//!
//! # Retention and the size cap
//!
//! [`Wal::release_before`]`(lsn)` declares every record below `lsn`
//! unneeded; each segment whose records all lie below it is deleted, oldest
//! first, never the active one. [`Wal::release_later`] asks the same of the
//! log's release thread and returns at once, for callers on an async
//! runtime (an unlink and a directory fsync must not stall its workers). With `max_bytes` set, an append that would
//! take the total size of the segment files past it fails at once with
//! [`WalError::Full`]: the broker refuses new durable writes (a QoS 1 publish
//! gets an error) until retention frees space. Nothing already written is
//! ever dropped to make room, and no append is dropped silently.
//!
//! # Failure
//!
//! An I/O error in the writer (a failed `write`, `fsync` or segment
//! creation, a full disk) fails the appends of that batch, none of which
//! was confirmed, and rolls the log back to the last confirmed record (see
//! `writer.rs`); the writer goes on. While the rollback itself fails,
//! appends fail at once and it is retried with a growing pause.
//! [`Wal::health`] says which state the log is in, for readiness checks.
//!
//! # Storage
//!
//! All file work goes through a [`Storage`] ([`OsStorage`] by default); the
//! tests run the log on [`sim::SimStorage`], which injects errors, short
//! writes, crashes and power loss.

mod config;
mod format;
mod recovery;
mod releaser;
pub mod sim;
pub mod storage;
mod syncer;
mod writer;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read};
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

pub use config::{FsyncPolicy, WalConfig, MIN_SEGMENT_BYTES};
pub use format::READ_BUFFER_BYTES;
pub use recovery::QUARANTINE_DIR;
pub use storage::{OsStorage, Storage};

use format::{
    check_segment_header, frame_len, Frame, FrameReader, GapCheck, KIND_GAP, SEGMENT_HEADER_LEN,
};
use storage::{DirLock, OpenMode};

/// The file in the WAL directory that one process at a time holds locked.
pub const LOCK_FILE: &str = "LOCK";

/// Log sequence number: assigned by the writer, starting at 1, +1 per record.
pub type Lsn = u64;

/// Bytes of framed records that may wait for the writer. An append that
/// would exceed it waits for room (a record larger than this waits until the
/// queue is empty).
pub const QUEUE_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid WAL config: {0}")]
    Config(String),
    /// The append would take the log past `max_bytes`. Nothing was written.
    #[error(
        "WAL is full: {used} of {max} bytes used, {needed} more needed; \
         release records to free space"
    )]
    Full { used: u64, max: u64, needed: u64 },
    #[error("record payload of {len} bytes exceeds the maximum of {max} (segment_bytes - 33)")]
    TooLarge { len: usize, max: usize },
    #[error("WAL is closed")]
    Closed,
    /// The append would take an LSN past the ceiling of the LSN space
    /// (2^62). No real log gets there; a damaged segment name can.
    #[error(
        "WAL has no LSNs left: the next is {next}, the last a log may use is 2^62 - 1 \
         (a segment file name near the ceiling; start from a fresh data directory)"
    )]
    Exhausted { next: Lsn },
    /// Another process has the directory open.
    #[error(
        "the write-ahead log directory {} is in use by another process ({holder}); \
         one broker per data directory"
    , dir.display())]
    Locked { dir: PathBuf, holder: String },
    /// The writer thread is gone (it panicked, or its final fsync at close
    /// failed), or a failure carried over from another error's text. I/O
    /// errors of a batch are `Io`: the writer goes on after them.
    #[error("WAL writer failed: {0}")]
    Failed(String),
    /// `replay` met a record that does not verify (damaged after `open`).
    #[error("corrupt WAL segment {}: offset {offset}: {reason}", segment.display())]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl WalError {
    /// The disk (or the configured cap) has no room: the condition clears
    /// by itself once space is freed, unlike a failing disk.
    pub fn is_storage_full(&self) -> bool {
        match self {
            WalError::Full { .. } => true,
            WalError::Io { source, .. } => source.kind() == io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> WalError {
    let context = context.into();
    move |source| WalError::Io { context, source }
}

/// fsyncs a directory through `storage`, making renames, creations and
/// deletions in it durable.
pub(crate) fn sync_dir_in(storage: &dyn Storage, dir: &Path) -> Result<(), WalError> {
    storage
        .sync_dir(dir)
        .map_err(io_err(format!("fsync directory {}", dir.display())))
}

/// A repair made by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// Where the segment was cut (the end of its last good record), or 0 for
    /// a segment quarantined whole because it does not continue the log.
    pub offset: u64,
    pub reason: String,
    /// A torn write (the file ended inside a record) rather than corruption.
    pub torn: bool,
    pub truncated_bytes: u64,
    /// Where the bytes cut off were saved (corruption only).
    pub saved_to: Option<PathBuf>,
    /// LSNs whose records are lost: the log skips them for good (a gap
    /// record says so), so no LSN is ever given to a second record.
    pub skipped: Option<Range<Lsn>>,
}

/// What [`Wal::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records in the log after recovery.
    pub records: u64,
    /// Segment files in the log after recovery (the active one included).
    pub segments: usize,
    /// Total size of those segment files.
    pub bytes: u64,
    /// The LSNs of the first and last records kept (gap records not
    /// counted).
    pub first_lsn: Option<Lsn>,
    pub last_lsn: Option<Lsn>,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// Bytes cut from segment tails (torn or corrupt).
    pub truncated_bytes: u64,
    /// Some segment was cut (torn or corrupt); see `damage`.
    pub torn_tail: bool,
    pub damage: Vec<Damage>,
    /// Segments moved to `quarantine/` (their new paths).
    pub quarantined_segments: Vec<PathBuf>,
    pub duration: Duration,
}

/// A snapshot of the WAL's counters and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub records_appended: u64,
    /// Framed bytes written (headers included).
    pub bytes_appended: u64,
    pub fsyncs: u64,
    /// How long the fsyncs took.
    pub fsync_duration: crate::metrics::HistogramSnapshot,
    /// `write` calls; each carries one group-commit batch (or the part of one
    /// that fits before a rotation).
    pub write_batches: u64,
    /// Segments cut by recovery (torn or corrupt tails).
    pub torn_tail_truncations: u64,
    pub segments_deleted: u64,
    pub segments_quarantined: u64,
    /// Damage recovery found that was not a torn tail: a cut in a sealed
    /// segment, bad CRCs, missing or overlapping segments.
    pub corruptions: u64,
    /// Batches that failed to write or fsync (their appends got the error).
    pub write_failures: u64,
    /// Times the writer put the log back in order after a failure.
    pub repairs: u64,
    /// Background fsyncs (policy `interval`) that failed.
    pub fsync_failures: u64,
    /// Segment deletions that failed (the segment stays; retried later).
    pub delete_failures: u64,
    /// Appends refused with [`WalError::Full`].
    pub full_rejections: u64,
    /// Current total size of the segment files.
    pub current_bytes: u64,
    /// Current number of segment files.
    pub segments: u64,
    /// The LSN the next append gets (everything below it has been written).
    pub next_lsn: Lsn,
}

#[derive(Default)]
pub(crate) struct Counters {
    records_appended: AtomicU64,
    bytes_appended: AtomicU64,
    fsyncs: AtomicU64,
    /// How long each counted fsync took.
    fsync_duration: crate::metrics::Histogram,
    write_batches: AtomicU64,
    torn_tail_truncations: AtomicU64,
    segments_deleted: AtomicU64,
    segments_quarantined: AtomicU64,
    corruptions: AtomicU64,
    write_failures: AtomicU64,
    repairs: AtomicU64,
    fsync_failures: AtomicU64,
    delete_failures: AtomicU64,
    full_rejections: AtomicU64,
    current_bytes: AtomicU64,
    segments: AtomicU64,
    next_lsn: AtomicU64,
}

#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub first_lsn: Lsn,
    pub path: PathBuf,
    /// Bytes written (and visible to replay).
    pub len: u64,
    /// The LSN after its last record: `first_lsn` + records, plus any
    /// LSNs a gap record skips.
    pub end_lsn: Lsn,
    /// Records in it (gap records not counted).
    pub records: u64,
}

pub(crate) struct Segments {
    pub sealed: VecDeque<SegmentMeta>,
    /// As of the writer's last published batch.
    pub active: SegmentMeta,
}

pub(crate) enum Records {
    One(u8, Bytes),
    Many(Vec<(u8, Bytes)>),
}

impl Records {
    fn len(&self) -> usize {
        match self {
            Records::One(..) => 1,
            Records::Many(records) => records.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        let (one, many) = match self {
            Records::One(kind, payload) => (Some((*kind, payload.as_ref())), &[][..]),
            Records::Many(records) => (None, records.as_slice()),
        };
        one.into_iter()
            .chain(many.iter().map(|(kind, payload)| (*kind, payload.as_ref())))
    }
}

pub(crate) struct Entry {
    records: Records,
    frame_bytes: u64,
    done: oneshot::Sender<Result<Lsn, WalError>>,
    /// Room in the queue, given back when the writer is done with the entry.
    _permit: OwnedSemaphorePermit,
}

impl Entry {
    fn complete(self, result: Result<Lsn, WalError>) {
        // The caller may have stopped waiting; the record stays written.
        let _ = self.done.send(result);
    }
}

pub(crate) enum Msg {
    Append(Entry),
    Shutdown,
}

pub(crate) struct Inner {
    config: WalConfig,
    storage: Arc<dyn Storage>,
    max_payload: usize,
    tx: mpsc::Sender<Msg>,
    queue: Arc<Semaphore>,
    counters: Counters,
    segments: Mutex<Segments>,
    /// Held through a whole `release_before`: deletions happen one caller
    /// at a time, strictly oldest first.
    releasing: Mutex<()>,
    /// Where `release_later` hands deletions to the release thread.
    releaser: releaser::Releaser,
    closed: AtomicBool,
    /// Why the writer thread ended, if it did not end by `close`.
    failure: Mutex<Option<String>>,
    /// The writer's last failure while it is not yet repaired.
    problem: Mutex<Option<Problem>>,
    /// The last append was refused for `max_bytes`, and nothing was written
    /// or released since.
    refusing_full: AtomicBool,
    /// The first LSN of the segment a failed batch would be rolled back to
    /// (the active one as of the last completed batch): it and the segments
    /// after it are never deleted, even if a batch in progress sealed them.
    rollback_floor: AtomicU64,
}

impl Inner {
    /// [`Wal::release_before`], on whichever thread calls it.
    fn release_before(&self, lsn: Lsn) -> Result<usize, WalError> {
        let _one_at_a_time = self.releasing.lock();
        // Nothing not yet confirmed can be released: a batch being written
        // (or rolled back after a failure) keeps its segments.
        let lsn = lsn.min(self.counters.next_lsn.load(Ordering::Acquire));
        let floor = self.rollback_floor.load(Ordering::Acquire);
        let durable = self.config.fsync_policy != FsyncPolicy::Never;
        let counters = &self.counters;
        let storage = self.storage.as_ref();
        let mut deleted = 0;
        loop {
            let victim = {
                let segments = self.segments.lock();
                match segments.sealed.front() {
                    Some(front) if front.end_lsn <= lsn && front.first_lsn < floor => front.clone(),
                    _ => break,
                }
            };
            match storage.remove_file(&victim.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    counters.delete_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(segment = %victim.path.display(), error = %e, "WAL: could not delete a released segment; it stays, and is tried again on the next release");
                    return Err(io_err(format!("delete {}", victim.path.display()))(e));
                }
            }
            {
                let mut segments = self.segments.lock();
                let front = segments.sealed.pop_front();
                debug_assert_eq!(front.map(|f| f.first_lsn), Some(victim.first_lsn));
            }
            counters
                .current_bytes
                .fetch_sub(victim.len, Ordering::Relaxed);
            counters.segments.fetch_sub(1, Ordering::Relaxed);
            counters.segments_deleted.fetch_add(1, Ordering::Relaxed);
            self.refusing_full.store(false, Ordering::Release);
            deleted += 1;
            // Each deletion durable before the next, so that a crash leaves
            // a suffix of the log, never a hole.
            if durable {
                sync_dir_in(storage, &self.config.dir)?;
            }
        }
        Ok(deleted)
    }

    fn refused_full(&self) {
        self.counters
            .full_rejections
            .fetch_add(1, Ordering::Relaxed);
        self.refusing_full.store(true, Ordering::Release);
    }
}

/// A failure the writer has not recovered from yet.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub reason: String,
    pub no_space: bool,
}

/// Whether the log takes appends now; for readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalHealth {
    Ok,
    /// The disk is full: appends fail until space is freed (retried on
    /// every batch, so it clears by itself).
    NoSpace(String),
    /// The size cap `max_bytes` leaves no room for another append.
    Full,
    /// Writes or fsyncs fail; the writer retries with a growing pause.
    Failing(String),
    /// The writer thread is gone (closed, or it panicked).
    Stopped(String),
}

impl WalHealth {
    /// Every value of [`WalHealth::label`].
    pub const STATES: [&'static str; 5] = ["ok", "full", "no_space", "failing", "stopped"];

    /// The state's name in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            WalHealth::Ok => "ok",
            WalHealth::Full => "full",
            WalHealth::NoSpace(_) => "no_space",
            WalHealth::Failing(_) => "failing",
            WalHealth::Stopped(_) => "stopped",
        }
    }
}

impl Inner {
    fn stopped_error(&self) -> WalError {
        match self.failure.lock().as_ref() {
            Some(reason) => WalError::Failed(reason.clone()),
            None => WalError::Closed,
        }
    }

    async fn submit(self: Arc<Self>, records: Records) -> Result<Pending, WalError> {
        let mut frame_bytes = 0;
        for (kind, payload) in records.iter() {
            if kind == KIND_GAP {
                return Err(WalError::Config(format!(
                    "record kind {KIND_GAP} is reserved for the WAL"
                )));
            }
            if payload.len() > self.max_payload {
                return Err(WalError::TooLarge {
                    len: payload.len(),
                    max: self.max_payload,
                });
            }
            frame_bytes += frame_len(payload.len());
        }
        if frame_bytes > self.config.segment_bytes - SEGMENT_HEADER_LEN {
            // Only a batch can get here: it must fit in one segment.
            return Err(WalError::TooLarge {
                len: frame_bytes as usize,
                max: self.max_payload,
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        // Fail fast when the log is already too full; the writer makes the
        // exact decision, counting what is queued ahead.
        let max = self.config.max_bytes;
        let used = self.counters.current_bytes.load(Ordering::Relaxed);
        if max != 0 && used + frame_bytes > max {
            self.refused_full();
            return Err(WalError::Full {
                used,
                max,
                needed: frame_bytes,
            });
        }
        let permits = frame_bytes.min(QUEUE_BYTES) as u32;
        let permit = Arc::clone(&self.queue)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| self.stopped_error())?;
        let (done, rx) = oneshot::channel();
        let entry = Entry {
            records,
            frame_bytes,
            done,
            _permit: permit,
        };
        self.tx
            .send(Msg::Append(entry))
            .map_err(|_| self.stopped_error())?;
        Ok(Pending { rx, inner: self })
    }
}

/// An append that has its place in the queue (and so its position in the
/// log); resolves to the first LSN of its records once they are durable under
/// the policy.
#[must_use = "the append is confirmed only when this resolves"]
pub struct Pending {
    rx: oneshot::Receiver<Result<Lsn, WalError>>,
    inner: Arc<Inner>,
}

impl Future for Pending {
    type Output = Result<Lsn, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The writer went away without answering.
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.inner.stopped_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The write-ahead log. See the module docs.
///
/// `Wal` is `Send + Sync`; share it with an `Arc`. Dropping it closes it
/// (like [`Wal::close`], ignoring errors).
pub struct Wal {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<Result<(), WalError>>>,
    /// Deletes released segments (`releaser.rs`).
    releaser: Option<JoinHandle<()>>,
    /// The directory's lock, let go after the writer has stopped.
    _lock: Box<dyn DirLock>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.config.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Wal {
    /// Recovers the log in `config.dir` (creating the directory if needed)
    /// and starts the writer. Damage is repaired and reported, never a reason
    /// to fail; errors are an invalid config, a directory another process
    /// holds ([`WalError::Locked`]), or I/O errors.
    pub fn open(config: WalConfig) -> Result<(Wal, Recovery), WalError> {
        Wal::open_with(config, Arc::new(OsStorage))
    }

    /// [`Wal::open`] on another [`Storage`] (tests use
    /// [`sim::SimStorage`]).
    pub fn open_with(
        config: WalConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(Wal, Recovery), WalError> {
        config.validate()?;
        let dir = config.dir.clone();
        storage
            .create_dir_all(&dir)
            .map_err(io_err(format!("create {}", dir.display())))?;
        let note = format!("pid {}\n", std::process::id());
        let lock = storage
            .lock(&dir.join(LOCK_FILE), &note)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => WalError::Locked {
                    dir: dir.clone(),
                    holder: e.to_string(),
                },
                _ => io_err(format!("lock {}", dir.join(LOCK_FILE).display()))(e),
            })?;
        let recovered = recovery::recover(&config, storage.as_ref())?;
        let mut segments: VecDeque<SegmentMeta> = recovered.segments.into();
        let active = segments
            .pop_back()
            .expect("recovery leaves an active segment");
        let report = recovered.report;

        let counters = Counters::default();
        let count = |torn: bool| report.damage.iter().filter(|d| d.torn == torn).count() as u64;
        counters
            .torn_tail_truncations
            .store(count(true), Ordering::Relaxed);
        counters.corruptions.store(count(false), Ordering::Relaxed);
        counters
            .segments_quarantined
            .store(report.quarantined_segments.len() as u64, Ordering::Relaxed);
        counters
            .current_bytes
            .store(report.bytes, Ordering::Relaxed);
        counters
            .segments
            .store(report.segments as u64, Ordering::Relaxed);
        counters
            .next_lsn
            .store(recovered.next_lsn, Ordering::Relaxed);

        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            max_payload: config.max_payload_bytes(),
            config,
            storage,
            tx,
            queue: Arc::new(Semaphore::new(QUEUE_BYTES as usize)),
            counters,
            segments: Mutex::new(Segments {
                sealed: segments,
                active: active.clone(),
            }),
            releasing: Mutex::new(()),
            releaser: releaser::Releaser::default(),
            closed: AtomicBool::new(false),
            failure: Mutex::new(None),
            problem: Mutex::new(None),
            refusing_full: AtomicBool::new(false),
            rollback_floor: AtomicU64::new(active.first_lsn),
        });
        let writer = writer::Writer::new(Arc::clone(&inner), rx, active, recovered.next_lsn)?;
        let releaser = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("blipmq-wal-release".into())
                .spawn(move || releaser::Releaser::run(inner))
                .map_err(io_err("spawn the WAL release thread"))?
        };
        let handle = std::thread::Builder::new()
            .name("blipmq-wal".into())
            .spawn(move || writer.run());
        let handle = match handle {
            Ok(handle) => handle,
            Err(e) => {
                inner.releaser.stop();
                let _ = releaser.join();
                return Err(io_err("spawn the WAL writer thread")(e));
            }
        };
        Ok((
            Wal {
                inner,
                writer: Some(handle),
                releaser: Some(releaser),
                _lock: lock,
            },
            report,
        ))
    }

    /// Appends one record; resolves to its LSN once it is durable under the
    /// policy. The future owns what it needs (`'static`): it can be spawned.
    /// Waits while the queue is full ([`QUEUE_BYTES`]).
    pub fn append(
        &self,
        kind: u8,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Lsn, WalError>> + Send + 'static {
        let submit = Arc::clone(&self.inner).submit(Records::One(kind, payload.into()));
        async move { submit.await?.await }
    }

    /// The most bytes one [`Wal::append_batch`] may take (it must fit in
    /// one segment), counted as [`Wal::framed_len`] counts them.
    pub fn batch_room(&self) -> u64 {
        self.inner.config.segment_bytes - SEGMENT_HEADER_LEN
    }

    /// What a record with a payload of `payload_len` bytes takes in the log.
    pub fn framed_len(payload_len: usize) -> u64 {
        frame_len(payload_len)
    }

    /// Appends records as one unit: they get consecutive LSNs, in order, in
    /// one segment, and are confirmed together. Resolves to the first LSN.
    /// Together they must fit in one segment. An empty batch resolves to the
    /// next LSN without writing anything.
    pub fn append_batch(
        &self,
        records: Vec<(u8, Bytes)>,
    ) -> impl Future<Output = Result<Lsn, WalError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            if records.is_empty() {
                return Ok(inner.counters.next_lsn.load(Ordering::Acquire));
            }
            inner.submit(Records::Many(records)).await?.await
        }
    }

    /// The first half of [`Wal::append_batch`], as [`Wal::submit`] is of
    /// [`Wal::append`]. The batch must not be empty.
    pub fn submit_batch(
        &self,
        records: Vec<(u8, Bytes)>,
    ) -> impl Future<Output = Result<Pending, WalError>> + Send + 'static {
        debug_assert!(!records.is_empty());
        Arc::clone(&self.inner).submit(Records::Many(records))
    }

    /// The first half of an append: resolves once the record has its place
    /// in the queue (after waiting for room, if the queue is full), which
    /// fixes its LSN order relative to later submits. The returned
    /// [`Pending`] resolves when it is durable. For callers that pipeline
    /// appends in order without waiting for each fsync.
    pub fn submit(
        &self,
        kind: u8,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Pending, WalError>> + Send + 'static {
        Arc::clone(&self.inner).submit(Records::One(kind, payload.into()))
    }

    /// Streams the records with LSN `>= from_lsn`, in LSN order, to `visit`
    /// until it returns `Break` or the records written when the replay
    /// started run out. Returns how many records were visited. Blocking
    /// I/O with a bounded buffer; every record is re-verified, and damage is
    /// an error ([`WalError::Corrupt`]) before the damaged record could be
    /// visited. Records released concurrently may be skipped.
    pub fn replay<F>(&self, from_lsn: Lsn, mut visit: F) -> Result<u64, WalError>
    where
        F: FnMut(Lsn, u8, &[u8]) -> ControlFlow<()>,
    {
        let snapshot: Vec<SegmentMeta> = {
            let segments = self.inner.segments.lock();
            segments
                .sealed
                .iter()
                .chain(std::iter::once(&segments.active))
                .filter(|s| s.end_lsn > from_lsn && s.records > 0)
                .cloned()
                .collect()
        };
        let mut visited = 0;
        for segment in snapshot {
            let corrupt = |offset: u64, reason: String| WalError::Corrupt {
                segment: segment.path.clone(),
                offset,
                reason,
            };
            let mut file = match self.inner.storage.open(&segment.path, OpenMode::Read) {
                Ok(file) => file,
                // Deleted by a concurrent `release_before`.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(format!("open {}", segment.path.display()))(e)),
            };
            let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
            file.read_exact(&mut header)
                .map_err(io_err(format!("read {}", segment.path.display())))?;
            if let Some(reason) = check_segment_header(&header, segment.first_lsn) {
                return Err(corrupt(0, reason));
            }
            let mut reader = FrameReader::new(file, SEGMENT_HEADER_LEN, segment.len);
            let mut expected = segment.first_lsn;
            while expected < segment.end_lsn {
                let offset = reader.offset();
                let frame = reader
                    .next_frame()
                    .map_err(|e| io_err(format!("read {}", segment.path.display()))(e))?;
                match frame {
                    Frame::Record(record) => {
                        if record.lsn != expected {
                            return Err(corrupt(
                                offset,
                                format!("record has LSN {}, expected {expected}", record.lsn),
                            ));
                        }
                        match GapCheck::of(&record) {
                            GapCheck::NotAGap => expected += 1,
                            // Recovery's mark where records were lost.
                            GapCheck::To(next) => {
                                expected = next;
                                continue;
                            }
                            GapCheck::Invalid(reason) => return Err(corrupt(offset, reason)),
                        }
                        if record.lsn >= from_lsn {
                            visited += 1;
                            if visit(record.lsn, record.kind, record.payload).is_break() {
                                return Ok(visited);
                            }
                        }
                    }
                    Frame::End => {
                        return Err(corrupt(
                            offset,
                            format!(
                                "segment ends at LSN {expected}, expected {}",
                                segment.end_lsn
                            ),
                        ))
                    }
                    Frame::Torn { offset } => {
                        return Err(corrupt(offset, "incomplete record".into()))
                    }
                    Frame::Corrupt { offset, reason } => return Err(corrupt(offset, reason)),
                }
            }
        }
        Ok(visited)
    }

    /// Declares every record with an LSN below `lsn` unneeded: each segment
    /// whose records all lie below it is deleted, oldest first (the active
    /// segment never is). Returns the number of segments deleted.
    ///
    /// One caller at a time, strictly in log order, and a segment leaves the
    /// list only once its file is gone: a failed deletion stops here with
    /// the error, keeps that segment and everything after it, and the next
    /// call tries again. So the files on disk are always a contiguous run of
    /// the log, whatever fails or crashes when.
    pub fn release_before(&self, lsn: Lsn) -> Result<usize, WalError> {
        self.inner.release_before(lsn)
    }

    /// [`Wal::release_before`] on the log's release thread: returns at
    /// once, without touching the disk, so that it can be called from
    /// async code on every ack. Requests made before the thread gets to
    /// them are merged into one pass up to the highest LSN asked for;
    /// errors are logged there, and a failed deletion is tried again on the
    /// next request that finds something to delete.
    pub fn release_later(&self, lsn: Lsn) {
        let deletable = {
            let segments = self.inner.segments.lock();
            segments.sealed.front().is_some_and(|s| s.end_lsn <= lsn)
        };
        self.inner.releaser.request(lsn, deletable);
    }

    /// Blocks until the deletions asked for with [`Wal::release_later`]
    /// so far are done (for tests, and for callers that must know).
    pub fn wait_for_releases(&self) {
        self.inner.releaser.wait_idle();
    }

    /// Whether the log takes appends now (for a readiness check).
    pub fn health(&self) -> WalHealth {
        if let Some(reason) = self.inner.failure.lock().clone() {
            return WalHealth::Stopped(reason);
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return WalHealth::Stopped("closed".into());
        }
        if let Some(problem) = self.inner.problem.lock().clone() {
            return if problem.no_space {
                WalHealth::NoSpace(problem.reason)
            } else {
                WalHealth::Failing(problem.reason)
            };
        }
        if self.inner.refusing_full.load(Ordering::Acquire) {
            return WalHealth::Full;
        }
        WalHealth::Ok
    }

    pub fn stats(&self) -> WalStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WalStats {
            records_appended: load(&c.records_appended),
            bytes_appended: load(&c.bytes_appended),
            fsyncs: load(&c.fsyncs),
            fsync_duration: c.fsync_duration.snapshot(),
            write_batches: load(&c.write_batches),
            torn_tail_truncations: load(&c.torn_tail_truncations),
            segments_deleted: load(&c.segments_deleted),
            segments_quarantined: load(&c.segments_quarantined),
            corruptions: load(&c.corruptions),
            write_failures: load(&c.write_failures),
            repairs: load(&c.repairs),
            fsync_failures: load(&c.fsync_failures),
            delete_failures: load(&c.delete_failures),
            full_rejections: load(&c.full_rejections),
            current_bytes: load(&c.current_bytes),
            segments: load(&c.segments),
            next_lsn: c.next_lsn.load(Ordering::Acquire),
        }
    }

    /// The lowest LSN still in the log, if it holds any record.
    pub fn first_lsn(&self) -> Option<Lsn> {
        let segments = self.inner.segments.lock();
        segments
            .sealed
            .iter()
            .chain(std::iter::once(&segments.active))
            .find(|s| s.records > 0)
            .map(|s| s.first_lsn)
    }

    /// The highest LSN written so far, if any.
    /// The LSN the next record will get (never goes back, even when every
    /// sealed segment was released).
    pub fn next_lsn(&self) -> Lsn {
        self.inner.counters.next_lsn.load(Ordering::Acquire)
    }

    pub fn last_lsn(&self) -> Option<Lsn> {
        let next = self.inner.counters.next_lsn.load(Ordering::Acquire);
        self.first_lsn().map(|_| next - 1)
    }

    pub fn config(&self) -> &WalConfig {
        &self.inner.config
    }

    /// Writes and fsyncs everything queued, stops the writer and waits for
    /// it. Appends made after this fail with [`WalError::Closed`]. Blocks
    /// for at most one batch and one fsync.
    pub fn close(mut self) -> Result<(), WalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WalError> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        // The writer may already be gone after a failure; then this fails.
        let _ = self.inner.tx.send(Msg::Shutdown);
        let result = match handle.join() {
            Ok(result) => result,
            Err(_) => Err(WalError::Failed("the WAL writer thread panicked".into())),
        };
        self.inner.releaser.stop();
        if let Some(releaser) = self.releaser.take() {
            let _ = releaser.join();
        }
        self.inner.closed.store(true, Ordering::Release);
        self.inner.queue.close();
        result
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(error = %e, "WAL: error while closing");
        }
    }
}
