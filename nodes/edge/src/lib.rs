//! The HTTP edge of a wharf node: the OCI distribution v2 read API over the pull pipeline
//! (`wharf-mirror`). It parses routes ([`route`]), finds their upstream and lets the caller in
//! ([`target`]: wharf's own logins and rules, or an upstream's judgement of each client's own
//! login, in [`access`]),
//! answers ([`api`]) and maps every pipeline failure to an OCI error body and status in one
//! place ([`error`]); it owns the listener's limits ([`connections`], [`activity`],
//! [`sendfile`], [`tls`]), the caching headers ([`http_cache`]), the access log and HTTP
//! metrics ([`access_log`], [`http_metrics`]) and the operator pages ([`status`],
//! [`status_page`]).

pub mod access;
pub mod access_log;
pub mod activity;
pub mod api;
pub mod connections;
pub mod error;
pub mod http_cache;
pub mod http_metrics;
pub mod idle_http1;
pub mod route;
pub mod sendfile;
pub mod status;
pub mod status_page;
pub mod target;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use wharf_core::config::{Config, StorageTarget};
use wharf_mirror::{Mirror, OpenError};
use wharf_storage::BlobStore;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Mirror(#[from] OpenError),
    #[error(transparent)]
    Config(#[from] wharf_core::config::ConfigError),
    #[error(transparent)]
    Auth(#[from] wharf_auth::AuthError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("starting the serving threads: {0}")]
    ServingThreads(#[source] std::io::Error),
}

/// One node's HTTP surface: the pipeline it serves, who may pull what, and the listener's
/// settings.
pub struct Edge {
    /// The pull pipeline behind the API.
    pub mirror: Arc<Mirror>,
    pub connection_limits: connections::ConnectionLimits,
    /// Client authentication and repository policy.
    pub auth: Arc<wharf_auth::Authenticator>,
    /// Whether clients connect over TLS (for the scheme of token realms).
    pub tls: bool,
    /// The listener's TLS settings, when `[tls]` is on.
    pub server_tls: Option<Arc<tls::ServerTls>>,
    /// Version, uptime and where the operator pages are served.
    pub info: status::NodeInfo,
    /// The latest server-side errors, for the status page.
    pub recent_errors: status::RecentErrors,
    /// Validators and lifetimes for caches in front of wharf.
    pub http_cache: http_cache::HttpCaching,
    /// How re-reads of the config file (access rules, groups) went.
    pub config_reload: wharf_auth::reload::ReloadRecord,
    /// The threads the main listener's connections are served on (`limits.serving_threads`).
    pub serving: Arc<connections::ServingThreads>,
}

/// The version wharf was built as.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit wharf was built from (see build.rs).
pub const COMMIT: &str = env!("WHARF_COMMIT");

impl Edge {
    /// Open the pipeline over the store `config.storage` names (local disk by default), and
    /// the edge in front of it.
    pub async fn open(config: &Config) -> Result<Arc<Edge>, EdgeError> {
        let mirror = Mirror::open(config, node_metrics(config)).await?;
        Edge::over(config, mirror).await
    }

    /// As [`Edge::open`], over any store.
    pub async fn with_store(
        config: &Config,
        store: Arc<dyn BlobStore>,
    ) -> Result<Arc<Edge>, EdgeError> {
        let mirror = Mirror::with_store(config, store, node_metrics(config)).await?;
        Edge::over(config, mirror).await
    }

    /// The edge in front of an open pipeline.
    pub async fn over(config: &Config, mirror: Arc<Mirror>) -> Result<Arc<Edge>, EdgeError> {
        let auth = Arc::new(wharf_auth::Authenticator::from_config(config).await?);
        let server_tls = if config.tls.enabled() {
            Some(tls::ServerTls::load(
                &config.tls,
                config.allow_world_readable_secrets,
            )?)
        } else {
            None
        };
        let limits = &config.limits;
        Ok(Arc::new(Edge {
            mirror,
            http_cache: http_cache::HttpCaching::new(
                auth.restricted(),
                Duration::from_secs(config.cache.not_found_max_age_secs),
            ),
            auth,
            tls: config.tls.enabled(),
            server_tls,
            info: status::NodeInfo {
                version: VERSION,
                commit: COMMIT,
                started: std::time::Instant::now(),
                backend: match config.storage_target()? {
                    StorageTarget::LocalDisk(_) => "file",
                    StorageTarget::S3 { .. } => "s3",
                },
                on_main_listener: config.metrics.main_listener,
            },
            recent_errors: status::RecentErrors::default(),
            config_reload: Default::default(),
            serving: connections::ServingThreads::start(limits.serving_threads())
                .map_err(EdgeError::ServingThreads)?,
            connection_limits: connections::ConnectionLimits {
                max_connections: limits.max_connections,
                header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
                send_timeout: Duration::from_secs(limits.send_timeout_secs),
            },
        }))
    }
}

/// The node's metrics, labelled with its upstreams and build.
fn node_metrics(config: &Config) -> Arc<wharf_metrics::Metrics> {
    let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
    wharf_metrics::Metrics::new(&names, VERSION, COMMIT, config.metrics.enabled)
}

/// Serve the v2 API on `listener` until `shutdown` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = edge.connection_limits.clone();
    let tls = edge.server_tls.clone();
    let threads = Some(edge.serving.clone());
    connections::serve(
        listener,
        api::Api::new(edge),
        limits,
        tls,
        threads,
        shutdown,
    )
    .await
}

/// Serve the operator pages (`/metrics`, `/`, `/status.json`, `/health`) on `listener`, plain
/// HTTP with no client authentication, until `shutdown` resolves.
pub async fn serve_operator(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = edge.connection_limits.clone();
    // Operator pages are few requests: served on the node's runtime.
    connections::serve(
        listener,
        api::operator_router(edge),
        limits,
        None,
        None,
        shutdown,
    )
    .await
}

impl Edge {
    /// The files to re-read when they change or on SIGHUP: TLS certificates, htpasswd, JWKS.
    pub fn watched_files(&self) -> Vec<Arc<dyn wharf_auth::reload::Reload>> {
        let mut files = self.auth.watched();
        if let Some(tls) = &self.server_tls {
            files.push(tls.clone());
        }
        files
    }

    /// Every reloaded file's state, and the config file's, for the status page and metrics.
    pub fn reload_statuses(&self) -> Vec<wharf_auth::reload::ReloadStatus> {
        let mut statuses: Vec<_> = self.watched_files().iter().map(|f| f.status()).collect();
        statuses.push(
            self.config_reload
                .status("config file", std::path::Path::new("--config")),
        );
        statuses
    }

    /// Apply a re-read config file's `[[access]]` rules and `[auth.groups]`; the other
    /// sections need a restart.
    pub fn reload_rules(&self, config: &Config) -> Result<(), wharf_auth::AuthError> {
        self.auth
            .set_rules(&config.access, config.auth.groups.clone())
    }
}
