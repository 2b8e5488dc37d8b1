//! `WalConfig`: the future `[wal]` section of `blipmq.toml`.

use std::path::PathBuf;

use serde::Deserialize;

use super::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::WalError;

/// When the writer calls `fsync` (`fdatasync` on Linux), and so when an
/// append is confirmed. See the module docs for each policy's loss window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// An append is confirmed after the fsync that covers it. Concurrent
    /// appends share one write and one fsync (group commit). Nothing
    /// confirmed is ever lost.
    #[default]
    Always,
    /// An append is confirmed after its `write()` (the data is in the page
    /// cache); `fsync_interval_ms` after the first unsynced write an fsync
    /// is started (once the one in flight, if any, is done), on a thread of
    /// its own so that appends go on meanwhile. A process crash loses nothing confirmed; an OS
    /// crash or power loss loses at most the last `fsync_interval_ms` of
    /// confirmed appends, plus up to two fsyncs' duration.
    Interval,
    /// An append is confirmed after its `write()`, and the writer never
    /// fsyncs on its own (only on close). For tests and caches: a process
    /// crash loses nothing confirmed, an OS crash can lose anything the
    /// kernel had not yet written back.
    Never,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

/// Configuration of a [`Wal`](super::Wal), shaped to become the `[wal]`
/// section of `blipmq.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Directory holding the segment files (created if missing). One process
    /// at a time: `Wal::open` locks it (`LOCK`).
    pub dir: PathBuf,
    /// A segment is rotated before it would grow past this size, so it is
    /// also the largest record (payload + 33 bytes of framing) accepted.
    pub segment_bytes: u64,
    pub fsync_policy: FsyncPolicy,
    /// With `fsync_policy = "interval"`, the longest time confirmed data may
    /// sit unsynced in the page cache.
    pub fsync_interval_ms: u64,
    /// Cap on the total size of the segment files; 0 = unlimited. When an
    /// append would go past it, the append fails with `WalError::Full` until
    /// [`Wal::release_before`](super::Wal::release_before) frees segments.
    /// Must be 0 or at least `2 * segment_bytes` (the active segment is never
    /// deleted, so a smaller cap could fill up for good).
    pub max_bytes: u64,
}

/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: PathBuf::from("data/wal"),
            segment_bytes: 64 << 20,
            fsync_policy: FsyncPolicy::Always,
            fsync_interval_ms: 10,
            max_bytes: 1 << 30,
        }
    }
}

impl WalConfig {
    /// A default config whose segments live in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            ..WalConfig::default()
        }
    }

    /// Checks every field; the error names the offending key.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid = |key: &str, why: String| Err(WalError::Config(format!("wal.{key}: {why}")));
        if self.dir.as_os_str().is_empty() {
            return invalid("dir", "must not be empty".into());
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return invalid(
                "segment_bytes",
                format!(
                    "must be at least {MIN_SEGMENT_BYTES}, got {}",
                    self.segment_bytes
                ),
            );
        }
        if self.fsync_policy == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return invalid(
                "fsync_interval_ms",
                "must be at least 1 with fsync_policy = \"interval\" (use \"always\" to fsync every batch)"
                    .into(),
            );
        }
        if self.max_bytes != 0 && self.max_bytes < self.segment_bytes.saturating_mul(2) {
            return invalid(
                "max_bytes",
                format!(
                    "must be 0 (unlimited) or at least 2 * segment_bytes = {}, got {}",
                    self.segment_bytes.saturating_mul(2),
                    self.max_bytes
                ),
            );
        }
        Ok(())
    }

    /// The largest payload an append accepts: a record must fit in an empty
    /// segment, and its length in the frame's `u32`.
    pub fn max_payload_bytes(&self) -> usize {
        let room = self
            .segment_bytes
            .saturating_sub(SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64);
        room.min(u64::from(u32::MAX)) as usize
    }
}
