//! The runner's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Run QoS 1 publishers and durable consumers against the real `blipmq`
/// binary while a nemesis kills, freezes and restarts it; then drain every
/// queue on a healthy broker and check the recorded history. Exits 1 on any
/// violation or anomaly.
#[derive(Debug, Parser)]
#[command(name = "blipmq-history", args_override_self = true)]
pub struct Args {
    /// Seed for every random choice (workload, acks, faults); random when
    /// absent, and always printed, so a failing run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds of faults and traffic, before the final drain.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// The broker binary; by default `blipmq` next to this one.
    #[arg(long)]
    pub broker: Option<PathBuf>,
    /// The broker's `wal.fsync_policy`. A SIGKILL loses no page cache, so
    /// every policy must keep the promise here.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    pub fsync: Fsync,
    /// The broker's `wal.segment_bytes`: small, so segments rotate and
    /// retention deletes them all the time.
    #[arg(long, default_value_t = 16384)]
    pub segment_bytes: u64,
    /// QoS 1 publishers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    pub publishers: u16,
    /// Most unconfirmed publishes one publisher keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Publishes in the whole run at most, spread over its duration: bounds
    /// the history's memory (about half a KiB a message) in long runs.
    #[arg(long, default_value_t = 500_000)]
    pub max_messages: u64,
    /// The broker's `delivery.ack_timeout_ms`: short, so unacked deliveries
    /// come back within the run.
    #[arg(long, default_value_t = 1500)]
    pub ack_timeout_ms: u64,
    /// The drain ends once every queue has been quiet this long.
    #[arg(long, default_value_t = 3000)]
    pub quiet_ms: u64,
    /// Where to make the run's directory (the broker's log and data);
    /// by default the system's temporary directory. On a tmpfs, fsync is
    /// free and the broker's timing unlike a real disk's.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the data directory, broker log and history even when the run
    /// passes (they are always kept when it fails).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    Always,
    Interval,
    Never,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        }
    }
}

impl Args {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration)
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub fn quiet(&self) -> Duration {
        Duration::from_millis(self.quiet_ms)
    }

    /// The arguments that replay this run, for the report.
    pub fn replay_line(&self, seed: u64) -> String {
        format!(
            "--seed {seed} --duration {} --fsync {} --segment-bytes {} --publishers {} --in-flight {} --max-messages {} --ack-timeout-ms {}",
            self.duration,
            self.fsync.as_str(),
            self.segment_bytes,
            self.publishers,
            self.in_flight,
            self.max_messages,
            self.ack_timeout_ms
        )
    }
}
