//! A reference model of the write-ahead log, checked by proptest: random
//! appends (single, batched, pipelined), releases, injected disk faults,
//! kills and power losses, run against the real `Wal` on the simulated disk
//! and compared, after every restart, with what a plain map says must be
//! there.
//!
//! The promises checked (policy `always`):
//! - every confirmed record at or above the last release point is replayed,
//!   with its payload, across any kill or power loss;
//! - nothing is replayed that was never appended, and LSNs only go up;
//! - an LSN, once confirmed, is never given to another record;
//! - the sim never flips a bit, so recovery never reports corruption.
//!
//! `PROPTEST_CASES=2000 cargo test -p blipmq-broker --test wal_model` for a
//! longer run; a failure prints the minimal sequence of steps, and
//! `WAL_MODEL_TRACE=1` prints each step and its outcome as it runs.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use blipmq_broker::wal::sim::{errno, Fault, Op, SimStorage};
use blipmq_broker::wal::{FsyncPolicy, Lsn, Recovery, Wal, WalConfig};
use bytes::Bytes;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum FaultKind {
    WriteEio,
    SyncEio,
    FullDisk,
    CreateEmfile,
    RemoveEperm,
    SyncDirEio,
    TruncateEio,
}

#[derive(Debug, Clone)]
enum Step {
    Append {
        size: u16,
    },
    Batch {
        count: u8,
    },
    Pipelined {
        count: u8,
    },
    /// Release below `next_lsn - keep`.
    Release {
        keep: u8,
    },
    /// Release below `u64::MAX`: everything confirmed may go, nothing else.
    ReleaseAll,
    Fault {
        kind: FaultKind,
        times: u8,
    },
    ClearFaults,
    Kill,
    PowerLoss,
}

fn fault_kind() -> impl Strategy<Value = FaultKind> {
    prop_oneof![
        Just(FaultKind::WriteEio),
        Just(FaultKind::SyncEio),
        Just(FaultKind::FullDisk),
        Just(FaultKind::CreateEmfile),
        Just(FaultKind::RemoveEperm),
        Just(FaultKind::SyncDirEio),
        Just(FaultKind::TruncateEio),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u16..600).prop_map(|size| Step::Append { size }),
        3 => (1u8..6).prop_map(|count| Step::Batch { count }),
        3 => (1u8..12).prop_map(|count| Step::Pipelined { count }),
        2 => (0u8..20).prop_map(|keep| Step::Release { keep }),
        1 => Just(Step::ReleaseAll),
        2 => (fault_kind(), 1u8..4).prop_map(|(kind, times)| Step::Fault { kind, times }),
        1 => Just(Step::ClearFaults),
        1 => Just(Step::Kill),
        1 => Just(Step::PowerLoss),
    ]
}

fn fault(kind: FaultKind, times: u8) -> Fault {
    let times = u64::from(times);
    match kind {
        FaultKind::WriteEio => Fault::new(Op::Write, errno::EIO).times(times),
        FaultKind::SyncEio => Fault::new(Op::Sync, errno::EIO).times(times),
        FaultKind::FullDisk => Fault::short_write(errno::ENOSPC).times(times),
        FaultKind::CreateEmfile => Fault::new(Op::Create, errno::EMFILE).times(times),
        FaultKind::RemoveEperm => Fault::new(Op::Remove, errno::EPERM).times(times),
        FaultKind::SyncDirEio => Fault::new(Op::SyncDir, errno::EIO).times(times),
        FaultKind::TruncateEio => Fault::new(Op::SetLen, errno::EIO).times(times),
    }
}

/// What must be in the log.
#[derive(Default)]
struct Model {
    confirmed: BTreeMap<Lsn, Vec<u8>>,
    /// Every payload ever handed to the log, confirmed or not.
    attempted: HashSet<Vec<u8>>,
    /// Records below this may have been deleted.
    released_below: Lsn,
    next_id: u64,
}

impl Model {
    fn payload(&mut self, size: usize) -> Vec<u8> {
        self.next_id += 1;
        let mut p = format!("id-{}:", self.next_id).into_bytes();
        p.resize(p.len().max(size), (self.next_id % 251) as u8);
        self.attempted.insert(p.clone());
        p
    }

    fn confirm(&mut self, lsn: Lsn, payload: Vec<u8>) -> Result<(), TestCaseError> {
        let newest = self.confirmed.keys().next_back().copied().unwrap_or(0);
        prop_assert!(
            lsn > newest,
            "LSN {lsn} confirmed after LSN {newest}: reused or out of order"
        );
        self.confirmed.insert(lsn, payload);
        Ok(())
    }

    /// Checks a freshly opened log against the model.
    fn check(&self, wal: &Wal, recovery: &Recovery) -> Result<(), TestCaseError> {
        prop_assert_eq!(recovery.quarantined_segments.len(), 0);
        prop_assert!(
            recovery.damage.iter().all(|d| d.torn),
            "corruption reported on a disk that never flips a bit: {:?}",
            recovery.damage
        );
        let mut replayed = BTreeMap::new();
        let mut last = 0;
        wal.replay(0, |lsn, _, payload| {
            replayed.insert(lsn, payload.to_vec());
            assert!(lsn > last, "replay went from {last} to {lsn}");
            last = lsn;
            ControlFlow::Continue(())
        })
        .map_err(|e| TestCaseError::fail(format!("replay: {e}")))?;
        for (lsn, payload) in &replayed {
            prop_assert!(
                self.attempted.contains(payload),
                "LSN {lsn} holds a payload nobody appended"
            );
            if let Some(confirmed) = self.confirmed.get(lsn) {
                prop_assert!(confirmed == payload, "LSN {lsn} changed");
            }
        }
        for (lsn, payload) in self.confirmed.range(self.released_below..) {
            prop_assert!(
                replayed.get(lsn) == Some(payload),
                "confirmed LSN {lsn} is gone (replayed: {:?})",
                replayed.keys().collect::<Vec<_>>()
            );
        }
        let newest = self.confirmed.keys().next_back().copied().unwrap_or(0);
        prop_assert!(wal.next_lsn() > newest, "the next LSN went back");
        Ok(())
    }
}

