//! The edge of a wharf node: the OCI distribution v2 read API and the pull pipeline behind it.
//!
//! A request flows: [`api`] (HTTP, OCI errors) → [`route`] (path parsing) → [`upstreams`]
//! (which registry, `?ns=`) → [`manifests`] / [`blobs`] / [`tags_list`] (cache, then upstream)
//! → [`download`] (the one upstream fetch per blob, tailed by every waiting client).
//! [`coalesce`] is the in-process singleflight the services share; [`singleflight`] is the seam
//! where a cluster decides which node fetches a cold blob.

pub mod access;
pub mod access_log;
pub mod activity;
pub mod api;
pub mod blobs;
pub mod catalog;
pub mod coalesce;
pub mod connections;
pub mod download;
pub mod error;
pub mod evict;
pub mod health;
pub mod http_cache;
pub mod http_metrics;
pub mod links;
pub mod manifests;
pub mod negative;
pub mod prefetch;
pub mod referrers;
pub mod route;
pub mod sendfile;
pub mod singleflight;
pub mod slots;
pub mod stats;
pub mod status;
pub mod status_page;
pub mod tags_list;
pub mod tls;
pub mod upstreams;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use wharf_core::config::{Config, StorageTarget};
use wharf_storage::fs::FsStore;
use wharf_storage::s3::{S3Location, S3Store};
use wharf_storage::timeout::TimeoutStore;
use wharf_storage::{BlobStore, StoreError};

