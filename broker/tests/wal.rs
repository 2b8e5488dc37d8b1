//! The write-ahead log, through its public API and its files on disk:
//! round trips, rotation, group commit, torn tails, bit flips, quarantine,
//! retention, the size cap, the fsync policies, and real crashes (SIGKILL of
//! a child process appending under `always`).
//!
//! Every test name starts with `wal_`, so `cargo test -p blipmq-broker wal`
//! runs all of them.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_broker::wal::{FsyncPolicy, Lsn, Wal, WalConfig, WalError, WalHealth, QUARANTINE_DIR};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SEGMENT_HEADER: u64 = 16;
const RECORD_HEADER: u64 = 17;

fn config(dir: &Path, segment_bytes: u64, policy: FsyncPolicy) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        fsync_policy: policy,
        fsync_interval_ms: 5,
        max_bytes: 0,
    }
}

/// A deterministic payload of 10..=209 bytes for record number `i`.
fn payload(i: u64) -> Vec<u8> {
    let len = 10 + (i * 37 % 200) as usize;
    let mut p = format!("record-{i}-").into_bytes();
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    p
}

type Rec = (Lsn, u8, Vec<u8>);

fn replay_all(wal: &Wal, from: Lsn) -> Vec<Rec> {
    let mut out = Vec::new();
    wal.replay(from, |lsn, kind, payload| {
        out.push((lsn, kind, payload.to_vec()));
        ControlFlow::Continue(())
    })
    .expect("replay");
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn first_lsn_of(path: &Path) -> Lsn {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn len_of(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// File offsets of the frames in a segment, by LSN (parsing the format the
/// module documents).
fn frame_offsets(path: &Path) -> Vec<(Lsn, u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER as usize;
    let mut out = Vec::new();
    while at + RECORD_HEADER as usize <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        let total = RECORD_HEADER as usize + len;
        out.push((lsn, at as u64, total as u64));
        at += total;
    }
    out
}

/// Appends records `from..from + n` (payload(i), kind i % 7), one awaited
/// append at a time, checking the LSNs.
async fn append_range(wal: &Wal, from: u64, n: u64) {
    for i in from..from + n {
        let lsn = wal.append((i % 7) as u8, payload(i)).await.unwrap();
        assert_eq!(lsn, i);
    }
}

fn assert_range(records: &[Rec], from: u64, to_inclusive: u64) {
    assert_eq!(
        records.len() as u64,
        to_inclusive + 1 - from,
        "records {from}..={to_inclusive}"
    );
    for (record, i) in records.iter().zip(from..) {
        assert_eq!(record.0, i);
        assert_eq!(record.1, (i % 7) as u8, "kind of {i}");
        assert_eq!(record.2, payload(i), "payload of {i}");
    }
}

#[tokio::test]
async fn wal_round_trip_append_reopen_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, recovery) = Wal::open(config(tmp.path(), 1 << 20, FsyncPolicy::Always)).unwrap();
    assert_eq!(recovery.records, 0);
    assert_eq!(recovery.next_lsn, 1);
    assert_eq!(recovery.last_lsn, None);
    assert!(!recovery.torn_tail);
    assert_eq!(wal.last_lsn(), None);
    append_range(&wal, 1, 100).await;
    assert_eq!(wal.first_lsn(), Some(1));
    assert_eq!(wal.last_lsn(), Some(100));
    // Replay works on the open WAL too.
    assert_range(&replay_all(&wal, 0), 1, 100);
    // An empty payload is a record too.
    assert_eq!(wal.append(9, Bytes::new()).await.unwrap(), 101);
    let stats = wal.stats();
    assert_eq!(stats.records_appended, 101);
    assert_eq!(stats.next_lsn, 102);
    wal.close().unwrap();

    let (wal, recovery) = Wal::open(config(tmp.path(), 1 << 20, FsyncPolicy::Always)).unwrap();
    assert_eq!(recovery.records, 101);
    assert_eq!(
        (recovery.first_lsn, recovery.last_lsn),
        (Some(1), Some(101))
    );
    assert_eq!(recovery.next_lsn, 102);
    assert_eq!(recovery.truncated_bytes, 0);
    assert!(recovery.damage.is_empty());
    let all = replay_all(&wal, 0);
    assert_range(&all[..100], 1, 100);
    assert_eq!(all[100], (101, 9, Vec::new()));
    assert_range(&replay_all(&wal, 50)[..51], 50, 100);
    // The callback can stop the replay.
    let mut seen = Vec::new();
    let visited = wal
        .replay(10, |lsn, _, _| {
            seen.push(lsn);
            if seen.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((visited, seen), (3, vec![10, 11, 12]));
    assert_eq!(wal.append(1, payload(102)).await.unwrap(), 102);
}

#[tokio::test]
async fn wal_append_batch_is_contiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(tmp.path(), 1 << 20, FsyncPolicy::Always)).unwrap();
    append_range(&wal, 1, 3).await;
    let batch: Vec<(u8, Bytes)> = (4..14)
        .map(|i| ((i % 7) as u8, payload(i).into()))
        .collect();
    assert_eq!(wal.append_batch(batch).await.unwrap(), 4);
    assert_eq!(wal.append_batch(Vec::new()).await.unwrap(), 14);
    append_range(&wal, 14, 1).await;
    assert_range(&replay_all(&wal, 0), 1, 14);
    // A batch must fit in one segment.
    let big: Vec<(u8, Bytes)> = (0..40)
        .map(|_| (0, Bytes::from(vec![0u8; 40_000])))
        .collect();
    assert!(matches!(
        wal.append_batch(big).await,
        Err(WalError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn wal_rotation_across_many_segments_keeps_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Never);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 1000).await;
    let files = segment_files(tmp.path());
    assert!(files.len() > 20, "{} segments", files.len());
    assert_eq!(wal.stats().segments, files.len() as u64);
    for file in &files {
        assert!(
            len_of(file) <= 4096,
            "{} is {} bytes",
            file.display(),
            len_of(file)
        );
    }
    // Segment names are the LSN of their first record, contiguous.
    let mut expected = 1;
    for file in &files {
        assert_eq!(first_lsn_of(file), expected);
        expected += frame_offsets(file).len() as u64;
    }
    assert_eq!(expected, 1001);
    assert_range(&replay_all(&wal, 0), 1, 1000);
    wal.close().unwrap();

    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 1000);
    assert_eq!(recovery.segments, files.len());
    assert!(recovery.damage.is_empty());
    assert_range(&replay_all(&wal, 0), 1, 1000);
    assert_range(&replay_all(&wal, 777), 777, 1000);
    // Replay from a segment boundary.
    let boundary = first_lsn_of(&files[5]);
    assert_range(&replay_all(&wal, boundary), boundary, 1000);
    assert!(replay_all(&wal, 1001).is_empty());
    append_range(&wal, 1001, 10).await;
    assert_range(&replay_all(&wal, 990), 990, 1010);
}

