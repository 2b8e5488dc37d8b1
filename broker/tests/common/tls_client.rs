//! A TLS client for the tests: rustls trusting a test CA, optionally with
//! a client certificate, and the handshake over it.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{RawClient, PATIENCE};

pub fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A client configuration trusting `ca_pem`, presenting `identity` if any.
pub fn client_config(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem) {
        roots.add(certificate).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates(cert),
                PrivateKeyDer::from_pem_slice(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

pub async fn tls_connect(
    addr: SocketAddr,
    config: ClientConfig,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("the TLS handshake ends in time")
}

pub fn read(pki: &blipmq_testkit::TestPki, name: &str) -> Vec<u8> {
    std::fs::read(pki.path(name)).unwrap()
}

/// A TLS session's outcome, as the client sees it: rustls reports a
/// refused client certificate only when it next reads.
pub async fn hello_over(
    stream: TlsStream<TcpStream>,
) -> Result<RawClient<TlsStream<TcpStream>>, ()> {
    let mut client = RawClient::over(stream);
    client.send_hello(None).await;
    match client.recv_within(PATIENCE).await {
        Some(body) => match blipmq_protocol::decode(&body).unwrap() {
            blipmq_protocol::Frame::Welcome(_) => Ok(client),
            other => panic!("expected Welcome, got {other:?}"),
        },
        None => Err(()),
    }
}
