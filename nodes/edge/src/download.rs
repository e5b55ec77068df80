//! The one upstream download of a blob, shared by every request that wants it meanwhile.
//!
//! The leader task streams the upstream body into a spool file on local disk, hashing as bytes
//! pass, and publishes its progress on a `watch` channel. Readers tail the spool file from any
//! offset and so receive bytes as they arrive, whatever their number and speed, with memory
//! bounded by one read buffer each. The blob's last byte is released only once the digest and
//! size have verified: a reader of a corrupt download always sees an error, never a complete
//! body. A verified spool file is handed to the store (a rename on local disk); readers that
//! open it too late read the stored object instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use moka::future::Cache;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::{error, info, warn};
use wharf_core::{ByteRange, Digest, DigestHasher, RepoName};
use wharf_metrics::FailureReason;
use wharf_storage::{BlobStore, ObjectKey, file_read};
use wharf_upstream::BlobResponse;

use crate::error::ApiError;
use crate::singleflight::FetchLease;
use crate::slots::DownloadSlots;
use crate::stats::Stats;

/// Spool writes are batched to about this size, or flushed every [`FLUSH_INTERVAL`] (also
/// while the upstream pauses, so waiting readers get every byte received so far).
const WRITE_BATCH: usize = 256 * 1024;
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// A download with no reader for this long gives its slot up when requests wait for one.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for the upstream's response headers.
    Connecting,
    Streaming,
    /// Digest and size verified: readers may release the last byte. Being stored.
    Verified,
    /// Final: handed to the store (`ok`), or the store refused it (served uncached).
    Stored {
        ok: bool,
    },
    Failed(ApiError),
}

impl Phase {
    /// Stored or failed: nothing will change any more.
    pub fn is_final(progress: &Progress) -> bool {
        matches!(progress.phase, Phase::Stored { .. } | Phase::Failed(_))
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// The upstream's `Content-Length`.
    pub size: Option<u64>,
    /// Bytes durably in the spool file and readable.
    pub written: u64,
    pub phase: Phase,
}

/// Where a download's bytes come from, and what to do with them.
pub struct Fetched {
    /// Streamed from the cluster peer that fetches it, not from the upstream.
    pub peer: bool,
    pub response: BlobResponse,
    /// Put the verified blob in the store. False for a copy streamed from the peer that
    /// fetches it into a shared store: that peer stores it.
    pub store: bool,
    /// The cluster's lease, held until the blob is stored (or the download failed).
    pub lease: Option<Box<dyn FetchLease>>,
    /// Asks the source again for the bytes from an offset when the body breaks off.
    pub resume: Option<Resume>,
}

/// The rest of a blob from an offset, from the same source.
pub type Resume = Box<
    dyn Fn(u64) -> BoxFuture<'static, Result<BoxStream<'static, UpstreamBody>, ApiError>>
        + Send
        + Sync,
>;
type UpstreamBody = Result<Bytes, wharf_upstream::UpstreamError>;

/// A download resumes at most this often in a row without receiving a byte, then fails.
const MAX_RESUMES: u32 = 3;

impl Fetched {
    /// Fetched by this node for its store, with no cluster lease.
    pub fn alone(response: BlobResponse) -> Fetched {
        Fetched {
            peer: false,
            response,
            store: true,
            lease: None,
            resume: None,
        }
    }
}

/// Which upstream and repository a download was started for: an upstream's refusal there
/// says nothing about another repository or upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub upstream: String,
    pub repo: RepoName,
}

/// One in-flight download; readers hold an `Arc` while they stream.
pub struct Download {
    digest: Digest,
    origin: Origin,
    spool_path: PathBuf,
    progress: watch::Receiver<Progress>,
    /// Clients and peers tailing it now (not the store's upload).
    readers: AtomicUsize,
    started: std::time::SystemTime,
    /// Its bytes come from the cluster peer that fetches it.
    from_peer: AtomicBool,
}

/// A download as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadStatus {
    pub digest: String,
    pub upstream: String,
    pub repository: String,
    /// The upstream's `Content-Length`, when it sent one.
    pub size: Option<u64>,
    /// Bytes received and readable so far.
    pub received: u64,
    pub phase: &'static str,
    /// Clients and peers streaming it now.
    pub waiters: usize,
    pub seconds: f64,
    /// Bytes per second since it started.
    pub rate: f64,
    /// `upstream`: this node fetches it; `peer`: it streams from the node that does.
    pub source: &'static str,
}

