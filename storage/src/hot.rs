//! A bounded local-disk read cache of blobs in front of a remote store (S3): warm blobs are
//! then sent from local files with `sendfile` instead of crossing S3 on every request.
//!
//! It is never the source of truth: a local copy is written from the same stream as this
//! node's upload of a blob (placed only when the upload, which ends after the digest is
//! verified, succeeds), or filled in the background after a read of a blob another node
//! stored, from the remote object, verified against its digest while it is written and
//! renamed into place only when it matches. Deleting the directory loses nothing. Copies are evicted least recently used
//! first when `max_bytes` is exceeded. A blob deleted from the remote store (eviction on any
//! node) is dropped here at once when this node deleted it, and otherwise at the next check
//! (one listing of the remote `blobs/` per interval), so no node serves an evicted blob for
//! longer than that interval.
//! Everything else (manifests, tag records, listings) passes straight to the remote store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use moka::notification::RemovalCause;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};
use wharf_core::{ByteRange, Digest, DigestHasher};

use crate::fs::FsStore;
use crate::key::EVICTED_PREFIX;
use crate::{BlobStore, ByteSource, ObjectInfo, ObjectKey, ObjectReader, StoreError};

/// How much later than its tombstone a copy may be written and still count as older.
const TOMBSTONE_MARGIN: Duration = Duration::from_secs(5);

/// Local copies being filled at once, at most; past it, a blob is simply not filled this time.
const MAX_FILLS: usize = 4;
/// Evicted copies waiting for their file to be removed; past it, the next check removes them.
const REMOVALS_QUEUED: usize = 4096;
/// Chunks of an upload queued for its local copy: the local disk paces the upload beyond it.
const TEE_CHUNKS: usize = 16;

/// Hits and misses of the hot tier, for the status page.
#[derive(Debug, Default)]
pub struct HotCacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct HotCache {
    remote: Arc<dyn BlobStore>,
    local: Arc<FsStore>,
    /// Blobs with a local copy, weighed by size; dropping an entry removes its file.
    copies: moka::sync::Cache<Digest, u64>,
    fills: Arc<Semaphore>,
    /// KiB that copies being written may take, reserved before each byte lands on disk: a
    /// quarter of `max_bytes`, the held copies the rest, so the directory never exceeds
    /// `max_bytes` (files of dropped copies aside, removed right after).
    writing: Arc<Semaphore>,
    pub stats: Arc<HotCacheStats>,
    max_bytes: u64,
}

