//! TLS settings, in one place for every connection rushgate makes or accepts: the rustls client
//! settings of Redis, HTTPS shops and HTTPS webhooks (the given CA file, else the system's roots;
//! an optional client certificate), and the public listener's certificate, which a reload reads
//! again without touching open connections.
//!
//! Everything uses the `ring` provider (the one `hyper-rustls` and fred are built with), so no
//! second crypto library is built and no process-wide default provider has to be installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The crypto provider of every TLS connection.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificate authorities from `ca` (a PEM file with one or more certificates), else the
/// system's roots. The error names the file and what is wrong with it.
pub fn roots(ca: Option<&Path>, field: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let what = |e: &dyn std::fmt::Display| format!("{field} {}: {e}", path.display());
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| what(&e))? {
                roots
                    .add(cert.map_err(|e| what(&e))?)
                    .map_err(|e| what(&e))?;
            }
            if roots.is_empty() {
                return Err(what(&"no certificate in it"));
            }
        }
        None => {
            // Unreadable system certificates are skipped: the ones that load still verify.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// A client certificate chain and its key, both PEM files.
#[derive(Debug, Clone)]
pub struct ClientCert<'a> {
    /// The chain, leaf first.
    pub cert: &'a Path,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
}

/// rustls client settings: servers verified against `roots` (their name, or IP address, checked
/// against the certificate), TLS 1.2 and 1.3, `client` presented when given. A server whose
/// certificate does not verify is refused at the handshake with an error that says
/// `invalid peer certificate` and why.
pub fn client_config(
    roots: rustls::RootCertStore,
    client: Option<ClientCert<'_>>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        Some(ClientCert { cert, key }) => {
            let (chain, key) = read_pair(cert, key, "tls_cert_file", "tls_key_file")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A certificate chain and its private key from PEM files; errors name the file.
fn read_pair(
    cert: &Path,
    key: &Path,
    cert_field: &str,
    key_field: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert_field} {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_field} {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{key_field} {}: {e}", key.display()))?;
    Ok((chain, key))
}

/// The public listener's certificate. Handshakes read the current one; [`ServerCerts::reload`]
/// replaces it for connections accepted afterwards, while open connections keep theirs.
#[derive(Debug)]
pub struct ServerCerts {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCerts {
    /// Reads `cert_file` (chain, leaf first) and `key_file`. The error names the file and the
    /// problem (missing, not PEM, a key rustls cannot sign with, a key that does not match).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerCerts>, String> {
        let current = Self::read(cert_file, key_file)?;
        Ok(Arc::new(ServerCerts {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(current),
        }))
    }

    fn read(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
        let (chain, key) = read_pair(
            cert_file,
            key_file,
            "server.tls.cert_file",
            "server.tls.key_file",
        )?;
        let certified = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("server.tls: {e}"))?;
        Ok(certified)
    }

    /// Reads both files again (for a reload, which installs the result with
    /// [`ServerCerts::install`] only once everything else of the new configuration is valid).
    pub fn read_again(&self) -> Result<Arc<CertifiedKey>, String> {
        Self::read(&self.cert_file, &self.key_file).map(Arc::new)
    }

    /// Uses `fresh` for connections accepted from now on; open connections keep theirs.
    pub fn install(&self, fresh: Arc<CertifiedKey>) {
        self.current.store(fresh);
    }

    /// The files this certificate is read from.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert_file, &self.key_file)
    }

    /// Server settings offering `h2` and `http/1.1` by ALPN, with this certificate (as it is at
    /// each handshake).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[derive(Debug)]
struct Resolver(Arc<ServerCerts>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}
