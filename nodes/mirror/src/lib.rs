//! The pull pipeline of a wharf node, with no HTTP in it: which upstream a request goes to
//! ([`upstreams`]), the blob, manifest, tag-list, referrers and catalog services that answer
//! from the cache and fetch what is missing ([`blobs`], [`manifests`], [`tags_list`],
//! [`referrers`], [`catalog`]), the one upstream download per blob that every waiting request
//! tails ([`download`]), and the cache's upkeep ([`evict`], [`prefetch`]). Failures are
//! [`MirrorError`]s; the HTTP edge (`wharf-edge`) maps them to OCI error bodies, the cluster
//! (`wharf-cluster`) to gRPC statuses. [`singleflight`] is the seam where a cluster decides
//! which node fetches a cold blob.

pub mod blobs;
pub mod catalog;
pub mod coalesce;
pub mod download;
pub mod error;
pub mod evict;
pub mod health;
pub mod links;
pub mod logins;
pub mod manifests;
pub mod negative;
pub mod prefetch;
pub mod ranges;
pub mod referrers;
pub mod routes;
pub mod singleflight;
pub mod slots;
pub mod stats;
pub mod tags_list;
pub mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use wharf_core::config::{Config, StorageTarget};
use wharf_storage::fs::FsStore;
use wharf_storage::s3::{S3Location, S3Store};
use wharf_storage::timeout::TimeoutStore;
use wharf_storage::{BlobStore, StoreError};

pub use crate::error::MirrorError;
pub use crate::stats::CacheResult;

use crate::blobs::{BlobLimits, BlobService};
use crate::health::{Health, MonitoredStore};
use crate::manifests::ManifestService;
use crate::negative::NegativeCache;
use crate::slots::DownloadSlots;
use crate::stats::Stats;
use crate::tags_list::TagsListService;
use crate::upstreams::{Upstreams, UpstreamsError};

/// Why a mirror could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
}

/// The pipeline one node serves requests with: where content comes from and where it is kept.
pub struct Mirror {
    /// Which upstream a request goes to, and its client.
    pub upstreams: Upstreams,
    pub blobs: BlobService,
    pub manifests: Arc<ManifestService>,
    pub tags_lists: TagsListService,
    pub referrers: referrers::ReferrersService,
    pub catalog: catalog::CatalogService,
    /// Which repositories cached digests belong to; consulted when auth is on.
    pub links: links::RepoLinks,
    /// The upstreams' verdicts on clients' own logins (`credentials = "client"`).
    pub logins: logins::LoginVerdicts,
    /// Counters and the node's metrics.
    pub stats: Arc<Stats>,
    /// Whether the store answers, for `/health` and the status page.
    pub health: Health,
    pub store: Arc<dyn BlobStore>,
    /// CDN-origin mode: lifetime of presigned blob URLs, when enabled.
    pub redirect_blobs: Option<Duration>,
    /// The local-disk copies of warm S3 blobs, when `[hot_cache]` is on.
    pub hot_cache: Option<Arc<wharf_storage::hot::HotCache>>,
    /// `[[prefetch]]` rules and how their passes went.
    pub prefetch: Arc<prefetch::Prefetcher>,
    /// Whether pulls are restricted (auth or access rules): content is then linked to its
    /// repositories and served only under them.
    pub restricted: bool,
}

impl Mirror {
    /// Open the store `config.storage` names (local disk by default) and the upstream clients.
    pub async fn open(
        config: &Config,
        metrics: Arc<wharf_metrics::Metrics>,
    ) -> Result<Arc<Mirror>, OpenError> {
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
        Mirror::with_store(config, store, metrics).await
    }

    /// As [`Mirror::open`], over any store. The download spool is always on local disk.
    /// Starts the eviction and prefetch tasks.
    pub async fn with_store(
        config: &Config,
        store: Arc<dyn BlobStore>,
        metrics: Arc<wharf_metrics::Metrics>,
    ) -> Result<Arc<Mirror>, OpenError> {
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
            ranges: Arc::new(ranges::RangeSources::new(
                config.fetch.clone(),
                metrics.clone(),
            )),
        };
        let blobs = BlobService::open(
            store.clone(),
            spool.clone(),
            stats.clone(),
            config.eviction.clone(),
            blob_limits,
        )
        .await
        .map_err(|source| OpenError::Spool {
            path: spool,
            source,
        })?
        .with_redirect_base(redirect_base(config)?);
        let mirror = Arc::new(Mirror {
            hot_cache,
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
            logins: logins::LoginVerdicts::new(metadata_fetches.clone()),
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
            prefetch: Arc::new(prefetch::Prefetcher::from_config(config)?),
            restricted: config.restricted(),
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
fn redirect_base(config: &Config) -> Result<Option<String>, OpenError> {
    let base = config.s3.redirect_base_url.trim_end_matches('/');
    if base.is_empty() {
        return Ok(None);
    }
    Ok(Some(match config.storage_target()? {
        StorageTarget::S3 { prefix, .. } if !prefix.is_empty() => format!("{base}/{prefix}/"),
        _ => format!("{base}/"),
    }))
}