impl Download {
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Its bytes come from a cluster peer rather than the upstream.
    pub fn from_peer(&self) -> bool {
        self.from_peer.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> DownloadStatus {
        let progress = self.progress.borrow().clone();
        let seconds = self.started.elapsed().map_or(0.0, |d| d.as_secs_f64());
        DownloadStatus {
            digest: self.digest.to_string(),
            upstream: self.origin.upstream.clone(),
            repository: self.origin.repo.to_string(),
            size: progress.size,
            received: progress.written,
            phase: match progress.phase {
                Phase::Connecting => "connecting",
                Phase::Streaming => "streaming",
                Phase::Verified => "verified",
                Phase::Stored { .. } => "stored",
                Phase::Failed(_) => "failed",
            },
            waiters: self.readers.load(Ordering::Relaxed),
            seconds,
            rate: if seconds > 0.0 {
                progress.written as f64 / seconds
            } else {
                0.0
            },
            source: if self.from_peer() { "peer" } else { "upstream" },
        }
    }

    /// Neither failed nor abandoned by its leader: worth joining.
    fn is_live(&self) -> bool {
        let failed = matches!(self.progress.borrow().phase, Phase::Failed(_));
        !failed && self.progress.has_changed().is_ok()
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Wait until the upstream has answered: its size, or why it failed.
    pub async fn started(&self) -> Result<Option<u64>, ApiError> {
        let mut rx = self.progress.clone();
        let progress = rx
            .wait_for(|p| !matches!(p.phase, Phase::Connecting))
            .await
            .map_err(|_| ApiError::internal("download ended without a result"))?
            .clone();
        match progress.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(progress.size),
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // A verified spool file has been renamed away already; anything left is garbage.
        // Unlinking can wait on the disk: not on a runtime thread.
        let path = std::mem::take(&mut self.spool_path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || {
                    let _ = std::fs::remove_file(path);
                });
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The registry of downloads under way on this node.
pub struct Downloads {
    spool_dir: PathBuf,
    active: Arc<Mutex<HashMap<Digest, Arc<Download>>>>,
    counter: AtomicU64,
    store: Arc<dyn BlobStore>,
    /// The blob-size index, told of each blob once it is stored.
    index: Cache<Digest, u64>,
    stats: Arc<Stats>,
    slots: Arc<DownloadSlots>,
    /// Largest blob accepted, in bytes.
    max_blob: Option<u64>,
}

impl Downloads {
    /// Empties `spool_dir`: files left there by a crash were never verified.
    pub async fn open(
        spool_dir: PathBuf,
        store: Arc<dyn BlobStore>,
        index: Cache<Digest, u64>,
        stats: Arc<Stats>,
        slots: Arc<DownloadSlots>,
        max_blob: Option<u64>,
    ) -> std::io::Result<Downloads> {
        if tokio::fs::try_exists(&spool_dir).await? {
            tokio::fs::remove_dir_all(&spool_dir).await?;
        }
        tokio::fs::create_dir_all(&spool_dir).await?;
        Ok(Downloads {
            spool_dir,
            active: Arc::default(),
            counter: AtomicU64::new(0),
            store,
            index,
            stats,
            slots,
            max_blob,
        })
    }

    /// The node's download slots.
    pub fn slots(&self) -> &Arc<DownloadSlots> {
        &self.slots
    }

    /// The live download of `digest` to join, if one is under way.
    pub fn join(&self, digest: &Digest) -> Option<Arc<Download>> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.get(digest).filter(|d| d.is_live()).cloned()
    }

    /// How many downloads are under way.
    pub fn in_flight(&self) -> usize {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The downloads under way, for the status page and metrics (the map's lock is held
    /// only to copy the handles).
    pub fn statuses(&self) -> Vec<DownloadStatus> {
        let active: Vec<Arc<Download>> = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        active.iter().map(|d| d.status()).collect()
    }

    /// The download of `digest` if one is under way.
    pub fn find(&self, digest: &Digest) -> Option<Arc<Download>> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.get(digest).cloned()
    }

    /// Join the download of `digest`, or start it with `fetch`, holding `slot` until it ends.
    /// True when this call started it.
    pub fn join_or_start<F>(
        &self,
        digest: &Digest,
        origin: Origin,
        slot: Option<OwnedSemaphorePermit>,
        fetch: F,
    ) -> (Arc<Download>, bool)
    where
        F: Future<Output = Result<Fetched, ApiError>> + Send + 'static,
    {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = active.get(digest) {
            // A failed download is only still listed until its leader cleans up, and one
            // whose leader is gone will never finish: start anew.
            if existing.is_live() {
                return (existing.clone(), false);
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Progress {
            size: None,
            written: 0,
            phase: Phase::Connecting,
        });
        let download = Arc::new(Download {
            digest: digest.clone(),
            origin,
            spool_path: self.spool_dir.join(format!("{}-{n}", digest.hex())),
            progress: rx,
            readers: AtomicUsize::new(0),
            started: std::time::SystemTime::now(),
            from_peer: AtomicBool::new(false),
        });
        active.insert(digest.clone(), download.clone());
        let leader = Leader {
            download: download.clone(),
            tx,
            store: self.store.clone(),
            index: self.index.clone(),
            stats: self.stats.clone(),
            registry: self.active.clone(),
            slots: self.slots.clone(),
            max_blob: self.max_blob,
            _slot: slot,
            failure_counted: AtomicBool::new(false),
        };
        tokio::spawn(leader.run(fetch));
        (download, true)
    }
}

/// The task that fetches one download. However it ends (a result, a panic, a cancelled
/// runtime), dropping it publishes a final phase and takes the download out of the registry,
/// so a later request starts afresh instead of joining a download nobody runs.
struct Leader {
    download: Arc<Download>,
    tx: watch::Sender<Progress>,
    store: Arc<dyn BlobStore>,
    index: Cache<Digest, u64>,
    stats: Arc<Stats>,
    registry: Arc<Mutex<HashMap<Digest, Arc<Download>>>>,
    slots: Arc<DownloadSlots>,
    max_blob: Option<u64>,
    /// This download's share of the node's download slots, returned when the leader ends.
    _slot: Option<OwnedSemaphorePermit>,
    /// Its failure was counted in the metrics where it happened.
    failure_counted: AtomicBool,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !Phase::is_final(&self.tx.borrow()) {
            error!(digest = %self.download.digest, "blob download stopped without a result");
            self.tx.send_modify(|p| {
                p.phase =
                    Phase::Failed(ApiError::internal("the blob download stopped unexpectedly"));
            });
        }
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if registry
            .get(&self.download.digest)
            .is_some_and(|d| Arc::ptr_eq(d, &self.download))
        {
            registry.remove(&self.download.digest);
        }
    }
}

impl Leader {
    async fn run(self, fetch: impl Future<Output = Result<Fetched, ApiError>>) {
        let digest = self.download.digest.clone();
        let started = Instant::now();
        let mut lease = None;
        let outcome = match fetch.await {
            Ok(Fetched {
                peer,
                response,
                store,
                lease: held,
                resume,
            }) => {
                lease = held;
                self.download.from_peer.store(peer, Ordering::Relaxed);
                self.tx.send_modify(|p| {
                    p.size = response.size;
                    p.phase = Phase::Streaming;
                });
                // A remote store takes the blob while it downloads, tailing the spool like any
                // reader: it gets the last byte only after verification, and aborts otherwise.
                let uploader = (store && self.store.streams_writes()).then(|| {
                    let body = tail_reader(self.download.clone(), None, self.store.clone(), false);
                    let (store, key) = (self.store.clone(), ObjectKey::Blob(digest.clone()));
                    tokio::spawn(async move { store.put_stream(&key, body).await })
                });
                self.spool(response, resume)
                    .await
                    .map(|size| (size, store, uploader))
            }
            Err(e) => Err(e),
        };
        let phase = match outcome {
            Ok((size, store, uploader)) => {
                // Clients have what they need; durability and storing follow.
                self.tx.send_modify(|p| p.phase = Phase::Verified);
                let ok = match uploader {
                    Some(upload) => match upload.await {
                        Ok(Ok(())) => true,
                        Ok(Err(e)) => {
                            error!(%digest, error = %e, "verified blob could not be stored; served uncached");
                            false
                        }
                        Err(e) => {
                            error!(%digest, error = %e, "blob upload task failed");
                            false
                        }
                    },
                    None if store => self.store_verified().await,
                    None => false,
                };
                info!(%digest, size, stored = ok, elapsed_ms = started.elapsed().as_millis() as u64, "blob fetched and verified");
                if ok {
                    self.index.insert(digest.clone(), size).await;
                }
                Phase::Stored { ok }
            }
            Err(e) => {
                warn!(%digest, error = %e, "blob download failed");
                if !self.failure_counted.load(Ordering::Relaxed) {
                    let reason = if self.download.from_peer() {
                        FailureReason::Peer
                    } else if e.status != http::StatusCode::INTERNAL_SERVER_ERROR {
                        // 4xx refusals and 502/503/504: what the upstream said or did.
                        FailureReason::Upstream
                    } else {
                        FailureReason::Storage
                    };
                    self.stats.metrics.download_failed(reason);
                }
                Phase::Failed(e)
            }
        };
        self.tx.send_modify(|p| p.phase = phase);
        // Unregisters the download (see `Drop`).
        drop(self);
        // Only now, with the blob in the store, may another node take the fetch over.
        drop(lease);
    }

    /// Stream the body into the spool file; the verified size, or why it is not to be trusted.
    async fn spool(&self, response: BlobResponse, resume: Option<Resume>) -> Result<u64, ApiError> {
        let digest = &self.download.digest;
        let spool_error = |e: std::io::Error| {
            error!(%digest, error = %e, "spool write failed");
            ApiError::internal("writing the download spool failed")
        };
        if let (Some(size), Some(max)) = (response.size, self.max_blob)
            && size > max
        {
            return Err(self.too_large(max));
        }
        let mut spool = SpoolWriter::create(&self.download.spool_path, &self.tx)
            .await
            .map_err(spool_error)?;
        let mut body = ResumingBody {
            stream: response.stream,
            resume,
            resumes: 0,
            resumed_at: 0,
        };
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unread_since: Option<Instant> = None;
        loop {
            let next = body.next_chunk(spool.received(), digest);
            tokio::pin!(next);
            // Flush what came so far while waiting; see whether anyone still wants it.
            let chunk = loop {
                tokio::select! {
                    // The body first: while bytes flow, the timer is not even polled.
                    biased;
                    chunk = &mut next => break chunk,
                    _ = tick.tick() => {
                        spool.flush().await.map_err(spool_error)?;
                        self.check_wanted(&mut unread_since)?;
                    }
                }
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(ApiError::from_upstream(
                        &self.download.origin.upstream,
                        e,
                        wharf_core::OciCode::BlobUnknown,
                    ));
                }
            };
            let total = spool.received().saturating_add(chunk.len() as u64);
            if response.size.is_some_and(|size| total > size) {
                return Err(self.mismatch("more bytes than its Content-Length"));
            }
            if let Some(max) = self.max_blob.filter(|max| total > *max) {
                return Err(self.too_large(max));
            }
            hasher.update(&chunk);
            spool.push(&chunk).await.map_err(spool_error)?;
        }
        spool.flush().await.map_err(spool_error)?;
        let written = spool.received();
        if response.size.is_some_and(|size| size != written) {
            return Err(self.mismatch("fewer bytes than its Content-Length"));
        }
        if hasher.finish() != *digest {
            return Err(self.mismatch("a blob"));
        }
        Ok(written)
    }

    /// A download nobody reads goes on only while no request waits for its slot.
    fn check_wanted(&self, unread_since: &mut Option<Instant>) -> Result<(), ApiError> {
        if self.download.readers.load(Ordering::Acquire) > 0 {
            *unread_since = None;
            return Ok(());
        }
        let since = *unread_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= ABANDON_GRACE && self.slots.contended() {
            warn!(digest = %self.download.digest, "no client reads this download and others wait for its slot; giving it up");
            return Err(ApiError::new(
                wharf_core::OciCode::Unavailable,
                "the download was given up: no client was reading it and the node was busy",
            )
            .with_status(http::StatusCode::SERVICE_UNAVAILABLE));
        }
        Ok(())
    }

    fn too_large(&self, max: u64) -> ApiError {
        self.count_failure(FailureReason::TooLarge);
        warn!(digest = %self.download.digest, max, "blob larger than limits.max_blob_mib; not fetched");
        ApiError::new(
            wharf_core::OciCode::Unavailable,
            format!("the blob is larger than this mirror's limit of {max} bytes"),
        )
        .with_status(http::StatusCode::BAD_GATEWAY)
    }

    /// Make the verified spool file durable and move it into the store.
    async fn store_verified(&self) -> bool {
        let digest = &self.download.digest;
        let path = &self.download.spool_path;
        let synced = match tokio::fs::File::open(path).await {
            Ok(file) => file.sync_data().await,
            Err(e) => Err(e),
        };
        let stored = match synced {
            Ok(()) => self
                .store
                .put_file(&ObjectKey::Blob(digest.clone()), path)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => true,
            Err(e) => {
                error!(%digest, error = %e, "verified blob could not be stored; served uncached");
                false
            }
        }
    }

    /// Count this download's failure once, with the reason known where it happened.
    fn count_failure(&self, reason: FailureReason) {
        if !self.failure_counted.swap(true, Ordering::Relaxed) {
            self.stats.metrics.download_failed(reason);
        }
    }

    fn mismatch(&self, what: &str) -> ApiError {
        self.count_failure(FailureReason::Mismatch);
        let upstream = &self.download.origin.upstream;
        self.stats.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        error!(digest = %self.download.digest, %upstream, what, "upstream content failed verification; not cached");
        ApiError::digest_mismatch(upstream, what)
    }
}

/// The spool file being written: bytes batched, then written and announced to readers.
struct SpoolWriter<'a> {
    file: tokio::fs::File,
    batch: BytesMut,
    written: u64,
    progress: &'a watch::Sender<Progress>,
}

impl<'a> SpoolWriter<'a> {
    async fn create(
        path: &Path,
        progress: &'a watch::Sender<Progress>,
    ) -> std::io::Result<SpoolWriter<'a>> {
        Ok(SpoolWriter {
            file: tokio::fs::File::create(path).await?,
            batch: BytesMut::with_capacity(WRITE_BATCH),
            written: 0,
            progress,
        })
    }

    /// Bytes received: written and batched.
    fn received(&self) -> u64 {
        self.written + self.batch.len() as u64
    }

    async fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write the batch and tell readers it is there.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.batch).await?;
        self.file.flush().await?;
        self.written += self.batch.len() as u64;
        self.batch.clear();
        let written = self.written;
        self.progress.send_modify(|p| p.written = written);
        Ok(())
    }
}

