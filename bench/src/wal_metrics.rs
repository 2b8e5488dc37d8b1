//! BlipMQ's write-ahead log counters, read from its `/metrics` endpoint
//! before and after a run: how many records each fsync covered is what
//! group commit is about.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The log's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WalCounters {
    pub records: u64,
    pub fsyncs: u64,
}

impl WalCounters {
    /// What happened between `self` (before) and `after`.
    pub fn delta(self, after: WalCounters) -> WalCounters {
        WalCounters {
            records: after.records.saturating_sub(self.records),
            fsyncs: after.fsyncs.saturating_sub(self.fsyncs),
        }
    }
}

/// `GET /metrics` from `addr` (HOST:PORT) and the WAL counters in it.
pub async fn read(addr: &str) -> Result<WalCounters, String> {
    parse(&scrape(addr).await?)
}

/// The Prometheus text served at `http://{addr}/metrics`.
pub async fn scrape(addr: &str) -> Result<String, String> {
    tokio::time::timeout(TIMEOUT, get_metrics(addr))
        .await
        .map_err(|_| format!("GET http://{addr}/metrics: timed out"))?
}

async fn get_metrics(addr: &str) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("GET http://{addr}/metrics: {e}");
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    // HTTP/1.0: the server closes the connection after the body.
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(fail)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(fail)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET http://{addr}/metrics: no HTTP response"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        let status = head.lines().next().unwrap_or("");
        return Err(format!("GET http://{addr}/metrics: {status}"));
    }
    Ok(body.to_string())
}

/// The WAL counters from the Prometheus text format.
pub fn parse(text: &str) -> Result<WalCounters, String> {
    Ok(WalCounters {
        records: value(text, "blipmq_wal_records_total")?,
        fsyncs: value(text, "blipmq_wal_fsyncs_total")?,
    })
}

/// The value of the unlabelled metric `name` in the Prometheus text format.
pub fn value(text: &str, name: &str) -> Result<u64, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (metric, value) = l.split_once(' ')?;
            (metric == name).then(|| value.trim().parse::<u64>().ok())?
        })
        .ok_or_else(|| format!("{name} missing from /metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wal_counters() {
        let text = "# HELP blipmq_wal_records_total Records.\n\
                    # TYPE blipmq_wal_records_total counter\n\
                    blipmq_wal_records_total 1200\n\
                    blipmq_wal_records_total_other 5\n\
                    blipmq_wal_fsyncs_total 12\n";
        let counters = parse(text).unwrap();
        assert_eq!(
            counters,
            WalCounters {
                records: 1200,
                fsyncs: 12
            }
        );
        let before = WalCounters {
            records: 200,
            fsyncs: 2,
        };
        assert_eq!(
            before.delta(counters),
            WalCounters {
                records: 1000,
                fsyncs: 10
            }
        );
    }

    #[test]
    fn a_missing_counter_is_an_error() {
        let e = parse("blipmq_wal_records_total 3\n").unwrap_err();
        assert_eq!(e, "blipmq_wal_fsyncs_total missing from /metrics");
    }
}
