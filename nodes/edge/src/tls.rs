//! TLS on the client listener (rustls with the aws-lc-rs provider; no OpenSSL). HTTP/2 is
//! offered through ALPN next to HTTP/1.1. The certificate, key and client CA files are
//! re-read when they change (and on SIGHUP); a set that does not load keeps the previous one
//! in use, so a half-written renewal never takes the listener down.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use wharf_auth::reload::{Reload, Stamp};
use wharf_core::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The listener's current TLS settings.
pub struct ServerTls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Option<Stamp>>>,
}

impl ServerTls {
    /// Load the files `[tls]` names; failing here fails start-up.
    pub fn load(files: &TlsConfig) -> Result<Arc<ServerTls>, TlsError> {
        let config = build(files).map_err(TlsError)?;
        Ok(Arc::new(ServerTls {
            stamps: Mutex::new(stamps(files)),
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// An acceptor with the settings in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(p) => Arc::clone(&p.into_inner()),
        };
        TlsAcceptor::from(config)
    }
}

fn paths(files: &TlsConfig) -> [&Path; 3] {
    [&files.cert_file, &files.key_file, &files.client_ca_file]
}

fn stamps(files: &TlsConfig) -> Vec<Option<Stamp>> {
    paths(files).iter().map(|p| Stamp::of(p)).collect()
}

impl Reload for ServerTls {
    fn reload(&self, force: bool) -> bool {
        let now = stamps(&self.files);
        {
            let mut last = match self.stamps.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !force && *last == now {
                return false;
            }
            *last = now;
        }
        match build(&self.files) {
            Ok(config) => {
                match self.current.write() {
                    Ok(mut c) => *c = Arc::new(config),
                    Err(p) => *p.into_inner() = Arc::new(config),
                }
                info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(reason) => {
                warn!(cert = %self.files.cert_file.display(), %reason, "TLS reload failed: keeping the previous certificate");
                false
            }
        }
    }
}

fn build(files: &TlsConfig) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", files.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", files.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("{}: {e}", files.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if files.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.client_ca_file)
            .map_err(|e| format!("{}: {e}", files.client_ca_file.display()))?
        {
            let ca = ca.map_err(|e| format!("{}: {e}", files.client_ca_file.display()))?;
            roots
                .add(ca)
                .map_err(|e| format!("{}: {e}", files.client_ca_file.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("{}: {e}", files.client_ca_file.display()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
