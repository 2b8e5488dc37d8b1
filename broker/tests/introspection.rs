//! The introspection API (`/v1/...` on the HTTP port), `/livez`, and
//! `/readyz` while draining, against a live broker in this process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use blipmq_broker::auth::key_digest_hex;
use blipmq_broker::config::UserConfig;
use common::{RawClient, TestBroker, PATIENCE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer: status, the `allow` header if any, and the body.
struct Answer {
    status: u16,
    allow: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn request(addr: SocketAddr, method: &str, target: &str, key: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let authorization = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\n{authorization}Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole answer");
    let allow = head
        .lines()
        .find_map(|l| l.strip_prefix("allow: "))
        .map(str::to_string);
    Answer {
        status: head[9..12].parse().unwrap(),
        allow,
        body: body.to_string(),
    }
}

async fn get(broker: &TestBroker, target: &str) -> Answer {
    request(broker.metrics_addr, "GET", target, None).await
}

/// GET a `/v1/` list and return its JSON, checking it answered 200.
async fn list(broker: &TestBroker, target: &str) -> Value {
    let answer = get(broker, target).await;
    assert_eq!(answer.status, 200, "{target}: {}", answer.body);
    answer.json()
}

/// Poll `target` until `done` holds for its JSON.
async fn wait_for(broker: &TestBroker, target: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = list(broker, target).await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{target} never got there: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn server_info_summarises_the_running_broker_without_secrets() {
    let broker = TestBroker::start_with(|c| {
        c.auth.users = vec![UserConfig {
            name: "ops".into(),
            key_sha256: key_digest_hex("k-ops"),
            admin: true,
            ..UserConfig::default()
        }];
    })
    .await;
    let answer = request(broker.metrics_addr, "GET", "/v1/server", Some("k-ops")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let server = answer.json();
    assert_eq!(server["server_name"], "blipmq");
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["draining"], false);
    assert!(server["started_at"].as_str().unwrap().ends_with('Z'));
    let config = &server["config"];
    assert_eq!(
        config["listeners"]["clients"]["addr"],
        broker.addr.to_string()
    );
    assert_eq!(
        config["listeners"]["http"]["addr"],
        broker.metrics_addr.to_string()
    );
    assert_eq!(config["listeners"]["websocket"], Value::Null);
    assert_eq!(config["wal"]["fsync_policy"], "always");
    assert_eq!(config["auth"]["enabled"], true);
    assert_eq!(config["auth"]["users"], 1);
    assert_eq!(config["tls"]["enabled"], false);
    assert_eq!(config["shutdown"]["shutdown_timeout_ms"], 5000);
    assert!(
        !answer.body.contains(&key_digest_hex("k-ops")),
        "a key digest is never shown"
    );
    broker.stop().await;
}

#[tokio::test]
async fn connections_show_who_is_connected_and_what_crossed_their_sockets() {
    let broker = TestBroker::start().await;
    let mut subscriber = broker.client().await;
    subscriber.subscribe("orders.*").await;
    let mut publisher = broker.client().await;
    for n in 0..3 {
        publisher
            .publish("orders.new", format!("m{n}").as_bytes())
            .await;
    }
    for _ in 0..3 {
        subscriber.expect_delivery().await;
    }
    publisher.sync().await;
    let page = wait_for(&broker, "/v1/connections", |v| {
        v["items"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["messages_out"] == 3))
    })
    .await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["truncated"], false);
    let items = page["items"].as_array().unwrap();
    let (sub, publ) = (&items[0], &items[1]);
    assert!(sub["id"].as_u64() < publ["id"].as_u64(), "in id order");
    for connection in items {
        assert_eq!(connection["transport"], "tcp");
        assert_eq!(connection["client_name"], "test");
        assert_eq!(connection["user"], "anonymous");
        assert!(connection["bytes_in"].as_u64().unwrap() > 0);
        assert!(connection["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
    }
    assert_eq!(sub["subscriptions"], 1);
    assert_eq!(sub["messages_out"], 3);
    assert_eq!(sub["pending_messages"], 0);
    assert_eq!(publ["messages_in"], 3);
    assert_eq!(publ["subscriptions"], 0);

    // One per page: the second page holds the publisher, and says so.
    let first = list(&broker, "/v1/connections?limit=1").await;
    assert_eq!(first["truncated"], true);
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let second = list(&broker, "/v1/connections?limit=1&offset=1").await;
    assert_eq!(second["items"][0]["id"], publ["id"]);
    assert_eq!(second["truncated"], false);
    let beyond = list(&broker, "/v1/connections?offset=5").await;
    assert_eq!(beyond["items"].as_array().unwrap().len(), 0);

    // A closed connection leaves the list.
    drop(publisher);
    wait_for(&broker, "/v1/connections", |v| v["total"] == 1).await;
    broker.stop().await;
}

#[tokio::test]
async fn subscriptions_and_topics_list_patterns_qos_durables_and_groups() {
    let broker = TestBroker::start().await;
    let mut a = broker.client().await;
    let plain = a.subscribe("prices.>").await;
    a.subscribe_with("jobs", 1, Some("worker"), None)
        .await
        .unwrap();
    let mut b = broker.client().await;
    b.subscribe_with("jobs", 1, None, Some("pool"))
        .await
        .unwrap();
    b.subscribe("prices.>").await;
    b.subscribe_with("tmp", 1, None, None).await.unwrap();

    let subscriptions = list(&broker, "/v1/subscriptions").await;
    assert_eq!(subscriptions["total"], 5);
    let items = subscriptions["items"].as_array().unwrap();
    let first = &items[0];
    assert_eq!(first["id"], plain);
    assert_eq!(first["pattern"], "prices.>");
    assert_eq!(first["qos"], 0);
    assert_eq!(first["durable"], Value::Null);
    assert_eq!(first["dropped"], 0);
    assert_eq!(items[1]["durable"], "worker");
    assert_eq!(items[1]["qos"], 1);
    assert_eq!(items[2]["queue_group"], "pool");
    assert_eq!(items[2]["durable"], "pool", "the group's stored queue");
    assert_eq!(items[4]["qos"], 1);
    assert_eq!(
        items[4]["durable"],
        Value::Null,
        "an ephemeral QoS 1 queue's internal name is not shown"
    );
    let page = list(&broker, "/v1/subscriptions?offset=3&limit=1").await;
    assert_eq!(page["items"][0]["pattern"], "prices.>");
    assert_eq!(page["truncated"], true);

    let topics = list(&broker, "/v1/topics").await;
    assert_eq!(topics["total"], 3);
    let jobs = &topics["items"][0];
    assert_eq!(jobs["pattern"], "jobs");
    assert_eq!(jobs["subscriptions"], 2);
    assert_eq!(jobs["queue_groups"], 1);
    assert_eq!(topics["items"][1]["pattern"], "prices.>");
    assert_eq!(topics["items"][1]["subscriptions"], 2);
    let second = list(&broker, "/v1/topics?limit=1&offset=1").await;
    assert_eq!(second["items"][0]["pattern"], "prices.>");
    assert_eq!(second["truncated"], true);
    broker.stop().await;
}

#[tokio::test]
async fn queues_show_what_a_durable_owes_and_delete_by_name_once_detached() {
    let broker = TestBroker::start_with(|c| c.delivery.max_in_flight = 1).await;
    let mut consumer = broker.client().await;
    let subscription = consumer
        .subscribe_with("jobs.*", 1, Some("billing"), None)
        .await
        .unwrap();
    let mut publisher = broker.client().await;
    for n in 1..=3u8 {
        publisher
            .publish_qos1(u64::from(n), "jobs.a", &[n])
            .await
            .unwrap();
    }
    let first = consumer.expect_delivery().await;
    // One in flight (its credit), two waiting.
    let queue = wait_for(&broker, "/v1/queues/billing", |q| q["unacked"] == 1).await;
    assert_eq!(queue["name"], "billing");
    assert_eq!(queue["pattern"], "jobs.*");
    assert_eq!(queue["kind"], "durable");
    assert_eq!(queue["consumers"], 1);
    assert_eq!(queue["pending"], 2);
    assert_eq!(queue["kept"], 3);
    assert_eq!(queue["redeliveries"], 0);
    assert_eq!(queue["dead_letters"], 0);
    assert!(queue["bytes_pinned"].as_u64().unwrap() > 0);
    assert!(queue["oldest_unacked_age_ms"].is_u64());
    assert_eq!(queue["detached_for_ms"], Value::Null);
    let all = list(&broker, "/v1/queues").await;
    assert_eq!(all["total"], 1);
    assert_eq!(all["items"][0]["name"], "billing");
    assert_eq!(all["items"][0]["pending"], 2);

    consumer.ack(subscription, first.delivery_id).await;
    wait_for(&broker, "/v1/queues/billing", |q| q["kept"] == 2).await;

    // Attached: refused, and nothing is lost.
    let refused = request(broker.metrics_addr, "DELETE", "/v1/queues/billing", None).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("attached"));
    assert_eq!(list(&broker, "/v1/queues/billing").await["kept"], 2);

    // Detached (its connection closed): deleted with what it kept.
    drop(consumer);
    wait_for(&broker, "/v1/queues/billing", |q| q["consumers"] == 0).await;
    let deleted = request(broker.metrics_addr, "DELETE", "/v1/queues/billing", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.json()["deleted"], "billing");
    assert_eq!(get(&broker, "/v1/queues/billing").await.status, 404);
    let again = request(broker.metrics_addr, "DELETE", "/v1/queues/billing", None).await;
    assert_eq!(again.status, 404);
    assert_eq!(list(&broker, "/v1/queues").await["total"], 0);

    // The name is free: a new durable with another pattern starts empty.
    let mut fresh = broker.client().await;
    fresh
        .subscribe_with("other", 1, Some("billing"), None)
        .await
        .expect("the deleted name can be used with any pattern");
    fresh.expect_nothing(Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn queue_names_in_paths_are_percent_decoded() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("t", 1, Some("team/a:b%"), None)
        .await
        .unwrap();
    let queue = list(&broker, "/v1/queues/team%2Fa%3Ab%25").await;
    assert_eq!(queue["name"], "team/a:b%");
    broker.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_status_and_a_reason() {
    let broker = TestBroker::start().await;
    let addr = broker.metrics_addr;
    for (method, target, status) in [
        ("GET", "/v1/nothing", 404),
        ("GET", "/v1/queues/", 404),
        ("GET", "/v1/queues/a/b", 404),
        ("GET", "/v1/queues/unknown", 404),
        ("GET", "/v1/queues/bad%zz", 400),
        ("GET", "/v1/connections?limit=abc", 400),
        ("GET", "/v1/connections?limit=0", 400),
        ("GET", "/v1/connections?limit=100000", 400),
        ("GET", "/v1/subscriptions?offset=-1", 400),
        ("GET", "/v1/topics?limit=1&limit=2", 400),
        ("POST", "/v1/server", 405),
        ("DELETE", "/v1/connections", 405),
        ("PUT", "/v1/queues/x", 405),
    ] {
        let answer = request(addr, method, target, None).await;
        assert_eq!(answer.status, status, "{method} {target}: {}", answer.body);
        let error = answer.json()["error"].as_str().map(str::to_string);
        assert!(
            error.is_some_and(|e| !e.is_empty()),
            "{method} {target}: {}",
            answer.body
        );
        if status == 405 {
            assert!(
                answer.allow.is_some(),
                "{method} {target}: 405 says what is allowed"
            );
        }
    }
    let answer = request(addr, "DELETE", "/metrics", None).await;
    assert_eq!(answer.status, 405);
    // HEAD answers a GET's head without its body.
    let head = request(addr, "HEAD", "/v1/server", None).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    broker.stop().await;
}

#[tokio::test]
async fn with_users_only_an_admin_key_opens_the_api_and_health_stays_open() {
    let broker = TestBroker::start_with(|c| {
        let user = |name: &str, key: &str, admin| UserConfig {
            name: name.into(),
            key_sha256: key_digest_hex(key),
            admin,
            ..UserConfig::default()
        };
        c.auth.users = vec![user("ops", "k-ops", true), user("app", "k-app", false)];
    })
    .await;
    let addr = broker.metrics_addr;
    for target in [
        "/v1/server",
        "/v1/connections",
        "/v1/subscriptions",
        "/v1/queues",
        "/v1/queues/x",
        "/v1/topics",
    ] {
        let none = request(addr, "GET", target, None).await;
        assert_eq!(none.status, 401, "{target} without a key");
        assert!(none.json()["error"].as_str().unwrap().contains("Bearer"));
        let wrong = request(addr, "GET", target, Some("nope")).await;
        assert_eq!(wrong.status, 401, "{target} with a wrong key");
        let app = request(addr, "GET", target, Some("k-app")).await;
        assert_eq!(app.status, 403, "{target} with a non-admin key");
        assert!(app.json()["error"].as_str().unwrap().contains("\"app\""));
        let admin = request(addr, "GET", target, Some("k-ops")).await;
        let expected = if target == "/v1/queues/x" { 404 } else { 200 };
        assert_eq!(admin.status, expected, "{target} with the admin key");
    }
    let delete = request(addr, "DELETE", "/v1/queues/x", Some("k-app")).await;
    assert_eq!(delete.status, 403);
    for open in ["/metrics", "/livez", "/healthz", "/readyz"] {
        assert_eq!(get(&broker, open).await.status, 200, "{open} needs no key");
    }
    broker.stop().await;
}

#[tokio::test]
async fn readyz_fails_while_draining_and_livez_answers_until_the_end() {
    let broker = TestBroker::start_with(|c| c.server.drain_delay_ms = 3_000).await;
    let addr = broker.metrics_addr;
    let mut client = RawClient::connect(broker.addr).await;
    client.handshake(None).await;
    client.subscribe("t").await;
    assert_eq!(get(&broker, "/readyz").await.status, 200);
    assert_eq!(get(&broker, "/livez").await.status, 200);
    let stopping = tokio::spawn(broker.stop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let draining = loop {
        let answer = request(addr, "GET", "/readyz", None).await;
        if answer.status == 503 {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "never draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(draining.body.contains("draining"), "{}", draining.body);
    assert_eq!(request(addr, "GET", "/livez", None).await.status, 200);
    let server = request(addr, "GET", "/v1/server", None).await.json();
    assert_eq!(server["draining"], true);
    // Clients are still served during the delay.
    client.sync().await;
    stopping.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the HTTP port closes when the broker stops"
    );
}

#[tokio::test]
async fn a_queue_counts_its_redeliveries_and_dead_letters() {
    let broker = TestBroker::start_with(|c| {
        c.delivery.ack_timeout_ms = 100;
        c.delivery.max_deliveries = 2;
    })
    .await;
    let mut consumer = broker.client().await;
    consumer
        .subscribe_with("jobs", 1, Some("flaky"), None)
        .await
        .unwrap();
    let mut publisher = broker.client().await;
    publisher.publish_qos1(1, "jobs", b"x").await.unwrap();
    // Never acked: sent, sent again after the ack timeout, then dead-lettered.
    assert_eq!(consumer.expect_delivery().await.delivery_count, 1);
    assert_eq!(consumer.expect_delivery().await.delivery_count, 2);
    let queue = wait_for(&broker, "/v1/queues/flaky", |q| q["dead_letters"] == 1).await;
    assert_eq!(queue["redeliveries"], 1);
    assert_eq!(queue["kept"], 0);
    assert_eq!(queue["oldest_unacked_age_ms"], Value::Null);
    broker.stop().await;
}