impl HotCache {
    /// Over `remote`, keeping at most `max_bytes` of copies under `dir`. Copies left in `dir`
    /// by an earlier run are taken up again (they were verified when written).
    pub async fn open(
        remote: Arc<dyn BlobStore>,
        dir: &Path,
        max_bytes: u64,
    ) -> Result<Arc<HotCache>, StoreError> {
        let local = Arc::new(FsStore::open(dir).await?);
        let (removed_tx, removed_rx) = mpsc::channel::<Digest>(REMOVALS_QUEUED);
        let copies = moka::sync::Cache::builder()
            .max_capacity((held_budget(max_bytes) / 1024).max(1))
            .weigher(|_: &Digest, size: &u64| {
                u32::try_from(*size / 1024).unwrap_or(u32::MAX).max(1)
            })
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |digest: Arc<Digest>, _, cause| {
                if cause != RemovalCause::Replaced {
                    let _ = removed_tx.try_send((*digest).clone());
                }
            })
            .build();
        let hot = Arc::new(HotCache {
            remote,
            local: local.clone(),
            copies,
            fills: Arc::new(Semaphore::new(MAX_FILLS)),
            writing: Arc::new(Semaphore::new(
                usize::try_from(writing_budget(max_bytes) / 1024).unwrap_or(usize::MAX),
            )),
            stats: Arc::default(),
            max_bytes,
        });
        for object in local.list("blobs/").await? {
            if let Some(digest) = ObjectKey::blob_digest(&object.path) {
                hot.copies.insert(digest, object.size);
            }
        }
        tokio::spawn(remove_files(Arc::downgrade(&hot), local, removed_rx));
        Ok(hot)
    }

    /// Capacity in bytes (weights are KiB).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Copies held and their bytes (to the KiB the index weighs them in).
    pub fn held(&self) -> (u64, u64) {
        self.copies.run_pending_tasks();
        (
            self.copies.entry_count(),
            self.copies.weighted_size().saturating_mul(1024),
        )
    }

    /// Drop copies of blobs evicted by any node since the copy was made (the evicting node
    /// leaves a tombstone: listing those few objects, not the whole bucket, is the check), and
    /// files no copy accounts for. Returns how many copies were dropped.
    pub async fn check(&self) -> Result<usize, StoreError> {
        let mut evicted: HashMap<Digest, SystemTime> = HashMap::new();
        let mut pages = self.remote.list_pages(EVICTED_PREFIX);
        while let Some(page) = pages.next().await {
            for object in page? {
                if let Some(digest) = ObjectKey::evicted_digest(&object.path) {
                    evicted.insert(digest, object.modified);
                }
            }
        }
        let mut dropped = 0;
        for object in self.local.list("blobs/").await? {
            let Some(digest) = ObjectKey::blob_digest(&object.path) else {
                continue;
            };
            // A copy made after the eviction (the blob was fetched again) stays. S3 keeps
            // times to the second and clocks differ a little: within the margin, drop.
            let gone = evicted
                .get(&digest)
                .is_some_and(|at| object.modified <= *at + TOMBSTONE_MARGIN);
            if gone && self.copies.contains_key(&digest) {
                self.copies.invalidate(&digest);
                dropped += 1;
            }
            if gone || !self.copies.contains_key(&digest) {
                self.local.delete(&ObjectKey::Blob(digest)).await?;
            }
        }
        self.copies.run_pending_tasks();
        self.stats
            .dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
        Ok(dropped)
    }

    /// Run [`HotCache::check`] every `interval` while the cache lives.
    pub fn start_checks(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(hot) = weak.upgrade() else {
                    return;
                };
                match hot.check().await {
                    Ok(0) => {}
                    Ok(n) => debug!(dropped = n, "hot tier: copies of deleted blobs dropped"),
                    Err(e) => warn!(error = %e, "hot tier check failed"),
                }
            }
        });
    }

    /// Copy `digest` from the remote store in the background, unless it is held, being
    /// filled at the limit, or too large to hold.
    fn fill(self: &Arc<Self>, digest: &Digest, size: u64) {
        if self.copies.contains_key(digest) || size > writing_budget(self.max_bytes) {
            return;
        }
        let Ok(permit) = self.fills.clone().try_acquire_owned() else {
            return;
        };
        let Some(reserved) = self.reserve(size) else {
            return;
        };
        let (hot, digest) = (self.clone(), digest.clone());
        tokio::spawn(async move {
            let _permits = (permit, reserved);
            if let Err(e) = hot.copy(&digest).await {
                debug!(%digest, error = %e, "hot tier fill failed");
            }
        });
    }

    /// Room on disk for `bytes` more being written, or `None` (then nothing is copied).
    fn reserve(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
        Arc::clone(&self.writing).try_acquire_many_owned(kib).ok()
    }

    async fn copy(&self, digest: &Digest) -> Result<(), StoreError> {
        let key = ObjectKey::Blob(digest.clone());
        let Some(reader) = self.remote.read(&key, None).await? else {
            return Ok(());
        };
        let size = reader.size;
        self.local
            .put_stream(&key, verified(reader.stream, digest.clone()))
            .await?;
        self.copies.insert(digest.clone(), size);
        self.stats.fills.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Bytes copies being written may take: a quarter of the capacity (and the largest blob
/// copied, so one blob never evicts most of the others).
fn writing_budget(max_bytes: u64) -> u64 {
    max_bytes / 4
}

/// Bytes the held copies may take: the rest.
fn held_budget(max_bytes: u64) -> u64 {
    max_bytes.saturating_sub(writing_budget(max_bytes))
}

/// The remote bytes, failing at the end unless they hash to `digest` (so a bad copy is never
/// renamed into place).
fn verified(
    stream: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
    digest: Digest,
) -> ByteSource {
    let hasher = DigestHasher::new(digest.algorithm());
    futures::stream::unfold(
        (stream, Some(hasher), digest),
        |(mut stream, hasher, digest)| async move {
            let mut hasher = hasher?;
            match stream.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok(chunk), (stream, Some(hasher), digest)))
                }
                Some(Err(e)) => Some((
                    Err(std::io::Error::other(e.to_string())),
                    (stream, None, digest),
                )),
                None if hasher.finish() == digest => None,
                None => Some((
                    Err(std::io::Error::other(
                        "the remote copy does not match its digest",
                    )),
                    (stream, None, digest),
                )),
            }
        },
    )
    .boxed()
}

