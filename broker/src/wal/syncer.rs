//! Under `interval`, the timed fsync runs on its own thread.
//!
//! An append under `interval` is confirmed after its `write`, so nothing has
//! to wait for the fsync, yet when the writer thread did the fsync itself,
//! every append that arrived meanwhile waited for the disk (measured on a
//! 2-core VM: sequential QoS 1 confirms ran at ~60% of the rate of `never`,
//! with a p99 of the fsync's duration). Here the writer hands a handle of the
//! active segment to this thread and keeps writing.
//!
//! One fsync at a time: a new one is started only after the previous one has
//! finished, so a write is covered at most `fsync_interval_ms` plus two fsync
//! durations after it happened. Anything that needs an fsync to have
//! happened (sealing a segment, closing) waits for the one in flight first.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use super::storage::StorageFile;
use super::{io_err, WalError};

/// A segment to fsync: a handle to it, and its path for error messages.
struct Request {
    file: Box<dyn StorageFile>,
    path: PathBuf,
}

pub(crate) struct Syncer {
    requests: Option<Sender<Request>>,
    done: Receiver<Result<(), WalError>>,
    in_flight: bool,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// `synced` is called after each successful fsync with how long it took
    /// (to count and time it).
    pub(crate) fn start(
        synced: impl Fn(std::time::Duration) + Send + 'static,
    ) -> Result<Syncer, WalError> {
        let (requests, incoming) = channel::<Request>();
        let (finished, done) = channel();
        let thread = std::thread::Builder::new()
            .name("blipmq-wal-sync".into())
            .spawn(move || {
                for request in incoming {
                    let started = std::time::Instant::now();
                    let result = request
                        .file
                        .sync_data()
                        .map_err(io_err(format!("fsync {}", request.path.display())));
                    if result.is_ok() {
                        synced(started.elapsed());
                    }
                    if finished.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(io_err("spawn the WAL fsync thread"))?;
        Ok(Syncer {
            requests: Some(requests),
            done,
            in_flight: false,
            thread: Some(thread),
        })
    }

    /// Start fsyncing `file` (a handle to the active segment, whose writes
    /// so far the fsync must cover) after the fsync in flight, if any, has
    /// finished.
    pub(crate) fn sync_in_background(
        &mut self,
        file: Box<dyn StorageFile>,
        path: PathBuf,
    ) -> Result<(), WalError> {
        self.wait()?;
        self.requests
            .as_ref()
            .expect("the request channel lives as long as the syncer")
            .send(Request { file, path })
            .map_err(|_| WalError::Failed("the WAL fsync thread stopped".into()))?;
        self.in_flight = true;
        Ok(())
    }

    /// The outcome of a finished fsync, without waiting: an error if it
    /// failed.
    pub(crate) fn check(&mut self) -> Result<(), WalError> {
        if !self.in_flight {
            return Ok(());
        }
        match self.done.try_recv() {
            Ok(result) => {
                self.in_flight = false;
                result
            }
            Err(TryRecvError::Empty) => Ok(()),
            Err(TryRecvError::Disconnected) => {
                self.in_flight = false;
                Err(WalError::Failed("the WAL fsync thread stopped".into()))
            }
        }
    }

    /// Wait until no fsync is in flight; an error if the last one failed.
    pub(crate) fn wait(&mut self) -> Result<(), WalError> {
        if !self.in_flight {
            return Ok(());
        }
        self.in_flight = false;
        match self.done.recv() {
            Ok(result) => result,
            Err(_) => Err(WalError::Failed("the WAL fsync thread stopped".into())),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after the fsync in
        // flight.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::storage::{OpenMode, OsStorage, Storage};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn counted() -> (Arc<AtomicU64>, Syncer) {
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        let syncer = Syncer::start(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        (count, syncer)
    }

    #[test]
    fn fsyncs_in_the_background_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = OsStorage.open(&path, OpenMode::Truncate).unwrap();
        let (count, mut syncer) = counted();
        // Nothing in flight: nothing to wait for or report.
        syncer.check().unwrap();
        syncer.wait().unwrap();
        for _ in 0..3 {
            // Each request waits for the previous fsync first.
            syncer
                .sync_in_background(file.try_clone().unwrap(), path.clone())
                .unwrap();
        }
        syncer.wait().unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 3);
        syncer.check().unwrap();
    }

    #[test]
    fn a_failed_fsync_is_reported_with_the_path() {
        // Character devices cannot be fsynced (EINVAL).
        let null = OsStorage
            .open(Path::new("/dev/null"), OpenMode::Append)
            .unwrap();
        let (count, mut syncer) = counted();
        syncer
            .sync_in_background(null, PathBuf::from("/dev/null"))
            .unwrap();
        let error = syncer.wait().unwrap_err();
        assert!(
            matches!(&error, WalError::Io { context, .. } if context == "fsync /dev/null"),
            "{error}"
        );
        assert_eq!(count.load(Ordering::Relaxed), 0);
        // Reported once; the syncer is still usable.
        syncer.wait().unwrap();
        syncer.check().unwrap();
    }

    #[test]
    fn check_reports_a_failure_without_waiting_once_it_is_known() {
        let null = OsStorage
            .open(Path::new("/dev/null"), OpenMode::Append)
            .unwrap();
        let (_, mut syncer) = counted();
        syncer
            .sync_in_background(null, PathBuf::from("/dev/null"))
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match syncer.check() {
                Err(WalError::Io { .. }) => break,
                Err(other) => panic!("unexpected error: {other}"),
                Ok(()) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Ok(()) => panic!("the failed fsync was never reported"),
            }
        }
        syncer.check().unwrap();
    }
}
