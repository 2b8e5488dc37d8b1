//! The client against a live broker (in-process, on 127.0.0.1:0).

use std::time::Duration;

use blipmq::{
    Client, ClientEvent, ConnectErrorKind, ConnectionStatus, DisconnectKind, ErrorCode, Headers,
    PublishErrorKind, PublishOptions, Qos, ReconnectPolicy, RequestErrorKind, SubscribeErrorKind,
    SubscribeOptions, SubscriptionEvent,
};
use futures::StreamExt;

mod common;

use common::{Broker, PATIENCE};

async fn next(sub: &mut blipmq::Subscription) -> blipmq::Message {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("a message in time")
        .expect("subscription still open")
}

async fn nothing_within(sub: &mut blipmq::Subscription, wait: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(wait, sub.next()).await {
        panic!("unexpected message on {}: {m:?}", m.topic());
    }
}

#[tokio::test]
async fn round_trip_with_message_fields() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    assert_eq!(client.status(), ConnectionStatus::Connected);
    assert_eq!(client.max_message_size(), 1024 * 1024);
    let mut sub = client.subscribe("greetings.en").await.unwrap();
    assert_eq!(sub.pattern(), "greetings.en");
    client.publish("greetings.en", "hello").await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.topic(), "greetings.en");
    assert_eq!(&m.payload()[..], b"hello");
    assert!(m.id() > 0);
    assert!(m.timestamp_ms() > 1_700_000_000_000);
    assert_eq!(m.delivery_count(), 1);
    m.ack().await.unwrap();
    client.close().await;
    assert_eq!(client.status(), ConnectionStatus::Closed);
    broker.stop().await;
}

