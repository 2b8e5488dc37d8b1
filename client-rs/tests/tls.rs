//! The client over TLS against a real broker with `[tls]`: `tls://`
//! addresses, a CA file, hostname checks, mutual TLS, and the coded error
//! (ConnectFailed, kind Tls) each way it can go wrong. Certificates come
//! from a PKI made at test time.

mod common;

use blipmq::tls::{Pem, TlsOptions};
use blipmq::{Client, ConnectErrorKind, ErrorCode, ReconnectPolicy};
use blipmq_broker::Config;
use blipmq_testkit::{files, TestPki};
use common::{Broker, PATIENCE};

/// A broker in this process whose client port speaks TLS with the PKI's
/// broker certificate.
async fn with_tls(pki: &TestPki, configure: impl FnOnce(&mut Config)) -> Broker {
    Broker::start_with(|c| {
        c.tls.cert_file = Some(pki.path(files::BROKER_CERT));
        c.tls.key_file = Some(pki.path(files::BROKER_KEY));
        configure(c);
    })
    .await
}

fn tls_url(broker: &Broker) -> String {
    format!("tls://localhost:{}", broker.addr.port())
}

fn trusting(pki: &TestPki, ca: &str) -> TlsOptions {
    TlsOptions {
        ca: Some(Pem::File(pki.path(ca))),
        ..TlsOptions::default()
    }
}

async fn connect(url: &str, tls: Option<TlsOptions>) -> Result<Client, blipmq::ConnectError> {
    let mut builder = Client::builder()
        .connect_timeout(PATIENCE)
        .reconnect(ReconnectPolicy::disabled());
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.connect(url).await
}

#[tokio::test]
async fn publishes_and_receives_over_tls_with_a_ca_file() {
    let pki = TestPki::generate();
    let broker = with_tls(&pki, |_| {}).await;
    let client = connect(&tls_url(&broker), Some(trusting(&pki, files::CA)))
        .await
        .expect("TLS with the test CA");
    let mut subscription = client.subscribe("secure.>").await.unwrap();
    client.publish("secure.greeting", "over TLS").await.unwrap();
    let message = tokio::time::timeout(PATIENCE, subscription.next_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&message.payload()[..], b"over TLS");
    // The CA as text works the same as the file.
    let text = std::fs::read(pki.path(files::CA)).unwrap();
    let tls = TlsOptions {
        ca: Some(Pem::Text(text)),
        ..TlsOptions::default()
    };
    let by_ip = format!("tls://127.0.0.1:{}", broker.addr.port());
    connect(&by_ip, Some(tls))
        .await
        .expect("a CA given as text; the IP is in the certificate");
    client.close().await;
    broker.stop().await;
}

/// Each way TLS can fail is ConnectFailed (600), kind Tls, and says why.
async fn refused(url: &str, tls: Option<TlsOptions>, reason: &str) {
    let error = connect(url, tls).await.expect_err("refused");
    assert_eq!(error.kind(), ConnectErrorKind::Tls, "{error}");
    assert_eq!(error.code(), ErrorCode::ConnectFailed, "{error}");
    assert!(
        error.to_string().contains(reason),
        "{error:?} should say {reason:?}"
    );
}

#[tokio::test]
async fn an_untrusted_misnamed_or_expired_broker_is_refused_with_the_reason() {
    let pki = TestPki::generate();
    let broker = with_tls(&pki, |_| {}).await;
    let url = tls_url(&broker);
    refused(&url, Some(trusting(&pki, files::OTHER_CA)), "UnknownIssuer").await;
    let wrong_name = TlsOptions {
        server_name: Some("blipmq.invalid".into()),
        ..trusting(&pki, files::CA)
    };
    refused(&url, Some(wrong_name), "not valid for name").await;
    // The system's roots (no CA given) do not know the test CA.
    refused(&url, None, "TLS handshake").await;
    broker.stop().await;

    let expired = with_tls(&pki, |c| {
        c.tls.cert_file = Some(pki.path(files::EXPIRED_CERT));
        c.tls.key_file = Some(pki.path(files::EXPIRED_KEY));
    })
    .await;
    refused(
        &tls_url(&expired),
        Some(trusting(&pki, files::CA)),
        "expired",
    )
    .await;
    expired.stop().await;
}

#[tokio::test]
async fn plaintext_and_tls_that_do_not_match_say_so() {
    let pki = TestPki::generate();
    let secure = with_tls(&pki, |_| {}).await;
    // A plaintext client at a TLS port.
    refused(&secure.addr.to_string(), None, "speaks TLS").await;
    secure.stop().await;
    // A TLS client at a plaintext port.
    let plain = Broker::start().await;
    let url = format!("tls://localhost:{}", plain.addr.port());
    refused(&url, Some(trusting(&pki, files::CA)), "does not speak TLS").await;
    plain.stop().await;
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_client_ca() {
    let pki = TestPki::generate();
    let broker = with_tls(&pki, |c| {
        c.tls.client_ca_file = Some(pki.path(files::CLIENT_CA));
    })
    .await;
    let url = tls_url(&broker);
    let identified = TlsOptions {
        client_cert: Some(Pem::File(pki.path(files::CLIENT_CERT))),
        client_key: Some(Pem::File(pki.path(files::CLIENT_KEY))),
        ..trusting(&pki, files::CA)
    };
    let client = connect(&url, Some(identified))
        .await
        .expect("a trusted client certificate");
    client.flush().await.unwrap();
    refused(&url, Some(trusting(&pki, files::CA)), "").await;
    let stranger = TlsOptions {
        client_cert: Some(Pem::File(pki.path(files::STRANGER_CERT))),
        client_key: Some(Pem::File(pki.path(files::STRANGER_KEY))),
        ..trusting(&pki, files::CA)
    };
    refused(&url, Some(stranger), "").await;
    client.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn tls_options_that_cannot_be_used_fail_before_dialing() {
    let pki = TestPki::generate();
    let broker = with_tls(&pki, |_| {}).await;
    let missing = TlsOptions {
        ca: Some(Pem::File("/nonexistent/ca.pem".into())),
        ..TlsOptions::default()
    };
    refused(&tls_url(&broker), Some(missing), "/nonexistent/ca.pem").await;
    let half = TlsOptions {
        client_cert: Some(Pem::File(pki.path(files::CLIENT_CERT))),
        ..trusting(&pki, files::CA)
    };
    refused(&tls_url(&broker), Some(half), "go together").await;
    broker.stop().await;
}
