//! The files under deploy/ against the real broker: every metric the
//! Grafana dashboard and the Prometheus alerts name is one a live broker
//! exports; the container's environment is a valid config and its health
//! check command works; the systemd unit passes `systemd-analyze verify`
//! where that tool exists.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use blipmq_broker::Config;
use common::TestBroker;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every sample name a scrape can hold: each `# TYPE` family, and for a
/// histogram its `_bucket`, `_sum` and `_count` series.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name.to_string());
    }
    names
}

/// Metric names in a rules or dashboard file: the words that start with
/// the broker's or the process families' prefix.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = text;
    while let Some(start) = ["blipmq_", "process_"]
        .iter()
        .filter_map(|prefix| rest.find(prefix))
        .min()
    {
        let preceded_by_name = rest[..start].chars().next_back().is_some_and(is_name_char);
        let word: String = rest[start..]
            .chars()
            .take_while(|&c| is_name_char(c))
            .collect();
        if !preceded_by_name {
            names.insert(word.clone());
        }
        rest = &rest[start + word.len()..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_alerts_name_only_metrics_the_broker_exports() {
    let broker = TestBroker::start().await;
    // A durable queue, so that per-queue series have samples too.
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("jobs", 1, Some("worker"), None)
        .await
        .unwrap();
    let exported = exported_names(&broker.metrics().await);
    broker.stop().await;

    let dashboard = read("grafana/blipmq-dashboard.json");
    let alerts = read("prometheus/alerts.yml");
    for (file, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let referenced = referenced_names(text);
        assert!(referenced.len() > 10, "{file} names {referenced:?}");
        let unknown: Vec<_> = referenced.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the broker does not export: {unknown:?}"
        );
    }

    // The dashboard is valid JSON, and every panel query has an expression.
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        for target in panel["targets"].as_array().unwrap() {
            assert!(!target["expr"].as_str().unwrap().is_empty(), "{panel}");
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
    // Every alert has an expression and a severity.
    let rules = alerts.matches("- alert: ").count();
    assert!(rules >= 10);
    assert_eq!(alerts.matches("\n        expr: ").count(), rules);
    assert_eq!(alerts.matches("\n          severity: ").count(), rules);
}

#[test]
fn names_are_found_as_whole_words() {
    let found = referenced_names(
        "rate(blipmq_a_total[5m]) / process_open_fds{job=\"x\"} + my_blipmq_b + \"blipmq_c\"",
    );
    let expected: BTreeSet<String> = ["blipmq_a_total", "process_open_fds", "blipmq_c"]
        .map(String::from)
        .into();
    assert_eq!(found, expected);
}

/// The `ENV` settings of the Containerfile, as (name, value) pairs.
fn container_env(containerfile: &str) -> Vec<(String, String)> {
    let joined = containerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("ENV "))
        .expect("an ENV line");
    line["ENV ".len()..]
        .split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("NAME=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[tokio::test]
async fn the_container_settings_load_and_its_health_check_passes() {
    let containerfile = read("container/Containerfile");
    let env = container_env(&containerfile);
    let config = Config::load(None, env.clone()).expect("the container's environment is valid");
    assert_eq!(config.server.bind_addr.to_string(), "0.0.0.0:7878");
    assert_eq!(config.wal.dir, Path::new("/data/wal"));
    assert!(containerfile.contains("\nFROM scratch\n"));
    assert!(containerfile.contains("\nUSER 65532:65532\n"), "not root");
    assert!(containerfile.contains("\nVOLUME /data\n"));

    // The image's health check, against a broker on loopback (tests bind
    // nothing else): the same binary and subcommand, another address.
    let healthcheck = containerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("CMD [\"/usr/local/bin/blipmq\", "))
        .expect("a HEALTHCHECK CMD");
    assert!(healthcheck.starts_with("\"healthcheck\""), "{healthcheck}");
    let broker = TestBroker::start().await;
    // The broker runs on this test's runtime: wait for the child off it.
    let metrics = broker.metrics_addr.to_string();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_blipmq"))
            .args(["healthcheck", "--http", &metrics])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "blipmq healthcheck: {status}");
    broker.stop().await;
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = read("systemd/blipmq.service");
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    assert!(unit.contains("\nStateDirectory=blipmq\n"));
    // `systemd-analyze verify` wants the executable to exist: point the
    // unit at this build's binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("blipmq.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/blipmq", env!("CARGO_BIN_EXE_blipmq")),
    )
    .unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(output) => assert!(
            output.status.success() && output.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => {
            eprintln!("systemd-analyze not run ({error}): only the unit's keys are checked")
        }
    }
    // The flags ExecStart passes are ones the broker takes.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/blipmq "))
        .unwrap();
    assert_eq!(exec, "--config /etc/blipmq/blipmq.toml --log-format json");
}
