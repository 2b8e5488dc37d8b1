//! What every case watches while it attacks: the broker's peak resident
//! memory and file descriptors (sampled from `/proc` every 20 ms on a thread
//! of their own) and a bystander client's Ping round trips (every 20 ms on a
//! connection of its own, made before the attack starts).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::wire::Conn;

const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Peak RSS and fds of the broker process while it runs.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    peak_fds: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(broker: &Broker) -> Sampler {
        let pid = broker.pid();
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(AtomicU64::new(broker.rss()));
        let peak_fds = Arc::new(AtomicUsize::new(broker.fds()));
        let thread = {
            let (stop, peak_rss, peak_fds) = (stop.clone(), peak_rss.clone(), peak_fds.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak_rss.fetch_max(rss_of(pid), Ordering::Relaxed);
                    peak_fds.fetch_max(fds_of(pid), Ordering::Relaxed);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Sampler {
            stop,
            peak_rss,
            peak_fds,
            thread: Some(thread),
        }
    }

    /// (peak RSS bytes, peak fds) so far.
    pub fn peaks(&self) -> (u64, usize) {
        (
            self.peak_rss.load(Ordering::Relaxed),
            self.peak_fds.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A well-behaved client pinging throughout an attack.
pub struct Bystander {
    stop: tokio_util_free::Stop,
    task: tokio::task::JoinHandle<Rtts>,
}

/// What the bystander saw.
#[derive(Debug, Default, Clone)]
pub struct Rtts {
    pub pings: usize,
    pub worst: Duration,
    /// A ping that failed (connection lost, no Pong in 30 s): the reason.
    pub failure: Option<String>,
}

impl Bystander {
    /// Connect and handshake now (before the attack), then ping until stopped.
    pub async fn start(addr: SocketAddr, api_key: Option<&str>) -> Result<Bystander, String> {
        let mut conn = Conn::ready(addr, api_key).await?;
        let stop = tokio_util_free::Stop::default();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut rtts = Rtts::default();
            let mut nonce = 0u64;
            while !stopped.is_set() {
                nonce += 1;
                match conn.ping(nonce, Duration::from_secs(30)).await {
                    Ok(rtt) => {
                        rtts.pings += 1;
                        rtts.worst = rtts.worst.max(rtt);
                    }
                    Err(e) => {
                        rtts.failure = Some(e);
                        break;
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            rtts
        });
        Ok(Bystander { stop, task })
    }

    pub async fn finish(self) -> Rtts {
        self.stop.set();
        self.task.await.unwrap_or_else(|e| Rtts {
            failure: Some(format!("bystander task: {e}")),
            ..Rtts::default()
        })
    }
}

/// A stop flag (tokio-util is not needed for one bool).
mod tokio_util_free {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn set(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

/// The bounds a case states, and the check against them.
pub struct Bounds {
    /// Peak RSS above the broker's RSS before the attack.
    pub rss_growth: u64,
    /// Peak open file descriptors.
    pub fds: usize,
    /// The bystander's worst Ping round trip.
    pub bystander_rtt: Duration,
}

/// Figures of one case, for its report line (and the note's before/after).
pub struct Outcome {
    pub rss_before: u64,
    pub rss_peak: u64,
    pub fds_peak: usize,
    pub rtts: Rtts,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "rss {:.1} -> peak {:.1} MB, fds peak {}, bystander worst {:.1} ms over {} pings",
            mb(self.rss_before),
            mb(self.rss_peak),
            self.fds_peak,
            self.rtts.worst.as_secs_f64() * 1e3,
            self.rtts.pings
        )
    }

    /// `Err` names every bound exceeded.
    pub fn check(&self, bounds: &Bounds) -> Result<String, String> {
        let mut broken = Vec::new();
        let growth = self.rss_peak.saturating_sub(self.rss_before);
        if growth > bounds.rss_growth {
            broken.push(format!(
                "RSS grew {:.1} MB (bound {:.1} MB)",
                mb(growth),
                mb(bounds.rss_growth)
            ));
        }
        if self.fds_peak > bounds.fds {
            broken.push(format!("{} fds open (bound {})", self.fds_peak, bounds.fds));
        }
        if let Some(failure) = &self.rtts.failure {
            broken.push(format!("the bystander failed: {failure}"));
        }
        if self.rtts.worst > bounds.bystander_rtt {
            broken.push(format!(
                "the bystander waited {:.1} ms for a Pong (bound {:.0} ms)",
                self.rtts.worst.as_secs_f64() * 1e3,
                bounds.bystander_rtt.as_secs_f64() * 1e3
            ));
        }
        if broken.is_empty() {
            Ok(self.summary())
        } else {
            Err(format!("{}; {}", broken.join("; "), self.summary()))
        }
    }
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
