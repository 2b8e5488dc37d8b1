//! TLS for the listeners (`[tls]` in blipmq.toml): the server configuration
//! built from the PEM files, swapped whole when they are read again on
//! SIGHUP (connections already open keep the session they have), and a
//! stream that is either plaintext or TLS for the code above it.
//!
//! rustls with the ring provider: no C toolchain beyond what `ring` builds
//! with, and a smaller binary than aws-lc-rs.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::{TlsConfig, TlsVersion};
use crate::metrics::{inc, Metrics};

/// Why the TLS files cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{key} {path}: {problem}")]
    Content {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("[tls]: {0}")]
    Config(String),
}

/// The listeners' TLS configuration, replaced whole by [`Tls::reload`].
pub struct Tls {
    settings: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Read the files `settings` names; `None` when it names no certificate.
    pub fn load(settings: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        if !settings.configured() {
            return Ok(None);
        }
        let config = server_config(settings)?;
        Ok(Some(Arc::new(Tls {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
        })))
    }

    /// Read the certificate, key and client CA files again. On an error
    /// the configuration in use stays (a half-written file must not take
    /// the listeners down); new connections get the new one, open ones keep
    /// theirs.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// The acceptor for the next connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }
}

fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        return Err(TlsError::Config(
            "cert_file and key_file go together".into(),
        ));
    };
    let chain = read_certificates("tls.cert_file", cert_file)?;
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates("tls.client_ca_file", ca_file)? {
                roots
                    .add(certificate)
                    .map_err(|e| content("tls.client_ca_file", ca_file, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| content("tls.client_ca_file", ca_file, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| content("tls.key_file", key_file, e))
}

fn content(key: &'static str, path: &Path, problem: impl fmt::Display) -> TlsError {
    TlsError::Content {
        key,
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(key, path, format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(content(key, path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("tls.key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        content(
            "tls.key_file",
            path,
            format!("holds no PEM private key: {e}"),
        )
    })
}

/// The TLS handshake of a client or WebSocket socket just accepted, done
/// by the connection's handshake deadline (the Hello's, so the two together
/// take no longer than a plaintext handshake may). `None` when it fails,
/// runs out of time or the broker stops: the socket is closed, counted in
/// `blipmq_tls_handshake_failures_total`.
pub(crate) async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
    shutdown: &CancellationToken,
    metrics: &Metrics,
    peer: std::net::SocketAddr,
) -> Option<MaybeTls> {
    let accepted = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => accepted,
        _ = shutdown.cancelled() => return None,
    };
    match accepted {
        Ok(Ok(stream)) => Some(MaybeTls::Tls(Box::new(stream))),
        Ok(Err(error)) => {
            inc(&metrics.tls_handshake_failures);
            debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            inc(&metrics.tls_handshake_failures);
            debug!(%peer, "no TLS handshake within the handshake timeout");
            None
        }
    }
}

/// A connection's byte stream: plaintext or TLS.
pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(stream) => stream.is_write_vectored(),
            MaybeTls::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
