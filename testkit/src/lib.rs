//! Test material made at test time, never committed: a throwaway PKI with a
//! CA, a broker certificate for `localhost` and `127.0.0.1`, a client CA
//! and client certificate for mutual TLS, and the bad certificates the
//! suites must see refused (another CA's, an expired one, one for another
//! name). `blipmq-test-pki DIR` writes the same files for the SDK suites.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The names the broker certificate is good for.
pub const BROKER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA that can issue more certificates.
pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Authority {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server certificate for `names` that expired long ago.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// A client certificate whose subject is `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Issued {
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate params");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign a certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Every file a TLS test needs, in a directory of its own.
pub struct TestPki {
    /// Signs the broker's certificates: what clients trust.
    pub ca: Authority,
    /// Signs client certificates: what the broker trusts under mutual TLS.
    pub client_ca: Authority,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// The file names [`TestPki::write`] uses, relative to its directory.
pub mod files {
    pub const CA: &str = "ca.pem";
    pub const BROKER_CERT: &str = "broker.pem";
    pub const BROKER_KEY: &str = "broker.key";
    pub const CLIENT_CA: &str = "client-ca.pem";
    pub const CLIENT_CERT: &str = "client.pem";
    pub const CLIENT_KEY: &str = "client.key";
    /// A CA that signed nothing the broker presents.
    pub const OTHER_CA: &str = "other-ca.pem";
    /// A broker certificate (signed by the CA) that expired in 2001.
    pub const EXPIRED_CERT: &str = "expired.pem";
    pub const EXPIRED_KEY: &str = "expired.key";
    /// A broker certificate (signed by the CA) for `wrong.invalid` only.
    pub const WRONG_NAME_CERT: &str = "wrong-name.pem";
    pub const WRONG_NAME_KEY: &str = "wrong-name.key";
    /// A client certificate signed by the other CA: refused under mTLS.
    pub const STRANGER_CERT: &str = "stranger.pem";
    pub const STRANGER_KEY: &str = "stranger.key";
}

impl TestPki {
    /// A new PKI written to a temporary directory removed on drop.
    pub fn generate() -> TestPki {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut pki = TestPki::write(temp.path());
        pki._temp = Some(temp);
        pki
    }

    /// A new PKI written to `dir` (created if needed), left there.
    pub fn write(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).expect("create the PKI directory");
        let ca = Authority::new("BlipMQ test CA");
        let client_ca = Authority::new("BlipMQ test client CA");
        let other_ca = Authority::new("Someone else's CA");
        let put = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).expect("write a PKI file");
        };
        let pair = |cert: &str, key: &str, issued: Issued| {
            put(cert, &issued.cert_pem);
            put(key, &issued.key_pem);
        };
        put(files::CA, &ca.cert_pem);
        put(files::CLIENT_CA, &client_ca.cert_pem);
        put(files::OTHER_CA, &other_ca.cert_pem);
        pair(
            files::BROKER_CERT,
            files::BROKER_KEY,
            ca.server(BROKER_NAMES),
        );
        pair(
            files::CLIENT_CERT,
            files::CLIENT_KEY,
            client_ca.client("test-client"),
        );
        pair(
            files::EXPIRED_CERT,
            files::EXPIRED_KEY,
            ca.expired_server(BROKER_NAMES),
        );
        pair(
            files::WRONG_NAME_CERT,
            files::WRONG_NAME_KEY,
            ca.server(&["wrong.invalid"]),
        );
        pair(
            files::STRANGER_CERT,
            files::STRANGER_KEY,
            other_ca.client("stranger"),
        );
        TestPki {
            ca,
            client_ca,
            dir: dir.to_path_buf(),
            _temp: None,
        }
    }

    /// The path of one of the [`files`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
