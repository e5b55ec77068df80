//! Serving blobs: from the store when cached, otherwise by joining or starting the one
//! upstream download of that digest.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use moka::future::Cache;
use tracing::warn;
use wharf_core::config::EvictionConfig;
use wharf_core::range::{RangeRequest, resolve};
use wharf_core::{ByteRange, Digest, OciCode, RepoName};
use wharf_storage::{BlobStore, FileSpan, ObjectKey};
use wharf_upstream::{BlobResponse, UpstreamClient};

use crate::download::{Download, Downloads, Fetched, Origin, Resume, tail};
use crate::error::MirrorError;
use crate::evict::Evictor;
use crate::negative::NegativeCache;
use crate::ranges::RangeSources;
use crate::singleflight::{Claim, FetchCoordinator};
use crate::slots::DownloadSlots;
use crate::stats::CacheResult;
use crate::stats::Stats;

/// Memory for the blob-size index, by weight: about 150 bytes an entry, so some 400k blobs.
const INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// What a blob request gets.
pub enum BlobReply {
    Found {
        /// Where the answer came from, for the access log.
        cache: CacheResult,
        /// Full size when known (always, unless the upstream sent no `Content-Length`).
        size: Option<u64>,
        range: Option<ByteRange>,
        /// `None` for `HEAD`.
        body: Option<BlobBody>,
    },
    RangeNotSatisfiable {
        size: u64,
    },
    /// CDN-origin mode: fetch it from the store directly.
    Redirect {
        location: String,
    },
}

/// A blob's bytes: always as a stream, and as a local file range when the store keeps files.
pub struct BlobBody {
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
    /// For `sendfile`: the same bytes as `stream`, unread.
    pub file: Option<FileSpan>,
}

pub struct BlobService {
    store: Arc<dyn BlobStore>,
    /// digest → size of stored blobs: warm requests never stat the store.
    index: Cache<Digest, u64>,
    downloads: Downloads,
    stats: Arc<Stats>,
    evictor: Arc<Evictor>,
    negative: Arc<NegativeCache>,
    ranges: Arc<RangeSources>,
    /// The cluster, once it is up; a single node has none.
    coordinator: OnceLock<Arc<dyn FetchCoordinator>>,
    /// CDN-origin mode through a CDN over the bucket: redirect to `<base><object key>`
    /// instead of a presigned URL.
    redirect_base: Option<String>,
}

/// How much blob work clients can start on this node.
pub struct BlobLimits {
    pub slots: Arc<DownloadSlots>,
    pub negative: Arc<NegativeCache>,
    /// Largest blob fetched, in bytes.
    pub max_blob: Option<u64>,
    /// Cold blobs as ranges side by side (`[fetch]`).
    pub ranges: Arc<RangeSources>,
}

/// A blob's bytes for another node, from an offset.
pub struct PeerStream {
    /// Full size, when known.
    pub size: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// The bytes from `offset` to the end of a blob of `size`; `None` for all of it.
fn from_offset(offset: u64, size: Option<u64>) -> Result<Option<ByteRange>, MirrorError> {
    match size {
        _ if offset == 0 => Ok(None),
        Some(size) if offset < size => Ok(Some(ByteRange {
            start: offset,
            end: size - 1,
        })),
        Some(_) => Err(MirrorError::invalid(
            OciCode::RangeInvalid,
            "offset past the end",
        )),
        None => Err(MirrorError::invalid(
            OciCode::RangeInvalid,
            "offset into a blob of unknown size",
        )),
    }
}

/// Resume an upstream blob download with a range request from where it broke off.
fn resume_upstream(
    upstream: Arc<UpstreamClient>,
    repo: RepoName,
    digest: Digest,
    stats: Arc<Stats>,
) -> Resume {
    Box::new(move |offset| {
        let (upstream, repo, digest, stats) = (
            upstream.clone(),
            repo.clone(),
            digest.clone(),
            stats.clone(),
        );
        Box::pin(async move {
            stats.upstream_resumes.fetch_add(1, Ordering::Relaxed);
            stats.metrics.upstream_resume();
            upstream
                .get_blob_from(&repo, &digest, offset)
                .await
                .map(|response| response.stream)
                .map_err(|e| MirrorError::upstream(upstream.name(), e, OciCode::BlobUnknown))
        })
    })
}

impl BlobService {
    /// Over `store`, with the download spool in `spool_dir` (emptied here).
    pub async fn open(
        store: Arc<dyn BlobStore>,
        spool_dir: PathBuf,
        stats: Arc<Stats>,
        eviction: EvictionConfig,
        limits: BlobLimits,
    ) -> std::io::Result<BlobService> {
        let index = Cache::builder()
            .max_capacity(INDEX_BYTES)
            .weigher(|d: &Digest, _: &u64| u32::try_from(d.hex().len() + 88).unwrap_or(u32::MAX))
            .build();
        let downloads = Downloads::open(
            spool_dir,
            store.clone(),
            index.clone(),
            stats.clone(),
            limits.slots,
            limits.max_blob,
        )
        .await?;
        let evictor = Arc::new(
            Evictor::new(store.clone(), index.clone(), eviction)
                .with_metrics(stats.metrics.clone()),
        );
        Ok(BlobService {
            store,
            index,
            downloads,
            stats,
            evictor,
            negative: limits.negative,
            ranges: limits.ranges,
            coordinator: OnceLock::new(),
            redirect_base: None,
        })
    }

