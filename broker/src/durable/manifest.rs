//! Rewrites of the queue manifest (`queue_manifest.rs`), batched.
//!
//! Every create or delete of a durable subscription must be on disk before
//! it is answered, and each rewrite is a whole-file write, an fsync, a
//! rename and a directory fsync. One rewrite per change made a burst of
//! creates from many connections queue for the disk one at a time (issue
//! 22, finding 7). Instead, changes are numbered as they are made; a writer
//! takes its snapshot after reading the newest number, so one rewrite covers
//! every change numbered up to there, and whoever waited behind it for a
//! change it covered returns without writing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::queue_manifest::{self, QueueDefinition};
use crate::wal::{Storage, WalError};

pub(super) struct ManifestWriter {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// fsync the file and the directory (not under `fsync_policy = never`).
    sync: bool,
    /// Changes made to the queues that need saving, numbered from 1.
    changes: AtomicU64,
    /// The number of the newest change on disk. Held while writing, so
    /// rewrites never overlap (an older snapshot never replaces a newer one).
    saved: tokio::sync::Mutex<u64>,
    /// Rewrites done.
    writes: AtomicU64,
}

impl ManifestWriter {
    pub fn new(storage: Arc<dyn Storage>, dir: PathBuf, sync: bool) -> ManifestWriter {
        ManifestWriter {
            storage,
            dir,
            sync,
            changes: AtomicU64::new(0),
            saved: tokio::sync::Mutex::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// Make a change to the queues (already done in memory) durable.
    /// `snapshot` lists the queues as they are when it is called.
    pub async fn save(
        &self,
        snapshot: impl FnOnce() -> Vec<QueueDefinition>,
    ) -> Result<(), WalError> {
        // SeqCst on both: the change happened before this number was taken,
        // and a writer that reads a number at least this high takes its
        // snapshot after that read, so the snapshot includes the change.
        let mine = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut saved = self.saved.lock().await;
        if *saved >= mine {
            return Ok(());
        }
        let covered = self.changes.load(Ordering::SeqCst);
        let definitions = snapshot();
        let (storage, dir, sync) = (Arc::clone(&self.storage), self.dir.clone(), self.sync);
        tokio::task::spawn_blocking(move || {
            queue_manifest::store(storage.as_ref(), &dir, &definitions, sync)
        })
        .await
        .map_err(|e| WalError::Failed(e.to_string()))??;
        self.writes.fetch_add(1, Ordering::Relaxed);
        // On an error `saved` stays: the callers this write would have
        // covered write (and report) for themselves.
        *saved = covered;
        Ok(())
    }

    /// Rewrites of the file so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}
