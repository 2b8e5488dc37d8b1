//! The metrics issue 26 added, against a live broker: latency histograms
//! (fsync, confirm, delivery), per-queue series, the log's state, the
//! build and process families.

mod common;

use blipmq_broker::wal::FsyncPolicy;
use common::{metric_value, TestBroker};

#[tokio::test]
async fn latency_histograms_count_what_the_broker_did() {
    let broker = TestBroker::start_with(|c| c.wal.fsync_policy = FsyncPolicy::Always).await;
    let mut consumer = broker.client().await;
    let live = consumer.subscribe("orders").await;
    let mut producer = broker.client().await;
    for id in 1..=5 {
        producer.publish_qos1(id, "orders", b"x").await.unwrap();
    }
    for _ in 0..5 {
        assert_eq!(consumer.expect_delivery().await.subscription_id, live);
    }
    let text = broker.metrics().await;
    let count = |family: &str| metric_value(&text, &format!("{family}_count")).unwrap();
    assert_eq!(count("blipmq_confirm_latency_seconds"), 5, "{text}");
    // One sample per socket write: at least one, at most one per message.
    let deliveries = count("blipmq_delivery_latency_seconds");
    assert!((1..=5).contains(&deliveries), "{deliveries}");
    // Policy `always`: every confirmed publish waited for an fsync.
    assert!(count("blipmq_wal_fsync_duration_seconds") >= 1, "{text}");
    assert_eq!(
        metric_value(&text, "blipmq_confirm_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(5)
    );
    broker.stop().await;
}

#[tokio::test]
async fn durable_queues_get_their_own_series() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    let sub = consumer
        .subscribe_with("jobs.>", 1, Some("mailer"), None)
        .await
        .unwrap();
    let mut producer = broker.client().await;
    for id in 1..=3 {
        producer
            .publish_qos1(id, "jobs.mail", b"job")
            .await
            .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(consumer.expect_delivery().await.subscription_id, sub);
    }
    let series = |name: &str| format!("{name}{{queue=\"mailer\",kind=\"durable\"}}");
    let text = broker.metrics().await;
    assert_eq!(
        metric_value(&text, &series("blipmq_queue_unacked_messages")),
        Some(3),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, &series("blipmq_queue_consumers")),
        Some(1)
    );
    assert!(metric_value(&text, &series("blipmq_queue_pinned_bytes")).unwrap() > 0);
    assert!(text.contains(&series("blipmq_queue_oldest_unacked_age_seconds")));
    assert_eq!(metric_value(&text, "blipmq_queue_series_omitted"), Some(0));
    broker.stop().await;
}

#[tokio::test]
async fn the_log_state_build_and_process_families_are_exported() {
    let broker = TestBroker::start().await;
    let text = broker.metrics().await;
    assert_eq!(
        metric_value(&text, "blipmq_wal_state{state=\"ok\"}"),
        Some(1)
    );
    assert_eq!(
        metric_value(&text, "blipmq_wal_state{state=\"full\"}"),
        Some(0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "blipmq_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1)
    );
    // This test process is the broker's process.
    assert!(metric_value(&text, "process_resident_memory_bytes").unwrap() > 0);
    assert!(metric_value(&text, "process_open_fds").unwrap() > 0);
    assert!(text.contains("\nprocess_cpu_seconds_total "));
    assert!(text.contains("\nprocess_start_time_seconds "));
    broker.stop().await;
}

#[tokio::test]
async fn docs_metrics_md_lists_exactly_the_families_the_broker_exports() {
    let broker = TestBroker::start().await;
    let text = broker.metrics().await;
    broker.stop().await;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .unwrap();
    // The table's rows start with the family's name in backticks.
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/metrics.md is missing {undocumented:?} and lists families no longer exported: {stale:?}"
    );
}