#[tokio::test]
async fn wildcards_and_fan_out_across_clients() {
    let broker = Broker::start().await;
    let mut subs = Vec::new();
    let mut clients = Vec::new();
    for pattern in ["metrics.*", "metrics.>", "metrics.cpu", "*.cpu"] {
        let c = Client::connect(broker.url()).await.unwrap();
        subs.push(c.subscribe(pattern).await.unwrap());
        clients.push(c);
    }
    let publisher = Client::connect(broker.url()).await.unwrap();
    for i in 0..100u32 {
        publisher
            .publish("metrics.cpu", i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    publisher
        .publish("metrics.cpu.core0", "deep")
        .await
        .unwrap();
    for sub in subs.iter_mut() {
        for i in 0..100u32 {
            assert_eq!(&next(sub).await.payload()[..], i.to_be_bytes());
        }
    }
    // Only `metrics.>` matches the deeper topic.
    assert_eq!(next(&mut subs[1]).await.topic(), "metrics.cpu.core0");
    for i in [0, 2, 3] {
        nothing_within(&mut subs[i], Duration::from_millis(100)).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribe_and_drop_both_stop_deliveries() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let a = client.subscribe("t").await.unwrap();
    let b = client.subscribe("t").await.unwrap();
    let mut c = client.subscribe("t").await.unwrap();
    a.unsubscribe().await.unwrap();
    drop(b);
    // The unsubscribe from Drop is queued ahead of this publish.
    client.publish("t", "after").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(&next(&mut c).await.payload()[..], b"after");
    nothing_within(&mut c, Duration::from_millis(100)).await;
    // The broker holds exactly one subscription for this connection now:
    // a second publish arrives exactly once.
    client.publish("t", "again").await.unwrap();
    assert_eq!(&next(&mut c).await.payload()[..], b"again");
    nothing_within(&mut c, Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn interleaved_subscriptions_on_one_connection_each_get_their_own_topics() {
    // One connection, several subscriptions whose deliveries interleave:
    // each message must reach the subscription it was routed to, with its
    // own topic, even as one subscription ends and another starts midway.
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut exact = Vec::new();
    for t in 0..5 {
        exact.push(client.subscribe(&format!("room.{t}")).await.unwrap());
    }
    let mut wildcard = client.subscribe("room.*").await.unwrap();
    let publisher = Client::connect(broker.url()).await.unwrap();
    for i in 0..50u32 {
        let t = i % 5;
        publisher
            .publish(&format!("room.{t}"), i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for (t, sub) in exact.iter_mut().enumerate() {
        for i in (t as u32..50).step_by(5) {
            let m = next(sub).await;
            assert_eq!(m.topic(), format!("room.{t}"));
            assert_eq!(&m.payload()[..], i.to_be_bytes());
        }
    }
    for i in 0..50u32 {
        let m = next(&mut wildcard).await;
        assert_eq!(m.topic(), format!("room.{}", i % 5));
        assert_eq!(&m.payload()[..], i.to_be_bytes());
    }

    // End one subscription, start another on the same topic.
    let ended = exact.remove(0);
    ended.unsubscribe().await.unwrap();
    let mut replacement = client.subscribe("room.0").await.unwrap();
    for t in 0..5u32 {
        publisher
            .publish(&format!("room.{t}"), format!("after {t}"))
            .await
            .unwrap();
    }
    let m = next(&mut replacement).await;
    assert_eq!((m.topic(), &m.payload()[..]), ("room.0", &b"after 0"[..]));
    for (t, sub) in exact.iter_mut().enumerate() {
        let m = next(sub).await;
        assert_eq!(m.topic(), format!("room.{}", t + 1));
        assert_eq!(m.payload()[..], *format!("after {}", t + 1).as_bytes());
    }
    for t in 0..5u32 {
        assert_eq!(next(&mut wildcard).await.topic(), format!("room.{t}"));
    }
    nothing_within(&mut replacement, Duration::from_millis(100)).await;
    client.close().await;
    publisher.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn local_validation_errors_carry_wire_codes() {
    let broker = Broker::start_with(|c| c.server.max_message_size_bytes = 64).await;
    let client = Client::connect(broker.url()).await.unwrap();
    let e = client.publish("bad..topic", "x").await.unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::InvalidTopic);
    assert_eq!(e.code(), ErrorCode::InvalidTopic);
    assert_eq!(e.code().0, 300);
    let e = client.publish("ok", vec![0u8; 65]).await.unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::MessageTooLarge);
    assert_eq!(e.code_name(), "MessageTooLarge");
    assert!(
        e.message().contains("65") && e.message().contains("64"),
        "{e}"
    );
    client.publish("ok", vec![0u8; 64]).await.unwrap();
    let e = client.subscribe("a.>.b").await.unwrap_err();
    assert_eq!(e.kind(), SubscribeErrorKind::InvalidTopic);
    assert_eq!(e.code(), ErrorCode::InvalidTopic);
    broker.stop().await;
}

#[tokio::test]
async fn try_publish_queues_without_waiting_or_refuses_with_queue_full() {
    let broker = Broker::start().await;
    let receiver = Client::connect(broker.url()).await.unwrap();
    let mut sub = receiver.subscribe("try.>").await.unwrap();
    // One frame of room: a burst from one thread overruns it.
    let client = Client::builder()
        .outgoing_capacity(1)
        .connect(broker.url())
        .await
        .unwrap();
    let mut queued = Vec::new();
    let mut full = 0;
    for i in 0..2_000u32 {
        match client.try_publish_with("try.x", i.to_string(), PublishOptions::default()) {
            Ok(()) => queued.push(i),
            Err(e) => {
                assert_eq!(e.kind(), PublishErrorKind::QueueFull);
                assert_eq!(e.code(), ErrorCode::QueueFull);
                assert_eq!(e.code().0, 402);
                full += 1;
            }
        }
    }
    assert!(full > 0, "a queue of one frame never filled");
    assert!(!queued.is_empty());
    // Exactly the queued messages arrive, in order.
    for i in &queued {
        assert_eq!(next(&mut sub).await.payload(), i.to_string().as_bytes());
    }
    nothing_within(&mut sub, Duration::from_millis(100)).await;

    // The same checks as publish, before anything is queued.
    let e = client
        .try_publish_with("bad..topic", "x", PublishOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::InvalidTopic);
    let qos1 = PublishOptions {
        qos: Qos::AtLeastOnce,
        ..PublishOptions::default()
    };
    let e = client.try_publish_with("try.x", "x", qos1).unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::InvalidArgument);
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    client.close().await;
    let e = client
        .try_publish_with("try.x", "x", PublishOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::Closed);
    assert_eq!(e.code(), ErrorCode::ClientClosed);
    broker.stop().await;
}

#[tokio::test]
async fn a_batch_goes_out_whole_in_push_order_or_waits_for_room() {
    let broker = Broker::start_with(|c| c.server.max_message_size_bytes = 64).await;
    let receiver = Client::connect(broker.url()).await.unwrap();
    let mut sub = receiver.subscribe("batch.>").await.unwrap();
    let client = Client::builder()
        .outgoing_capacity(1)
        .connect(broker.url())
        .await
        .unwrap();

    // A push that fails adds nothing; the batch keeps what it had.
    let mut batch = client.batch();
    batch.push("batch.a", b"0", 0).unwrap();
    let e = batch.push("bad..topic", b"x", 0).unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::InvalidTopic);
    assert_eq!(e.code(), ErrorCode::InvalidTopic);
    let e = batch.push("batch.a", &[0u8; 65], 0).unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::MessageTooLarge);
    assert_eq!(e.code(), ErrorCode::MessageTooLarge);
    // Topics may change within a batch; each is checked.
    batch.push("batch.b", b"1", 0).unwrap();
    let e = batch.push("batch.>", b"x", 0).unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::InvalidTopic);
    batch.push("batch.a", b"2", 60_000).unwrap();
    assert_eq!(batch.len(), 3);
    client.try_publish_batch(&mut batch).unwrap();
    assert!(batch.is_empty(), "a queued batch is emptied for reuse");
    for (topic, payload) in [("batch.a", "0"), ("batch.b", "1"), ("batch.a", "2")] {
        let message = next(&mut sub).await;
        assert_eq!(
            (message.topic(), &message.payload()[..]),
            (topic, payload.as_bytes())
        );
    }

    // clear() drops what was pushed; the batch stays usable.
    batch.push("batch.a", b"dropped", 0).unwrap();
    batch.clear();
    assert!(batch.is_empty());
    assert_eq!(batch.encoded_len(), 0);
    batch.push("batch.a", b"kept", 0).unwrap();
    client.try_publish_batch(&mut batch).unwrap();
    assert_eq!(&next(&mut sub).await.payload()[..], b"kept");

    // One slot of queue: batches pushed from one thread overrun it, and a
    // refused batch is left whole for the waiting call.
    let mut sent = 0u32;
    let mut refused = None;
    for round in 0..2_000u32 {
        let mut batch = client.batch();
        for i in 0..10 {
            batch
                .push("batch.n", (round * 10 + i).to_string().as_bytes(), 0)
                .unwrap();
        }
        match client.try_publish_batch(&mut batch) {
            Ok(()) => sent += 10,
            Err(e) => {
                assert_eq!(e.kind(), PublishErrorKind::QueueFull);
                assert_eq!(e.code(), ErrorCode::QueueFull);
                assert_eq!(batch.len(), 10);
                refused = Some((round, batch));
                break;
            }
        }
    }
    let (round, batch) = refused.expect("a queue of one slot never filled");
    assert_eq!(sent, round * 10);
    client.publish_batch(batch).await.unwrap();
    for i in 0..sent + 10 {
        assert_eq!(next(&mut sub).await.payload(), i.to_string().as_bytes());
    }
    nothing_within(&mut sub, Duration::from_millis(100)).await;

    client.close().await;
    let mut batch = client.batch();
    batch.push("batch.a", b"late", 0).unwrap();
    let e = client.try_publish_batch(&mut batch).unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::Closed);
    assert_eq!(e.code(), ErrorCode::ClientClosed);
    let e = client.publish_batch(batch).await.unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::Closed);
    broker.stop().await;
}

