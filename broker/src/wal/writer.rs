//! The writer thread: the only code that writes to the active segment.
//!
//! It blocks on the channel until an append arrives, drains everything else
//! already queued, encodes it all into one buffer, issues one `write`, one
//! fsync (policy `always`), and only then completes every append of the batch.
//! While it sits in `fsync`, new appends queue up and form the next batch:
//! that is the group commit. Under `interval` nothing waits for the fsync,
//! so it is done by the [`Syncer`] thread while the writer goes on.
//!
//! # Failures
//!
//! A failed `write`, `fsync` or segment creation fails every append of the
//! batch (none was confirmed) and the writer *rolls the log back* to the end
//! of the last batch that completed: it deletes the segments the failed
//! batch created (newest first), truncates the active segment to its
//! committed length on a fresh handle, and fsyncs that. After a failed fsync
//! the page cache cannot be trusted, but everything confirmed before was
//! fsynced already, and what the failed batch wrote is cut off, so the log
//! is again exactly what was confirmed. If the rollback fails too, appends
//! fail at once until a retry (with a growing pause, at most
//! [`MAX_RETRY_PAUSE`]) succeeds. A full disk (`ENOSPC`) goes the same way,
//! and its appends fail with an error that says so, until space returns.
//! The writer thread never stops on an I/O error.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::format::{
    encode_record, segment_file_name, segment_header, LSN_CEILING, SEGMENT_HEADER_LEN,
};
use super::storage::{OpenMode, StorageFile};
use super::syncer::Syncer;
use super::{
    io_err, sync_dir_in, Entry, FsyncPolicy, Inner, Lsn, Msg, Problem, SegmentMeta, WalError,
};

/// The first pause before retrying a failed rollback; it doubles each time.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between retries.
pub(crate) const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

pub(crate) struct Writer {
    inner: Arc<Inner>,
    rx: Receiver<Msg>,
    file: Box<dyn StorageFile>,
    active: SegmentMeta,
    next_lsn: Lsn,
    buf: Vec<u8>,
    batch: Vec<Entry>,
    confirmed: Vec<(Entry, Lsn)>,
    /// When the oldest write not yet covered by an fsync (done or handed to
    /// the syncer) happened.
    dirty_since: Option<Instant>,
    /// Under `interval`: the thread that does the timed fsyncs.
    syncer: Option<Syncer>,
    /// The active segment as of the last batch that completed: what a
    /// failed batch is rolled back to.
    committed: SegmentMeta,
    /// Segments the batch in progress sealed (each made a new one active).
    sealed_in_batch: usize,
    /// A segment file being created, until it is in the segment list.
    creating: Option<std::path::PathBuf>,
    /// While the log is not rolled back after a failure: the error that
    /// appends get, when to try again, and the pause after that.
    broken: Option<Broken>,
}

struct Broken {
    error: WalError,
    retry_at: Instant,
    pause: Duration,
}

