//! `[cluster.tls]`: mTLS between members. Each member presents its certificate as a server and
//! as a client; a peer without a certificate from `ca_file` fails the handshake, before any
//! RPC. Works beside the cluster key ([`crate::auth`]), which every RPC proves either way when
//! it is set.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use wharf_core::config::{ClusterTlsConfig, ConfigError, read_secret_file};

/// Both sides of a member's TLS.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

impl ClusterTls {
    /// Read the files `[cluster.tls]` names (the key as a secret file); `None` when off.
    pub fn load(
        config: &ClusterTlsConfig,
        allow_world_readable: bool,
    ) -> Result<Option<ClusterTls>, ConfigError> {
        if !config.enabled() {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read(&config.cert_file)?;
        let key = read_secret_file(&config.key_file, allow_world_readable)?;
        let ca = Certificate::from_pem(read(&config.ca_file)?);
        let identity = Identity::from_pem(cert, key);
        let server = ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone());
        let mut client = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        if !config.server_name.is_empty() {
            client = client.domain_name(config.server_name.clone());
        }
        Ok(Some(ClusterTls { server, client }))
    }
}