/// An upstream body that, when it breaks off, asks its source for the rest with a range
/// request, as long as each attempt brings bytes ([`MAX_RESUMES`] breaks in a row without
/// any fail it).
struct ResumingBody {
    stream: BoxStream<'static, UpstreamBody>,
    resume: Option<Resume>,
    /// Breaks since bytes last came.
    resumes: u32,
    resumed_at: u64,
}

impl ResumingBody {
    /// The next chunk; `received` is how many bytes came before it.
    async fn next_chunk(
        &mut self,
        received: u64,
        digest: &Digest,
    ) -> Result<Option<Bytes>, wharf_upstream::UpstreamError> {
        loop {
            let e = match self.stream.next().await {
                None => return Ok(None),
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => e,
            };
            if received > self.resumed_at {
                // Bytes came since the last break: a flaky link, not a dead one.
                self.resumes = 0;
            }
            let Some(resume) = self.resume.as_ref().filter(|_| self.resumes < MAX_RESUMES) else {
                return Err(e);
            };
            self.resumes += 1;
            self.resumed_at = received;
            warn!(%digest, offset = received, error = %e, attempt = self.resumes, "blob download broke off; resuming");
            self.stream = match resume(received).await {
                Ok(stream) => stream,
                Err(resumed) => {
                    warn!(%digest, error = %resumed.message, "resuming failed");
                    return Err(e);
                }
            };
        }
    }
}