/// A copy of `error` for each append it fails (`WalError` holds an
/// `io::Error`, which is not `Clone`); the kind is kept, so a full disk
/// still reads as one.
fn share(error: &WalError) -> WalError {
    match error {
        WalError::Io { context, source } => WalError::Io {
            context: context.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        WalError::Full { used, max, needed } => WalError::Full {
            used: *used,
            max: *max,
            needed: *needed,
        },
        other => WalError::Failed(other.to_string()),
    }
}

impl Writer {
    pub(crate) fn new(
        inner: Arc<Inner>,
        rx: Receiver<Msg>,
        active: SegmentMeta,
        next_lsn: Lsn,
    ) -> Result<Writer, WalError> {
        let file = inner
            .storage
            .open(&active.path, OpenMode::Append)
            .map_err(io_err(format!("open {}", active.path.display())))?;
        let syncer = match inner.config.fsync_policy {
            FsyncPolicy::Interval => {
                let counted = Arc::clone(&inner);
                Some(Syncer::start(move |took| {
                    counted.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                    counted.counters.fsync_duration.observe(took);
                })?)
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(Writer {
            inner,
            rx,
            file,
            committed: active.clone(),
            active,
            next_lsn,
            buf: Vec::with_capacity(1 << 20),
            batch: Vec::new(),
            confirmed: Vec::new(),
            dirty_since: None,
            syncer,
            sealed_in_batch: 0,
            creating: None,
            broken: None,
        })
    }

    pub(crate) fn run(mut self) -> Result<(), WalError> {
        let result = self.main_loop();
        if let Err(e) = &result {
            error!(error = %e, "WAL writer stopped");
            *self.inner.failure.lock() = Some(e.to_string());
        }
        // Anything still queued gets an answer.
        let stopped = self.inner.stopped_error();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Append(entry) = msg {
                entry.complete(Err(share(&stopped)));
            }
        }
        self.inner.closed.store(true, Ordering::Release);
        result
    }

    fn main_loop(&mut self) -> Result<(), WalError> {
        loop {
            let deadline = [
                self.fsync_deadline(),
                self.broken.as_ref().map(|b| b.retry_at),
            ]
            .into_iter()
            .flatten()
            .min();
            let first = match deadline {
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return self.finish(),
                },
                Some(deadline) => {
                    let now = Instant::now();
                    if deadline <= now {
                        self.on_timer();
                        continue;
                    }
                    match self.rx.recv_timeout(deadline - now) {
                        Ok(msg) => msg,
                        Err(RecvTimeoutError::Timeout) => {
                            self.on_timer();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return self.finish(),
                    }
                }
            };
            let mut shutdown = false;
            let mut take = |msg: Msg, batch: &mut Vec<Entry>| match msg {
                Msg::Append(entry) => batch.push(entry),
                Msg::Shutdown => shutdown = true,
            };
            take(first, &mut self.batch);
            self.check_background_fsync();
            // Everything already queued joins this batch. The queue is bounded
            // (the semaphore), so this ends.
            while let Ok(msg) = self.rx.try_recv() {
                take(msg, &mut self.batch);
            }
            if !self.batch.is_empty() {
                self.write_batch();
            }
            if shutdown {
                return self.finish();
            }
        }
    }

    /// A timed event is due: a retry of the rollback, or the fsync of
    /// `interval`.
    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.broken.as_ref().is_some_and(|b| b.retry_at <= now) {
            self.roll_back_or_wait();
        }
        if self.fsync_deadline().is_some_and(|d| d <= now) {
            if let Err(e) = self.sync_due() {
                self.fsync_failed(e);
            }
        }
    }

    fn write_batch(&mut self) {
        if let Some(broken) = &self.broken {
            // Every batch is a chance to get going again (a full disk
            // clears as soon as space is freed), but no more often than the
            // pause allows.
            if broken.retry_at <= Instant::now() {
                self.roll_back_or_wait();
            }
            if let Some(broken) = &self.broken {
                let error = &broken.error;
                for entry in self.batch.drain(..) {
                    entry.complete(Err(share(error)));
                }
                return;
            }
        }
        match self.commit() {
            Ok(()) => {}
            Err(e) => {
                let counters = &self.inner.counters;
                counters.write_failures.fetch_add(1, Ordering::Relaxed);
                let failed = self.confirmed.len() + self.batch.len();
                error!(error = %e, appends = failed, "WAL: a batch failed; its appends are refused and the log is rolled back to the last confirmed record");
                *self.inner.problem.lock() = Some(Problem {
                    reason: e.to_string(),
                    no_space: e.is_storage_full(),
                });
                for (entry, _) in self.confirmed.drain(..) {
                    entry.complete(Err(share(&e)));
                }
                for entry in self.batch.drain(..) {
                    entry.complete(Err(share(&e)));
                }
                self.broken = Some(Broken {
                    error: e,
                    retry_at: Instant::now(),
                    pause: FIRST_RETRY_PAUSE,
                });
                self.roll_back_or_wait();
            }
        }
    }

    /// Tries the rollback; on failure, schedules the next try.
    fn roll_back_or_wait(&mut self) {
        match self.roll_back() {
            Ok(()) => {
                self.broken = None;
                self.inner.counters.repairs.fetch_add(1, Ordering::Relaxed);
                info!(
                    segment = %self.active.path.display(),
                    next_lsn = self.next_lsn,
                    "WAL: rolled back to the last confirmed record; appends are tried again"
                );
            }
            Err(e) => {
                let broken = self.broken.as_mut().expect("only called while broken");
                warn!(error = %e, retry_in_ms = broken.pause.as_millis() as u64, "WAL: rollback failed; appends are refused until it succeeds");
                broken.retry_at = Instant::now() + broken.pause;
                broken.pause = (broken.pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }

    /// Puts the log back to the end of the last completed batch. Idempotent:
    /// a retry after a partial rollback finishes it.
    fn roll_back(&mut self) -> Result<(), WalError> {
        let storage = Arc::clone(&self.inner.storage);
        let dir = &self.inner.config.dir;
        let durable = self.inner.config.fsync_policy != FsyncPolicy::Never;
        if let Some(syncer) = &mut self.syncer {
            // Its handle may be to a segment about to go; its outcome does
            // not matter any more.
            let _ = syncer.wait();
        }
        // Newest first, so the files on disk stay a contiguous log.
        if let Some(path) = self.creating.clone() {
            remove_if_present(storage.as_ref(), &path)?;
            sync_dir_in(storage.as_ref(), dir)?;
            self.creating = None;
        }
        while self.sealed_in_batch > 0 {
            remove_if_present(storage.as_ref(), &self.active.path)?;
            sync_dir_in(storage.as_ref(), dir)?;
            let previous = self
                .inner
                .segments
                .lock()
                .sealed
                .pop_back()
                .expect("a segment sealed by this batch is listed");
            self.inner.counters.segments.fetch_sub(1, Ordering::Relaxed);
            self.active = previous;
            self.sealed_in_batch -= 1;
        }
        let path = &self.committed.path;
        let file = storage
            .open(path, OpenMode::Append)
            .map_err(io_err(format!("open {}", path.display())))?;
        file.set_len(self.committed.len)
            .map_err(io_err(format!("truncate {}", path.display())))?;
        if durable {
            file.sync_data()
                .map_err(io_err(format!("fsync {}", path.display())))?;
        }
        self.file = file;
        self.active = self.committed.clone();
        self.next_lsn = self.committed.end_lsn;
        self.buf.clear();
        self.dirty_since = None;
        let mut segments = self.inner.segments.lock();
        segments.active = self.active.clone();
        let bytes = segments.sealed.iter().map(|s| s.len).sum::<u64>() + self.active.len;
        self.inner
            .counters
            .current_bytes
            .store(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Under `interval`, a background fsync that failed: the appends it was
    /// to cover were confirmed already, so nothing can be refused; it is
    /// counted, logged, reported by `health`, and the next fsync tries again.
    fn check_background_fsync(&mut self) {
        if let Some(syncer) = &mut self.syncer {
            if let Err(e) = syncer.check() {
                self.fsync_failed(e);
            }
        }
    }

    fn fsync_failed(&mut self, e: WalError) {
        self.inner
            .counters
            .fsync_failures
            .fetch_add(1, Ordering::Relaxed);
        error!(error = %e, "WAL: an fsync failed; appends confirmed since the last good fsync may be lost if the machine crashes");
        *self.inner.problem.lock() = Some(Problem {
            reason: e.to_string(),
            no_space: e.is_storage_full(),
        });
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Under `interval`, when the pending fsync is due.
    fn fsync_deadline(&self) -> Option<Instant> {
        match self.inner.config.fsync_policy {
            FsyncPolicy::Interval => self
                .dirty_since
                .map(|since| since + Duration::from_millis(self.inner.config.fsync_interval_ms)),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        }
    }

    fn commit(&mut self) -> Result<(), WalError> {
        let inner = Arc::clone(&self.inner);
        let config = &inner.config;
        let counters = &inner.counters;
        let segment_bytes = config.segment_bytes;
        let max_bytes = config.max_bytes;
        self.sealed_in_batch = 0;
        // The log's size once this batch is written.
        let mut projected = counters.current_bytes.load(Ordering::Relaxed);
        let mut pending = std::mem::take(&mut self.batch).into_iter();
        while let Some(entry) = pending.next() {
            let frames = entry.frame_bytes;
            let in_segment = self.active.len + self.buf.len() as u64;
            let rotate = in_segment > SEGMENT_HEADER_LEN && in_segment + frames > segment_bytes;
            let extra = if rotate { SEGMENT_HEADER_LEN } else { 0 };
            if max_bytes != 0 && projected + extra + frames > max_bytes {
                inner.refused_full();
                entry.complete(Err(WalError::Full {
                    used: projected,
                    max: max_bytes,
                    needed: frames,
                }));
                continue;
            }
            let records = entry.records.len() as u64;
            if self.next_lsn + records > LSN_CEILING {
                entry.complete(Err(WalError::Exhausted {
                    next: self.next_lsn,
                }));
                continue;
            }
            if rotate {
                if let Err(e) = self.flush().and_then(|()| self.rotate()) {
                    // Keep the unwritten appends so that they are failed.
                    self.batch.push(entry);
                    self.batch.extend(pending);
                    return Err(e);
                }
                projected += SEGMENT_HEADER_LEN;
            }
            let first_lsn = self.next_lsn;
            for (kind, payload) in entry.records.iter() {
                encode_record(&mut self.buf, self.next_lsn, kind, payload);
                self.next_lsn += 1;
            }
            projected += frames;
            self.confirmed.push((entry, first_lsn));
        }
        self.flush()?;
        if config.fsync_policy == FsyncPolicy::Always {
            self.sync()?;
        }
        self.publish();
        if !self.confirmed.is_empty() {
            inner.refusing_full.store(false, Ordering::Release);
            // Before the appends hear of it, so that `health` agrees.
            if inner.problem.lock().take().is_some() {
                info!("WAL: appends succeed again");
            }
        }
        for (entry, lsn) in self.confirmed.drain(..) {
            entry.complete(Ok(lsn));
        }
        self.committed = self.active.clone();
        self.sealed_in_batch = 0;
        inner
            .rollback_floor
            .store(self.committed.first_lsn, Ordering::Release);
        // Under `interval` the batch is confirmed once written; a due fsync
        // (which may wait for the one in flight) comes after.
        if config.fsync_policy == FsyncPolicy::Interval
            && self.fsync_deadline().is_some_and(|d| d <= Instant::now())
        {
            if let Err(e) = self.sync_due() {
                self.fsync_failed(e);
            }
        }
        Ok(())
    }

    /// Writes the buffer to the active segment.
    fn flush(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(io_err(format!("write {}", self.active.path.display())))?;
        let written = self.buf.len() as u64;
        let records = self.next_lsn - self.active.end_lsn;
        self.active.len += written;
        self.active.records += records;
        self.active.end_lsn = self.next_lsn;
        let counters = &self.inner.counters;
        counters
            .bytes_appended
            .fetch_add(written, Ordering::Relaxed);
        counters
            .records_appended
            .fetch_add(records, Ordering::Relaxed);
        counters.write_batches.fetch_add(1, Ordering::Relaxed);
        counters.current_bytes.fetch_add(written, Ordering::Relaxed);
        self.buf.clear();
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// The timed fsync of `interval` is due: hand it to the syncer thread
    /// (after the one in flight, if any).
    fn sync_due(&mut self) -> Result<(), WalError> {
        let Some(syncer) = &mut self.syncer else {
            return self.sync();
        };
        if self.dirty_since.is_none() {
            return Ok(());
        }
        // Taken now: if the fsync fails, the next one is due an interval on.
        self.dirty_since = None;
        let file = self
            .file
            .try_clone()
            .map_err(io_err(format!("open {}", self.active.path.display())))?;
        syncer.sync_in_background(file, self.active.path.clone())
    }

    /// fsyncs the active segment now if it has unsynced writes (after the
    /// syncer's fsync in flight, if any: the caller needs every write so far
    /// to be durable).
    fn sync(&mut self) -> Result<(), WalError> {
        if let Some(syncer) = &mut self.syncer {
            syncer.wait()?;
        }
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        self.file
            .sync_data()
            .map_err(io_err(format!("fsync {}", self.active.path.display())))?;
        self.inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.inner
            .counters
            .fsync_duration
            .observe(started.elapsed());
        self.dirty_since = None;
        Ok(())
    }

    /// Seals the active segment (fsynced first, unless the policy is `never`)
    /// and starts a new one at the next LSN.
    fn rotate(&mut self) -> Result<(), WalError> {
        let durable = self.inner.config.fsync_policy != FsyncPolicy::Never;
        if durable {
            self.sync()?;
        }
        let first_lsn = self.next_lsn;
        let path = self.inner.config.dir.join(segment_file_name(first_lsn));
        self.creating = Some(path.clone());
        let mut file = self
            .inner
            .storage
            .open(&path, OpenMode::CreateNew)
            .map_err(io_err(format!("create {}", path.display())))?;
        file.write_all(&segment_header(first_lsn))
            .map_err(io_err(format!("write header of {}", path.display())))?;
        if durable {
            // The new file's name must survive a crash before any record in
            // it is confirmed; its contents are covered by the next fsync.
            sync_dir_in(self.inner.storage.as_ref(), &self.inner.config.dir)?;
        }
        let sealed = std::mem::replace(
            &mut self.active,
            SegmentMeta {
                first_lsn,
                path,
                len: SEGMENT_HEADER_LEN,
                end_lsn: first_lsn,
                records: 0,
            },
        );
        self.file = file;
        self.dirty_since = Some(Instant::now());
        let counters = &self.inner.counters;
        counters
            .current_bytes
            .fetch_add(SEGMENT_HEADER_LEN, Ordering::Relaxed);
        counters.segments.fetch_add(1, Ordering::Relaxed);
        let mut segments = self.inner.segments.lock();
        segments.sealed.push_back(sealed);
        segments.active = self.active.clone();
        self.creating = None;
        self.sealed_in_batch += 1;
        Ok(())
    }

    /// Makes what was written visible to `replay` and `last_lsn`.
    fn publish(&self) {
        let mut segments = self.inner.segments.lock();
        segments.active.len = self.active.len;
        segments.active.records = self.active.records;
        segments.active.end_lsn = self.active.end_lsn;
        self.inner
            .counters
            .next_lsn
            .store(self.next_lsn, Ordering::Release);
    }

    /// Clean shutdown: everything queued before it was committed; make it
    /// durable whatever the policy.
    fn finish(&mut self) -> Result<(), WalError> {
        if let Some(broken) = &self.broken {
            return Err(share(&broken.error));
        }
        self.sync()
    }
}

fn remove_if_present(storage: &dyn super::Storage, path: &std::path::Path) -> Result<(), WalError> {
    match storage.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("delete {}", path.display()))(e)),
    }
}
