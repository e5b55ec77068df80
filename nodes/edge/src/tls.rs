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
use wharf_auth::reload::{Reload, ReloadRecord, ReloadStatus, Stamp};
use wharf_core::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The listener's current TLS settings.
pub struct ServerTls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Option<Stamp>>>,
    record: ReloadRecord,
    /// Accept a private key file others may read.
    allow_world_readable: bool,
}

impl ServerTls {
    /// Load the files `[tls]` names; failing here fails start-up. The key file is a secret:
    /// refused while others may read it, unless `allow_world_readable`.
    pub fn load(files: &TlsConfig, allow_world_readable: bool) -> Result<Arc<ServerTls>, TlsError> {
        let config = build(files, allow_world_readable).map_err(TlsError)?;
        Ok(Arc::new(ServerTls {
            stamps: Mutex::new(stamps(files)),
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
            record: ReloadRecord::default(),
            allow_world_readable,
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
        match build(&self.files, self.allow_world_readable) {
            Ok(config) => {
                self.record.succeeded();
                match self.current.write() {
                    Ok(mut c) => *c = Arc::new(config),
                    Err(p) => *p.into_inner() = Arc::new(config),
                }
                info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(reason) => {
                self.record.failed(&reason);
                warn!(cert = %self.files.cert_file.display(), %reason, "TLS reload failed: keeping the previous certificate");
                false
            }
        }
    }

    fn status(&self) -> ReloadStatus {
        self.record.status("TLS certificate", &self.files.cert_file)
    }
}

fn build(files: &TlsConfig, allow_world_readable: bool) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", files.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", files.cert_file.display()));
    }
    let key_pem = wharf_core::config::read_secret_file(&files.key_file, allow_world_readable)
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
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