#[tokio::test]
async fn broker_refusals_surface_with_the_brokers_code() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    // A queue group name the broker does not accept.
    let e = client
        .subscribe_with(
            "q",
            SubscribeOptions {
                group: Some("two words".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), SubscribeErrorKind::Rejected);
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    // A durable subscription must be QoS 1.
    let e = client
        .subscribe_with(
            "q",
            SubscribeOptions {
                durable: Some("d".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), SubscribeErrorKind::Rejected);
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    broker.stop().await;
}

#[tokio::test]
async fn auth_failure_and_success() {
    let broker = Broker::start_with(|c| c.auth.api_keys = vec!["right".into()]).await;
    let e = Client::connect(broker.url()).await.unwrap_err();
    assert_eq!(e.kind(), ConnectErrorKind::AuthFailed);
    assert_eq!(e.code(), ErrorCode::AuthFailed);
    let e = Client::builder()
        .api_key("wrong")
        .connect(broker.url())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ConnectErrorKind::AuthFailed);
    assert_eq!(e.code().0, 200);
    let client = Client::builder()
        .api_key("right")
        .name("tester")
        .connect(broker.url())
        .await
        .unwrap();
    let mut sub = client.subscribe("x").await.unwrap();
    client.publish("x", "y").await.unwrap();
    assert_eq!(&next(&mut sub).await.payload()[..], b"y");
    broker.stop().await;
}

