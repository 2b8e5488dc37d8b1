//! `blipmq::foreign` against a live broker.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::error::PublishError;
use crate::options::PublishOptions;
use crate::transport::BoxFuture;
use crate::Client;

/// A broker on a free port with its log in a temporary directory (kept
/// while the returned guard lives).
async fn broker() -> (String, tempfile::TempDir) {
    broker_with(|_| {}).await
}

async fn broker_with(
    configure: impl FnOnce(&mut blipmq_broker::Config),
) -> (String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = blipmq_broker::Config::default();
    configure(&mut config);
    config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.enabled = false;
    config.wal.dir = data.path().join("wal");
    let listeners = blipmq_broker::Listeners::bind(&config).await.unwrap();
    let addr = listeners.clients.local_addr().unwrap().to_string();
    tokio::spawn(blipmq_broker::run(
        listeners,
        config,
        std::future::pending(),
    ));
    (addr, data)
}

async fn connect(addr: &str) -> Client {
    ConnectOptions {
        name: Some("foreign-test".into()),
        reconnect: Some(false),
        ..ConnectOptions::default()
    }
    .apply(Client::builder())
    .connect(addr)
    .await
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_queue_keeps_call_order_when_the_outgoing_queue_is_full() {
    let (addr, _data) = broker().await;
    let client = ConnectOptions {
        outgoing_capacity: Some(1),
        ..ConnectOptions::default()
    }
    .apply(Client::builder())
    .connect(&addr)
    .await
    .unwrap();
    let subscription = SharedSubscription::new(client.subscribe("order").await.unwrap());
    let calls = CallQueue::new(client.clone());
    // Made one after another without waiting, as JavaScript does: the
    // first is queued on the spot, the queue of one is then full, and
    // the rest wait their turn (QoS 0, QoS 1 and batches alike).
    let (mut on_the_spot, mut waiting) = (0, Vec::new());
    for i in 0..60u32 {
        let (topic, payload) = ("order".to_string(), Bytes::from(i.to_string()));
        if i % 10 == 9 {
            let mut batch = client.batch();
            batch.push(&topic, &payload, 0).unwrap();
            match calls.publish_batch(&mut batch).unwrap() {
                None => on_the_spot += 1,
                Some(queued) => waiting.push(Box::pin(async move { queued.await.map(|()| None) })
                    as BoxFuture<'static, Result<Option<u64>, PublishError>>),
            }
            assert!(batch.is_empty());
            continue;
        }
        let options = PublishOptions {
            qos: if i % 2 == 0 {
                crate::Qos::AtLeastOnce
            } else {
                crate::Qos::AtMostOnce
            },
            ..Default::default()
        };
        match calls.publish(topic, payload, options).unwrap() {
            Publishing::Queued(confirm) => {
                on_the_spot += 1;
                waiting.push(Box::pin(confirm.confirmed()));
            }
            Publishing::InOrder(queued) => {
                waiting.push(Box::pin(async move { queued.await?.confirmed().await }))
            }
        }
    }
    assert_eq!(on_the_spot, 1, "only the first found room");
    let flushed = calls.in_order(|client| async move { client.flush().await });
    for outcome in futures::future::join_all(waiting).await {
        outcome.unwrap();
    }
    flushed.await.expect("carried out").unwrap();
    assert!(calls.is_idle());
    let mut got = Vec::new();
    while got.len() < 60 {
        let batch = subscription
            .next_batch(100, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(!batch.is_empty(), "only {} arrived", got.len());
        got.extend(
            batch
                .messages
                .iter()
                .map(|m| String::from_utf8_lossy(m.payload()).into_owned()),
        );
    }
    let expected: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
    // An invalid publish fails at once, queued or not.
    let error = calls
        .publish("bad topic".into(), Bytes::new(), PublishOptions::default())
        .err()
        .expect("refused");
    assert_eq!(error.code(), crate::ErrorCode::InvalidTopic);
    assert_eq!(queue_stopped().code(), crate::ErrorCode::ClientClosed);
    client.close().await;
}

#[tokio::test]
async fn next_batch_times_out_empty_then_takes_what_is_buffered() {
    let (addr, _data) = broker().await;
    let client = connect(&addr).await;
    let subscription = SharedSubscription::new(client.subscribe("t.>").await.unwrap());
    let empty = subscription
        .next_batch(10, Some(Duration::from_millis(20)))
        .await;
    assert!(empty.is_some_and(|b| b.is_empty()));
    for i in 0..5 {
        client.publish("t.a", format!("{i}")).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let batch = subscription
            .next_batch(3, Some(Duration::from_secs(5)))
            .await
            .expect("not ended");
        let batch = batch.messages;
        assert!(!batch.is_empty() && batch.len() <= 3, "{}", batch.len());
        got.extend(batch.into_iter().map(|m| m.payload().to_vec()));
    }
    let expected: Vec<Vec<u8>> = (0..5).map(|i| format!("{i}").into_bytes()).collect();
    assert_eq!(got, expected);
    assert_eq!(
        subscription.next_batch(0, None).await.map(|b| b.is_empty()),
        Some(true)
    );
    client.close().await;
}

#[tokio::test]
async fn a_cancelled_next_batch_loses_no_message() {
    let (addr, _data) = broker().await;
    let client = connect(&addr).await;
    let subscription = SharedSubscription::new(client.subscribe("c").await.unwrap());
    // Cancelled while it waits: nothing has arrived, nothing is taken.
    let waiting = subscription.next_batch(10, None);
    assert!(tokio::time::timeout(Duration::from_millis(30), waiting)
        .await
        .is_err());
    client.publish("c", "kept").await.unwrap();
    let batch = subscription
        .next_batch(10, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(&batch.messages[0].payload()[..], b"kept");
    client.close().await;
}

#[tokio::test]
async fn unsubscribe_and_detach_wake_a_waiting_reader() {
    let (addr, _data) = broker().await;
    let client = connect(&addr).await;
    for end in ["unsubscribe", "detach"] {
        let subscription = SharedSubscription::new(client.subscribe("w").await.unwrap());
        let reader = tokio::spawn({
            let subscription = subscription.clone();
            async move { subscription.next_batch(10, None).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        match end {
            "unsubscribe" => subscription.unsubscribe().await.unwrap(),
            _ => subscription.detach(),
        }
        let woken = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader was woken")
            .unwrap();
        assert!(woken.is_none(), "{end}");
        assert!(subscription.is_ended());
        assert!(subscription.next_batch(1, None).await.is_none(), "{end}");
        assert!(subscription.try_next_batch(1).is_empty());
        // A second end does nothing.
        subscription.unsubscribe().await.unwrap();
        subscription.detach();
    }
    client.close().await;
}

#[tokio::test]
async fn unsubscribe_while_a_reader_waits_tells_the_broker() {
    // The reader woken by `unsubscribe` must leave the subscription for
    // `unsubscribe` to take and send, rather than drop it (which only
    // detaches): a durable subscription is then deleted, not kept.
    let (addr, _data) = broker().await;
    let client = connect(&addr).await;
    let options = crate::SubscribeOptions {
        qos: crate::Qos::AtLeastOnce,
        durable: Some("jobs".into()),
        ..Default::default()
    };
    let subscription = SharedSubscription::new(
        client
            .subscribe_with("jobs.*", options.clone())
            .await
            .unwrap(),
    );
    let reader = tokio::spawn({
        let subscription = subscription.clone();
        async move { subscription.next_batch(10, None).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    subscription.unsubscribe().await.unwrap();
    assert!(reader.await.unwrap().is_none());
    // Deleted: a message published now is kept by no one, so a new
    // durable subscription with the name starts empty.
    client
        .publish_with(
            "jobs.a",
            "after",
            crate::PublishOptions {
                qos: crate::Qos::AtLeastOnce,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let again = SharedSubscription::new(client.subscribe_with("jobs.*", options).await.unwrap());
    let batch = again
        .next_batch(10, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(
        batch.is_empty(),
        "the durable subscription outlived unsubscribe"
    );
    client.close().await;
}

#[tokio::test]
async fn every_discard_reaches_the_reader_once_in_line_even_with_nothing_after_it() {
    // drop_new with a queue of 4 and a reader that stops: it loses the
    // newest messages at the broker (QUEUE-6).
    let (addr, _data) = broker_with(|config| {
        config.queues.subscriber_capacity = 4;
        config.queues.overflow_policy = blipmq_broker::OverflowPolicy::DropNew;
        config.delivery.max_batch = 1;
        config.delivery.max_batch_bytes = 1;
    })
    .await;
    let consumer = ConnectOptions {
        subscription_capacity: Some(1),
        ..ConnectOptions::default()
    }
    .apply(Client::builder())
    .connect(&addr)
    .await
    .unwrap();
    let subscription = SharedSubscription::new(consumer.subscribe("gap").await.unwrap());
    let producer = connect(&addr).await;
    const TOTAL: u32 = 1_500;
    for i in 0..TOTAL {
        // 64 KiB each, 96 MB in all: more than the socket buffers hold.
        let mut payload = vec![0u8; 64 * 1024];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        producer.publish("gap", payload).await.unwrap();
    }
    producer.flush().await.unwrap();
    let (mut received, mut reported, mut next_index) = (0u64, 0u64, 0u32);
    // Reported on its own (nothing had followed it yet): not carried again.
    let mut reported_alone = 0;
    loop {
        let batch = subscription
            .next_batch(16, Some(Duration::from_millis(500)))
            .await
            .expect("not ended");
        if batch.is_empty() {
            break;
        }
        for message in &batch.messages {
            let index = u32::from_be_bytes(message.payload()[..4].try_into().unwrap());
            assert_eq!(
                std::mem::take(&mut reported_alone) + message.dropped_before(),
                u64::from(index - next_index),
                "the gap before message {index}"
            );
            reported += message.dropped_before();
            received += 1;
            next_index = index + 1;
        }
        reported += batch.dropped_after;
        reported_alone += batch.dropped_after;
    }
    assert_eq!(
        reported_alone,
        u64::from(TOTAL - next_index),
        "the newest were lost"
    );
    assert!(received < u64::from(TOTAL), "the reader fell behind");
    assert_eq!(received + reported, u64::from(TOTAL), "all accounted for");
    assert_eq!(subscription.dropped(), reported, "each reported once");
    consumer.close().await;
    producer.close().await;
}

#[tokio::test]
async fn a_result_never_claimed_goes_back_in_front_in_order() {
    let (addr, _data) = broker().await;
    let client = connect(&addr).await;
    let subscription = SharedSubscription::new(client.subscribe("claim").await.unwrap());
    for i in 0..5 {
        client.publish("claim", format!("{i}")).await.unwrap();
    }
    client.flush().await.unwrap();
    let payloads = |received: &Received| -> Vec<String> {
        received
            .messages
            .iter()
            .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
            .collect()
    };
    // Wait until all five are buffered, then take three and drop them
    // unclaimed (a binding whose caller gave up after the result was made).
    while subscription.shared_len() < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unclaimed = subscription
        .next_batch_claimable(3, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    // The subscription is held until then: another read waits.
    let waiting = tokio::time::timeout(
        Duration::from_millis(50),
        subscription.next_batch(10, Some(Duration::from_secs(5))),
    )
    .await;
    assert!(waiting.is_err(), "a read waits for the unclaimed result");
    drop(unclaimed);
    client.publish("claim", "5").await.unwrap();
    client.flush().await.unwrap();
    // Handed out again first, oldest first, then what was newer.
    assert_eq!(subscription.try_next_batch(2).len(), 2, "0 and 1");
    let again = subscription
        .next_batch(10, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(payloads(&again), ["2"], "the rest of what was handed back");
    let mut rest = Vec::new();
    while rest.len() < 3 {
        let batch = subscription
            .next_batch(10, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(!batch.is_empty());
        rest.extend(payloads(&batch));
    }
    assert_eq!(rest, ["3", "4", "5"]);
    client.close().await;
}
