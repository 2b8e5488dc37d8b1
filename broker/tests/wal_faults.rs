//! The write-ahead log on a simulated disk (`wal::sim::SimStorage`) that
//! fails on purpose: failed unlinks, fsyncs, writes and creations, a full
//! disk, short writes, process crashes and power loss. Deterministic: the
//! faults are scripted, or drawn from a printed seed.
//!
//! Every test name starts with `wal_`, so `cargo test -p blipmq-broker wal`
//! runs these with the rest of the log's tests.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blipmq_broker::wal::sim::{errno, Fault, Op, SimStorage};
use blipmq_broker::wal::{FsyncPolicy, Lsn, Wal, WalConfig, WalError, WalHealth, QUARANTINE_DIR};

const DIR: &str = "/data/wal";

fn config(segment_bytes: u64) -> WalConfig {
    WalConfig {
        dir: PathBuf::from(DIR),
        segment_bytes,
        fsync_policy: FsyncPolicy::Always,
        fsync_interval_ms: 5,
        max_bytes: 0,
    }
}

fn open(sim: &SimStorage, segment_bytes: u64) -> (Wal, blipmq_broker::wal::Recovery) {
    Wal::open_with(config(segment_bytes), Arc::new(sim.clone())).expect("open")
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("record-{i}-").into_bytes();
    p.resize(200, b'a' + (i % 26) as u8);
    p
}

fn replay(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    let mut out = Vec::new();
    wal.replay(0, |lsn, _, payload| {
        out.push((lsn, payload.to_vec()));
        ControlFlow::Continue(())
    })
    .expect("replay");
    out
}

fn segments(sim: &SimStorage) -> Vec<PathBuf> {
    sim.files()
        .into_iter()
        .filter(|p| p.parent() == Some(Path::new(DIR)))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect()
}

fn first_lsn(path: &Path) -> Lsn {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Appends `payload`, trying again while the log refuses (it retries its
/// rollback on its own); panics if it has not recovered in 10 s.
async fn append_once_it_recovers(wal: &Wal, payload: Vec<u8>) -> Lsn {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match wal.append(1, payload.clone()).await {
            Ok(lsn) => return lsn,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("never recovered: {e}"),
        }
    }
}

/// The process is killed: nothing more reaches the disk; what was written
/// stays in the page cache.
fn kill(sim: &SimStorage, wal: Wal) {
    sim.crash();
    drop(wal);
    sim.restart();
}

/// The machine loses power: only what was fsynced survives.
fn pull_the_plug(sim: &SimStorage, wal: Wal) {
    sim.power_loss();
    drop(wal);
    sim.restart();
}

#[tokio::test]
async fn wal_a_failed_segment_deletion_keeps_it_and_everything_after_it() {
    let sim = SimStorage::new(1);
    let (wal, _) = open(&sim, 4096);
    for i in 1..=120 {
        assert_eq!(wal.append(1, payload(i)).await.unwrap(), i);
    }
    let before = segments(&sim);
    assert!(before.len() >= 6, "{} segments", before.len());
    // The second-oldest segment cannot be deleted (once).
    let stubborn = before[1].clone();
    sim.inject(
        Fault::new(Op::Remove, errno::EPERM)
            .on(stubborn.to_str().unwrap())
            .times(1),
    );
    let everything = wal.next_lsn();
    let error = wal.release_before(everything).unwrap_err();
    assert!(error.to_string().contains("delete"), "{error}");
    assert_eq!(wal.stats().delete_failures, 1);
    // Oldest first, and nothing newer than the one that failed went.
    let after = segments(&sim);
    assert_eq!(after, before[1..].to_vec());
    assert_eq!(wal.first_lsn(), Some(first_lsn(&stubborn)));

    // A restart finds a contiguous log: no hole, no quarantine, every record
    // from the stubborn segment on.
    kill(&sim, wal);
    let (wal, recovery) = open(&sim, 4096);
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
    assert!(recovery.quarantined_segments.is_empty());
    let lsns: Vec<Lsn> = replay(&wal).iter().map(|r| r.0).collect();
    assert_eq!(lsns, (first_lsn(&stubborn)..=120).collect::<Vec<_>>());
    // The next release deletes it, and the rest, in order.
    assert!(wal.release_before(wal.next_lsn()).unwrap() >= after.len() - 1);
    assert_eq!(segments(&sim).len(), 1);
}

#[tokio::test]
async fn wal_power_loss_during_deletions_leaves_a_suffix_of_the_log() {
    for fail_after in 0..4 {
        let sim = SimStorage::new(2);
        let (wal, _) = open(&sim, 4096);
        for i in 1..=100 {
            wal.append(1, payload(i)).await.unwrap();
        }
        // The directory fsync after the `fail_after`th deletion fails: the
        // deletions after it never happen, and a power loss undoes what was
        // not made durable.
        sim.inject(Fault::new(Op::SyncDir, errno::EIO).after(fail_after));
        let _ = wal.release_before(60);
        pull_the_plug(&sim, wal);
        sim.clear_faults();
        let (wal, recovery) = open(&sim, 4096);
        assert!(
            recovery.damage.is_empty(),
            "{fail_after}: {:?}",
            recovery.damage
        );
        let lsns: Vec<Lsn> = replay(&wal).iter().map(|r| r.0).collect();
        let first = lsns[0];
        assert!(first <= 60, "{fail_after}: a needed record went");
        assert_eq!(lsns, (first..=100).collect::<Vec<_>>(), "{fail_after}");
    }
}

#[tokio::test]
async fn wal_a_second_process_cannot_open_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = WalConfig {
        dir: tmp.path().join("wal"),
        ..config(4096)
    };
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    wal.append(1, "mine").await.unwrap();
    match Wal::open(cfg.clone()) {
        Err(WalError::Locked { holder, .. }) => {
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("a second open must be refused, got {other:?}"),
    }
    // The first one is unharmed, and the lock goes with it.
    wal.append(1, "still mine").await.unwrap();
    wal.close().unwrap();
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 2);
    drop(wal);

    // A killed process's lock goes with it.
    let sim = SimStorage::new(3);
    let (wal, _) = open(&sim, 4096);
    assert!(matches!(
        Wal::open_with(config(4096), Arc::new(sim.clone())),
        Err(WalError::Locked { .. })
    ));
    kill(&sim, wal);
    let (_wal, _) = open(&sim, 4096);
}