/// Stream `range` (or all) of a download's bytes as they become readable, for a client.
pub fn tail(
    download: Arc<Download>,
    range: Option<ByteRange>,
    store: Arc<dyn BlobStore>,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    tail_reader(download, range, store, true)
}

/// As [`tail`]; `counted`: a client or peer (whose leaving may let the download go), not the
/// store's own upload.
fn tail_reader(
    download: Arc<Download>,
    range: Option<ByteRange>,
    store: Arc<dyn BlobStore>,
    counted: bool,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    if counted {
        download.readers.fetch_add(1, Ordering::AcqRel);
    }
    let reader = TailReader {
        counted,
        progress: download.progress(),
        download,
        store,
        file: None,
        pos: range.map_or(0, |r| r.start),
        end_exclusive: range.map(|r| r.end + 1),
        fallback: None,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        reader.next_chunk().await.map(|chunk| (chunk, reader))
    })
    .boxed()
}

struct TailReader {
    counted: bool,
    download: Arc<Download>,
    progress: watch::Receiver<Progress>,
    store: Arc<dyn BlobStore>,
    file: Option<Arc<std::fs::File>>,
    pos: u64,
    end_exclusive: Option<u64>,
    /// Set when the spool file was already moved into the store.
    fallback: Option<BoxStream<'static, Result<Bytes, wharf_storage::StoreError>>>,
}

