//! The attacks. Each case is a function from the run's context to a report
//! line (`Ok`) or what went wrong (`Err`); one module per kind of resource.
//! A case starts its own broker, so no case sees another's debris.

mod acks;
mod frames;
mod handshakes;
mod http;
mod keepalive;
mod logins;
mod memory;
mod slowloris;
mod storm;
mod subscriptions;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::broker::Broker;
use crate::measure::{Bystander, Outcome, Sampler};

pub struct Ctx {
    pub bin: PathBuf,
    /// The full counts (release builds, by hand); CI runs the smaller ones.
    pub full: bool,
}

impl Ctx {
    /// `ci` normally, `full` with `--full`.
    pub fn count(&self, ci: usize, full: usize) -> usize {
        if self.full {
            full
        } else {
            ci
        }
    }
}

pub type CaseResult = Result<String, String>;
type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + 'a>>;

pub struct Case {
    pub name: &'static str,
    /// One line: the attack and the bound.
    pub what: &'static str,
    pub run: for<'a> fn(&'a Ctx) -> CaseFuture<'a>,
}

/// Every case, in the order they run.
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(frames::cases());
    cases.extend(slowloris::cases());
    cases.extend(handshakes::cases());
    cases.extend(http::cases());
    cases.extend(logins::cases());
    cases.extend(memory::cases());
    cases.extend(storm::cases());
    cases.extend(keepalive::cases());
    cases.extend(acks::cases());
    cases.extend(subscriptions::cases());
    cases
}

/// A broker under attack with its watchers: a sampler of its RSS and fds
/// and a bystander pinging it, both started before the attack.
pub struct Watched {
    pub broker: Broker,
    sampler: Sampler,
    bystander: Bystander,
    rss_before: u64,
}

impl Watched {
    pub async fn start(broker: Broker, api_key: Option<&str>) -> Result<Watched, String> {
        let bystander = Bystander::start(broker.clients, api_key).await?;
        // Let the bystander's connection settle into the baseline.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss_before = broker.rss();
        let sampler = Sampler::start(&broker);
        Ok(Watched {
            broker,
            sampler,
            bystander,
            rss_before,
        })
    }

    /// Stop watching; the broker must still be running.
    pub async fn finish(mut self) -> Result<(Outcome, Broker), String> {
        let rtts = self.bystander.finish().await;
        let (rss_peak, fds_peak) = self.sampler.peaks();
        drop(self.sampler);
        if !self.broker.alive() {
            return Err(format!(
                "the broker died during the attack; its log ends:\n{}",
                self.broker.log_tail()
            ));
        }
        Ok((
            Outcome {
                rss_before: self.rss_before,
                rss_peak,
                fds_peak,
                rtts,
            },
            self.broker,
        ))
    }
}

/// `Err(message)` unless `condition`.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

/// One sample of the broker's `/metrics` (`name` or `name{labels}`).
pub async fn metric(broker: &Broker, sample: &str) -> Result<u64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = broker.metrics.ok_or("the broker serves no metrics")?;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to /metrics: {e}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .map_err(|e| format!("read /metrics: {e}"))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no sample {sample} in /metrics"))
}