#[test]
fn wal_group_commit_batches_concurrent_appends_into_few_fsyncs() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(tmp.path(), 1 << 20, FsyncPolicy::Always)).unwrap();
    let wal = Arc::new(wal);
    const TASKS: u64 = 200;
    const PER_TASK: u64 = 20;
    let started = Instant::now();
    let mut lsns: Vec<Lsn> = runtime.block_on(async {
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let wal = Arc::clone(&wal);
            handles.push(tokio::spawn(async move {
                let mut lsns = Vec::new();
                for i in 0..PER_TASK {
                    let body = format!("task {t} message {i}");
                    lsns.push(wal.append(t as u8, body).await.unwrap());
                }
                lsns
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    lsns.sort_unstable();
    let total = TASKS * PER_TASK;
    assert_eq!(lsns, (1..=total).collect::<Vec<_>>());
    let stats = wal.stats();
    println!(
        "group commit: {} records from {TASKS} concurrent tasks, {} fsyncs, {} write batches, {:.1} records per fsync, {:.0} ms",
        stats.records_appended,
        stats.fsyncs,
        stats.write_batches,
        stats.records_appended as f64 / stats.fsyncs as f64,
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(stats.records_appended, total);
    // Each task waits for its fsync before its next append, so a batch holds
    // at most TASKS records; with 200 in flight it should hold many.
    assert!(
        stats.fsyncs * 10 <= total,
        "{} fsyncs for {total} records",
        stats.fsyncs
    );
    assert_eq!(stats.fsyncs, stats.write_batches);
    // Every confirmed record is on disk, in one piece.
    let replayed = replay_all(&wal, 0);
    assert_eq!(replayed.len() as u64, total);
}

#[tokio::test]
async fn wal_submit_fixes_order_and_close_flushes_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Always);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    let mut pending = Vec::new();
    for i in 1..=100 {
        pending.push(wal.submit((i % 7) as u8, payload(i)).await.unwrap());
    }
    // An append future not yet polled when the WAL closes fails cleanly.
    let late = wal.append(0, "late");
    // Blocks this (test) thread for one batch and one fsync.
    wal.close().unwrap();
    for (i, p) in (1..).zip(pending) {
        assert_eq!(p.await.unwrap(), i, "submit order is LSN order");
    }
    assert!(matches!(late.await, Err(WalError::Closed)));
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 100);
    assert_range(&replay_all(&wal, 0), 1, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_submit_close_under_multi_thread() {
    // From async code on the multi-thread runtime, close inside
    // `block_in_place` (it joins the writer thread).
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(tmp.path(), 1 << 20, FsyncPolicy::Interval)).unwrap();
    let p = wal.submit(1, "x").await.unwrap();
    tokio::task::block_in_place(|| wal.close()).unwrap();
    assert_eq!(p.await.unwrap(), 1);
}

#[tokio::test]
async fn wal_too_large_payload_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Never);
    let max = cfg.max_payload_bytes();
    assert_eq!(max, 4096 - 33);
    let (wal, _) = Wal::open(cfg).unwrap();
    assert!(matches!(
        wal.append(0, vec![0u8; max + 1]).await,
        Err(WalError::TooLarge { len, .. }) if len == max + 1
    ));
    // The largest record fills a segment exactly, and forces rotations.
    assert_eq!(wal.append(0, vec![1u8; max]).await.unwrap(), 1);
    assert_eq!(wal.append(0, vec![2u8; max]).await.unwrap(), 2);
    assert_eq!(wal.append(0, vec![3u8; 1]).await.unwrap(), 3);
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 3);
    assert_eq!(len_of(&files[0]), 4096);
    let replayed = replay_all(&wal, 0);
    assert_eq!(replayed[1].2, vec![2u8; max]);
}

