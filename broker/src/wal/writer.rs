//! The writer thread: the only code that writes to the active segment.
//!
//! It blocks on the channel until an append arrives, drains everything else
//! already queued, encodes it all into one buffer, issues one `write`, one
//! fsync (policy `always`), and only then completes every append of the batch.
//! While it sits in `fsync`, new appends queue up and form the next batch:
//! that is the group commit. Under `interval` nothing waits for the fsync,
//! so it is done by the [`Syncer`] thread while the writer goes on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::error;

use super::format::{encode_record, segment_file_name, segment_header, SEGMENT_HEADER_LEN};
use super::syncer::Syncer;
use super::{io_err, sync_dir, Entry, FsyncPolicy, Inner, Lsn, Msg, SegmentMeta, WalError};

pub(crate) struct Writer {
    inner: Arc<Inner>,
    rx: Receiver<Msg>,
    file: File,
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
}

impl Writer {
    pub(crate) fn new(
        inner: Arc<Inner>,
        rx: Receiver<Msg>,
        active: SegmentMeta,
        next_lsn: Lsn,
    ) -> Result<Writer, WalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&active.path)
            .map_err(io_err(format!("open {}", active.path.display())))?;
        let syncer = match inner.config.fsync_policy {
            FsyncPolicy::Interval => {
                let counted = Arc::clone(&inner);
                Some(Syncer::start(move || {
                    counted.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                })?)
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(Writer {
            inner,
            rx,
            file,
            active,
            next_lsn,
            buf: Vec::with_capacity(1 << 20),
            batch: Vec::new(),
            confirmed: Vec::new(),
            dirty_since: None,
            syncer,
        })
    }

    pub(crate) fn run(mut self) -> Result<(), WalError> {
        let result = self.main_loop();
        if let Err(e) = &result {
            error!(error = %e, "WAL writer stopped; appends fail until the WAL is reopened");
            let reason = e.to_string();
            *self.inner.failure.lock() = Some(reason.clone());
            let failed = || Err(WalError::Failed(reason.clone()));
            // Appends of the failed batch (written or not, none confirmed)
            // and everything queued behind them.
            for entry in self.batch.drain(..) {
                entry.complete(failed());
            }
            for (entry, _) in self.confirmed.drain(..) {
                entry.complete(failed());
            }
            while let Ok(msg) = self.rx.try_recv() {
                if let Msg::Append(entry) = msg {
                    entry.complete(failed());
                }
            }
        }
        self.inner.closed.store(true, Ordering::Release);
        result
    }

    fn main_loop(&mut self) -> Result<(), WalError> {
        loop {
            let first = match self.fsync_deadline() {
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return self.finish(),
                },
                Some(deadline) => {
                    let now = Instant::now();
                    if deadline <= now {
                        self.sync_due()?;
                        continue;
                    }
                    match self.rx.recv_timeout(deadline - now) {
                        Ok(msg) => msg,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_due()?;
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
            // A background fsync that failed stops the writer, as one of its
            // own would.
            if let Some(syncer) = &mut self.syncer {
                syncer.check()?;
            }
            // Everything already queued joins this batch. The queue is bounded
            // (the semaphore), so this ends.
            while let Ok(msg) = self.rx.try_recv() {
                take(msg, &mut self.batch);
            }
            if !self.batch.is_empty() {
                self.commit()?;
            }
            if shutdown {
                return self.finish();
            }
        }
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
        // The log's size once this batch is written.
        let mut projected = counters.current_bytes.load(Ordering::Relaxed);
        let mut pending = std::mem::take(&mut self.batch).into_iter();
        while let Some(entry) = pending.next() {
            let frames = entry.frame_bytes;
            let in_segment = self.active.len + self.buf.len() as u64;
            let rotate = in_segment > SEGMENT_HEADER_LEN && in_segment + frames > segment_bytes;
            let extra = if rotate { SEGMENT_HEADER_LEN } else { 0 };
            if max_bytes != 0 && projected + extra + frames > max_bytes {
                counters.full_rejections.fetch_add(1, Ordering::Relaxed);
                entry.complete(Err(WalError::Full {
                    used: projected,
                    max: max_bytes,
                    needed: frames,
                }));
                continue;
            }
            if rotate {
                if let Err(e) = self.flush().and_then(|()| self.rotate()) {
                    // Keep the unwritten appends so that `run` fails them.
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
        for (entry, lsn) in self.confirmed.drain(..) {
            entry.complete(Ok(lsn));
        }
        // Under `interval` the batch is confirmed once written; a due fsync
        // (which may wait for the one in flight) comes after.
        if config.fsync_policy == FsyncPolicy::Interval
            && self.fsync_deadline().is_some_and(|d| d <= Instant::now())
        {
            self.sync_due()?;
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
        let records = self.next_lsn - (self.active.first_lsn + self.active.records);
        self.active.len += written;
        self.active.records += records;
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
        let file = self
            .file
            .try_clone()
            .map_err(io_err(format!("open {}", self.active.path.display())))?;
        syncer.sync_in_background(file, self.active.path.clone())?;
        self.dirty_since = None;
        Ok(())
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
        self.file
            .sync_data()
            .map_err(io_err(format!("fsync {}", self.active.path.display())))?;
        self.inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
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
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(format!("create {}", path.display())))?;
        file.write_all(&segment_header(first_lsn))
            .map_err(io_err(format!("write header of {}", path.display())))?;
        if durable {
            // The new file's name must survive a crash before any record in
            // it is confirmed; its contents are covered by the next fsync.
            sync_dir(&self.inner.config.dir)?;
        }
        let sealed = std::mem::replace(
            &mut self.active,
            SegmentMeta {
                first_lsn,
                path,
                len: SEGMENT_HEADER_LEN,
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
        Ok(())
    }

    /// Makes what was written visible to `replay` and `last_lsn`.
    fn publish(&self) {
        let mut segments = self.inner.segments.lock();
        segments.active.len = self.active.len;
        segments.active.records = self.active.records;
        self.inner
            .counters
            .next_lsn
            .store(self.next_lsn, Ordering::Release);
    }

    /// Clean shutdown: everything queued before it was committed; make it
    /// durable whatever the policy.
    fn finish(&mut self) -> Result<(), WalError> {
        self.sync()
    }
}