#[tokio::test]
async fn connect_errors_for_unreachable_and_full_brokers() {
    // A port nobody listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let e = Client::connect(addr.to_string()).await.unwrap_err();
    assert_eq!(e.kind(), ConnectErrorKind::Io);
    assert_eq!(e.code(), ErrorCode::ConnectFailed);

    let broker = Broker::start_with(|c| c.server.max_connections = 1).await;
    let _first = Client::connect(broker.url()).await.unwrap();
    let e = Client::connect(broker.url()).await.unwrap_err();
    assert_eq!(e.kind(), ConnectErrorKind::Rejected);
    assert_eq!(e.code(), ErrorCode::TooManyConnections);
    broker.stop().await;
}

#[tokio::test]
async fn reconnects_after_a_broker_restart_and_resubscribes() {
    let broker = Broker::start().await;
    let addr = broker.addr;
    let client = Client::builder()
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..Default::default()
        })
        .connect(addr.to_string())
        .await
        .unwrap();
    let mut events = Box::pin(client.events());
    let mut sub = client.subscribe("survives.restart").await.unwrap();
    client.publish("survives.restart", "before").await.unwrap();
    assert_eq!(&next(&mut sub).await.payload()[..], b"before");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.next())
            .await
            .is_err(),
        "the first connection is not an event"
    );

    broker.stop().await;
    let disconnected = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(ClientEvent::Disconnected { reason }) = events.next().await {
                return reason;
            }
        }
    })
    .await
    .expect("a Disconnected event");
    // A broker that stops closes its connections (or they reset): never a
    // protocol failure, and the code of a closed connection.
    assert!(
        matches!(
            disconnected.kind(),
            DisconnectKind::BrokerClosed | DisconnectKind::Io
        ),
        "{disconnected:?}"
    );
    assert_eq!(disconnected.code(), ErrorCode::ConnectionClosed);
    assert_eq!(client.status(), ConnectionStatus::Reconnecting);

    let broker = Broker::start_at(addr, |_| {}).await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(ClientEvent::Connected { .. }) = events.next().await {
                return;
            }
        }
    })
    .await
    .expect("reconnected");
    assert_eq!(client.status(), ConnectionStatus::Connected);
    // The event comes once the subscription has been sent again, so a
    // flush after it returns once the broker has it: one publish from
    // another client then reaches it.
    client.flush().await.unwrap();
    let other = Client::connect(addr.to_string()).await.unwrap();
    other.publish("survives.restart", "after").await.unwrap();
    assert_eq!(&next(&mut sub).await.payload()[..], b"after");
    broker.stop().await;
}

