//! `blipmq healthcheck`: ask a running broker's `/readyz` and exit 0 when
//! it answers 200, 1 otherwise, with one line saying why. For container
//! images without curl (`HEALTHCHECK CMD ["blipmq", "healthcheck"]`); a
//! blocking std socket is all it needs, so no runtime is started. Over
//! HTTPS (the config's `[tls]` on the HTTP port, or `--http https://...`)
//! it trusts exactly the certificate of `tls.cert_file`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::process::ExitCode;
use std::time::Duration;

use blipmq_broker::config::Listener;
use blipmq_broker::Config;

use crate::args::HealthcheckOptions;

/// How long each of connect, send and the answer may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read: `/readyz` says a few lines.
const MAX_ANSWER: u64 = 64 * 1024;

pub fn run(options: &HealthcheckOptions) -> ExitCode {
    let target = match target(options) {
        Ok(target) => target,
        Err(problem) => {
            println!("not ready: {problem}");
            return ExitCode::FAILURE;
        }
    };
    let url = target.url();
    match probe(&target) {
        Ok((200, _)) => {
            println!("ready: {url} answered 200");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let why = body.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("not ready: {url} answered {status}: {why}");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("not ready: cannot ask {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where to ask, and over HTTPS the certificate the broker must present.
struct Target {
    addr: SocketAddr,
    /// The leaf of `tls.cert_file`: the probe trusts exactly the broker's
    /// own certificate (it asks its own broker, often by address, so a CA
    /// and a host name would prove less and need more configuring).
    pinned: Option<CertificateDer<'static>>,
}

impl Target {
    fn url(&self) -> String {
        let scheme = if self.pinned.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/readyz", self.addr)
    }
}

/// `--http` (`host:port`, `http://` or `https://`), else the HTTP port the
/// broker's config (file and `BLIPMQ_*` variables, as the broker reads
/// them) names, HTTPS when the config puts TLS on it.
fn target(options: &HealthcheckOptions) -> Result<Target, String> {
    let load = || {
        Config::load(options.config.as_deref(), std::env::vars())
            .map_err(|e| format!("cannot read the config to find the HTTP port: {e}"))
    };
    if let Some(http) = &options.http {
        let (https, host) = match http.strip_prefix("https://") {
            Some(host) => (true, host),
            None => (false, http.strip_prefix("http://").unwrap_or(http)),
        };
        let host = host.trim_end_matches('/');
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("--http {http}: {e}"))?
            .next()
            .ok_or_else(|| format!("--http {http}: no address"))?;
        let pinned = if https {
            Some(pinned_certificate(&load()?)?)
        } else {
            None
        };
        return Ok(Target { addr, pinned });
    }
    let config = load()?;
    if !config.metrics.enabled {
        return Err("the HTTP port is off (metrics.enabled = false); pass --http".into());
    }
    let pinned = if config.tls_on(Listener::Metrics) {
        Some(pinned_certificate(&config)?)
    } else {
        None
    };
    let mut addr = config.metrics.bind_addr;
    // Bound to every address: this host answers on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(Target { addr, pinned })
}

/// The first certificate of `tls.cert_file`: the one the broker presents.
fn pinned_certificate(config: &Config) -> Result<CertificateDer<'static>, String> {
    if config.tls.client_ca_file.is_some() && config.metrics.tls != Some(false) {
        return Err("the HTTP port asks for client certificates (tls.client_ca_file), and healthcheck has none; set metrics.tls = false with the HTTP port on loopback, or probe /readyz with a client certificate".into());
    }
    let path =
        config.tls.cert_file.as_ref().ok_or(
            "HTTPS needs the broker's certificate: tls.cert_file is not set in the config",
        )?;
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls.cert_file {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("tls.cert_file {}: no certificate", path.display()))?
        .map_err(|e| format!("tls.cert_file {}: {e}", path.display()))
}

/// GET /readyz: the status code and the body.
fn probe(target: &Target) -> std::io::Result<(u16, String)> {
    let stream = TcpStream::connect_timeout(&target.addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.addr
    );
    let answer = match &target.pinned {
        None => exchange(stream, &request)?,
        Some(pinned) => {
            let config = pinned::client_config(pinned.clone());
            let name = ServerName::IpAddress(target.addr.ip().into());
            let connection = rustls::ClientConnection::new(config, name)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            exchange(rustls::StreamOwned::new(connection, stream), &request)?
        }
    };
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| answer.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")
        })?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}

/// Send `request` and read the answer to its end (at most `MAX_ANSWER`).
fn exchange(mut stream: impl Read + Write, request: &str) -> std::io::Result<String> {
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    match stream.take(MAX_ANSWER).read_to_end(&mut answer) {
        Ok(_) => {}
        // The broker may close without a TLS close_notify after a whole
        // answer (`Connection: close`); what arrived is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A TLS client that accepts exactly one certificate: the broker's own.
mod pinned {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

    pub fn client_config(pinned: CertificateDer<'static>) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned {
            pinned,
            provider: provider.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Arc::new(config)
    }

    #[derive(Debug)]
    struct Pinned {
        pinned: CertificateDer<'static>,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        /// The peer is trusted if it presents the very certificate of the
        /// config (and proves it holds its key, checked below): no chain,
        /// name or expiry to check for one's own broker.
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if end_entity.as_ref() == self.pinned.as_ref() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            signature: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                signature,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            signature: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                signature,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}