/// Writes records 1..=n into one segment and closes.
async fn write_one_segment(dir: &Path, n: u64) -> PathBuf {
    let (wal, _) = Wal::open(config(dir, 1 << 20, FsyncPolicy::Never)).unwrap();
    append_range(&wal, 1, n).await;
    wal.close().unwrap();
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

#[tokio::test]
async fn wal_torn_tail_is_truncated_and_appends_continue_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_one_segment(tmp.path(), 50).await;
    let frames = frame_offsets(&path);
    let (_, last_at, last_len) = frames[49];
    // Cut inside the last record's header and inside its payload.
    for cut in [
        last_at + 3,
        last_at + RECORD_HEADER + 2,
        last_at + last_len - 1,
    ] {
        let copy = tempfile::tempdir().unwrap();
        let seg = copy.path().join(path.file_name().unwrap());
        fs::copy(&path, &seg).unwrap();
        truncate(&seg, cut);
        let cfg = config(copy.path(), 1 << 20, FsyncPolicy::Always);
        let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
        assert!(recovery.torn_tail, "cut at {cut}");
        assert_eq!(recovery.truncated_bytes, cut - last_at);
        assert_eq!(recovery.records, 49);
        assert_eq!(recovery.last_lsn, Some(49));
        assert_eq!(recovery.damage.len(), 1);
        assert!(recovery.damage[0].torn);
        assert_eq!(recovery.damage[0].saved_to, None);
        assert!(recovery.quarantined_segments.is_empty());
        assert_eq!(wal.stats().torn_tail_truncations, 1);
        assert_eq!(len_of(&seg), last_at, "truncated at the last good record");
        // The lost LSN is reused by the next append, after good data only.
        append_range(&wal, 50, 5).await;
        wal.close().unwrap();
        let (wal, recovery) = Wal::open(cfg).unwrap();
        assert!(recovery.damage.is_empty());
        assert_range(&replay_all(&wal, 0), 1, 54);
    }
}

#[tokio::test]
async fn wal_bit_flip_in_last_segment_cuts_at_the_record_before_and_never_reuses_its_lsns() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_one_segment(tmp.path(), 10).await;
    let frames = frame_offsets(&path);
    let (_, fifth_at, fifth_len) = frames[4];
    let file_len = len_of(&path);
    // A flip in the payload of record 5 (of 10).
    flip_byte(&path, fifth_at + fifth_len - 2);
    let cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Always);
    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.truncated_bytes, file_len - fifth_at);
    let damage = &recovery.damage[0];
    assert!(!damage.torn);
    assert!(damage.reason.contains("CRC"), "{}", damage.reason);
    assert_eq!(damage.offset, fifth_at);
    assert_eq!(wal.stats().corruptions, 1);
    // The cut bytes (the damaged record and the good ones after it) are kept.
    let saved = damage.saved_to.as_ref().expect("saved");
    assert!(saved.starts_with(tmp.path().join(QUARANTINE_DIR)));
    assert_eq!(len_of(saved), file_len - fifth_at);
    // LSNs 5..=10 were handed out (and maybe confirmed, delivered, acked):
    // the log skips past every LSN the cut bytes could have held.
    let skipped = damage.skipped.clone().expect("a skip");
    assert_eq!(skipped.start, 5);
    assert!(skipped.end > 10, "{skipped:?}");
    assert_range(&replay_all(&wal, 0), 1, 4);
    let next = wal.append(0, payload(11)).await.unwrap();
    assert_eq!(next, skipped.end);
    wal.close().unwrap();
    // The gap is recorded in the log: the next start finds nothing wrong.
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert!(recovery.damage.is_empty(), "{:?}", recovery.damage);
    let lsns: Vec<Lsn> = replay_all(&wal, 0).iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![1, 2, 3, 4, next]);
    assert_eq!(wal.append(0, payload(12)).await.unwrap(), next + 1);
}

#[tokio::test]
async fn wal_bit_flip_in_a_sealed_segment_costs_only_the_records_it_hides() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Never);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 300).await;
    wal.close().unwrap();
    let files = segment_files(tmp.path());
    assert!(files.len() >= 6, "{} segments", files.len());
    let victim = &files[2];
    let next_first = first_lsn_of(&files[3]);
    let frames = frame_offsets(victim);
    let (bad_lsn, bad_at, _) = frames[frames.len() / 2];
    // Flip a bit in the LSN field of a middle record.
    flip_byte(victim, bad_at + 9);

    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    let lost = next_first - bad_lsn;
    assert_eq!(recovery.records, 300 - lost);
    assert_eq!(recovery.segments, files.len(), "every segment is kept");
    assert!(recovery.quarantined_segments.is_empty());
    assert_eq!(recovery.damage.len(), 2, "{:?}", recovery.damage);
    // The damaged tail is saved; the hole it leaves is explicit.
    assert!(recovery.damage[0].saved_to.is_some());
    assert_eq!(recovery.damage[1].skipped, Some(bad_lsn..next_first));
    let lsns: Vec<Lsn> = replay_all(&wal, 0).iter().map(|r| r.0).collect();
    let expected: Vec<Lsn> = (1..bad_lsn).chain(next_first..=300).collect();
    assert_eq!(lsns, expected);
    // The log goes on after its newest record.
    append_range(&wal, 301, 20).await;
    wal.close().unwrap();
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert!(recovery.damage.is_empty() && recovery.quarantined_segments.is_empty());
    assert_eq!(replay_all(&wal, 0).len() as u64, 320 - lost);
}