#[tokio::test]
async fn wal_a_failed_fsync_fails_its_batch_and_the_next_one_succeeds() {
    let sim = SimStorage::new(4);
    let (wal, _) = open(&sim, 1 << 20);
    assert_eq!(wal.append(1, payload(1)).await.unwrap(), 1);
    sim.inject(Fault::new(Op::Sync, errno::EIO).times(1));
    let error = wal.append(1, payload(2)).await.unwrap_err();
    assert!(matches!(error, WalError::Io { .. }), "{error}");
    assert!(matches!(wal.health(), WalHealth::Failing(_)));
    // Rolled back: the failed record's LSN is free again (it was never
    // confirmed), and the log takes appends.
    assert_eq!(wal.append(1, payload(3)).await.unwrap(), 2);
    assert_eq!(wal.health(), WalHealth::Ok);
    assert_eq!(wal.stats().write_failures, 1);
    assert_eq!(wal.stats().repairs, 1);
    pull_the_plug(&sim, wal);
    let (wal, recovery) = open(&sim, 1 << 20);
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
    assert_eq!(replay(&wal), vec![(1, payload(1)), (2, payload(3))]);
}

#[tokio::test]
async fn wal_a_full_disk_is_storage_full_until_space_returns() {
    let sim = SimStorage::new(5);
    let (wal, _) = open(&sim, 1 << 20);
    wal.append(1, payload(1)).await.unwrap();
    sim.inject(Fault::short_write(errno::ENOSPC));
    for i in 2..5 {
        let error = wal.append(1, payload(i)).await.unwrap_err();
        assert!(error.is_storage_full(), "{error}");
        assert!(matches!(wal.health(), WalHealth::NoSpace(_)));
    }
    // Space is back: the next append goes through, at the next LSN.
    sim.clear_faults();
    assert_eq!(wal.append(1, payload(5)).await.unwrap(), 2);
    assert_eq!(wal.health(), WalHealth::Ok);
    // The half-written records were cut off: nothing to repair on restart.
    kill(&sim, wal);
    let (wal, recovery) = open(&sim, 1 << 20);
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
    assert_eq!(replay(&wal), vec![(1, payload(1)), (2, payload(5))]);
}