impl Drop for TailReader {
    fn drop(&mut self) {
        if self.counted {
            self.download.readers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl TailReader {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(fallback) = &mut self.fallback {
                return fallback
                    .next()
                    .await
                    .map(|r| r.map_err(std::io::Error::other));
            }
            let progress = self.progress.borrow_and_update().clone();
            let verified = match &progress.phase {
                Phase::Failed(e) => {
                    return Some(Err(std::io::Error::other(e.message.clone())));
                }
                Phase::Verified | Phase::Stored { .. } => true,
                _ => false,
            };
            // Hold back the last byte until the digest has verified.
            let readable = match (verified, progress.size) {
                (true, _) | (false, None) => progress.written,
                (false, Some(size)) => progress.written.min(size.saturating_sub(1)),
            };
            let mut stop = self.end_exclusive.unwrap_or(u64::MAX);
            if verified {
                stop = stop.min(progress.written);
            }
            if self.pos >= stop {
                return None;
            }
            if self.pos < readable {
                return Some(self.read(readable.min(stop)).await);
            }
            if self.progress.changed().await.is_err() {
                // The leader is gone: only a final phase lets the loop go on.
                let phase = self.progress.borrow().phase.clone();
                if !matches!(phase, Phase::Stored { .. } | Phase::Failed(_)) {
                    return Some(Err(std::io::Error::other("download abandoned")));
                }
            }
        }
    }

    async fn read(&mut self, limit: u64) -> Result<Bytes, std::io::Error> {
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => {
                let path = self.download.spool_path.clone();
                match tokio::task::spawn_blocking(move || std::fs::File::open(path))
                    .await
                    .map_err(std::io::Error::other)?
                {
                    Ok(file) => Arc::clone(self.file.insert(Arc::new(file))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return self.switch_to_store().await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let chunk = file_read::read_at(&file, self.pos, limit - self.pos).await?;
        if chunk.is_empty() {
            return Err(std::io::Error::other("spool file shorter than announced"));
        }
        self.pos += chunk.len() as u64;
        Ok(chunk)
    }

    /// The spool file was renamed into the store between our progress check and opening it.
    async fn switch_to_store(&mut self) -> Result<Bytes, std::io::Error> {
        let progress = self
            .progress
            .wait_for(Phase::is_final)
            .await
            .map_err(|_| std::io::Error::other("download abandoned"))?
            .clone();
        if !matches!(progress.phase, Phase::Stored { ok: true }) {
            return Err(std::io::Error::other("download spool vanished"));
        }
        let end = self
            .end_exclusive
            .unwrap_or(progress.written)
            .min(progress.written);
        let range = ByteRange {
            start: self.pos,
            end: end.saturating_sub(1),
        };
        let key = ObjectKey::Blob(self.download.digest.clone());
        let reader = self
            .store
            .read(&key, Some(range))
            .await
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("stored blob vanished"))?;
        self.pos = end;
        let mut stream = reader.stream;
        let first = stream.next().await;
        self.fallback = Some(stream);
        match first {
            Some(chunk) => chunk.map_err(std::io::Error::other),
            None => Ok(Bytes::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use wharf_core::OciCode;
    use wharf_storage::mem::MemStore;

    use super::*;

    fn body_stream(
        chunks: Vec<Bytes>,
        delay: Duration,
    ) -> BoxStream<'static, Result<Bytes, wharf_upstream::UpstreamError>> {
        futures::stream::iter(chunks)
            .then(move |c| async move {
                tokio::time::sleep(delay).await;
                Ok(c)
            })
            .boxed()
    }

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 256) as u8).collect()
    }

    fn origin() -> Origin {
        Origin {
            upstream: "up".into(),
            repo: "test/repo".parse().unwrap(),
        }
    }

    async fn setup() -> (tempfile::TempDir, Downloads, Arc<dyn BlobStore>, Arc<Stats>) {
        setup_with(DownloadSlots::new(8, 8, Duration::from_secs(5)), None).await
    }

    async fn setup_with(
        slots: DownloadSlots,
        max_blob: Option<u64>,
    ) -> (tempfile::TempDir, Downloads, Arc<dyn BlobStore>, Arc<Stats>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(MemStore::default());
        let stats: Arc<Stats> = Arc::default();
        let downloads = Downloads::open(
            dir.path().join("spool"),
            store.clone(),
            Cache::new(100),
            stats.clone(),
            Arc::new(slots),
            max_blob,
        )
        .await
        .unwrap();
        (dir, downloads, store, stats)
    }

    /// `first`, then nothing for a long time: an upstream that pauses mid-body.
    fn pausing_stream(first: Bytes) -> BoxStream<'static, UpstreamBody> {
        futures::stream::iter([Ok(first)])
            .chain(futures::stream::pending())
            .boxed()
    }

    #[tokio::test]
    async fn bytes_before_an_upstream_pause_reach_readers() {
        let (_dir, downloads, store, _stats) = setup().await;
        let digest = Digest::sha256_of(b"whatever");
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async {
            Ok(Fetched::alone(BlobResponse {
                size: Some(2000),
                stream: pausing_stream(Bytes::from(vec![7u8; 1000])),
            }))
        });
        let mut body = tail(download, None, store);
        let first = tokio::time::timeout(Duration::from_secs(1), body.next())
            .await
            .expect("the received bytes are readable while the upstream pauses")
            .unwrap()
            .unwrap();
        assert_eq!(first.len(), 1000);
    }