use crate::blobs::{BlobLimits, BlobService};
use crate::health::{Health, MonitoredStore};
use crate::manifests::ManifestService;
use crate::negative::NegativeCache;
use crate::slots::DownloadSlots;
use crate::stats::Stats;
use crate::tags_list::TagsListService;
use crate::upstreams::{Upstreams, UpstreamsError};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("opening the cache store: {0}")]
    Store(#[from] StoreError),
    #[error("preparing the download spool {path}: {source}")]
    Spool {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstreams(#[from] UpstreamsError),
    #[error(transparent)]
    Config(#[from] wharf_core::config::ConfigError),
    #[error(transparent)]
    Auth(#[from] wharf_auth::AuthError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Everything one node serves requests with.
pub struct Mirror {
    pub upstreams: Upstreams,
    pub blobs: BlobService,
    pub manifests: Arc<ManifestService>,
    pub tags_lists: TagsListService,
    pub referrers: referrers::ReferrersService,
    pub catalog: catalog::CatalogService,
    pub stats: Arc<Stats>,
    pub health: Health,
    pub store: Arc<dyn BlobStore>,
    /// CDN-origin mode: lifetime of presigned blob URLs, when enabled.
    pub redirect_blobs: Option<Duration>,
    pub connection_limits: connections::ConnectionLimits,
    /// Client authentication and repository policy.
    pub auth: Arc<wharf_auth::Authenticator>,
    /// Whether clients connect over TLS (for the scheme of token realms).
    pub tls: bool,
    /// The listener's TLS settings, when `[tls]` is on.
    pub server_tls: Option<Arc<tls::ServerTls>>,
    /// Which repositories cached digests belong to; consulted when auth is on.
    pub links: links::RepoLinks,
    /// Version, uptime and where the operator pages are served.
    pub info: status::NodeInfo,
    /// The latest server-side errors, for the status page.
    pub recent_errors: status::RecentErrors,
    /// The local-disk copies of warm S3 blobs, when `[hot_cache]` is on.
    pub hot_cache: Option<Arc<wharf_storage::hot::HotCache>>,
    /// Validators and lifetimes for caches in front of wharf.
    pub http_cache: http_cache::HttpCaching,
    /// `[[prefetch]]` rules and how their passes went.
    pub prefetch: Arc<prefetch::Prefetcher>,
    /// How re-reads of the config file (access rules, groups) went.
    pub config_reload: wharf_auth::reload::ReloadRecord,
}

/// The version wharf was built as.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit wharf was built from (see build.rs).
pub const COMMIT: &str = env!("WHARF_COMMIT");

impl Mirror {
    /// Open the store `config.storage` names (local disk by default) and the upstream clients.
    pub async fn open(config: &Config) -> Result<Arc<Mirror>, EdgeError> {
        config.validate()?;
        let store: Arc<dyn BlobStore> = match config.storage_target()? {
            StorageTarget::LocalDisk(dir) => Arc::new(FsStore::open(dir).await?),
            StorageTarget::S3 { bucket, prefix } => {
                let location =
                    S3Location::parse(&format!("s3://{bucket}/{prefix}")).ok_or_else(|| {
                        wharf_core::config::ConfigError::Invalid(format!(
                            "bad S3 bucket {bucket:?}"
                        ))
                    })?;
                Arc::new(S3Store::connect(location, config.s3.path_style).await)
            }
        };
        Mirror::with_store(config, store).await
    }

    /// As [`Mirror::open`], over any store. The download spool is always on local disk.
    pub async fn with_store(
        config: &Config,
        store: Arc<dyn BlobStore>,
    ) -> Result<Arc<Mirror>, EdgeError> {
        let hot_cache = if config.hot_cache.max_size_mib > 0 && store.shared() {
            let dir = wharf_storage::hot::hot_dir(&config.data_dir, &config.hot_cache.dir);
            let hot = wharf_storage::hot::HotCache::open(
                store.clone(),
                &dir,
                config.hot_cache.max_size_mib.saturating_mul(1024 * 1024),
            )
            .await?;
            hot.start_checks(Duration::from_secs(
                config.hot_cache.check_interval_secs.max(1),
            ));
            Some(hot)
        } else {
            None
        };
        let store: Arc<dyn BlobStore> = match &hot_cache {
            Some(hot) => Arc::new(hot.clone()),
            None => store,
        };
        let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let metrics = wharf_metrics::Metrics::new(&names, VERSION, COMMIT, config.metrics.enabled);
        let stats = Arc::new(Stats::new(metrics.clone()));
        let health = Health::default();
        let store: Arc<dyn BlobStore> = Arc::new(TimeoutStore::new(
            store,
            Duration::from_secs(config.limits.storage_timeout_secs),
        ));
        let store: Arc<dyn BlobStore> =
            Arc::new(MonitoredStore::new(store, health.clone(), metrics.clone()));
        let memory = config.cache.memory_index_mib.saturating_mul(1024 * 1024);
        let spool = config.data_dir.join(".spool");
        let limits = &config.limits;
        let negative = Arc::new(NegativeCache::new(Duration::from_secs(
            limits.negative_ttl_secs,
        )));
        // One bound for every upstream fetch of manifests, tags, tag lists and referrers.
        let metadata_fetches = Arc::new(DownloadSlots::for_metadata(
            limits.max_metadata_fetches,
            limits.metadata_queue,
            Duration::from_secs(limits.queue_timeout_secs),
        ));
        let blob_limits = BlobLimits {
            slots: Arc::new(DownloadSlots::new(
                limits.max_downloads,
                limits.download_queue,
                Duration::from_secs(limits.queue_timeout_secs),
            )),
            negative: negative.clone(),
            max_blob: (limits.max_blob_mib > 0)
                .then(|| limits.max_blob_mib.saturating_mul(1024 * 1024)),
        };
        let blobs = BlobService::open(
            store.clone(),
            spool.clone(),
            stats.clone(),
            config.eviction.clone(),
            blob_limits,
        )
        .await
        .map_err(|source| EdgeError::Spool {
            path: spool,
            source,
        })?
        .with_redirect_base(redirect_base(config)?);
        let auth = Arc::new(wharf_auth::Authenticator::from_config(config).await?);
        let server_tls = if config.tls.enabled() {
            Some(tls::ServerTls::load(
                &config.tls,
                config.allow_world_readable_secrets,
            )?)
        } else {
            None
        };
        let mirror = Arc::new(Mirror {
            hot_cache,
            http_cache: http_cache::HttpCaching::new(
                auth.restricted(),
                Duration::from_secs(config.cache.not_found_max_age_secs),
            ),
            auth,
            tls: config.tls.enabled(),
            server_tls,
            links: links::RepoLinks::new(store.clone()),
            upstreams: Upstreams::from_config(config, &metrics)?,
            blobs,
            manifests: Arc::new(ManifestService::new(
                store.clone(),
                memory,
                Duration::from_secs(config.cache.tag_ttl_secs),
                stats.clone(),
                negative,
                metadata_fetches.clone(),
            )),
            tags_lists: TagsListService::new(
                Duration::from_secs(config.cache.tags_list_ttl_secs),
                metadata_fetches.clone(),
            ),
            catalog: catalog::CatalogService::new(config.catalog.enabled),
            referrers: referrers::ReferrersService::new(
                Duration::from_secs(config.cache.tag_ttl_secs),
                metadata_fetches,
            ),
            stats,
            health,
            store,
            redirect_blobs: config
                .s3
                .redirect_blobs
                .then(|| Duration::from_secs(config.s3.presign_expiry_secs)),
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
            prefetch: Arc::new(prefetch::Prefetcher::from_config(config)?),
            config_reload: Default::default(),
            connection_limits: connections::ConnectionLimits {
                max_connections: limits.max_connections,
                header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
                send_timeout: Duration::from_secs(limits.send_timeout_secs),
            },
        });
        let evictor = mirror.blobs.evictor().clone();
        if evictor.enabled() {
            tokio::spawn(evictor.run());
        }
        tokio::spawn(mirror.prefetch.clone().run(Arc::downgrade(&mirror)));
        Ok(mirror)
    }
}

/// `[s3] redirect_base_url` joined with the store's prefix: where a CDN over the bucket serves
/// an object key from.
fn redirect_base(config: &Config) -> Result<Option<String>, EdgeError> {
    let base = config.s3.redirect_base_url.trim_end_matches('/');
    if base.is_empty() {
        return Ok(None);
    }
    Ok(Some(match config.storage_target()? {
        StorageTarget::S3 { prefix, .. } if !prefix.is_empty() => format!("{base}/{prefix}/"),
        _ => format!("{base}/"),
    }))
}

/// Serve the v2 API on `listener` until `shutdown` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    mirror: Arc<Mirror>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = mirror.connection_limits.clone();
    let tls = mirror.server_tls.clone();
    connections::serve(listener, api::router(mirror), limits, tls, shutdown).await
}

/// Serve the operator pages (`/metrics`, `/`, `/status.json`, `/health`) on `listener`, plain
/// HTTP with no client authentication, until `shutdown` resolves.
pub async fn serve_operator(
    listener: TcpListener,
    mirror: Arc<Mirror>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = mirror.connection_limits.clone();
    connections::serve(
        listener,
        api::operator_router(mirror),
        limits,
        None,
        shutdown,
    )
    .await
}

impl Mirror {
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