/// Remove the files of evicted copies, off the request path.
async fn remove_files(
    hot: std::sync::Weak<HotCache>,
    local: Arc<FsStore>,
    mut removed: mpsc::Receiver<Digest>,
) {
    while let Some(digest) = removed.recv().await {
        // Filled again since it was evicted: keep the file.
        if hot
            .upgrade()
            .is_some_and(|h| h.copies.contains_key(&digest))
        {
            continue;
        }
        let _ = local.delete(&ObjectKey::Blob(digest)).await;
    }
}

#[async_trait]
impl BlobStore for Arc<HotCache> {
    async fn stat(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        if let ObjectKey::Blob(digest) = key
            && let Some(size) = self.copies.get(digest)
        {
            return Ok(Some(size));
        }
        self.remote.stat(key).await
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectReader>, StoreError> {
        let ObjectKey::Blob(digest) = key else {
            return self.remote.read(key, range).await;
        };
        if self.copies.get(digest).is_some() {
            match self.local.read(key, range).await {
                Ok(Some(reader)) => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(reader));
                }
                // The file went (removed by hand, or a check raced): the remote has it.
                _ => self.copies.invalidate(digest),
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let reader = self.remote.read(key, range).await?;
        if let Some(reader) = &reader {
            self.fill(digest, reader.size);
        }
        Ok(reader)
    }

    async fn read_small(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        self.remote.read_small(key).await
    }

    async fn put_small(&self, key: &ObjectKey, body: Bytes) -> Result<(), StoreError> {
        self.remote.put_small(key, body).await
    }

    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), StoreError> {
        let size = tokio::fs::metadata(file).await.map(|m| m.len()).ok();
        self.remote.put_file(key, file).await?;
        if let (ObjectKey::Blob(digest), Some(size)) = (key, size) {
            self.fill(digest, size);
        }
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.remote.delete(key).await?;
        if let ObjectKey::Blob(digest) = key {
            self.copies.invalidate(digest);
            self.local.delete(key).await?;
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        self.remote.shared()
    }

    fn streams_writes(&self) -> bool {
        self.remote.streams_writes()
    }

    /// A blob this node stores is written to S3 and, from the same stream, to its local copy
    /// (the caller ends the stream only after verifying the digest, and fails it otherwise, so
    /// the copy is placed exactly when the upload is): no read back from S3.
    async fn put_stream(&self, key: &ObjectKey, body: ByteSource) -> Result<(), StoreError> {
        let ObjectKey::Blob(digest) = key else {
            return self.remote.put_stream(key, body).await;
        };
        let Ok(permit) = self.fills.clone().try_acquire_owned() else {
            return self.remote.put_stream(key, body).await;
        };
        if self.copies.contains_key(digest) {
            return self.remote.put_stream(key, body).await;
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(TEE_CHUNKS);
        // Disk is reserved chunk by chunk (the size is not known up front); when the budget
        // runs out, the copy is abandoned and the upload goes on alone.
        let reserved: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>> =
            Arc::default();
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (writing, held) = (Arc::clone(&self.writing), Arc::clone(&reserved));
        let (local, local_key) = (self.local.clone(), key.clone());
        let writer = tokio::spawn(async move {
            let _permit = permit;
            let copy = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
            .boxed();
            local.put_stream(&local_key, copy).await
        });
        let size = Arc::new(AtomicU64::new(0));
        let counted = size.clone();
        let tee = body
            .then(move |chunk| {
                let tx = tx.clone();
                let counted = counted.clone();
                let (writing, held, abandoned) = (writing.clone(), held.clone(), abandoned.clone());
                async move {
                    if abandoned.load(Ordering::Relaxed) {
                        return chunk;
                    }
                    let copy = match &chunk {
                        Ok(bytes) => {
                            counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            let kib = u32::try_from((bytes.len() as u64).div_ceil(1024))
                                .unwrap_or(u32::MAX);
                            match writing.try_acquire_many_owned(kib) {
                                Ok(permit) => {
                                    let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                                    match held.as_mut() {
                                        Some(all) => all.merge(permit),
                                        None => *held = Some(permit),
                                    }
                                    Ok(bytes.clone())
                                }
                                Err(_) => {
                                    abandoned.store(true, Ordering::Relaxed);
                                    Err(std::io::Error::other(
                                        "hot tier: no room to copy this blob now",
                                    ))
                                }
                            }
                        }
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    // A local writer that gave up costs the upload nothing.
                    let _ = tx.send(copy).await;
                    chunk
                }
            })
            .boxed();
        let uploaded = self.remote.put_stream(key, tee).await;
        let copied = writer
            .await
            .map_err(|e| StoreError::io(key, std::io::Error::other(e)));
        let size = size.load(Ordering::Relaxed);
        match (&uploaded, copied) {
            (Ok(()), Ok(Ok(()))) if size <= writing_budget(self.max_bytes) => {
                self.copies.insert(digest.clone(), size);
                self.stats.fills.fetch_add(1, Ordering::Relaxed);
            }
            (Ok(()), Ok(Ok(()))) => {
                // Too large to hold: it would evict everything else.
                let _ = self.local.delete(key).await;
            }
            (Ok(()), _) => {}
            // Not in S3: no copy may outlive the failed upload.
            (Err(_), _) => {
                let _ = self.local.delete(key).await;
            }
        }
        // Placed (the cache weighs it now) or discarded: the reservation ends.
        drop(reserved);
        uploaded
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.remote.list(prefix).await
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> crate::ListPages<'a> {
        self.remote.list_pages(prefix)
    }

    async fn presigned_url(
        &self,
        key: &ObjectKey,
        expires: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.remote.presigned_url(key, expires).await
    }
}

/// Where the hot tier lives when `[hot_cache] dir` is relative: under the data directory.
pub fn hot_dir(data_dir: &Path, dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        data_dir.join(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemStore;

    async fn put(store: &dyn BlobStore, body: &'static [u8]) -> Digest {
        let digest = Digest::sha256_of(body);
        store
            .put_stream(
                &ObjectKey::Blob(digest.clone()),
                futures::stream::iter(vec![Ok(Bytes::from_static(body))]).boxed(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        digest
    }

    /// A hot tier of 1 MiB over an in-memory remote store; the directory lives as long as it.
    async fn hot_over_memory() -> (tempfile::TempDir, Arc<dyn BlobStore>, Arc<HotCache>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let remote: Arc<dyn BlobStore> = Arc::new(MemStore::default());
        let hot = HotCache::open(remote.clone(), dir.path(), 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, remote, hot)
    }

    async fn wait_held(hot: &Arc<HotCache>, n: u64) {
        for _ in 0..200 {
            if hot.held().0 == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("held {:?}, wanted {n}", hot.held());
    }

    /// Bytes of the copies' files under `dir`.
    fn disk_bytes(dir: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
                match entry.metadata() {
                    Ok(m) if m.is_dir() => stack.push(entry.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        total
    }

    /// Review #22: room is reserved before a copy's bytes are written, so the directory stays
    /// within `max_size` however many copies are in flight: a blob larger than the room for
    /// writing is uploaded but not copied, and concurrent uploads copy only what fits.
    #[tokio::test]
    async fn copies_never_take_more_than_the_capacity() {
        let (dir, remote, hot) = hot_over_memory().await;
        let store: Arc<dyn BlobStore> = Arc::new(hot.clone());
        static LARGE: [u8; 400 * 1024] = [7; 400 * 1024];
        let large = put(store.as_ref(), &LARGE).await;
        assert!(
            remote
                .stat(&ObjectKey::Blob(large))
                .await
                .ok()
                .flatten()
                .is_some()
        );
        assert_eq!(hot.held().0, 0, "400 KiB is more than a quarter of 1 MiB");
        // Eight uploads of 200 KiB at once: at most the 256 KiB writing room is in flight.
        let bodies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 200 * 1024]).collect();
        let uploads = bodies.into_iter().map(|body| {
            let store = store.clone();
            async move {
                let digest = Digest::sha256_of(&body);
                let chunks: Vec<Result<Bytes, std::io::Error>> = body
                    .chunks(16 * 1024)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                store
                    .put_stream(
                        &ObjectKey::Blob(digest),
                        futures::stream::iter(chunks).boxed(),
                    )
                    .await
            }
        });
        for uploaded in futures::future::join_all(uploads).await {
            assert!(uploaded.is_ok());
        }
        hot.copies.run_pending_tasks();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let used = disk_bytes(dir.path());
        assert!(used <= 1 << 20, "{used} bytes on disk");
        assert!(hot.held().0 >= 1, "what fits is still copied");
    }

    #[tokio::test]
    async fn fills_on_read_serves_files_and_drops_copies_of_deleted_blobs() {
        let (_dir, remote, hot) = hot_over_memory().await;
        let store: Arc<dyn BlobStore> = Arc::new(hot.clone());
        // Stored through the hot tier: copied locally after the remote put.
        let a = put(store.as_ref(), b"stored through this node").await;
        wait_held(&hot, 1).await;
        // Stored by another node: copied after the first read.
        let b = put(remote.as_ref(), b"stored by another node").await;
        let key_b = ObjectKey::Blob(b.clone());
        let first = store.read(&key_b, None).await.ok().flatten();
        assert!(
            first.is_some_and(|r| r.file.is_none()),
            "first read: remote"
        );
        wait_held(&hot, 2).await;
        let second = store.read(&key_b, None).await.ok().flatten();
        assert!(
            second.is_some_and(|r| r.file.is_some()),
            "then a local file"
        );
        assert_eq!(hot.stats.hits.load(Ordering::Relaxed), 1);

        // Another node evicts b from the remote store, leaving a tombstone as every evictor
        // does: the next check drops the copy, reading the tombstones only (review #13).
        remote
            .delete(&key_b)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hot.check().await.unwrap_or_else(|e| panic!("{e}")),
            0,
            "no tombstone yet"
        );
        remote
            .put_small(&ObjectKey::Evicted(b.clone()), Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hot.check().await.unwrap_or_else(|e| panic!("{e}")), 1);
        assert!(store.read(&key_b, None).await.ok().flatten().is_none());
        // This node evicts a: dropped at once.
        store
            .delete(&ObjectKey::Blob(a.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hot.held().0, 0);
        assert!(
            store
                .stat(&ObjectKey::Blob(a))
                .await
                .ok()
                .flatten()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_upload_is_copied_as_it_streams_and_a_failed_one_leaves_no_copy() {
        let (_dir, _remote, hot) = hot_over_memory().await;
        let store: Arc<dyn BlobStore> = Arc::new(hot.clone());
        // Held as soon as the put returns: no background read of S3.
        let digest = put(store.as_ref(), b"uploaded by this node").await;
        assert_eq!(hot.held().0, 1);
        let reader = store
            .read(&ObjectKey::Blob(digest), None)
            .await
            .ok()
            .flatten();
        assert!(reader.is_some_and(|r| r.file.is_some()));

        let failed = Digest::sha256_of(b"never completes");
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"never ")),
            Err(std::io::Error::other("the upstream broke off")),
        ])
        .boxed();
        assert!(
            store
                .put_stream(&ObjectKey::Blob(failed.clone()), broken)
                .await
                .is_err()
        );
        assert_eq!(hot.held().0, 1);
        assert!(
            hot.local
                .stat(&ObjectKey::Blob(failed))
                .await
                .ok()
                .flatten()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_remote_copy_that_does_not_match_its_digest_is_never_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let remote: Arc<dyn BlobStore> = Arc::new(MemStore::default());
        let lie = Digest::sha256_of(b"what it should be");
        remote
            .put_stream(
                &ObjectKey::Blob(lie.clone()),
                futures::stream::iter(vec![Ok(Bytes::from_static(b"something else"))]).boxed(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let hot = HotCache::open(remote, dir.path(), 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hot.copy(&lie).await.is_err());
        assert_eq!(hot.held().0, 0);
    }
}
