//! The leader: the task that runs one download, from the upstream body to the stored blob.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use moka::future::Cache;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::{error, info, warn};
use wharf_core::{Digest, DigestHasher};
use wharf_metrics::FailureReason;
use wharf_storage::{BlobStore, ObjectKey};
use wharf_upstream::BlobResponse;

use crate::error::MirrorError;
use crate::slots::DownloadSlots;
use crate::stats::Stats;

use super::*;

/// The task that fetches one download. However it ends (a result, a panic, a cancelled
/// runtime), dropping it publishes a final phase and takes the download out of the registry,
/// so a later request starts afresh instead of joining a download nobody runs.
pub(super) struct Leader {
    pub(super) download: Arc<Download>,
    pub(super) tx: watch::Sender<Progress>,
    pub(super) store: Arc<dyn BlobStore>,
    pub(super) index: Cache<Digest, u64>,
    pub(super) stats: Arc<Stats>,
    pub(super) registry: Arc<Mutex<HashMap<Digest, Arc<Download>>>>,
    pub(super) slots: Arc<DownloadSlots>,
    pub(super) max_blob: Option<u64>,
    /// This download's share of the node's download slots, returned when the leader ends.
    pub(super) _slot: Option<OwnedSemaphorePermit>,
    /// Its failure was counted in the metrics where it happened.
    pub(super) failure_counted: AtomicBool,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !Phase::is_final(&self.tx.borrow()) {
            error!(digest = %self.download.digest, "blob download stopped without a result");
            self.tx.send_modify(|p| {
                p.phase = Phase::Failed(MirrorError::internal(
                    "the blob download stopped unexpectedly",
                ));
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
    pub(super) async fn run(self, fetch: impl Future<Output = Result<Fetched, MirrorError>>) {
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
                ranged,
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
                let filled = match (ranged, response.size) {
                    (Some(ranged), Some(size)) if size > ranged.first_end => {
                        self.fill(response.stream, size, ranged).await
                    }
                    _ => self.spool(response, resume).await,
                };
                filled.map(|size| (size, store, uploader))
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
                    } else if !e.is_internal() {
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
    async fn spool(
        &self,
        response: BlobResponse,
        resume: Option<Resume>,
    ) -> Result<u64, MirrorError> {
        let digest = &self.download.digest;
        let spool_error = |e: std::io::Error| {
            error!(%digest, error = %e, "spool write failed");
            MirrorError::internal("writing the download spool failed")
        };
        if let (Some(size), Some(max)) = (response.size, self.max_blob)
            && size > max
        {
            return Err(self.too_large(max));
        }
        let announce = |written| self.tx.send_modify(|p| p.written = written);
        let mut spool = SpoolWriter::create(&self.download.spool_path, announce)
            .await
            .map_err(spool_error)?;
        let mut body = ResumingBody::new(response.stream, resume);
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
                    return Err(MirrorError::upstream(
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
    pub(super) fn check_wanted(
        &self,
        unread_since: &mut Option<Instant>,
    ) -> Result<(), MirrorError> {
        if self.download.readers.load(Ordering::Acquire) > 0 {
            *unread_since = None;
            return Ok(());
        }
        let since = *unread_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= ABANDON_GRACE && self.slots.contended() {
            warn!(digest = %self.download.digest, "no client reads this download and others wait for its slot; giving it up");
            return Err(MirrorError::busy(
                "the download was given up: no client was reading it and the node was busy",
                None,
            ));
        }
        Ok(())
    }

    pub(super) fn too_large(&self, max: u64) -> MirrorError {
        self.count_failure(FailureReason::TooLarge);
        warn!(digest = %self.download.digest, max, "blob larger than limits.max_blob_mib; not fetched");
        MirrorError::TooLarge { limit: max }
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

    pub(super) fn mismatch(&self, what: &str) -> MirrorError {
        self.count_failure(FailureReason::Mismatch);
        let upstream = &self.download.origin.upstream;
        self.stats.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        error!(digest = %self.download.digest, %upstream, what, "upstream content failed verification; not cached");
        MirrorError::DigestMismatch {
            upstream: upstream.to_string(),
            what: what.to_string(),
        }
    }
}