#[tokio::test]
async fn wal_missing_middle_segment_is_a_hole_not_the_end_of_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Never);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 200).await;
    wal.close().unwrap();
    let files = segment_files(tmp.path());
    fs::remove_file(&files[1]).unwrap();
    let missing = first_lsn_of(&files[1])..first_lsn_of(&files[2]);
    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.last_lsn, Some(200));
    assert!(recovery.quarantined_segments.is_empty());
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(recovery.damage.len(), 1);
    assert_eq!(recovery.damage[0].skipped, Some(missing.clone()));
    let lsns: Vec<Lsn> = replay_all(&wal, 0).iter().map(|r| r.0).collect();
    let expected: Vec<Lsn> = (1..=200).filter(|l| !missing.contains(l)).collect();
    assert_eq!(lsns, expected);
    append_range(&wal, 201, 3).await;
    wal.close().unwrap();
    let (_, recovery) = Wal::open(cfg).unwrap();
    assert!(recovery.damage.is_empty());
}

#[tokio::test]
async fn wal_empty_and_headerless_segment_files() {
    // A lone zero-length segment: nothing lost, header written.
    let tmp = tempfile::tempdir().unwrap();
    let seg = tmp.path().join("00000000000000000001.wal");
    fs::write(&seg, b"").unwrap();
    let cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Always);
    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.records, 0);
    assert!(!recovery.torn_tail && recovery.damage.is_empty());
    assert_eq!(len_of(&seg), SEGMENT_HEADER);
    append_range(&wal, 1, 3).await;
    wal.close().unwrap();

    // A zero-length segment after a full one (a crash right after rotation).
    let next = tmp.path().join("00000000000000000004.wal");
    fs::write(&next, b"").unwrap();
    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.records, 3);
    assert_eq!(recovery.segments, 2);
    assert!(recovery.damage.is_empty());
    append_range(&wal, 4, 2).await;
    assert_eq!(
        frame_offsets(&next).len(),
        2,
        "appends go to the new segment"
    );
    wal.close().unwrap();
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    assert_range(&replay_all(&wal, 0), 1, 5);
    wal.close().unwrap();

    // A partial header: torn, rewritten.
    let partial = tmp.path().join("00000000000000000006.wal");
    fs::write(&partial, b"BLIPW").unwrap();
    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    assert!(recovery.torn_tail);
    assert_eq!(recovery.truncated_bytes, 5);
    assert_eq!(recovery.records, 5);
    append_range(&wal, 6, 1).await;
    assert_range(&replay_all(&wal, 0), 1, 6);

    // Other files are left alone.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("notes.txt"), b"hi").unwrap();
    fs::write(other.path().join("1.wal"), b"not a segment").unwrap();
    let (wal, recovery) = Wal::open(config(other.path(), 4096, FsyncPolicy::Never)).unwrap();
    assert_eq!(recovery.records, 0);
    assert!(recovery.damage.is_empty());
    drop(wal);
    assert!(other.path().join("1.wal").exists());
}

#[tokio::test]
async fn wal_bad_segment_header_is_cut_and_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_one_segment(tmp.path(), 5).await;
    flip_byte(&path, 2);
    let size = len_of(&path);
    let (wal, recovery) = Wal::open(config(tmp.path(), 1 << 20, FsyncPolicy::Always)).unwrap();
    assert_eq!(recovery.records, 0);
    assert_eq!(recovery.truncated_bytes, size);
    assert!(recovery.damage[0].reason.contains("magic"));
    assert_eq!(len_of(recovery.damage[0].saved_to.as_ref().unwrap()), size);
    // LSNs 1..=5 may have been handed out: the log goes on past them.
    let next = wal.append(0, "again").await.unwrap();
    assert!(next > 5, "{next}");
}

#[tokio::test]
async fn wal_release_before_deletes_only_fully_released_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Always);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 400).await;
    let files = segment_files(tmp.path());
    let n = files.len();
    assert!(n >= 8);
    let size_before = wal.stats().current_bytes;
    let on_disk: u64 = files.iter().map(|f| len_of(f)).sum();
    assert_eq!(size_before, on_disk);

    // Releasing below the first LSN of segment 3, plus one record into it,
    // deletes segments 0..3 and keeps segment 3.
    let boundary = first_lsn_of(&files[3]);
    assert_eq!(wal.release_before(boundary + 1).unwrap(), 3);
    assert_eq!(segment_files(tmp.path()), files[3..].to_vec());
    // Exactly at a boundary: the segment ending just below it goes.
    assert_eq!(wal.release_before(first_lsn_of(&files[5])).unwrap(), 2);
    assert_eq!(segment_files(tmp.path()), files[5..].to_vec());
    // Nothing more to do for a lower LSN.
    assert_eq!(wal.release_before(2).unwrap(), 0);
    let stats = wal.stats();
    assert_eq!(stats.segments_deleted, 5);
    assert_eq!(stats.segments, (n - 5) as u64);
    let on_disk: u64 = segment_files(tmp.path()).iter().map(|f| len_of(f)).sum();
    assert_eq!(stats.current_bytes, on_disk);
    assert_eq!(wal.first_lsn(), Some(first_lsn_of(&files[5])));
    // Replay from 0 starts at the oldest record kept.
    let kept_from = first_lsn_of(&files[5]);
    assert_range(&replay_all(&wal, 0), kept_from, 400);

    // Releasing everything keeps the active segment.
    wal.release_before(u64::MAX).unwrap();
    assert_eq!(segment_files(tmp.path()), vec![files[n - 1].clone()]);
    assert_eq!(wal.append(0, payload(401)).await.unwrap(), 401);
    wal.close().unwrap();
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.first_lsn, Some(first_lsn_of(&files[n - 1])));
    assert_eq!(recovery.last_lsn, Some(401));
    assert!(recovery.damage.is_empty());
    assert_eq!(wal.append(0, "x").await.unwrap(), 402);
}

