//! The one upstream download of a blob, shared by every request that wants it meanwhile.
//!
//! The leader task streams the upstream body into a spool file on local disk, hashing as bytes
//! pass, and publishes its progress on a `watch` channel. Readers tail the spool file from any
//! offset and so receive bytes as they arrive, whatever their number and speed, with memory
//! bounded by one read buffer each. The blob's last byte is released only once the digest and
//! size have verified: a reader of a corrupt download always sees an error, never a complete
//! body. A verified spool file is handed to the store (a rename on local disk); readers that
//! open it too late read the stored object instead.
//!
//! A large blob from an upstream that answers ranges is fetched as pieces side by side
//! (`fill.rs`, `[fetch]`), each written at its offset; the digest is computed over the bytes
//! from 0 on as they close up, and a reader ahead of the fill gets the bytes it waits for
//! with a request of their own (`plan.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use moka::future::Cache;
use tokio::sync::{OwnedSemaphorePermit, watch};
use wharf_core::{Digest, RepoName};
use wharf_storage::BlobStore;
use wharf_upstream::BlobResponse;

use crate::error::MirrorError;
use crate::singleflight::FetchLease;
use crate::slots::DownloadSlots;
use crate::stats::Stats;

mod fill;
#[cfg(test)]
mod fill_tests;
mod leader;
mod plan;
mod resume;
mod spool;
mod tail;
#[cfg(test)]
mod tests;

pub use fill::{RangeFetch, Ranged};
use leader::Leader;
pub use plan::ChunkProgress;
use plan::FillPlan;
use resume::ResumingBody;
use spool::SpoolWriter;
pub use tail::tail;
use tail::tail_reader;

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
    Failed(MirrorError),
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
    /// The source answers ranges: `response` is the first piece, the rest come side by side.
    pub ranged: Option<Ranged>,
}

/// The rest of a blob from an offset, from the same source.
pub type Resume = Box<
    dyn Fn(u64) -> BoxFuture<'static, Result<BoxStream<'static, UpstreamBody>, MirrorError>>
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
            ranged: None,
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
    /// A ranged fill's pieces (`None`: one stream). Locked briefly, never across an await.
    plan: Mutex<Option<FillPlan>>,
    /// A reader waits for bytes no piece in flight will bring: the leader looks at the plan.
    wanted: tokio::sync::Notify,
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
    /// Fetched as ranges side by side: how far the pieces have come.
    pub chunks: Option<ChunkProgress>,
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
        let chunks = self.plan().as_ref().map(FillPlan::progress);
        let received = chunks.map_or(progress.written, |c| c.received.max(progress.written));
        let seconds = self.started.elapsed().map_or(0.0, |d| d.as_secs_f64());
        DownloadStatus {
            digest: self.digest.to_string(),
            upstream: self.origin.upstream.clone(),
            repository: self.origin.repo.to_string(),
            size: progress.size,
            received,
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
                received as f64 / seconds
            } else {
                0.0
            },
            source: if self.from_peer() { "peer" } else { "upstream" },
            chunks,
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Option<FillPlan>> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the bytes readable from `offset` on end, for a ranged fill (`None`: one stream,
    /// whose bytes are readable up to `Progress::written`). A reader that finds nothing there
    /// asks for it: the leader fetches it next, as a piece of its own.
    fn readable_from(&self, offset: u64) -> Option<u64> {
        let mut plan = self.plan();
        let plan = plan.as_mut()?;
        let end = plan.readable_from(offset);
        if end == offset && plan.want(offset) {
            self.wanted.notify_one();
        }
        Some(end)
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
    pub async fn started(&self) -> Result<Option<u64>, MirrorError> {
        let mut rx = self.progress.clone();
        let progress = rx
            .wait_for(|p| !matches!(p.phase, Phase::Connecting))
            .await
            .map_err(|_| MirrorError::internal("download ended without a result"))?
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
        F: Future<Output = Result<Fetched, MirrorError>> + Send + 'static,
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
            plan: Mutex::new(None),
            wanted: tokio::sync::Notify::new(),
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
        // The fetch goes on with the login of the client that started it.
        tokio::spawn(wharf_upstream::login::carried(leader.run(fetch)));
        (download, true)
    }
}