fn config(fsync_policy: FsyncPolicy) -> WalConfig {
    WalConfig {
        dir: PathBuf::from("/data/wal"),
        segment_bytes: 4096,
        fsync_policy,
        fsync_interval_ms: 5,
        max_bytes: 0,
    }
}

fn open(sim: &SimStorage, policy: FsyncPolicy) -> Result<(Wal, Recovery), TestCaseError> {
    // Opening does file work too; the faults a step left may hit it.
    // Retrying is what an operator's restart loop would do.
    for _ in 0..10 {
        match Wal::open_with(config(policy), Arc::new(sim.clone())) {
            Ok(opened) => return Ok(opened),
            Err(_) => sim.clear_faults(),
        }
    }
    Err(TestCaseError::fail("the log never opened"))
}

/// Runs `steps` on a fresh simulated disk. Under `interval` a power loss
/// may take the last confirmed records, which the model does not allow, so
/// there every crash is a kill (which loses nothing confirmed under any
/// policy).
async fn run(seed: u64, steps: Vec<Step>, policy: FsyncPolicy) -> Result<(), TestCaseError> {
    let sim = SimStorage::new(seed);
    let power_can_fail = policy == FsyncPolicy::Always;
    let crash = |sim: &SimStorage| {
        if power_can_fail {
            sim.power_loss();
        } else {
            sim.crash();
        }
    };
    let mut model = Model::default();
    let (mut wal, recovery) = open(&sim, policy)?;
    model.check(&wal, &recovery)?;
    let trace = std::env::var("WAL_MODEL_TRACE").is_ok();
    for step in steps {
        if trace {
            eprintln!(
                "step {step:?} next_lsn {} files {:?}",
                wal.next_lsn(),
                sim.files()
            );
        }
        match step {
            Step::Append { size } => {
                let payload = model.payload(size as usize);
                let result = wal.append(1, payload.clone()).await;
                if trace {
                    eprintln!("  -> {result:?}");
                }
                if let Ok(lsn) = result {
                    model.confirm(lsn, payload)?;
                }
            }
            Step::Batch { count } => {
                let payloads: Vec<Vec<u8>> = (0..count).map(|_| model.payload(40)).collect();
                let records = payloads
                    .iter()
                    .map(|p| (1u8, Bytes::from(p.clone())))
                    .collect();
                if let Ok(first) = wal.append_batch(records).await {
                    for (i, payload) in payloads.into_iter().enumerate() {
                        model.confirm(first + i as Lsn, payload)?;
                    }
                }
            }
            Step::Pipelined { count } => {
                let mut pending = Vec::new();
                for _ in 0..count {
                    let payload = model.payload(100);
                    if let Ok(p) = wal.submit(1, payload.clone()).await {
                        pending.push((p, payload));
                    }
                }
                for (p, payload) in pending {
                    let result = p.await;
                    if trace {
                        eprintln!("  -> {result:?}");
                    }
                    if let Ok(lsn) = result {
                        model.confirm(lsn, payload)?;
                    }
                }
            }
            Step::Release { keep } => {
                let below = wal.next_lsn().saturating_sub(u64::from(keep));
                model.released_below = model.released_below.max(below);
                let _ = wal.release_before(below);
            }
            Step::ReleaseAll => {
                model.released_below = model.released_below.max(wal.next_lsn());
                let _ = wal.release_before(Lsn::MAX);
            }
            Step::Fault { kind, times } => sim.inject(fault(kind, times)),
            Step::ClearFaults => sim.clear_faults(),
            Step::Kill | Step::PowerLoss => {
                if matches!(step, Step::PowerLoss) {
                    crash(&sim);
                } else {
                    sim.crash();
                }
                drop(wal);
                sim.restart();
                let (reopened, recovery) = open(&sim, policy)?;
                wal = reopened;
                model.check(&wal, &recovery)?;
            }
        }
    }
    // The end: a power loss (under `always`), and everything confirmed must
    // be there.
    sim.clear_faults();
    crash(&sim);
    drop(wal);
    sim.restart();
    let (wal, recovery) = open(&sim, policy)?;
    model.check(&wal, &recovery)
}

/// [`run`] on a runtime of its own (each case starts from nothing).
fn run_case(seed: u64, steps: Vec<Step>, policy: FsyncPolicy) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(seed, steps, policy))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(192),
        ..ProptestConfig::default()
    })]

    #[test]
    fn wal_model_confirmed_records_survive_faults_kills_and_power_loss(
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        run_case(seed, steps, FsyncPolicy::Always)?;
    }

    #[test]
    fn wal_model_interval_policy_loses_nothing_confirmed_to_kills(
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        run_case(seed, steps, FsyncPolicy::Interval)?;
    }
}