#[tokio::test]
async fn the_event_stream_ends_after_closed_and_one_made_later_is_empty() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let events = client.events();
    client.close().await;
    let all: Vec<ClientEvent> = tokio::time::timeout(PATIENCE, events.collect())
        .await
        .expect("the stream ends");
    assert_eq!(all, vec![ClientEvent::Closed]);
    let later: Vec<ClientEvent> = tokio::time::timeout(PATIENCE, client.events().collect())
        .await
        .expect("a stream made after close ends at once");
    assert!(later.is_empty(), "{later:?}");
    broker.stop().await;
}

#[tokio::test]
async fn without_reconnect_a_lost_connection_closes_the_client_and_ends_subscriptions() {
    let broker = Broker::start().await;
    let client = Client::builder()
        .reconnect(ReconnectPolicy::disabled())
        .connect(broker.url())
        .await
        .unwrap();
    let mut sub = client.subscribe("x").await.unwrap();
    broker.stop().await;
    let end = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
    assert_eq!(client.status(), ConnectionStatus::Closed);
    let e = client.publish("x", "y").await.unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::Closed);
    assert_eq!(e.code(), ErrorCode::ClientClosed);
    let e = client.flush().await.unwrap_err();
    assert_eq!(e.kind(), RequestErrorKind::Closed);
}

