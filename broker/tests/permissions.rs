//! Users and their rights (`[[auth.users]]`): keys found by digest, publish
//! and subscribe allow/deny lists, stored queue names, `$` topics reserved
//! to the broker, the deprecated `api_keys`, and a reload that closes the
//! connections of users it removed or changed (SPEC AUTH-1 to AUTH-7).

mod common;

use blipmq_broker::auth::{key_digest_hex, Users};
use blipmq_broker::config::{RulesConfig, UserConfig};
use blipmq_broker::Config;
use blipmq_protocol::{decode, ErrorCode, Frame, Publish};
use common::{RawClient, TestBroker};

const ORDERS_KEY: &str = "bmq_orders_0123456789abcdef0123456789abcdef";
const READER_KEY: &str = "bmq_reader_0123456789abcdef0123456789abcdef";
const OPS_KEY: &str = "bmq_ops_0123456789abcdef0123456789abcdef";

fn rules(allow: Option<&[&str]>, deny: &[&str]) -> RulesConfig {
    RulesConfig {
        allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    }
}

/// orders: publishes orders.>, subscribes orders.> but not orders.secret,
/// uses queues "orders-*". reader: subscribes anything but publishes
/// nothing. ops: admin.
fn users() -> Vec<UserConfig> {
    vec![
        UserConfig {
            name: "orders".into(),
            key_sha256: key_digest_hex(ORDERS_KEY),
            publish: rules(Some(&["orders.>"]), &[]),
            subscribe: rules(Some(&["orders.>"]), &["orders.secret"]),
            queues: Some(vec!["orders-*".into()]),
            admin: false,
        },
        UserConfig {
            name: "reader".into(),
            key_sha256: key_digest_hex(READER_KEY),
            publish: rules(Some(&[]), &[]),
            subscribe: RulesConfig::default(),
            queues: None,
            admin: false,
        },
        UserConfig {
            name: "ops".into(),
            key_sha256: key_digest_hex(OPS_KEY),
            admin: true,
            ..UserConfig::default()
        },
    ]
}

async fn broker() -> TestBroker {
    TestBroker::start_with(|c: &mut Config| c.auth.users = users()).await
}

async fn login(broker: &TestBroker, key: &str) -> RawClient {
    let mut client = RawClient::connect(broker.addr).await;
    client.handshake(Some(key)).await;
    client
}

/// Publish with a request id and return the broker's Error for it.
async fn publish_refused(
    client: &mut RawClient,
    topic: &str,
    publish_id: u64,
) -> (ErrorCode, String) {
    client
        .send(&Frame::Publish(Publish {
            publish_id,
            topic,
            payload: b"x",
            ttl_ms: 0,
            qos: 0,
            headers: vec![],
        }))
        .await;
    let (code, message, request_id) = client.expect_error().await;
    assert_eq!(request_id, publish_id);
    (code, message)
}

#[tokio::test]
async fn a_user_publishes_only_where_allowed_and_is_told_why_not() {
    let broker = broker().await;
    let mut orders = login(&broker, ORDERS_KEY).await;
    let mut reader = login(&broker, READER_KEY).await;
    reader.subscribe("orders.>").await;
    orders.publish("orders.created", b"1").await;
    assert_eq!(reader.expect_delivery().await.payload, b"1");

    let (code, message) = publish_refused(&mut orders, "billing.invoice", 7).await;
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(
        message.contains("orders") && message.contains("billing.invoice"),
        "{message}"
    );
    // The connection goes on after a refusal.
    orders.publish("orders.shipped", b"2").await;
    assert_eq!(reader.expect_delivery().await.payload, b"2");

    let (code, _) = publish_refused(&mut reader, "orders.created", 8).await;
    assert_eq!(
        code,
        ErrorCode::PermissionDenied,
        "reader publishes nothing"
    );
    assert_eq!(broker.metric("blipmq_permission_denials_total").await, 2);
    broker.stop().await;
}

#[tokio::test]
async fn a_subscription_must_be_covered_and_must_not_reach_a_denied_topic() {
    let broker = broker().await;
    let mut orders = login(&broker, ORDERS_KEY).await;
    assert!(orders
        .subscribe_with("orders.created", 0, None, None)
        .await
        .is_ok());
    assert!(orders
        .subscribe_with("orders.*.eu", 0, None, None)
        .await
        .is_ok());
    // Not covered by orders.>.
    assert_eq!(
        orders.subscribe_with("billing.>", 0, None, None).await,
        Err(ErrorCode::PermissionDenied)
    );
    // Covered, but it would reach orders.secret, which is denied.
    assert_eq!(
        orders.subscribe_with("orders.*", 0, None, None).await,
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        orders.subscribe_with("orders.secret", 0, None, None).await,
        Err(ErrorCode::PermissionDenied)
    );
    broker.stop().await;
}

#[tokio::test]
async fn another_users_queue_is_refused() {
    let broker = broker().await;
    let mut reader = login(&broker, READER_KEY).await;
    // reader may use any queue name: it makes "audit".
    reader
        .subscribe_with("orders.>", 1, Some("audit"), None)
        .await
        .expect("reader's durable subscription");
    let mut orders = login(&broker, ORDERS_KEY).await;
    for (durable, group) in [(Some("audit"), None), (None, Some("audit"))] {
        assert_eq!(
            orders
                .subscribe_with("orders.created", 1, durable, group)
                .await,
            Err(ErrorCode::PermissionDenied),
            "orders may not attach to reader's queue"
        );
    }
    assert!(orders
        .subscribe_with("orders.created", 1, Some("orders-billing"), None)
        .await
        .is_ok());
    broker.stop().await;
}

