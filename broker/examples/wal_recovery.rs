//! How long the WAL takes to come back: writes N records (default 1,000,000
//! of 100 bytes) with fsync policy `never`, closes the log, then times
//! `Wal::open` (the recovery scan, every CRC verified) and a full `replay`.
//!
//! ```sh
//! cargo run --release -p blipmq-broker --example wal_recovery            # 1,000,000 x 100 B
//! cargo run --release -p blipmq-broker --example wal_recovery -- 200000 512 [dir]
//! ```
//!
//! Without a directory argument it uses a temporary one, deleted at the end.
//! The files were just written, so they are read from the page cache: this
//! measures the WAL's own cost (parsing, CRC), not the disk. Given a
//! directory that already holds a WAL, it skips the writing and only times
//! the recovery, e.g. after `sync; echo 3 > /proc/sys/vm/drop_caches` for a
//! cold-cache figure.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use blipmq_broker::wal::{FsyncPolicy, Wal, WalConfig};
use bytes::Bytes;

const BATCH: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let payload_len: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let (dir, _tmp) = match args.next() {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let tmp = tempfile::tempdir()?;
            (tmp.path().join("wal"), Some(tmp))
        }
    };
    let config = WalConfig {
        dir: dir.clone(),
        fsync_policy: FsyncPolicy::Never,
        max_bytes: 0,
        ..WalConfig::default()
    };

    let existing = dir.is_dir() && std::fs::read_dir(&dir)?.next().is_some();
    if !existing {
        write(&config, records, payload_len)?;
    }

    let started = Instant::now();
    let (wal, recovery) = Wal::open(config)?;
    let opened = started.elapsed();
    let mut replayed = 0u64;
    let mut checksum = 0u64;
    wal.replay(0, |lsn, _kind, payload| {
        replayed += 1;
        checksum = checksum.wrapping_add(lsn ^ payload.len() as u64);
        ControlFlow::Continue(())
    })?;
    let total = started.elapsed();
    if !existing {
        assert_eq!(recovery.records, records);
    }
    assert_eq!(replayed, recovery.records);
    println!(
        "recovered {} records ({:.1} MB, {} segments): open (recovery scan) {:.1} ms; \
         open + full replay {:.1} ms; {:.1} M records/s, {:.0} MB/s read (checksum {checksum:x})",
        recovery.records,
        recovery.bytes as f64 / 1e6,
        recovery.segments,
        opened.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        replayed as f64 / total.as_secs_f64() / 1e6,
        recovery.bytes as f64 * 2.0 / total.as_secs_f64() / 1e6,
    );
    wal.close()?;
    Ok(())
}

fn write(
    config: &WalConfig,
    records: u64,
    payload_len: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let (wal, _) = Wal::open(config.clone())?;
    let started = Instant::now();
    let body: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
    runtime.block_on(async {
        let mut written = 0u64;
        while written < records {
            let n = (records - written).min(BATCH as u64);
            let batch: Vec<(u8, Bytes)> = (0..n)
                .map(|i| {
                    let mut p = body.clone();
                    let id = (written + i).to_le_bytes();
                    let k = id.len().min(p.len());
                    p[..k].copy_from_slice(&id[..k]);
                    (1, Bytes::from(p))
                })
                .collect();
            wal.append_batch(batch).await?;
            written += n;
        }
        Ok::<_, blipmq_broker::wal::WalError>(())
    })?;
    let stats = wal.stats();
    wal.close()?;
    let write_time = started.elapsed();
    println!(
        "wrote {records} records of {payload_len} B ({:.1} MB in {} segments) in {:.2} s",
        stats.current_bytes as f64 / 1e6,
        stats.segments,
        write_time.as_secs_f64()
    );

    Ok(())
}