    #[tokio::test]
    async fn an_unread_download_yields_its_slot_to_a_waiting_request() {
        let slots = DownloadSlots::new(1, 4, Duration::from_secs(10));
        let (_dir, downloads, _store, _stats) = setup_with(slots, None).await;
        let slot = downloads.slots().acquire().await.unwrap();
        let digest = Digest::sha256_of(b"huge");
        // A huge blob trickling in, which its client gave up on: nobody tails it.
        let (download, _) = downloads.join_or_start(&digest, origin(), Some(slot), async {
            Ok(Fetched::alone(BlobResponse {
                size: Some(1 << 40),
                stream: pausing_stream(Bytes::from_static(b"x")),
            }))
        });
        let waited = std::time::Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(8), downloads.slots().acquire())
            .await
            .expect("the unread download gives its slot up");
        assert!(next.is_ok());
        assert!(waited.elapsed() >= ABANDON_GRACE);
        assert_eq!(
            download.started().await.unwrap_err().status,
            http::StatusCode::SERVICE_UNAVAILABLE,
            "given up"
        );

        // Read downloads keep their slot, whoever waits.
        let (read, _) =
            downloads.join_or_start(&Digest::sha256_of(b"read"), origin(), next.ok(), async {
                Ok(Fetched::alone(BlobResponse {
                    size: Some(1 << 40),
                    stream: pausing_stream(Bytes::from_static(b"x")),
                }))
            });
        let _reader = tail(read.clone(), None, Arc::new(MemStore::default()));
        let refused =
            tokio::time::timeout(Duration::from_secs(4), downloads.slots().acquire()).await;
        assert!(refused.is_err(), "still held after the grace period");
        assert!(read.is_live());
    }

    #[tokio::test]
    async fn blobs_over_the_size_limit_are_refused() {
        let (_dir, downloads, store, _stats) =
            setup_with(DownloadSlots::new(8, 8, Duration::from_secs(5)), Some(1000)).await;
        let data = blob(5000);
        let digest = Digest::sha256_of(&data);
        for size in [Some(5000), None] {
            let data = data.clone();
            let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
                Ok(Fetched::alone(BlobResponse {
                    size,
                    stream: body_stream(
                        data.chunks(100).map(Bytes::copy_from_slice).collect(),
                        Duration::ZERO,
                    ),
                }))
            });
            let result: Result<Vec<Bytes>, _> =
                tail(download, None, store.clone()).try_collect().await;
            assert!(result.is_err(), "{size:?}");
        }
        assert_eq!(store.stat(&ObjectKey::Blob(digest)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn readers_join_one_download_and_get_every_range() {
        let (_dir, downloads, store, _stats) = setup().await;
        let data = blob(1_000_000);
        let digest = Digest::sha256_of(&data);
        let chunks: Vec<Bytes> = data.chunks(70_000).map(Bytes::copy_from_slice).collect();
        let size = data.len() as u64;
        let start = |d: &Downloads| {
            let chunks = chunks.clone();
            d.join_or_start(&digest, origin(), None, async move {
                Ok(Fetched::alone(BlobResponse {
                    size: Some(size),
                    stream: body_stream(chunks, Duration::from_millis(2)),
                }))
            })
        };
        let (first, started) = start(&downloads);
        let (second, started_again) = start(&downloads);
        assert!(started && !started_again);
        assert_eq!(first.started().await.unwrap(), Some(size));
        let whole = tail(first, None, store.clone());
        let part = tail(
            second,
            Some(ByteRange {
                start: 999_990,
                end: 999_999,
            }),
            store.clone(),
        );
        let whole: Vec<Bytes> = whole.try_collect().await.unwrap();
        let part: Vec<Bytes> = part.try_collect().await.unwrap();
        assert_eq!(whole.concat(), data);
        assert_eq!(part.concat(), &data[999_990..]);
        // Stored, and the registry forgot the download.
        let mut progress = downloads.find(&digest).map(|d| d.progress());
        if let Some(p) = progress.as_mut() {
            let _ = p.wait_for(Phase::is_final).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(downloads.find(&digest).is_none());
        assert_eq!(
            store.stat(&ObjectKey::Blob(digest.clone())).await.unwrap(),
            Some(size)
        );
        assert_eq!(downloads.index.get(&digest).await, Some(size), "index told");
    }

    #[tokio::test]
    async fn corrupt_download_is_never_completed_nor_stored() {
        let (_dir, downloads, store, stats) = setup().await;
        let data = blob(300_000);
        let digest = Digest::sha256_of(&data);
        let mut corrupt = data.clone();
        corrupt[299_999] ^= 0xff;
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
            Ok(Fetched::alone(BlobResponse {
                size: Some(300_000),
                stream: body_stream(vec![Bytes::from(corrupt)], Duration::ZERO),
            }))
        });
        let result: Result<Vec<Bytes>, _> = tail(download, None, store.clone()).try_collect().await;
        assert!(result.is_err(), "a corrupt body must end in an error");
        assert_eq!(stats.digest_mismatches.load(Ordering::Relaxed), 1);
        assert_eq!(store.stat(&ObjectKey::Blob(digest)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_resumed_from_the_next_byte() {
        let (_dir, downloads, store, _stats) = setup().await;
        let data = blob(500_000);
        let digest = Digest::sha256_of(&data);
        let first: Vec<Result<Bytes, wharf_upstream::UpstreamError>> = vec![
            Ok(Bytes::copy_from_slice(&data[..123_456])),
            Err(wharf_upstream::UpstreamError::Failed(
                "connection reset".into(),
            )),
        ];
        let asked = Arc::new(Mutex::new(Vec::new()));
        let resume: Resume = {
            let (data, asked) = (data.clone(), asked.clone());
            Box::new(move |offset| {
                asked.lock().unwrap().push(offset);
                let rest = Bytes::copy_from_slice(&data[offset as usize..]);
                Box::pin(async move { Ok(body_stream(vec![rest], Duration::ZERO)) })
            })
        };
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
            Ok(Fetched {
                peer: false,
                response: BlobResponse {
                    size: Some(500_000),
                    stream: futures::stream::iter(first).boxed(),
                },
                store: true,
                lease: None,
                resume: Some(resume),
            })
        });
        let body: Vec<Bytes> = tail(download, None, store.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(body.concat(), data);
        assert_eq!(*asked.lock().unwrap(), vec![123_456]);
    }

    #[tokio::test]
    async fn breaks_with_progress_keep_resuming_and_breaks_without_fail() {
        let (_dir, downloads, store, _stats) = setup().await;
        let data = blob(100_000);
        let digest = Digest::sha256_of(&data);
        let broken = |part: Bytes, more: bool| -> BoxStream<'static, UpstreamBody> {
            let mut items = vec![Ok(part)];
            if more {
                items.push(Err(wharf_upstream::UpstreamError::Failed("reset".into())));
            }
            futures::stream::iter(items).boxed()
        };
        // Ten breaks, each after 10,000 more bytes: more than MAX_RESUMES, all with progress.
        let resume: Resume = {
            let data = data.clone();
            Box::new(move |offset| {
                let (from, to) = (offset as usize, (offset as usize + 10_000).min(data.len()));
                let stream = broken(Bytes::copy_from_slice(&data[from..to]), to < data.len());
                Box::pin(async move { Ok(stream) })
            })
        };
        let first = broken(Bytes::copy_from_slice(&data[..10_000]), true);
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async move {
            Ok(Fetched {
                peer: false,
                response: BlobResponse {
                    size: Some(100_000),
                    stream: first,
                },
                store: true,
                lease: None,
                resume: Some(resume),
            })
        });
        let body: Vec<Bytes> = tail(download, None, store.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(body.concat(), data);

        // A source that breaks before sending anything, every time, fails the download.
        let stuck = Digest::sha256_of(b"stuck");
        let resume: Resume = Box::new(move |_| {
            let stream = broken(Bytes::new(), true);
            Box::pin(async move { Ok(stream) })
        });
        let first = broken(Bytes::from_static(b"st"), true);
        let (download, _) = downloads.join_or_start(&stuck, origin(), None, async move {
            Ok(Fetched {
                peer: false,
                response: BlobResponse {
                    size: Some(5),
                    stream: first,
                },
                store: true,
                lease: None,
                resume: Some(resume),
            })
        });
        let result: Result<Vec<Bytes>, _> = tail(download, None, store).try_collect().await;
        assert!(result.is_err(), "no progress: the download fails");
    }

    #[tokio::test]
    async fn a_panicking_leader_fails_its_waiters_and_is_forgotten() {
        let (_dir, downloads, store, _stats) = setup().await;
        let data = blob(10_000);
        let digest = Digest::sha256_of(&data);
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async {
            if std::hint::black_box(true) {
                panic!("leader bug");
            }
            Err(ApiError::internal("unreachable"))
        });
        assert_eq!(download.started().await.unwrap_err().code, OciCode::Unknown);
        let size = data.len() as u64;
        let (again, started) = downloads.join_or_start(&digest, origin(), None, async move {
            Ok(Fetched::alone(BlobResponse {
                size: Some(size),
                stream: body_stream(vec![Bytes::from(data)], Duration::ZERO),
            }))
        });
        assert!(started, "a new download, not the dead one");
        let body: Vec<Bytes> = tail(again, None, store).try_collect().await.unwrap();
        assert_eq!(body.concat().len(), 10_000);
    }

    #[tokio::test]
    async fn upstream_refusal_reaches_every_waiter() {
        let (_dir, downloads, _store, _stats) = setup().await;
        let digest = Digest::sha256_of(b"missing");
        let (download, _) = downloads.join_or_start(&digest, origin(), None, async {
            Err(ApiError::new(OciCode::BlobUnknown, "no such blob"))
        });
        let err = download.started().await.unwrap_err();
        assert_eq!(err.code, OciCode::BlobUnknown);
    }
}