    /// Redirect cached blobs to `base` + their object key (`base` ends with `/`).
    pub fn with_redirect_base(mut self, base: Option<String>) -> BlobService {
        self.redirect_base = base;
        self
    }

    /// Wait, up to `timeout`, until no download is under way: a node leaving a cluster
    /// finishes the fetches other nodes are streaming from it. True when idle.
    pub async fn drain_downloads(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.downloads.in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Blob downloads under way on this node.
    pub fn downloads_in_flight(&self) -> usize {
        self.downloads.in_flight()
    }

    /// The downloads under way, with their progress.
    pub fn download_statuses(&self) -> Vec<crate::download::DownloadStatus> {
        self.downloads.statuses()
    }

    /// Bytes and number of the stored blobs this node knows of (its index).
    pub fn indexed(&self) -> (u64, u64) {
        self.index.iter().fold((0, 0), |(bytes, n), (_, size)| {
            (bytes.saturating_add(size), n + 1)
        })
    }

    /// Coordinate cold fetches with a cluster from now on. Only the first call counts.
    pub fn set_coordinator(&self, coordinator: Arc<dyn FetchCoordinator>) {
        let _ = self.coordinator.set(coordinator);
    }

    pub fn coordinator(&self) -> Option<&Arc<dyn FetchCoordinator>> {
        self.coordinator.get()
    }

    /// The bytes of `digest` from `offset`, for a peer node: tailing this node's download of it,
    /// or from the store. `None` when this node neither fetches nor stores it.
    pub async fn peer_stream(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<PeerStream>, MirrorError> {
        if let Some(download) = self.downloads.find(digest) {
            let size = download.started().await?;
            let range = from_offset(offset, size)?;
            let body = tail(download, range, self.store.clone());
            return Ok(Some(PeerStream { size, body }));
        }
        let key = ObjectKey::Blob(digest.clone());
        let Some(size) = self.store.stat(&key).await.map_err(MirrorError::from)? else {
            return Ok(None);
        };
        let range = from_offset(offset, Some(size))?;
        match self.store.read(&key, range).await {
            Ok(Some(reader)) => Ok(Some(PeerStream {
                size: Some(size),
                body: reader.stream.map_err(std::io::Error::other).boxed(),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(MirrorError::from(e)),
        }
    }

    /// Whether the store holds `digest` (the index first, then one stat).
    pub async fn contains(&self, digest: &Digest) -> Result<bool, MirrorError> {
        if self.index.contains_key(digest) {
            return Ok(true);
        }
        Ok(self
            .store
            .stat(&ObjectKey::Blob(digest.clone()))
            .await?
            .is_some())
    }

    /// The evictor sharing this service's store and index.
    pub fn evictor(&self) -> &Arc<Evictor> {
        &self.evictor
    }

    pub async fn get(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
        range_header: Option<&str>,
        head: bool,
        redirect: Option<Duration>,
    ) -> Result<BlobReply, MirrorError> {
        if let Some(expires) = redirect.filter(|_| !head)
            && let Some(location) = self.presigned(digest, expires).await
        {
            self.evictor.touch(digest);
            self.stats.blob_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(BlobReply::Redirect { location });
        }
        if let Some(reply) = self.stored(digest, range_header, head).await? {
            if !head {
                self.evictor.touch(digest);
            }
            self.stats.blob_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(reply);
        }
        let what = format!("blob:{digest}");
        if let Some(missing) = self.negative.get(upstream.name(), repo, &what).await {
            return Err(missing);
        }
        if head {
            let reply = self.head_uncached(upstream, repo, digest).await;
            if let Err(e) = &reply {
                self.negative
                    .remember(upstream.name(), repo, &what, e)
                    .await;
            }
            return reply;
        }
        let (mut download, started) = match self.download_for(upstream, repo, digest).await? {
            Some(found) => found,
            // A download stored it between our look at the store and now.
            None => match self.stored(digest, range_header, head).await? {
                Some(reply) => {
                    self.evictor.touch(digest);
                    self.stats.blob_cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(reply);
                }
                None => self.download_anyway(upstream, repo, digest).await?,
            },
        };
        if !started {
            self.stats
                .coalesced_blob_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        let result = match download.started().await {
            // We joined a download started for another repository or upstream, which failed
            // there: that says nothing of ours, so ask once for it ourselves.
            Err(_) if !started && !self.is_for(&download, upstream, repo) => {
                download = self.download_anyway(upstream, repo, digest).await?.0;
                download.started().await
            }
            other => other,
        };
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                if self.is_for(&download, upstream, repo) {
                    self.negative
                        .remember(upstream.name(), repo, &what, &e)
                        .await;
                }
                return Err(e);
            }
        };
        let range = match size {
            Some(size) => match resolve(range_header, size) {
                RangeRequest::Unsatisfiable => return Ok(BlobReply::RangeNotSatisfiable { size }),
                RangeRequest::Partial(r) => Some(r),
                RangeRequest::Full => None,
            },
            None => None,
        };
        Ok(BlobReply::Found {
            cache: if started && download.from_peer() {
                CacheResult::Peer
            } else if started {
                CacheResult::Miss
            } else {
                CacheResult::Coalesced
            },
            size,
            range,
            body: Some(BlobBody {
                stream: tail(download, range, self.store.clone()),
                file: None,
            }),
        })
    }

    fn is_for(&self, download: &Download, upstream: &UpstreamClient, repo: &RepoName) -> bool {
        let origin = download.origin();
        origin.upstream == upstream.name() && origin.repo == *repo
    }

    /// Join the download of `digest`, or start one from `repo` once a download slot is free;
    /// true when started here. `None` when a download stored it since the caller looked in the
    /// store: a leader indexes what it stored before it leaves the registry, so a digest
    /// neither in flight nor in the index was not stored in between.
    async fn download_for(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(Arc<Download>, bool)>, MirrorError> {
        if let Some(download) = self.downloads.join(digest) {
            return Ok(Some((download, false)));
        }
        if self.index.contains_key(digest) {
            return Ok(None);
        }
        self.download_anyway(upstream, repo, digest).await.map(Some)
    }

    /// As [`BlobService::download_for`], without looking at the index.
    async fn download_anyway(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(Arc<Download>, bool), MirrorError> {
        if let Some(download) = self.downloads.join(digest) {
            return Ok((download, false));
        }
        let slot = self.downloads.slots().acquire().await?;
        Ok(self.start_or_join(upstream, repo, digest, slot))
    }

    /// Join the download of `digest`, or start one from `repo`; true when started here.
    fn start_or_join(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> (Arc<Download>, bool) {
        let fetch = {
            let (upstream, repo, digest) = (upstream.clone(), repo.clone(), digest.clone());
            let (stats, store) = (self.stats.clone(), self.store.clone());
            let ranges = self.ranges.clone();
            let coordinator = self.coordinator.get().cloned();
            async move {
                let lease = match coordinator {
                    None => None,
                    Some(coordinator) => match coordinator.claim(&digest).await {
                        Claim::Fetch(lease) => lease,
                        Claim::Peer(response) => {
                            stats.peer_blob_fetches.fetch_add(1, Ordering::Relaxed);
                            let mut response = response?;
                            let metrics = stats.metrics.clone();
                            response.stream = response
                                .stream
                                .inspect_ok(move |chunk| metrics.peer_bytes(chunk.len() as u64))
                                .boxed();
                            return Ok(Fetched {
                                peer: true,
                                response,
                                store: !store.shared(),
                                lease: None,
                                resume: None,
                                ranged: None,
                            });
                        }
                    },
                };
                if lease.is_some()
                    && let Ok(Some(reader)) =
                        store.read(&ObjectKey::Blob(digest.clone()), None).await
                {
                    // The lease's previous holder stored it since we looked: no upstream fetch.
                    let stream = reader
                        .stream
                        .map_err(|e| wharf_upstream::UpstreamError::Failed(e.to_string()))
                        .boxed();
                    let response = BlobResponse {
                        size: Some(reader.size),
                        stream,
                    };
                    return Ok(Fetched {
                        peer: false,
                        response,
                        store: false,
                        lease,
                        resume: None,
                        ranged: None,
                    });
                }
                stats.upstream_blob_fetches.fetch_add(1, Ordering::Relaxed);
                let (response, ranged) = ranges.first(&upstream, &repo, &digest).await?;
                Ok(Fetched {
                    peer: false,
                    response,
                    store: true,
                    lease,
                    resume: Some(resume_upstream(upstream, repo, digest, stats)),
                    ranged,
                })
            }
        };
        let origin = Origin {
            upstream: upstream.name().to_string(),
            repo: repo.clone(),
        };
        self.downloads
            .join_or_start(digest, origin, Some(slot), fetch)
    }

    /// A presigned URL for a stored blob; `None` (serve it ourselves) if not stored or failing.
    async fn presigned(&self, digest: &Digest, expires: Duration) -> Option<String> {
        let key = ObjectKey::Blob(digest.clone());
        // With eviction on, another node may have deleted it behind our index: check first.
        if self.evictor.enabled() || self.index.get(digest).await.is_none() {
            let size = self.store.stat(&key).await.ok()??;
            self.index.insert(digest.clone(), size).await;
        }
        if let Some(base) = &self.redirect_base {
            return Some(format!("{base}{}", key.path()));
        }
        match self.store.presigned_url(&key, expires).await {
            Ok(url) => url,
            Err(e) => {
                warn!(%digest, error = %e, "presigning failed; serving the blob through wharf");
                None
            }
        }
    }

    async fn stored(
        &self,
        digest: &Digest,
        range_header: Option<&str>,
        head: bool,
    ) -> Result<Option<BlobReply>, MirrorError> {
        let key = ObjectKey::Blob(digest.clone());
        let size = match self.index.get(digest).await {
            Some(size) => size,
            None => match self.store.stat(&key).await {
                Ok(Some(size)) => {
                    self.index.insert(digest.clone(), size).await;
                    size
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    warn!(%digest, error = %e, "store stat failed; fetching from upstream");
                    return Ok(None);
                }
            },
        };
        let range = match resolve(range_header, size) {
            RangeRequest::Unsatisfiable => {
                return Ok(Some(BlobReply::RangeNotSatisfiable { size }));
            }
            RangeRequest::Partial(r) => Some(r),
            RangeRequest::Full => None,
        };
        if head {
            return Ok(Some(BlobReply::Found {
                cache: CacheResult::Hit,
                size: Some(size),
                range,
                body: None,
            }));
        }
        match self.store.read(&key, range).await {
            Ok(Some(reader)) => Ok(Some(BlobReply::Found {
                cache: CacheResult::Hit,
                size: Some(size),
                range,
                body: Some(BlobBody {
                    stream: reader.stream.map_err(std::io::Error::other).boxed(),
                    file: reader.file,
                }),
            })),
            Ok(None) => {
                // Deleted behind the index's back: forget it and refetch.
                self.index.invalidate(digest).await;
                Ok(None)
            }
            Err(e) => {
                warn!(%digest, error = %e, "store read failed; fetching from upstream");
                Ok(None)
            }
        }
    }

    /// `HEAD` of a blob not stored: the in-flight download's size, else the upstream's `HEAD`.
    async fn head_uncached(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobReply, MirrorError> {
        if let Some(download) = self.downloads.find(digest)
            && let Ok(Some(size)) = download.started().await
        {
            return Ok(BlobReply::Found {
                cache: CacheResult::Coalesced,
                size: Some(size),
                range: None,
                body: None,
            });
        }
        let size = upstream
            .head_blob(repo, digest)
            .await
            .map_err(|e| MirrorError::upstream(upstream.name(), e, OciCode::BlobUnknown))?;
        Ok(BlobReply::Found {
            cache: CacheResult::Miss,
            size: Some(size),
            range: None,
            body: None,
        })
    }
}
