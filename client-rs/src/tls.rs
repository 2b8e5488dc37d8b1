//! TLS to the broker (`tls://host:port`): rustls with ring, the system's
//! trusted roots unless a CA is given, the broker's name checked against
//! its certificate (the address's host, or `server_name`), and a client
//! certificate for brokers that ask for one (mutual TLS).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// PEM material: a file read when the client connects, or the text itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Text(Vec<u8>),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            // A key's text stays out of logs.
            Pem::Text(text) => write!(f, "Text({} bytes)", text.len()),
        }
    }
}

impl Pem {
    fn read(&self, what: &str) -> io::Result<Vec<u8>> {
        match self {
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| failure(format!("cannot read the {what} {}: {e}", path.display()))),
            Pem::Text(text) => Ok(text.clone()),
        }
    }
}

/// How the client speaks TLS. The defaults trust the system's roots and
/// check the broker's name against the address's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) to trust instead of the system's roots.
    pub ca: Option<Pem>,
    /// A certificate chain (PEM, leaf first) to present, for a broker with
    /// `tls.client_ca_file` (mutual TLS); goes with `client_key`.
    pub client_cert: Option<Pem>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<Pem>,
    /// The name the broker's certificate must be for, when it is not the
    /// address's host (connecting by IP to a certificate for a DNS name).
    pub server_name: Option<String>,
}

/// Why TLS failed: the handshake (an untrusted, expired or misnamed
/// certificate, a refused client certificate, a plaintext peer) or the
/// options (an unreadable file, no key). `ConnectErrorKind::Tls`.
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

pub(crate) fn failure(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(message.into()))
}

/// Whether `error` is a TLS failure (see [`TlsFailure`]).
pub(crate) fn is_failure(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<TlsFailure>() || inner.is::<rustls::Error>())
}

/// The rustls configuration `options` describe.
pub(crate) fn client_config(options: &TlsOptions) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failure(e.to_string()))?
        .with_root_certificates(roots(options.ca.as_ref())?);
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(&cert.read("client certificate")?, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(&key.read("client key")?)
                .map_err(|e| failure(format!("the client key holds no PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| failure(format!("the client certificate and key: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(failure(
                "a client certificate and its key go together: set both or neither",
            ))
        }
    };
    Ok(Arc::new(config))
}

fn roots(ca: Option<&Pem>) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for certificate in certificates(&ca.read("CA file")?, "CA file")? {
                roots
                    .add(certificate)
                    .map_err(|e| failure(format!("a CA certificate cannot be used: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                // The system's store may hold a certificate rustls cannot
                // parse; the others still count.
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), |e| e.to_string());
                return Err(failure(format!(
                    "no trusted roots in the system's certificate store ({why}): give a CA file"
                )));
            }
        }
    }
    Ok(roots)
}

fn certificates(pem: &[u8], what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failure(format!("the {what} is not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(failure(format!("the {what} holds no PEM certificate")));
    }
    Ok(certificates)
}

/// The name to verify: `server_name`, else the host of `host:port`
/// (brackets of an IPv6 literal removed).
pub(crate) fn server_name(
    addr: &str,
    override_name: Option<&str>,
) -> io::Result<ServerName<'static>> {
    let host = match override_name {
        Some(name) => name,
        None => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            host.trim_start_matches('[').trim_end_matches(']')
        }
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| failure(format!("{host:?} is not a name TLS can verify: {e}")))
}

/// Split `tls://host:port`, `tcp://host:port` or `host:port` into whether
/// TLS is asked for and the `host:port` to dial.
pub(crate) fn parse_address(addr: &str) -> (bool, &str) {
    if let Some(rest) = addr.strip_prefix("tls://") {
        (true, rest.trim_end_matches('/'))
    } else if let Some(rest) = addr.strip_prefix("tcp://") {
        (false, rest.trim_end_matches('/'))
    } else {
        (false, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_say_whether_they_want_tls() {
        assert_eq!(parse_address("tls://broker:7878"), (true, "broker:7878"));
        assert_eq!(parse_address("tcp://broker:7878/"), (false, "broker:7878"));
        assert_eq!(parse_address("127.0.0.1:7878"), (false, "127.0.0.1:7878"));
    }

    #[test]
    fn the_name_checked_is_the_host_or_the_override() {
        let name = |addr, over| server_name(addr, over).unwrap().to_str().into_owned();
        assert_eq!(name("broker.example:7878", None), "broker.example");
        assert_eq!(name("127.0.0.1:7878", None), "127.0.0.1");
        assert_eq!(name("[::1]:7878", None), "::1");
        assert_eq!(
            name("10.0.0.5:7878", Some("broker.example")),
            "broker.example"
        );
    }

    #[test]
    fn bad_options_are_tls_failures_naming_what_is_wrong() {
        let half = TlsOptions {
            client_cert: Some(Pem::Text(b"x".to_vec())),
            ..TlsOptions::default()
        };
        let error = client_config(&half).unwrap_err();
        assert!(is_failure(&error) && error.to_string().contains("go together"));
        let missing = TlsOptions {
            ca: Some(Pem::File("/nonexistent/ca.pem".into())),
            ..TlsOptions::default()
        };
        let error = client_config(&missing).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        let garbage = TlsOptions {
            ca: Some(Pem::Text(b"not a certificate".to_vec())),
            ..TlsOptions::default()
        };
        let error = client_config(&garbage).unwrap_err();
        assert!(is_failure(&error) && error.to_string().contains("no PEM certificate"));
        // Key text never reaches a log through Debug.
        let secret = format!("{:?}", Pem::Text(b"-----BEGIN PRIVATE KEY-----".to_vec()));
        assert!(!secret.contains("PRIVATE"), "{secret}");
    }
}
