//! TLS on every listener (`[tls]`): the client port, wss and https; mutual
//! TLS; the certificate read again without dropping connections; what a
//! plaintext or a distrusting client meets. Certificates come from a PKI
//! made at test time (blipmq-testkit).

mod common;

use std::sync::Arc;
use std::time::Duration;

use blipmq_broker::Config;
use blipmq_testkit::{files, Authority, TestPki, BROKER_NAMES};
use common::tls_client::{self, certificates, client_config, hello_over, tls_connect};
use common::{metric_value, RawClient, TestBroker, PATIENCE};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TLS on the client and WebSocket ports; the metrics port stays plain so
/// that the harness can read it (`the_metrics_port_speaks_https` turns it on).
fn tls_config(pki: &TestPki, config: &mut Config) {
    config.tls.cert_file = Some(pki.path(files::BROKER_CERT));
    config.tls.key_file = Some(pki.path(files::BROKER_KEY));
    config.metrics.tls = Some(false);
}

#[tokio::test]
async fn a_client_trusting_the_ca_publishes_and_receives_over_tls() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| tls_config(&pki, c)).await;
    let ca = tls_client::read(&pki, files::CA);
    for name in ["localhost", "127.0.0.1"] {
        let stream = tls_connect(broker.addr, client_config(&ca, None), name)
            .await
            .unwrap_or_else(|e| panic!("TLS to {name}: {e}"));
        let mut subscriber = hello_over(stream).await.expect("welcome over TLS");
        let publisher_stream = tls_connect(broker.addr, client_config(&ca, None), name)
            .await
            .unwrap();
        let mut publisher = hello_over(publisher_stream).await.unwrap();
        subscriber.subscribe("tls.demo").await;
        publisher.publish("tls.demo", b"sealed").await;
        publisher.sync().await;
        let got = subscriber.expect_delivery().await;
        assert_eq!(got.payload, b"sealed");
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_is_closed_and_counted() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| tls_config(&pki, c)).await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send_hello(None).await;
    // What comes back (a TLS alert at most) is no frame, and the socket ends.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.stream.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    assert!(
        answer.len() < blipmq_protocol::LENGTH_PREFIX_LEN || answer[0] == 0x15,
        "a TLS alert record at most, no frame: {answer:?}"
    );
    broker
        .wait_for_metric("blipmq_tls_handshake_failures_total", 1)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_client_refuses_a_broker_it_cannot_verify() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| tls_config(&pki, c)).await;
    // Another CA: the broker's certificate is unknown to it.
    let other = tls_client::read(&pki, files::OTHER_CA);
    let error = tls_connect(broker.addr, client_config(&other, None), "localhost")
        .await
        .expect_err("an unknown issuer is refused");
    assert!(
        error.to_string().to_lowercase().contains("unknown"),
        "the reason says why: {error}"
    );
    // The right CA, but a name the certificate is not for.
    let ca = tls_client::read(&pki, files::CA);
    let error = tls_connect(broker.addr, client_config(&ca, None), "blipmq.invalid")
        .await
        .expect_err("a wrong name is refused");
    assert!(
        error.to_string().contains("not valid for name"),
        "the reason says why: {error}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_client_refuses_an_expired_certificate() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| {
        c.tls.cert_file = Some(pki.path(files::EXPIRED_CERT));
        c.tls.key_file = Some(pki.path(files::EXPIRED_KEY));
    })
    .await;
    let ca = tls_client::read(&pki, files::CA);
    let error = tls_connect(broker.addr, client_config(&ca, None), "localhost")
        .await
        .expect_err("an expired certificate is refused");
    assert!(error.to_string().contains("expired"), "{error}");
    broker.stop().await;
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| {
        tls_config(&pki, c);
        c.tls.client_ca_file = Some(pki.path(files::CLIENT_CA));
    })
    .await;
    let ca = tls_client::read(&pki, files::CA);
    let (cert, key) = (
        tls_client::read(&pki, files::CLIENT_CERT),
        tls_client::read(&pki, files::CLIENT_KEY),
    );
    let stream = tls_connect(
        broker.addr,
        client_config(&ca, Some((&cert, &key))),
        "localhost",
    )
    .await
    .expect("a client certificate from the client CA");
    hello_over(stream)
        .await
        .expect("welcome with a certificate");

    // No certificate, or one from a CA the broker does not trust: the
    // session ends before any frame (TLS 1.3 reports it at the first read).
    let (stranger, stranger_key) = (
        tls_client::read(&pki, files::STRANGER_CERT),
        tls_client::read(&pki, files::STRANGER_KEY),
    );
    for identity in [None, Some((&stranger[..], &stranger_key[..]))] {
        let refused =
            match tls_connect(broker.addr, client_config(&ca, identity), "localhost").await {
                Err(_) => true,
                Ok(stream) => hello_over(stream).await.is_err(),
            };
        assert!(refused, "refused without a trusted client certificate");
    }
    broker
        .wait_for_metric("blipmq_tls_handshake_failures_total", 2)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn tls_13_only_refuses_a_tls_12_client() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| {
        tls_config(&pki, c);
        c.tls.min_version = blipmq_broker::config::TlsVersion::Tls13;
    })
    .await;
    let ca = tls_client::read(&pki, files::CA);
    let mut roots = RootCertStore::empty();
    roots.add(certificates(&ca).remove(0)).unwrap();
    let tls12_only =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls_connect(broker.addr, tls12_only, "localhost")
        .await
        .expect_err("TLS 1.2 is refused when min_version is 1.3");
    let stream = tls_connect(broker.addr, client_config(&ca, None), "localhost")
        .await
        .expect("TLS 1.3 is fine");
    hello_over(stream).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_and_keeps_open_ones() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = pki.ca.server(BROKER_NAMES);
    std::fs::write(&cert_file, &first.cert_pem).unwrap();
    std::fs::write(&key_file, &first.key_pem).unwrap();
    let mut config = Config::default();
    config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.enabled = false;
    config.wal.dir = dir.path().join("wal");
    config.tls.cert_file = Some(cert_file.clone());
    config.tls.key_file = Some(key_file.clone());
    let listeners = blipmq_broker::Listeners::bind(&config).await.unwrap();
    let addr = listeners.clients.local_addr().unwrap();
    let tls = listeners.tls.clone().expect("TLS is configured");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(blipmq_broker::run(listeners, config, async move {
        let _ = stopped.await;
    }));

    let old_ca = pki.ca.cert_pem.as_bytes();
    let stream = tls_connect(addr, client_config(old_ca, None), "localhost")
        .await
        .unwrap();
    let mut open = hello_over(stream).await.unwrap();

    // A renewed certificate from another CA, written over the files.
    let new_ca = Authority::new("Renewed CA");
    let renewed = new_ca.server(BROKER_NAMES);
    std::fs::write(&cert_file, &renewed.cert_pem).unwrap();
    std::fs::write(&key_file, &renewed.key_pem).unwrap();
    tls.reload().expect("the renewed files load");

    let stream = tls_connect(
        addr,
        client_config(new_ca.cert_pem.as_bytes(), None),
        "localhost",
    )
    .await
    .expect("new connections get the renewed certificate");
    let mut fresh = hello_over(stream).await.unwrap();
    tls_connect(addr, client_config(old_ca, None), "localhost")
        .await
        .expect_err("and no longer the old one");
    // The connection opened before the reload goes on.
    open.subscribe("renewal").await;
    fresh.publish("renewal", b"still here").await;
    fresh.sync().await;
    assert_eq!(open.expect_delivery().await.payload, b"still here");

    // A half-written key: the reload fails, naming the file, and the
    // certificate in use stays.
    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\ntrunc").unwrap();
    let error = tls.reload().expect_err("a broken key file is refused");
    assert!(error.to_string().contains("tls.key_file"), "{error}");
    let stream = tls_connect(
        addr,
        client_config(new_ca.cert_pem.as_bytes(), None),
        "localhost",
    )
    .await
    .expect("the certificate in use stays after a failed reload");
    hello_over(stream).await.unwrap();

    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, broker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_closed_at_the_handshake_timeout() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| {
        tls_config(&pki, c);
        c.server.handshake_timeout_ms = 200;
    })
    .await;
    let mut silent = TcpStream::connect(broker.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
        .await
        .expect("closed by the handshake timeout, not left open");
    assert!(matches!(read, Ok(0) | Err(_)));
    broker
        .wait_for_metric("blipmq_tls_handshake_failures_total", 1)
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn the_metrics_port_speaks_https() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| {
        tls_config(&pki, c);
        c.metrics.tls = None;
    })
    .await;
    let ca = tls_client::read(&pki, files::CA);
    let mut stream = tls_connect(broker.metrics_addr, client_config(&ca, None), "localhost")
        .await
        .expect("https on the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(
        metric_value(body, "blipmq_tls_handshake_failures_total"),
        Some(0)
    );
    broker.stop().await;
}

