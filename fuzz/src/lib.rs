//! What the fuzz targets in `fuzz_targets/` share: the input formats, the
//! harnesses and the oracle, kept here so that `make-corpus` and the unit
//! tests (`cargo test` in this directory, on stable) use the same code.

pub mod broker;
pub mod frames;
pub mod wal_check;
pub mod wal_format;
pub mod wal_input;
pub mod wal_model;

use std::path::PathBuf;

/// A new temporary directory for one run. Under /dev/shm when there is one:
/// recovery fsyncs, and on a real disk fsyncs would dominate every run.
/// `BLIPMQ_FUZZ_TMP` picks another parent.
pub fn scratch_dir(what: &str) -> tempfile::TempDir {
    let parent = std::env::var_os("BLIPMQ_FUZZ_TMP")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(&format!("blipmq-fuzz-{what}-"))
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("a temp dir in {}: {e}", parent.display()))
}