#[tokio::test]
async fn close_flushes_queued_publishes_first() {
    let broker = Broker::start().await;
    let consumer = Client::connect(broker.url()).await.unwrap();
    let mut sub = consumer.subscribe("flush.me").await.unwrap();
    let producer = Client::connect(broker.url()).await.unwrap();
    for i in 0..1000u32 {
        producer
            .publish("flush.me", i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    producer.close().await;
    for i in 0..1000u32 {
        assert_eq!(&next(&mut sub).await.payload()[..], i.to_be_bytes());
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_applies_backpressure_instead_of_growing_memory() {
    // Small buffers everywhere and the `block` policy: nothing may be lost,
    // and the publisher can only run ahead by the sum of the bounded buffers.
    let broker = Broker::start_with(|c| {
        c.queues.subscriber_capacity = 16;
        c.queues.overflow_policy = blipmq_broker::OverflowPolicy::Block;
    })
    .await;
    let consumer = Client::builder()
        .subscription_capacity(8)
        .connect(broker.url())
        .await
        .unwrap();
    let mut sub = consumer.subscribe("slow").await.unwrap();
    let producer = Client::builder()
        .outgoing_capacity(8)
        .connect(broker.url())
        .await
        .unwrap();
    // 4 KiB each, 80 MB in all: far more than the kernel's socket buffers
    // on the way (autotuned up to tcp_rmem/tcp_wmem max, 32 MiB here) can
    // absorb, so only backpressure explains a publisher that waits.
    const SIZE: usize = 4096;
    let total = 20_000u32;
    let publishing = tokio::spawn({
        let producer = producer.clone();
        async move {
            for i in 0..total {
                let mut payload = vec![0u8; SIZE];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                producer.publish("slow", payload).await.unwrap();
            }
            producer.flush().await.unwrap();
        }
    });
    // While the consumer does not read, the publisher must stall.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!publishing.is_finished(), "the publisher is held back");
    for i in 0..total {
        let message = next(&mut sub).await;
        assert_eq!(&message.payload()[..4], i.to_be_bytes());
        assert_eq!(message.payload().len(), SIZE);
    }
    tokio::time::timeout(PATIENCE, publishing)
        .await
        .unwrap()
        .unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_consumer_that_fell_behind_learns_exactly_how_many_messages_it_lost() {
    // drop_new with a queue of 4: a consumer that stops reading loses
    // messages at the broker, and is told how many (QUEUE-6).
    let broker = Broker::start_with(|c| {
        c.queues.subscriber_capacity = 4;
        c.queues.overflow_policy = blipmq_broker::OverflowPolicy::DropNew;
        c.delivery.max_batch = 1;
        c.delivery.max_batch_bytes = 1;
    })
    .await;
    let consumer = Client::builder()
        .subscription_capacity(1)
        .connect(broker.url())
        .await
        .unwrap();
    let mut sub = consumer.subscribe("behind").await.unwrap();
    let producer = Client::connect(broker.url()).await.unwrap();
    // 64 KiB each, 96 MB in all: more than the socket buffers hold.
    const SIZE: usize = 64 * 1024;
    let total = 1_500u32;
    for i in 0..total {
        let mut payload = vec![0u8; SIZE];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        producer.publish("behind", payload).await.unwrap();
    }
    producer.flush().await.unwrap();
    let (mut received, mut reported_in_line, mut last) = (0u64, 0u64, None);
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await
    {
        let index = u32::from_be_bytes(message.payload()[..4].try_into().unwrap());
        // What came before this message and is missing is what was reported.
        let gap = u64::from(index - last.map_or(0, |l: u32| l + 1));
        assert_eq!(message.dropped_before(), gap, "before message {index}");
        reported_in_line += message.dropped_before();
        received += 1;
        last = Some(index);
    }
    let dropped = sub.dropped();
    assert!(dropped > 0, "the consumer fell behind and lost messages");
    assert_eq!(
        received + dropped,
        u64::from(total),
        "every message is delivered or reported"
    );
    // drop_new discards the newest: what was lost after the last delivery
    // is counted, with no message to carry it.
    let after_last = u64::from(total - 1 - last.unwrap());
    assert_eq!(reported_in_line + after_last, dropped);
    assert!(after_last > 0, "drop_new lost the newest");
    // A consumer that asks for events hears of those too, once, without
    // waiting for a message to carry them.
    match tokio::time::timeout(PATIENCE, sub.next_event()).await {
        Ok(Some(SubscriptionEvent::Dropped(count))) => assert_eq!(count, after_last),
        other => panic!("expected the drop after the last message, got {other:?}"),
    }
    let nothing_more = tokio::time::timeout(Duration::from_millis(200), sub.next_event()).await;
    assert!(nothing_more.is_err(), "reported once: {nothing_more:?}");
    broker.stop().await;
}

#[tokio::test]
async fn clients_are_cheap_to_clone_and_dropping_the_last_clone_closes() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let clone = client.clone();
    let mut sub = client.subscribe("c").await.unwrap();
    clone.publish("c", "from the clone").await.unwrap();
    assert_eq!(&next(&mut sub).await.payload()[..], b"from the clone");
    drop(client);
    drop(clone);
    let end = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
    broker.stop().await;
}

#[tokio::test]
async fn headers_round_trip_and_are_checked_against_the_brokers_limits() {
    let broker = Broker::start_with(|c| {
        c.server.max_headers = 3;
        c.server.max_headers_bytes = 64;
    })
    .await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut sub = client.subscribe("h").await.unwrap();
    let mut headers = Headers::new();
    headers
        .append("content-type", "text/plain")
        .append("x-tenant", "acme")
        .append("x-tenant", vec![0u8, 255]);
    client
        .publish_with(
            "h",
            "with headers",
            PublishOptions {
                headers: headers.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.publish("h", "without").await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.headers(), &headers);
    assert_eq!(m.headers().get_str("content-type"), Some("text/plain"));
    assert_eq!(m.headers().get_all("x-tenant").count(), 2);
    assert!(next(&mut sub).await.headers().is_empty());

    let too_many = Headers::from([("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let e = client
        .publish_with(
            "h",
            "x",
            PublishOptions {
                headers: too_many,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::HeadersTooLarge);
    assert_eq!(e.code().0, 404);
    let bad_key = Headers::from([("a key", "1")]);
    let e = client
        .publish_with(
            "h",
            "x",
            PublishOptions {
                headers: bad_key,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::InvalidHeader);
    assert_eq!(e.code(), ErrorCode::InvalidHeader);
    // Nothing refused reached the subscriber.
    client.flush().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_traceparent_header_is_exposed_on_receive() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut sub = client.subscribe("traced").await.unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    client
        .publish_with(
            "traced",
            "x",
            PublishOptions {
                headers: Headers::from([("traceparent", traceparent)]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.publish("traced", "untraced").await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.traceparent(), Some(traceparent));
    assert_eq!(m.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(next(&mut sub).await.traceparent(), None);
    broker.stop().await;
}

/// With the `opentelemetry` feature, the current span's context is injected
/// on publish and comes back as a remote parent on receive.
#[cfg(feature = "opentelemetry")]
#[tokio::test]
async fn opentelemetry_context_is_injected_and_extracted() {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let broker = Broker::start().await;
    let client = Client::connect(broker.url()).await.unwrap();
    let mut sub = client.subscribe("otel").await.unwrap();
    let span_context = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        false,
        "congo=t61rcWkgMzE".parse::<TraceState>().unwrap(),
    );
    {
        let _guard = opentelemetry::Context::new()
            .with_remote_span_context(span_context.clone())
            .attach();
        client.publish("otel", "in a span").await.unwrap();
    }
    client.publish("otel", "outside any span").await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(
        m.traceparent(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(m.headers().get_str("tracestate"), Some("congo=t61rcWkgMzE"));
    let parent = m.trace_context();
    let remote = parent.span().span_context().clone();
    assert_eq!(remote.trace_id(), span_context.trace_id());
    assert_eq!(remote.span_id(), span_context.span_id());
    assert!(remote.is_remote());
    assert_eq!(next(&mut sub).await.traceparent(), None);
    broker.stop().await;
}

#[tokio::test]
async fn qos1_publish_resolves_on_confirm_and_a_durable_subscription_resumes_after_restart() {
    let broker = Broker::start().await;
    let qos1 = || PublishOptions {
        qos: Qos::AtLeastOnce,
        ..Default::default()
    };
    let durable = || SubscribeOptions {
        qos: Qos::AtLeastOnce,
        durable: Some("worker".into()),
        ..Default::default()
    };
    let consumer = Client::connect(broker.url()).await.unwrap();
    let mut sub = consumer.subscribe_with("jobs", durable()).await.unwrap();
    let producer = Client::connect(broker.url()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4u8 {
        let id = producer
            .publish_with("jobs", vec![i], qos1())
            .await
            .unwrap();
        ids.push(id.expect("a QoS 1 publish resolves with the message id"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let first = next(&mut sub).await;
    assert_eq!(&first.payload()[..], [0]);
    assert_eq!(first.id(), ids[0]);
    first.ack().await.unwrap();
    // Receive but do not ack the rest; then the broker restarts.
    for _ in 1..4 {
        next(&mut sub).await;
    }
    consumer.flush().await.unwrap();
    drop(sub);
    consumer.close().await;
    producer.close().await;
    let broker = broker.restart().await;
    let consumer = Client::connect(broker.url()).await.unwrap();
    let mut sub = consumer.subscribe_with("jobs", durable()).await.unwrap();
    for i in 1..4u8 {
        let m = next(&mut sub).await;
        assert_eq!(&m.payload()[..], [i], "unacked messages come back in order");
        m.ack().await.unwrap();
    }
    nothing_within(&mut sub, Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_broker_that_sends_garbage_is_a_protocol_disconnect() {
    use blipmq_protocol::{Encoder, Frame, Welcome, PROTOCOL_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A fake broker: a Welcome, then a frame whose body is not an Envelope.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 256];
        let _ = socket.read(&mut hello).await.unwrap();
        let mut out = bytes::BytesMut::new();
        Encoder::new().encode(
            &Frame::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                server_name: "fake",
                server_version: "0",
                max_message_size: 1 << 20,
                connection_id: 1,
                max_headers: 64,
                max_header_key_size: 256,
                max_headers_size: 64 * 1024,
            }),
            &mut out,
        );
        socket.write_all(&out).await.unwrap();
        socket
            .write_all(&[8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4])
            .await
            .unwrap();
        // Hold the socket until the client gives up on it.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
    });
    let client = Client::builder()
        .reconnect(ReconnectPolicy::disabled())
        .connect(addr)
        .await
        .unwrap();
    let mut events = Box::pin(client.events());
    let reason = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await {
                Some(ClientEvent::Disconnected { reason }) => return reason,
                Some(_) => {}
                None => panic!("events ended without a Disconnected"),
            }
        }
    })
    .await
    .expect("a Disconnected event");
    assert_eq!(reason.kind(), DisconnectKind::Protocol, "{reason}");
    assert_eq!(reason.code(), ErrorCode::MalformedFrame);
    assert!(reason.to_string().contains("bad frame"), "{reason}");
    client.close().await;
    fake.await.unwrap();
}

#[tokio::test]
async fn many_qos1_publishes_in_flight_keep_call_order() {
    let broker = Broker::start().await;
    let client = Client::connect(broker.addr.to_string()).await.unwrap();
    let mut sub = client.subscribe("pipelined").await.unwrap();
    let qos1 = || PublishOptions {
        qos: Qos::AtLeastOnce,
        ..Default::default()
    };
    // Queued one after another without waiting for any confirm, as a
    // binding does for calls that JavaScript makes without awaiting.
    let mut confirms = Vec::new();
    for i in 0..500u32 {
        let submitted = match client.try_submit_publish("pipelined", i.to_string(), qos1()) {
            Ok(confirm) => confirm,
            // The queue is full now and then: wait for room, in order.
            Err(e) if e.kind() == PublishErrorKind::QueueFull => client
                .submit_publish("pipelined", i.to_string(), qos1())
                .await
                .unwrap(),
            Err(e) => panic!("{e}"),
        };
        assert!(submitted.is_qos1());
        confirms.push(submitted);
    }
    let mut ids = Vec::new();
    for confirm in confirms {
        ids.push(confirm.confirmed().await.unwrap().expect("a message id"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in call order");
    for i in 0..500u32 {
        assert_eq!(next(&mut sub).await.payload(), i.to_string().as_bytes());
    }
    client.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn try_submit_publish_on_a_full_queue_sends_nothing_and_the_next_goes_through() {
    let broker = Broker::start().await;
    let client = Client::builder()
        .outgoing_capacity(1)
        .connect(broker.addr.to_string())
        .await
        .unwrap();
    let mut sub = client.subscribe("full").await.unwrap();
    let qos1 = PublishOptions {
        qos: Qos::AtLeastOnce,
        ..Default::default()
    };
    // One thread, and this task does not yield: the writer cannot take the
    // first message, so the queue of one is full for the second.
    let first = client
        .try_submit_publish("full", "first", qos1.clone())
        .unwrap();
    let refused = client
        .try_submit_publish("full", "refused", qos1.clone())
        .unwrap_err();
    assert_eq!(refused.kind(), PublishErrorKind::QueueFull);
    assert_eq!(refused.code(), ErrorCode::QueueFull);
    let zero = client
        .try_submit_publish("full", "refused too", PublishOptions::default())
        .unwrap_err();
    assert_eq!(zero.kind(), PublishErrorKind::QueueFull);
    assert!(first.confirmed().await.unwrap().is_some());
    let second = client.submit_publish("full", "second", qos1).await.unwrap();
    assert!(second.confirmed().await.unwrap().is_some());
    assert_eq!(&next(&mut sub).await.payload()[..], b"first");
    assert_eq!(&next(&mut sub).await.payload()[..], b"second");
    client.close().await;
    broker.stop().await;
}