#[tokio::test]
async fn the_metrics_port_may_stay_plain_when_it_says_so() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| tls_config(&pki, c)).await;
    assert_eq!(
        broker.metric("blipmq_tls_handshake_failures_total").await,
        0
    );
    broker.stop().await;
}

#[tokio::test]
async fn wss_carries_the_protocol_over_tls() {
    let pki = TestPki::generate();
    let broker = TestBroker::start_with(|c| {
        tls_config(&pki, c);
        c.websocket.bind_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = broker.websocket_addr.expect("the WebSocket listener");
    let ca = tls_client::read(&pki, files::CA);
    let stream = tls_connect(addr, client_config(&ca, None), "localhost")
        .await
        .expect("TLS on the WebSocket port");
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("the upgrade over TLS");
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let hello = blipmq_protocol::Encoder::new().encode_to_bytes(&blipmq_protocol::Frame::Hello(
        blipmq_protocol::Hello {
            protocol_version: blipmq_protocol::PROTOCOL_VERSION,
            client_name: Some("wss-test"),
            api_key: None,
            drop_notices: false,
        },
    ));
    ws.send(Message::Binary(hello.to_vec().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an answer in time")
        .expect("a message")
        .expect("no error");
    let Message::Binary(data) = answer else {
        panic!("expected a binary message, got {answer:?}");
    };
    // A message carries whole frames (WS-1); the Welcome is the first.
    let total = blipmq_protocol::check_frame(&data, usize::MAX >> 1).expect("a whole frame");
    let body = &data[blipmq_protocol::LENGTH_PREFIX_LEN..total];
    assert!(matches!(
        blipmq_protocol::decode(body).unwrap(),
        blipmq_protocol::Frame::Welcome(_)
    ));
    broker.stop().await;
}