#[tokio::test]
async fn wal_full_fails_fast_and_release_makes_room() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 4096, FsyncPolicy::Always);
    cfg.max_bytes = 3 * 4096;
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    let body = vec![7u8; 200];
    let mut last = 0;
    let error = loop {
        match wal.append(1, body.clone()).await {
            Ok(lsn) => last = lsn,
            Err(e) => break e,
        }
        assert!(last < 1000, "never full");
    };
    assert!(
        matches!(error, WalError::Full { max, .. } if max == 3 * 4096),
        "{error}"
    );
    let stats = wal.stats();
    assert!(stats.current_bytes <= 3 * 4096);
    assert!(stats.full_rejections >= 1);
    // Still full: nothing is dropped to make room, and nothing was written.
    assert!(matches!(
        wal.append(1, body.clone()).await,
        Err(WalError::Full { .. })
    ));
    assert_eq!(wal.last_lsn(), Some(last));
    let frames = replay_all(&wal, 0);
    assert_eq!(frames.len() as u64, last);

    // The consumer releases half: appends work again.
    wal.release_before(last / 2).unwrap();
    assert!(wal.stats().current_bytes < 3 * 4096);
    let lsn = wal.append(1, body.clone()).await.unwrap();
    assert_eq!(lsn, last + 1);
    wal.close().unwrap();
    // Reopening a full log works, and it is still full.
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert!(recovery.damage.is_empty());
    assert_eq!(recovery.last_lsn, Some(last + 1));
    drop(wal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_full_under_concurrent_appends_never_exceeds_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 8192, FsyncPolicy::Never);
    cfg.max_bytes = 2 * 8192;
    let (wal, _) = Wal::open(cfg).unwrap();
    let wal = Arc::new(wal);
    let mut handles = Vec::new();
    for t in 0..50u8 {
        let wal = Arc::clone(&wal);
        handles.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut full = 0u64;
            for _ in 0..20 {
                match wal.append(t, vec![t; 100]).await {
                    Ok(_) => ok += 1,
                    Err(WalError::Full { .. }) => full += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (ok, full)
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for h in handles {
        let (o, f) = h.await.unwrap();
        ok += o;
        full += f;
    }
    assert_eq!(ok + full, 1000);
    assert!(full > 0);
    let on_disk: u64 = segment_files(tmp.path()).iter().map(|f| len_of(f)).sum();
    assert!(on_disk <= 2 * 8192, "{on_disk}");
    assert_eq!(wal.stats().current_bytes, on_disk);
    assert_eq!(wal.stats().records_appended, ok);
}

#[tokio::test]
async fn wal_interval_policy_fsyncs_within_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Interval);
    cfg.fsync_interval_ms = 20;
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 50).await;
    // Confirmed at write time: unlikely that 20 ms passed during 50 appends
    // on the page cache, but the fsync must come within the interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = wal.stats();
    assert!(stats.fsyncs >= 1, "an fsync after the interval");
    assert!(
        stats.fsyncs < 50,
        "appends are not fsynced one by one: {}",
        stats.fsyncs
    );
    // Idle: no further fsyncs (no timers without pending work).
    let idle = wal.stats().fsyncs;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wal.stats().fsyncs, idle);
    wal.close().unwrap();
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 50);
    assert_range(&replay_all(&wal, 0), 1, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_interval_policy_keeps_writing_while_fsyncs_run_in_the_background() {
    // Under `interval` the timed fsyncs run on their own thread; sealing a
    // segment waits for the one in flight. Many concurrent appends across
    // many small segments, each a few ms apart so that timed fsyncs happen
    // between rotations: every confirmed record comes back after a reopen.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 4096, FsyncPolicy::Interval);
    cfg.fsync_interval_ms = 1;
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    let wal = std::sync::Arc::new(wal);
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..100u64 {
                lsns.push(wal.append(1, payload(task * 1000 + i)).await.unwrap());
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            lsns
        }));
    }
    let mut lsns = Vec::new();
    for task in tasks {
        lsns.extend(task.await.unwrap());
    }
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=400).collect::<Vec<_>>());
    let stats = wal.stats();
    assert!(
        stats.segments > 5,
        "small segments rotate: {}",
        stats.segments
    );
    // Each sealed segment was fsynced, by the writer or the fsync thread.
    assert!(
        stats.fsyncs + 1 >= stats.segments,
        "{} fsyncs for {} segments",
        stats.fsyncs,
        stats.segments
    );
    let wal = std::sync::Arc::into_inner(wal).unwrap();
    tokio::task::block_in_place(|| wal.close()).unwrap();
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 400);
    assert!(!recovery.torn_tail && recovery.damage.is_empty());
    assert_eq!(replay_all(&wal, 0).len(), 400);
}

#[tokio::test]
async fn wal_never_policy_does_not_fsync_until_close() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Never);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 100).await;
    assert_eq!(wal.stats().fsyncs, 0);
    assert!(wal.stats().segments > 1);
    wal.close().unwrap();
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 100);
    assert_range(&replay_all(&wal, 0), 1, 100);
}