#[tokio::test]
async fn wal_out_of_file_descriptors_at_rotation_fails_the_batch_only() {
    let sim = SimStorage::new(6);
    let (wal, _) = open(&sim, 4096);
    let mut confirmed = Vec::new();
    sim.inject(Fault::new(Op::Create, errno::EMFILE).times(2));
    let mut refused = 0;
    for i in 1..=60 {
        match wal.append(1, payload(i)).await {
            Ok(lsn) => confirmed.push((lsn, payload(i))),
            Err(e) => {
                assert!(e.to_string().contains("create"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2);
    pull_the_plug(&sim, wal);
    let (wal, recovery) = open(&sim, 4096);
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
    assert_eq!(replay(&wal), confirmed);
}

#[tokio::test]
async fn wal_a_failing_rollback_refuses_appends_until_it_succeeds() {
    let sim = SimStorage::new(7);
    let (wal, _) = open(&sim, 1 << 20);
    wal.append(1, payload(1)).await.unwrap();
    // The write fails, and so do the first rollbacks (their truncation).
    sim.inject(Fault::new(Op::Write, errno::EIO).times(1));
    sim.inject(Fault::new(Op::SetLen, errno::EIO).times(3));
    assert!(wal.append(1, payload(2)).await.is_err());
    assert!(matches!(wal.health(), WalHealth::Failing(_)));
    // Appends are refused at once while it is broken; the retries go on by
    // themselves and it comes back.
    let lsn = append_once_it_recovers(&wal, payload(3)).await;
    assert_eq!(lsn, 2);
    assert_eq!(wal.stats().repairs, 1);
    kill(&sim, wal);
    let (wal, _) = open(&sim, 1 << 20);
    assert_eq!(replay(&wal), vec![(1, payload(1)), (2, payload(3))]);
}

#[tokio::test]
async fn wal_quarantine_copies_survive_a_power_loss_right_after_recovery() {
    let sim = SimStorage::new(8);
    let (wal, _) = open(&sim, 1 << 20);
    for i in 1..=10 {
        wal.append(1, payload(i)).await.unwrap();
    }
    kill(&sim, wal);
    // Flip a byte in the middle of the only segment.
    let segment = segments(&sim)[0].clone();
    let mut bytes = sim.read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    sim.write(&segment, &bytes);
    let (wal, recovery) = open(&sim, 1 << 20);
    let saved = recovery.damage[0].saved_to.clone().expect("saved");
    pull_the_plug(&sim, wal);
    // The quarantine directory and the copy in it were made durable before
    // the segment was cut.
    assert!(sim.read(&saved).is_some_and(|copy| !copy.is_empty()));
    assert!(saved.starts_with(Path::new(DIR).join(QUARANTINE_DIR)));
    let (_wal, recovery) = open(&sim, 1 << 20);
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
}

#[tokio::test]
async fn wal_a_release_while_a_failed_batch_is_rolled_back_keeps_what_the_rollback_needs() {
    let sim = SimStorage::new(9);
    let (wal, _) = open(&sim, 4096);
    // 18 records of 217 bytes fill the first segment; the 19th starts the
    // second, 00000000000000000019.wal.
    for i in 1..=18 {
        wal.append(1, payload(i)).await.unwrap();
    }
    assert_eq!(segments(&sim).len(), 1);
    // The 19th's fsync in the new segment fails, and so do the first
    // truncations of the rollback, which must go back to the first segment.
    sim.inject(Fault::new(Op::Sync, errno::EIO).on("0019.wal").times(1));
    sim.inject(Fault::new(Op::SetLen, errno::EIO).times(2));
    assert!(wal.append(1, payload(19)).await.is_err());
    // Whoever releases everything meanwhile must leave that segment alone,
    // though all its records are confirmed and it is sealed for now.
    let _ = wal.release_before(Lsn::MAX);
    let lsn = append_once_it_recovers(&wal, payload(20)).await;
    assert_eq!(lsn, 19);
    pull_the_plug(&sim, wal);
    let (wal, recovery) = open(&sim, 4096);
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
    let replayed = replay(&wal);
    assert_eq!(replayed.last().unwrap(), &(19, payload(20)));
}
