//! A throwaway certificate authority and the HTTPS flavour of the collector, for testing
//! the transport rules of SPEC §5 (verification, `--ca-bundle`, `SSL_CERT_FILE`) without
//! touching the system trust store.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::collector::{Accept, Collector, Conn};

/// Which server certificate the HTTPS collector presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Signed by the test CA for `127.0.0.1` and `localhost`, valid now.
    Valid,
    /// Signed by the test CA, valid now, but only for `wrong-host.invalid`.
    WrongHost,
    /// Signed by the test CA for `127.0.0.1` and `localhost`, but expired in 2001.
    Expired,
}

/// A fresh CA whose certificate is written to a PEM file that lives as long as this value.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and writes its certificate to `<tempdir>/ca.pem`.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "telespool test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed CA certificate");
        let dir = tempfile::tempdir().expect("temporary directory for the CA");
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, issuer.pem()).expect("write ca.pem");
        TestCa {
            issuer,
            pem_path,
            _dir: dir,
        }
    }

    /// The CA certificate as a PEM file, for `--ca-bundle` or `SSL_CERT_FILE`.
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// The CA certificate in PEM, e.g. to trust it from a test's own client.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A rustls server configuration presenting a fresh certificate of the given kind.
    pub fn server_config(&self, kind: ServerCert) -> Arc<ServerConfig> {
        let names = match kind {
            ServerCert::WrongHost => vec!["wrong-host.invalid".to_string()],
            ServerCert::Valid | ServerCert::Expired => vec!["127.0.0.1".into(), "localhost".into()],
        };
        let mut params = CertificateParams::new(names).expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "telespool test collector");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if kind == ServerCert::Expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        // Explicit provider: the process-wide default is ambiguous if both ring and
        // aws-lc-rs end up enabled in the dependency graph.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .expect("TLS server configuration");
        Arc::new(config)
    }
}

impl Collector {
    /// Serves HTTPS on 127.0.0.1 at a free port with a certificate of `kind` from `ca`;
    /// otherwise the same as `Collector::start`. `url()` starts with `https://127.0.0.1:`.
    pub fn start_https(ca: &TestCa, kind: ServerCert) -> Collector {
        let config = ca.server_config(kind);
        let accept: Accept = Arc::new(move |mut tcp: TcpStream| {
            let mut tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
            // Handshake here, so a client that rejects the certificate ends the connection
            // before any request rather than showing up as malformed HTTP.
            while tls.is_handshaking() {
                tls.complete_io(&mut tcp)?;
            }
            Ok(Box::new(StreamOwned::new(tls, tcp)) as Box<dyn Conn>)
        });
        Collector::start_with("https", accept)
    }
}