#[tokio::test]
async fn wal_replay_never_delivers_a_record_damaged_after_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(tmp.path(), 4096, FsyncPolicy::Never)).unwrap();
    append_range(&wal, 1, 100).await;
    let files = segment_files(tmp.path());
    let frames = frame_offsets(&files[1]);
    let (bad_lsn, bad_at, bad_len) = frames[2];
    flip_byte(&files[1], bad_at + bad_len - 1);
    let mut seen = Vec::new();
    let error = wal
        .replay(0, |lsn, _, _| {
            seen.push(lsn);
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(
        matches!(error, WalError::Corrupt { offset, .. } if offset == bad_at),
        "{error}"
    );
    assert_eq!(seen, (1..bad_lsn).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_backpressure_flood_larger_than_the_queue_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(tmp.path(), 32 << 20, FsyncPolicy::Never)).unwrap();
    let wal = Arc::new(wal);
    // 48 MiB in flight at once, three times the queue (QUEUE_BYTES).
    assert_eq!(blipmq_broker::wal::QUEUE_BYTES, 16 << 20);
    let mut handles = Vec::new();
    for t in 0..16u8 {
        let wal = Arc::clone(&wal);
        handles.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for _ in 0..150 {
                lsns.push(wal.append(t, vec![t; 20 * 1024]).await.unwrap());
            }
            lsns
        }));
    }
    // A record larger than the whole queue gets it to itself.
    let huge = wal.append(99, vec![9u8; 17 << 20]).await.unwrap();
    let mut all = vec![huge];
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=2401).collect::<Vec<_>>());
    let mut count = 0;
    wal.replay(0, |lsn, kind, payload| {
        count += 1;
        if lsn == huge {
            assert_eq!((kind, payload.len()), (99, 17 << 20));
        } else {
            assert!(payload.iter().all(|&b| b == kind) && payload.len() == 20 * 1024);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(count, 2401);
}

#[tokio::test]
async fn wal_writer_io_error_fails_the_batch_and_keeps_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let cfg = config(&dir, 4096, FsyncPolicy::Always);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    append_range(&wal, 1, 5).await;
    // The directory disappears: the next rotation cannot create a segment.
    fs::remove_dir_all(&dir).unwrap();
    let error = loop {
        match wal.append(0, vec![0u8; 500]).await {
            Ok(lsn) => assert!(lsn < 100, "rotation never failed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, WalError::Io { .. }), "{error}");
    // The writer is alive and says what is wrong; appends keep failing
    // with the cause while the log cannot be put back in order.
    assert!(
        matches!(wal.health(), WalHealth::Failing(_)),
        "{:?}",
        wal.health()
    );
    assert!(wal.append(0, "x").await.is_err());
    assert!(wal.stats().write_failures >= 1);
    assert!(wal.close().is_err());
    // Reopening recovers (here: an empty log in a new directory).
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 0);
    assert_eq!(wal.append(0, "x").await.unwrap(), 1);
}

#[test]
fn wal_config_from_toml_and_validation() {
    let cfg: WalConfig = toml::from_str(
        r#"
        dir = "/tmp/x"
        segment_bytes = 1048576
        fsync_policy = "interval"
        fsync_interval_ms = 5
        max_bytes = 0
        "#,
    )
    .unwrap();
    assert_eq!(cfg.fsync_policy, FsyncPolicy::Interval);
    assert_eq!(cfg.segment_bytes, 1 << 20);
    cfg.validate().unwrap();
    let defaults: WalConfig = toml::from_str("").unwrap();
    assert_eq!(defaults, WalConfig::default());
    assert_eq!(defaults.fsync_policy, FsyncPolicy::Always);
    assert_eq!(defaults.segment_bytes, 64 << 20);
    assert_eq!(defaults.max_bytes, 1 << 30);
    assert_eq!(defaults.fsync_interval_ms, 10);
    for policy in ["always", "never"] {
        let c: WalConfig = toml::from_str(&format!("fsync_policy = \"{policy}\"")).unwrap();
        assert_eq!(c.fsync_policy.as_str(), policy);
    }
    assert!(toml::from_str::<WalConfig>("fsync_policy = \"sometimes\"").is_err());
    assert!(toml::from_str::<WalConfig>("segment_size = 1").is_err());

    let tmp = tempfile::tempdir().unwrap();
    let invalid = |f: &dyn Fn(&mut WalConfig)| {
        let mut c = WalConfig::new(tmp.path());
        f(&mut c);
        match Wal::open(c) {
            Err(WalError::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    };
    assert!(invalid(&|c| c.segment_bytes = 100).contains("wal.segment_bytes"));
    assert!(invalid(&|c| c.max_bytes = c.segment_bytes).contains("wal.max_bytes"));
    assert!(invalid(&|c| {
        c.fsync_policy = FsyncPolicy::Interval;
        c.fsync_interval_ms = 0;
    })
    .contains("wal.fsync_interval_ms"));
    assert!(invalid(&|c| c.dir = PathBuf::new()).contains("wal.dir"));
}

// ---------------------------------------------------------------------------
// Real crashes: a child process appends under `always` and prints every
// confirmed LSN; the parent SIGKILLs it at a random moment and checks that
// every confirmed record survived, intact.

const CRASH_CHILD_DIR: &str = "BLIPMQ_WAL_CRASH_CHILD_DIR";
const CRASH_CHILD_TRIAL: &str = "BLIPMQ_WAL_CRASH_CHILD_TRIAL";

fn crash_payload(trial: u64, task: u64, i: u64) -> Vec<u8> {
    let mut p = format!("t{trial}-w{task}-{i}-").into_bytes();
    let len = 20 + ((trial * 7 + task * 13 + i * 31) % 300) as usize;
    p.resize(len, b'0' + ((task + i) % 10) as u8);
    p
}

/// Not a test on its own: the body of the child process of
/// `wal_crash_sigkill_loses_no_confirmed_record`. Without its environment
/// variable it returns at once.
#[test]
fn wal_crash_child() {
    let Ok(dir) = std::env::var(CRASH_CHILD_DIR) else {
        return;
    };
    let trial: u64 = std::env::var(CRASH_CHILD_TRIAL).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = config(Path::new(&dir), 16 * 1024, FsyncPolicy::Always);
    cfg.max_bytes = 0;
    let (wal, _) = Wal::open(cfg).unwrap();
    let wal = Arc::new(wal);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    runtime.block_on(async {
        let mut handles = Vec::new();
        for task in 0..8u64 {
            let wal = Arc::clone(&wal);
            let out = Arc::clone(&out);
            handles.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut i = 0;
                while Instant::now() < deadline {
                    let lsn = wal
                        .append(task as u8, crash_payload(trial, task, i))
                        .await
                        .unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "CONFIRMED {lsn} {task} {i}").unwrap();
                    out.flush().unwrap();
                    i += 1;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
}

#[test]
fn wal_crash_sigkill_loses_no_confirmed_record() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    // Every confirmed LSN and the payload it must have.
    let mut confirmed: BTreeMap<Lsn, (u8, Vec<u8>)> = BTreeMap::new();
    const TRIALS: u64 = 6;
    let mut torn = 0;
    for trial in 0..TRIALS {
        let mut child = Command::new(&exe)
            .args([
                "wal_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_DIR, tmp.path())
            .env(CRASH_CHILD_TRIAL, trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("CONFIRMED ") && lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it start appending, then kill it at a random moment.
        let mut lines = vec![lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child confirms appends")];
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(lines_rx.try_iter());
        let mut new = 0;
        for line in &lines {
            let parts: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|p| p.parse().unwrap())
                .collect();
            let [lsn, task, i] = parts[..] else {
                // The kill can cut the last line short: it was never complete.
                continue;
            };
            let expected = (task as u8, crash_payload(trial, task, i));
            if let Some(previous) = confirmed.insert(lsn, expected.clone()) {
                assert_eq!(previous, expected, "LSN {lsn} confirmed twice");
            }
            new += 1;
        }
        assert!(new > 0);

        let (wal, recovery) =
            Wal::open(config(tmp.path(), 16 * 1024, FsyncPolicy::Always)).unwrap();
        if recovery.torn_tail {
            torn += 1;
        }
        assert!(
            recovery.quarantined_segments.is_empty(),
            "a crash leaves only a torn tail: {:?}",
            recovery.damage
        );
        let mut found = 0;
        let mut last = 0;
        wal.replay(0, |lsn, kind, payload| {
            assert_eq!(lsn, last + 1, "contiguous LSNs");
            last = lsn;
            // Whatever is replayed is a record some child wrote, whole.
            let text = std::str::from_utf8(payload).expect("payload is text");
            assert!(text.starts_with('t'), "lsn {lsn}: {text}");
            let fields: Vec<&str> = text.splitn(4, '-').collect();
            let t: u64 = fields[0][1..].parse().unwrap();
            let w: u64 = fields[1][1..].parse().unwrap();
            let i: u64 = fields[2].parse().unwrap();
            assert_eq!(kind as u64, w);
            assert_eq!(payload, crash_payload(t, w, i), "lsn {lsn}");
            if let Some((k, p)) = confirmed.get(&lsn) {
                assert_eq!((*k, p.as_slice()), (kind, payload), "confirmed LSN {lsn}");
                found += 1;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(found, confirmed.len(), "every confirmed record is there");
        println!(
            "trial {trial}: {new} confirmed before SIGKILL, {} records in the log, recovery {:?}, torn tail: {}",
            recovery.records, recovery.duration, recovery.torn_tail
        );
        wal.close().unwrap();
    }
    println!(
        "{TRIALS} kills, {} confirmed records all present, {torn} torn tails",
        confirmed.len()
    );
}

#[tokio::test]
async fn wal_a_damaged_length_field_is_corruption_not_a_torn_tail() {
    // Found by the fuzzer's author: a length field whose top byte flipped
    // makes record 5 run past the end of the file, like a torn write, but
    // records 6..=10 follow intact, and were confirmed.
    let tmp = tempfile::tempdir().unwrap();
    let path = write_one_segment(tmp.path(), 10).await;
    let (_, fifth_at, _) = frame_offsets(&path)[4];
    let file_len = len_of(&path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[fifth_at as usize + 3] ^= 0x80;
    fs::write(&path, bytes).unwrap();
    let cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Always);
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 4);
    let damage = &recovery.damage[0];
    assert!(!damage.torn, "{damage:?}");
    let saved = damage.saved_to.as_ref().expect("the cut records are saved");
    assert_eq!(len_of(saved), file_len - fifth_at);
    assert!(damage.skipped.as_ref().is_some_and(|s| s.end > 10));
    assert!(wal.append(0, "next").await.unwrap() > 10);
}

#[tokio::test]
async fn wal_a_file_named_past_the_lsn_range_is_not_a_segment() {
    // Found by the fuzzer: a segment named u64::MAX overflowed the LSN
    // arithmetic (a panic in recovery, or LSN 0 handed out).
    let tmp = tempfile::tempdir().unwrap();
    let stray = tmp.path().join(format!("{:020}.wal", u64::MAX));
    let mut header = b"BLIPWAL1".to_vec();
    header.extend_from_slice(&u64::MAX.to_le_bytes());
    fs::write(&stray, &header).unwrap();
    fs::write(tmp.path().join(format!("{:020}.wal", 0)), &header).unwrap();
    let (wal, recovery) = Wal::open(config(tmp.path(), 4096, FsyncPolicy::Always)).unwrap();
    assert_eq!(recovery.records, 0);
    assert!(recovery.damage.is_empty());
    assert_eq!(wal.append(0, "first").await.unwrap(), 1);
    assert_eq!(wal.append(0, "second").await.unwrap(), 2);
    wal.close().unwrap();
    assert!(stray.exists(), "other files are left alone");
}

/// A segment file named `first_lsn` holding `records` (LSN, kind, payload),
/// framed and checksummed as the WAL writes them.
fn write_segment(dir: &Path, first_lsn: Lsn, records: &[(Lsn, u8, &[u8])]) -> PathBuf {
    let mut file = b"BLIPWAL1".to_vec();
    file.extend_from_slice(&first_lsn.to_le_bytes());
    for &(lsn, kind, payload) in records {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&lsn.to_le_bytes());
        frame.push(kind);
        frame.extend_from_slice(payload);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&frame[..4]);
        crc.update(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        file.extend_from_slice(&frame);
    }
    let path = dir.join(format!("{first_lsn:020}.wal"));
    fs::write(&path, file).unwrap();
    path
}

/// The ceiling of the LSN space (`wal::format::LSN_CEILING`).
const LSN_CEILING: Lsn = 1 << 62;

#[tokio::test]
async fn wal_a_cut_at_the_top_of_the_lsn_space_writes_no_gap_past_it() {
    // Found by the fuzzer (CI): the last segment, named near the ceiling,
    // was cut; recovery wrote a gap record saying the log goes on past
    // 2^62, which replay then refused as malformed, so the log could no
    // longer be read after the next append.
    let tmp = tempfile::tempdir().unwrap();
    let first = LSN_CEILING - 2;
    let path = write_segment(
        tmp.path(),
        first,
        &[
            (first, 1, b"one"),
            (first + 1, 1, b"two"),
            (first + 2, 1, b"three"),
        ],
    );
    let good_len = len_of(&path) - (RECORD_HEADER + 5);
    flip_byte(&path, len_of(&path) - 1);
    let cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Always);
    let (wal, recovery) = Wal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.records, 2);
    assert_eq!(recovery.damage.len(), 1, "{:?}", recovery.damage);
    assert_eq!(recovery.damage[0].offset, good_len);
    assert_eq!(
        recovery.damage[0].skipped, None,
        "nothing to skip at the ceiling"
    );
    assert_eq!(recovery.next_lsn, LSN_CEILING);
    let err = wal.append(0, "past the ceiling").await.unwrap_err();
    assert!(
        matches!(err, WalError::Exhausted { next } if next == LSN_CEILING),
        "{err}"
    );
    let lsns: Vec<Lsn> = replay_all(&wal, 0).iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![first, first + 1]);
    wal.close().unwrap();
    let (wal, again) = Wal::open(cfg).unwrap();
    assert!(again.damage.is_empty(), "{:?}", again.damage);
    assert_eq!(replay_all(&wal, 0).len(), 2);
}

#[tokio::test]
async fn wal_a_record_at_the_ceiling_is_corruption_and_appends_stop_below_it() {
    let tmp = tempfile::tempdir().unwrap();
    // A segment named at the ceiling whose record claims the ceiling's LSN.
    write_segment(tmp.path(), LSN_CEILING, &[(LSN_CEILING, 1, b"x")]);
    let cfg = config(tmp.path(), 1 << 20, FsyncPolicy::Always);
    let (wal, recovery) = Wal::open(cfg).unwrap();
    assert_eq!(recovery.records, 0);
    let reason = &recovery.damage[0].reason;
    assert!(reason.contains("past the last LSN"), "{reason}");
    assert!(matches!(
        wal.append(0, "x").await,
        Err(WalError::Exhausted { .. })
    ));
    wal.close().unwrap();

    // Two LSNs below the ceiling: the last appends that fit succeed (the
    // second rotates, naming a segment the next start still reads), and the
    // next is refused.
    let tmp = tempfile::tempdir().unwrap();
    write_segment(tmp.path(), LSN_CEILING - 2, &[]);
    let cfg = config(tmp.path(), 4096, FsyncPolicy::Always);
    let (wal, _) = Wal::open(cfg.clone()).unwrap();
    let big = vec![7u8; 3000];
    assert_eq!(wal.append(0, big.clone()).await.unwrap(), LSN_CEILING - 2);
    assert_eq!(wal.append(0, big.clone()).await.unwrap(), LSN_CEILING - 1);
    assert_eq!(
        segment_files(tmp.path()).len(),
        2,
        "the second append rotated"
    );
    assert!(matches!(
        wal.append_batch(vec![(0, Bytes::from_static(b"a"))]).await,
        Err(WalError::Exhausted { .. })
    ));
    wal.close().unwrap();
    let (wal, again) = Wal::open(cfg).unwrap();
    assert!(again.damage.is_empty(), "{:?}", again.damage);
    assert_eq!(again.segments, 2);
    let lsns: Vec<Lsn> = replay_all(&wal, 0).iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![LSN_CEILING - 2, LSN_CEILING - 1]);
}
