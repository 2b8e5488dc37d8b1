//! What a server costs to have around: its executable and the shared
//! libraries it loads, its resident memory when idle and with many idle
//! connections, and its throughput while those connections are open.
//!
//! Read from `/proc/PID` of each server (the script that started them passes
//! the PIDs), so it only works on Linux and only for local servers.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::runner::{self, CellSpec};
use crate::systems::{Publisher, Target};

/// Libraries every process on the machine maps anyway; counting them would
/// only add the same constant to every system.
const BASE_LIBRARIES: [&str; 4] = ["libc.so", "libm.so", "ld-linux", "linux-vdso"];

/// Files and memory of one server process, read while it is idle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Idle {
    /// Size of the executable on disk.
    pub binary_bytes: Option<u64>,
    /// Shared libraries it has mapped, besides libc, libm and the loader.
    pub library_bytes: Option<u64>,
    pub libraries: Vec<String>,
    pub rss_kib: Option<u64>,
}

/// The server with `idle_connections` idle clients connected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loaded {
    pub idle_connections: usize,
    /// How long opening them took.
    pub connect_secs: f64,
    pub rss_kib: Option<u64>,
    /// Delivered msg/s of a 1→1 run while they stay connected.
    pub delivered_per_sec: Option<f64>,
    pub error: Option<String>,
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn idle(pid: u32) -> Idle {
    let binary_bytes = std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| m.len());
    let libraries: BTreeSet<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.contains(".so") && path.starts_with('/'))
        .filter(|path| !BASE_LIBRARIES.iter().any(|base| path.contains(base)))
        .map(str::to_string)
        .collect();
    let library_bytes = libraries
        .iter()
        .map(|path| std::fs::metadata(path).map(|m| m.len()).ok())
        .sum::<Option<u64>>();
    Idle {
        binary_bytes,
        library_bytes,
        libraries: libraries.into_iter().collect(),
        rss_kib: rss_kib(pid),
    }
}

/// Open `count` idle client connections to `target` (each completes its
/// protocol's handshake), read the server's memory, run `spec` while they
/// stay open, then close them.
pub async fn with_idle_connections(
    target: &Target,
    pid: Option<u32>,
    count: usize,
    spec: &CellSpec,
) -> Loaded {
    let started = Instant::now();
    let mut idle = Vec::with_capacity(count);
    let mut error = None;
    // In chunks: a thousand handshakes at once would only measure backlog.
    for chunk in 0..count.div_ceil(50) {
        let connects = (chunk * 50..(chunk * 50 + 50).min(count))
            .map(|i| async move { Publisher::connect(target, &format!("idle-{i}")).await });
        for result in futures::future::join_all(connects).await {
            match result {
                Ok(publisher) => idle.push(publisher),
                Err(e) => {
                    error.get_or_insert(format!("connection {}: {e}", idle.len() + 1));
                }
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server finish setting the connections up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = pid.and_then(rss_kib);
    let delivered = match runner::run_cell(target, spec).await {
        Ok(result) => Some(result.msgs_per_sec),
        Err(e) => {
            error.get_or_insert(format!("1→1 run: {e}"));
            None
        }
    };
    let opened = idle.len();
    futures::future::join_all(idle.into_iter().map(Publisher::close)).await;
    if opened < count && error.is_none() {
        error = Some(format!("only {opened} of {count} connections opened"));
    }
    Loaded {
        idle_connections: opened,
        connect_secs,
        rss_kib: rss,
        delivered_per_sec: delivered,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_binary_and_memory() {
        let me = idle(std::process::id());
        assert!(me.binary_bytes.unwrap() > 100_000);
        assert!(me.rss_kib.unwrap() > 0);
        assert!(me.library_bytes.is_some());
        assert!(me.libraries.iter().all(|l| !l.contains("libc.so")));
    }
}
