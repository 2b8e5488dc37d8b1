//! `blipmq-abuse`: adversarial tests and a soak test against the real
//! broker binary. Each case starts a broker of its own, attacks it as one
//! hostile peer would, and checks that the broker's memory and file
//! descriptors and a bystander client's round trip stay within the bounds
//! the case states, during the attack and after it. The soak runs a mixed
//! workload for a fixed time and fails on growth.
//!
//! Usage:
//!   blipmq-abuse [--broker PATH] [--case NAME]... [--full]   the cases
//!   blipmq-abuse soak [--broker PATH] --secs N               the soak test
//!   blipmq-abuse --list

mod broker;
mod cases;
mod measure;
mod soak;
mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "blipmq-abuse",
    about = "Adversarial and soak tests of the blipmq binary"
)]
struct Args {
    /// The broker binary.
    #[arg(long, env = "BLIPMQ_BIN", default_value = "target/debug/blipmq")]
    broker: PathBuf,
    /// Run only cases whose name contains this (repeatable).
    #[arg(long)]
    case: Vec<String>,
    /// The counts the figures use (1M subscriptions, ...), for a
    /// release build; the default counts keep a debug build within CI time.
    #[arg(long)]
    full: bool,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
    /// Run the soak test for this many seconds instead of the cases.
    #[arg(long)]
    soak_secs: Option<u64>,
}

/// Longest any one case may take before it counts as failed (a broker that
/// stalls must not stall the suite).
const CASE_LIMIT: Duration = Duration::from_secs(180);

fn main() {
    let args = Args::parse();
    raise_open_file_limit();
    let ctx = cases::Ctx {
        bin: args.broker.clone(),
        full: args.full,
    };
    if !ctx.bin.exists() {
        eprintln!("blipmq-abuse: no broker binary at {}", ctx.bin.display());
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(secs) = args.soak_secs {
        let result = runtime.block_on(soak::run(&ctx, Duration::from_secs(secs)));
        runtime.shutdown_timeout(Duration::from_secs(1));
        match result {
            Ok(summary) => println!("soak ok: {summary}"),
            Err(failure) => {
                println!("soak FAILED: {failure}");
                std::process::exit(1);
            }
        }
        return;
    }
    let selected: Vec<cases::Case> = cases::all()
        .into_iter()
        .filter(|c| args.case.is_empty() || args.case.iter().any(|n| c.name.contains(n.as_str())))
        .collect();
    if args.list {
        for case in &selected {
            println!("{:<32} {}", case.name, case.what);
        }
        return;
    }
    let (mut passed, mut failed) = (0, 0);
    for case in &selected {
        let start = Instant::now();
        let result = runtime.block_on(async {
            match tokio::time::timeout(CASE_LIMIT, (case.run)(&ctx)).await {
                Ok(result) => result,
                Err(_) => Err(format!("did not finish within {CASE_LIMIT:?}")),
            }
        });
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(summary) => {
                passed += 1;
                println!("case {} ... ok ({secs:.1} s): {summary}", case.name);
            }
            Err(failure) => {
                failed += 1;
                println!("case {} ... FAILED ({secs:.1} s): {failure}", case.name);
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Cases open a thousand sockets and more from this process; the soft limit
/// is often 1024. Raised to the hard limit, as the broker does for itself.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
