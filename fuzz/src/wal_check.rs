//! The `wal_recovery` target: write the directory an input describes, open
//! the real `Wal` on it, and hold it to the promises of its module docs.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

use blipmq_broker::wal::{Recovery, Wal, WalConfig, WalError, MIN_SEGMENT_BYTES};

use crate::wal_format::{file_name, Record};
use crate::{scratch_dir, wal_input, wal_model};

const APPENDED_KIND: u8 = 0xA5;
const APPENDED: &[u8] = b"appended after recovery";

pub fn run(input: &[u8]) {
    let files = wal_input::files(input);
    let dir = scratch_dir("wal");
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(file_name(*name)), bytes).expect("write a segment");
    }
    let config = WalConfig {
        dir: dir.path().to_path_buf(),
        // The smallest segments, so that the append after recovery may
        // rotate out of a large recovered segment.
        segment_bytes: MIN_SEGMENT_BYTES,
        max_bytes: 0,
        ..WalConfig::default()
    };

    // The temp directory is healthy: any error is about the files' content,
    // and damage is never a reason to refuse to start.
    let (wal, recovery) =
        Wal::open(config.clone()).unwrap_or_else(|e| panic!("open refused a damaged log: {e}"));
    let records = replay_all(&wal, "the first replay after open");
    for pair in records.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "replay went from LSN {} to {}",
            pair[0].0,
            pair[1].0
        );
    }
    let expected = wal_model::recover(&files);
    assert_eq!(
        records, expected.records,
        "recovery kept other records than the intact prefix of each segment"
    );
    check_report(&recovery, &records, &expected);
    check_nothing_lost(&recovery, &files);

    let appended = block_on(wal.append(APPENDED_KIND, APPENDED));
    let mut after = records;
    if recovery.next_lsn == wal_model::LSN_CEILING {
        // A log at the top of the LSN space (only a file name near it gets
        // there) takes no more records, and says so.
        assert!(
            matches!(appended, Err(WalError::Exhausted { .. })),
            "append at the LSN ceiling: {appended:?}"
        );
    } else {
        let lsn = appended.unwrap_or_else(|e| panic!("append after recovery failed: {e}"));
        if let Some(&(last, _, _)) = after.last() {
            assert!(
                lsn > last,
                "append got LSN {lsn}, replay had reached {last}"
            );
        }
        assert_eq!(
            lsn, recovery.next_lsn,
            "append got another LSN than promised"
        );
        after.push((lsn, APPENDED_KIND, APPENDED.to_vec()));
    }
    assert_eq!(replay_all(&wal, "replay after the append"), after);
    wal.close().expect("close");

    // Recovery leaves a log that the next start finds clean and whole.
    let (wal, again) = Wal::open(config).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    assert!(
        again.damage.is_empty() && again.quarantined_segments.is_empty(),
        "the second open repaired again: {again:?}"
    );
    assert_eq!(replay_all(&wal, "replay after reopening"), after);
}

fn replay_all(wal: &Wal, what: &str) -> Vec<Record> {
    let mut records = Vec::new();
    wal.replay(0, |lsn, kind, payload| {
        records.push((lsn, kind, payload.to_vec()));
        ControlFlow::Continue(())
    })
    .unwrap_or_else(|e| panic!("{what} failed: {e}"));
    records
}

/// The report says what recovery did.
fn check_report(recovery: &Recovery, records: &[Record], expected: &wal_model::Expected) {
    assert_eq!(recovery.records, records.len() as u64, "{recovery:?}");
    assert_eq!(
        recovery.first_lsn,
        records.first().map(|r| r.0),
        "{recovery:?}"
    );
    assert_eq!(
        recovery.last_lsn,
        records.last().map(|r| r.0),
        "{recovery:?}"
    );
    // An empty log starts a segment at LSN 1.
    assert_eq!(
        recovery.segments,
        expected.kept.len().max(1),
        "{recovery:?}"
    );
    let quarantined: Vec<u64> = recovery
        .quarantined_segments
        .iter()
        .map(|path| name_lsn(path))
        .collect();
    assert_eq!(quarantined, expected.quarantined, "{recovery:?}");
}

/// What recovery cut or moved is in quarantine, byte for byte.
fn check_nothing_lost(recovery: &Recovery, files: &BTreeMap<u64, Vec<u8>>) {
    for path in &recovery.quarantined_segments {
        let original = &files[&name_lsn(path)];
        let moved = std::fs::read(path).expect("read a quarantined segment");
        assert!(
            &moved == original,
            "{} differs from the segment",
            path.display()
        );
    }
    for damage in &recovery.damage {
        let Some(saved) = &damage.saved_to else {
            continue;
        };
        let original = &files[&name_lsn(&damage.segment)];
        let tail = original.get(damage.offset as usize..).unwrap_or_default();
        let copy = std::fs::read(saved).expect("read a saved tail");
        assert!(
            copy == tail,
            "{} is not the {} bytes cut at {}",
            saved.display(),
            tail.len(),
            damage.offset
        );
    }
}

/// The first LSN a segment's file name gives (`{lsn:020}.wal`).
fn name_lsn(path: &Path) -> u64 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.get(..20)
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not a segment name: {}", path.display()))
}

/// The append future needs no reactor, only something to poll it.
fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
        })
        .block_on(future)
}