#[tokio::test]
async fn dollar_topics_are_the_brokers_unless_admin() {
    let broker = broker().await;
    let mut reader = login(&broker, READER_KEY).await;
    let mut ops = login(&broker, OPS_KEY).await;
    // A fake dead letter from a user: refused.
    let mut orders = login(&broker, ORDERS_KEY).await;
    let (code, message) = publish_refused(&mut orders, "$dlq.audit", 3).await;
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(message.contains('$'), "{message}");
    // Open subscribe rights include a `$` topic named in full (no wildcard
    // reaches one); publishing there takes an admin.
    assert!(reader
        .subscribe_with("$dlq.audit", 0, None, None)
        .await
        .is_ok());
    ops.publish("$dlq.audit", b"from ops").await;
    assert_eq!(reader.expect_delivery().await.payload, b"from ops");
    broker.stop().await;
}

#[tokio::test]
async fn a_broker_without_keys_reserves_dollar_topics_too() {
    let broker = TestBroker::start().await;
    let mut anonymous = broker.client().await;
    let (code, _) = publish_refused(&mut anonymous, "$dlq.x", 1).await;
    assert_eq!(code, ErrorCode::PermissionDenied);
    anonymous.publish("plain", b"fine").await;
    anonymous.sync().await;
    broker.stop().await;
}

#[tokio::test]
async fn deprecated_api_keys_are_users_with_every_right() {
    let broker = TestBroker::start_with(|c| {
        c.auth.api_keys = vec!["legacy-key".into()];
        c.auth.users = users();
    })
    .await;
    let mut legacy = login(&broker, "legacy-key").await;
    legacy.publish("$dlq.anything", b"as before").await;
    legacy
        .subscribe_with("anything.>", 1, Some("any-queue"), None)
        .await
        .unwrap();
    let mut stranger = RawClient::connect(broker.addr).await;
    stranger.send_hello(Some("not-a-key")).await;
    assert_eq!(stranger.expect_error().await.0, ErrorCode::AuthFailed);
    let mut keyless = RawClient::connect(broker.addr).await;
    keyless.send_hello(None).await;
    assert_eq!(keyless.expect_error().await.0, ErrorCode::AuthFailed);
    broker.stop().await;
}

#[tokio::test]
async fn a_reload_closes_the_connections_of_removed_or_changed_users_only() {
    let broker = broker().await;
    let mut orders = login(&broker, ORDERS_KEY).await;
    let mut reader = login(&broker, READER_KEY).await;
    let mut ops = login(&broker, OPS_KEY).await;

    // orders removed, reader's rights changed, ops unchanged.
    let mut next = users();
    next.retain(|u| u.name != "orders");
    next[0].subscribe = rules(Some(&["public.>"]), &[]);
    let auth = blipmq_broker::config::AuthConfig {
        users: next,
        ..Default::default()
    };
    broker.auth.replace(Users::from_config(&auth));

    for client in [&mut orders, &mut reader] {
        let (code, message, _) = client.expect_error().await;
        assert_eq!(code, ErrorCode::AuthFailed);
        assert!(message.contains("reload"), "{message}");
        assert!(client.expect_closed().await.is_empty());
    }
    ops.publish("still.here", b"ok").await;
    let pongs = ops.sync().await;
    assert!(
        pongs
            .iter()
            .all(|b| !matches!(decode(b).unwrap(), Frame::Error(_))),
        "ops is untouched"
    );
    // The removed key no longer logs in; the changed user does, with the new rights.
    let mut again = RawClient::connect(broker.addr).await;
    again.send_hello(Some(ORDERS_KEY)).await;
    assert_eq!(again.expect_error().await.0, ErrorCode::AuthFailed);
    let mut reader = login(&broker, READER_KEY).await;
    assert_eq!(
        reader.subscribe_with("orders.>", 0, None, None).await,
        Err(ErrorCode::PermissionDenied)
    );
    assert!(reader
        .subscribe_with("public.news", 0, None, None)
        .await
        .is_ok());
    broker.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_anonymous_clients_until_keys_are_required() {
    let broker = TestBroker::start().await;
    let mut anonymous = broker.client().await;
    // Nothing changed: the anonymous client goes on.
    broker.auth.replace(Users::from_config(&Default::default()));
    anonymous.publish("still.open", b"ok").await;
    let before = anonymous.sync().await;
    assert!(before
        .iter()
        .all(|b| !matches!(decode(b).unwrap(), Frame::Error(_))));
    // Users now: a client without a key is no longer admitted.
    let auth = blipmq_broker::config::AuthConfig {
        users: users(),
        ..Default::default()
    };
    broker.auth.replace(Users::from_config(&auth));
    let (code, _, _) = anonymous.expect_error().await;
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(anonymous.expect_closed().await.is_empty());
    broker.stop().await;
}

#[test]
fn bad_user_entries_are_refused_naming_the_user() {
    let invalid = |text: &str| Config::from_toml(text).unwrap_err().to_string();
    let digest = key_digest_hex("k");
    let user =
        |extra: &str| format!("[[auth.users]]\nname = \"u\"\nkey_sha256 = \"{digest}\"\n{extra}");
    assert!(
        invalid("[[auth.users]]\nname = \"u\"\nkey_sha256 = \"abc\"").contains("64 hexadecimal")
    );
    assert!(invalid(&user("publish = { allow = [\"a..b\"] }")).contains("publish.allow"));
    assert!(invalid(&user("queues = [\"a*b*\"]")).contains("queues"));
    let twice = format!("{}\n{}", user(""), user(""));
    assert!(invalid(&twice).contains("named twice"));
    Config::from_toml(&user(
        "subscribe = { allow = [\"a.>\"], deny = [\"a.b\"] }\nqueues = [\"a-*\"]",
    ))
    .unwrap();
}
