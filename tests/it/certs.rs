//! Certificates made by the test for TLS (Redis, the public listener, HTTPS shops): a CA, a
//! server certificate and a client certificate signed by it, and an unrelated second CA with a
//! client certificate of its own, for "does not verify" cases. ECDSA P-256 keys (rcgen's
//! default), PEM files in a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// PEM files of a test PKI, removed with the temp dir when dropped. Every path is absolute.
pub struct Certs {
    _dir: TempDir,
    /// The CA certificate that signed `server_cert` and `client_cert` (rushgate's
    /// `store.tls_ca_file`; redis-server's `--tls-ca-cert-file`).
    pub ca: PathBuf,
    /// The server certificate, valid for IP 127.0.0.1 and DNS `localhost` (server auth).
    pub server_cert: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub server_key: PathBuf,
    /// A client certificate signed by `ca` (client auth; rushgate's `store.tls_cert_file`).
    pub client_cert: PathBuf,
    /// The client certificate's private key (PKCS#8; rushgate's `store.tls_key_file`).
    pub client_key: PathBuf,
    /// A second CA that signed nothing the server presents: a client trusting only it cannot
    /// verify the server.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`: a server requiring client certificates
    /// rejects it.
    pub other_client_cert: PathBuf,
    /// The private key of `other_client_cert`.
    pub other_client_key: PathBuf,
}

impl Certs {
    /// Generates the two CAs and the three leaf certificates and writes them as PEM files.
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);

        let (ca, ca_pem) = authority("rushgate test CA");
        let (other, other_pem) = authority("unrelated test CA");
        write(&path("ca.pem"), &ca_pem);
        write(&path("other-ca.pem"), &other_pem);
        leaf(
            &ca,
            "redis server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            (&path("server.pem"), &path("server-key.pem")),
        );
        leaf(
            &ca,
            "rushgate client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            (&path("client.pem"), &path("client-key.pem")),
        );
        leaf(
            &other,
            "stranger client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            (&path("other-client.pem"), &path("other-client-key.pem")),
        );
        Certs {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server-key.pem"),
            client_cert: path("client.pem"),
            client_key: path("client-key.pem"),
            other_ca: path("other-ca.pem"),
            other_client_cert: path("other-client.pem"),
            other_client_key: path("other-client-key.pem"),
            _dir: dir,
        }
    }
}

/// A self-signed CA named `name` that may sign certificates, and its certificate as PEM.
fn authority(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).expect("self-signed CA").pem();
    (Issuer::new(params, key), pem)
}

/// Writes a certificate for `names` (IP addresses or DNS names) signed by `ca`, and its key.
fn leaf(
    ca: &Issuer<'static, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    (cert_path, key_path): (&Path, &Path),
) {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).expect("signed leaf");
    write(cert_path, &cert.pem());
    write(key_path, &key.serialize_pem());
}

fn write(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Certs {
    /// A TLS acceptor presenting `server_cert` (for test servers: an HTTPS shop, a webhook
    /// receiver), offering `http/1.1` by ALPN.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("cert file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }

    /// A rustls client trusting only `ca` (a PEM file).
    pub fn client_trusting(ca: &Path) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
            roots.add(cert.expect("ca cert")).expect("add ca");
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}
