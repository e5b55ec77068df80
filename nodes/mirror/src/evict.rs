//! Eviction: keep the store within a size quota and drop blobs idle for too long, least
//! recently used first, for any backend.
//!
//! Access times are tracked in memory on each node and written once per interval as one small
//! record per node (`access/<node>`), never per request. An eviction pass lists the blobs, takes
//! each one's last use as the latest of its write time and every node's recorded access, and
//! deletes idle blobs, then the least recently used until under quota. Blobs written less than
//! `min_age_secs` ago are never deleted (they are being fetched or were just fetched); in-flight
//! downloads are not in the store at all. Blobs listed in the pin record that `[[prefetch]]`
//! writes (`prefetch/pins`) are never deleted either, whichever node runs the pass. A deleted
//! blob is fetched again on its next request.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wharf_core::Digest;
use wharf_core::config::EvictionConfig;
use wharf_storage::key::{ACCESS_PREFIX, BLOB_PREFIX, EVICTED_PREFIX};
use wharf_storage::{BlobStore, ObjectKey, StoreError};

/// Access logs of nodes silent for this long (gone, or restarted under a new id) are removed.
const STALE_ACCESS_LOG: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an eviction tombstone is kept: every node's hot tier checks far more often.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Distinct blobs noted between two passes at most (about 100 bytes each); past it, further
/// blobs count as used when they were written until the next pass.
pub const MAX_PENDING_ACCESSES: usize = 200_000;
/// Access records a node keeps and persists at most (the most recent win; about 120 bytes
/// each): older uses count as their blob's write time.
pub const MAX_RECORDED_ACCESSES: usize = 100_000;
/// Access records a pass merges from every node's log at most.
pub const MAX_MERGED_ACCESSES: usize = 200_000;
/// Blobs one pass orders for the quota at most (the least recently used; about 120 bytes
/// each). A pass that must delete more deletes these and leaves the rest to the next pass.
pub const MAX_QUOTA_CANDIDATES: usize = 100_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictionReport {
    pub deleted: usize,
    /// Blobs kept because a prefetch rule pins them.
    pub pinned: usize,
    pub freed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// The pin record: digests of blobs no pass may delete, and which prefetch rule pinned which
/// (so a rule whose passes fail keeps its pins while the others' are replaced).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    pub digests: std::collections::BTreeSet<String>,
    #[serde(default)]
    pub by_rule: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Pins {
    /// The record in the store; none (or unreadable: pins are a preference, not data) is empty.
    pub async fn read(store: &dyn BlobStore) -> Result<Pins, StoreError> {
        Ok(store
            .read_small(&ObjectKey::Pins)
            .await?
            .and_then(|body| serde_json::from_slice(&body).ok())
            .unwrap_or_default())
    }

    pub async fn write(&self, store: &dyn BlobStore) -> Result<(), StoreError> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        store.put_small(&ObjectKey::Pins, body.into()).await
    }
}

#[derive(Default, Serialize, Deserialize)]
struct AccessLog {
    /// digest → last access, seconds since the Unix epoch.
    last_access: HashMap<String, u64>,
}

pub struct Evictor {
    store: Arc<dyn BlobStore>,
    index: Cache<Digest, u64>,
    config: EvictionConfig,
    node: String,
    /// Blobs served from the store since the last pass (digest → seconds): the request path's
    /// only lock here, held for one insert. Bounded by [`MAX_PENDING_ACCESSES`].
    pending: Mutex<HashMap<Digest, u64>>,
    /// This node's access record, owned by the passes: pending accesses merged in, pruned to
    /// the blobs the store still holds, so it never outgrows the store.
    recorded: tokio::sync::Mutex<HashMap<String, u64>>,
    metrics: Arc<wharf_metrics::Metrics>,
    /// What the latest pass found: the store's size for the metrics and the status page.
    last_report: Mutex<Option<EvictionReport>>,
    /// [`MAX_QUOTA_CANDIDATES`], smaller in tests.
    quota_candidates: usize,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Evictor {
    pub fn new(
        store: Arc<dyn BlobStore>,
        index: Cache<Digest, u64>,
        config: EvictionConfig,
    ) -> Evictor {
        // A node id unique enough among the nodes sharing a store.
        let node = format!(
            "{:x}-{:x}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        Evictor {
            store,
            index,
            config,
            node,
            pending: Mutex::default(),
            recorded: tokio::sync::Mutex::default(),
            metrics: wharf_metrics::Metrics::detached(),
            last_report: Mutex::default(),
            quota_candidates: MAX_QUOTA_CANDIDATES,
        }
    }

    /// Count evictions in a node's metrics.
    pub fn with_metrics(mut self, metrics: Arc<wharf_metrics::Metrics>) -> Evictor {
        self.metrics = metrics;
        self
    }

    /// The latest pass's report, once one ran.
    pub fn last_report(&self) -> Option<EvictionReport> {
        self.last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The quota in bytes (0: none).
    pub fn quota_bytes(&self) -> u64 {
        self.config.max_size_mib.saturating_mul(1024 * 1024)
    }

    pub fn enabled(&self) -> bool {
        self.config.max_size_mib > 0 || self.config.max_idle_secs > 0
    }

    /// Note that a stored blob was served: one map insert, no I/O. Only for hits, so digests
    /// nobody holds never take room.
    pub fn touch(&self, digest: &Digest) {
        if !self.enabled() {
            return;
        }
        let now = now_secs();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = pending.get_mut(digest) {
            *at = now;
        } else if pending.len() < MAX_PENDING_ACCESSES {
            pending.insert(digest.clone(), now);
        }
    }

    /// Accesses noted and not yet merged by a pass.
    pub fn pending_accesses(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Run passes forever, one per interval.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.interval_secs.max(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.run_once().await {
                Ok(report) if report.deleted > 0 => info!(?report, "eviction pass"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "eviction pass failed"),
            }
        }
    }

    /// One pass: persist this node's access times, then delete what is idle or over quota.
    ///
    /// The listing is read page by page and never held: idle blobs are deleted as their page
    /// arrives, and only the [`MAX_QUOTA_CANDIDATES`] least recently used of the rest are kept
    /// in order for the quota. A pass that must delete more deletes those, and the next pass
    /// goes on from there.
    pub async fn run_once(&self) -> Result<EvictionReport, StoreError> {
        let mut recorded = self.recorded.lock().await;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (digest, at) in pending {
            let entry = recorded.entry(digest.to_string()).or_default();
            *entry = (*entry).max(at);
        }
        keep_most_recent(&mut recorded, MAX_RECORDED_ACCESSES);
        self.persist_access_log(&recorded).await?;
        let last_access = self.merged_access_logs().await?;
        let pins = Pins::read(self.store.as_ref()).await?;
        let now = now_secs();
        let quota = self.quota_bytes();
        let mut report = EvictionReport::default();
        let mut total: u64 = 0;
        let mut listed_bytes: u64 = 0;
        let mut listed: usize = 0;
        // Max-heap on last use: the most recently used candidate is the one to drop when full.
        let mut candidates: BinaryHeap<(u64, Digest, u64)> = BinaryHeap::new();
        let mut still_held: HashSet<String> = HashSet::new();
        let mut pages = self.store.list_pages(BLOB_PREFIX);
        while let Some(page) = pages.next().await {
            for object in page? {
                let Some(digest) = ObjectKey::blob_digest(&object.path) else {
                    continue;
                };
                let name = digest.to_string();
                listed += 1;
                listed_bytes = listed_bytes.saturating_add(object.size);
                if recorded.contains_key(&name) {
                    still_held.insert(name.clone());
                }
                if pins.digests.contains(&name) {
                    report.pinned += 1;
                    total = total.saturating_add(object.size);
                    continue;
                }
                let written = secs(object.modified);
                if now.saturating_sub(written) < self.config.min_age_secs {
                    total = total.saturating_add(object.size);
                    continue;
                }
                let used = last_access.get(&name).copied().unwrap_or(0).max(written);
                let idle = self.config.max_idle_secs > 0
                    && now.saturating_sub(used) > self.config.max_idle_secs;
                if idle {
                    self.delete_blob(&digest, object.size, &mut report).await?;
                    still_held.remove(&name);
                    continue;
                }
                total = total.saturating_add(object.size);
                if quota > 0 {
                    candidates.push((used, digest, object.size));
                    if candidates.len() > self.quota_candidates {
                        candidates.pop();
                    }
                }
            }
        }
        drop(pages);
        for (_, digest, size) in candidates.into_sorted_vec() {
            if total <= quota {
                break;
            }
            self.delete_blob(&digest, size, &mut report).await?;
            still_held.remove(&digest.to_string());
            total = total.saturating_sub(size);
        }
        if quota > 0 && total > quota {
            info!(
                over_by = total - quota,
                "store still over its quota after this pass's candidates; the next pass goes on"
            );
        }
        // Only blobs the store still holds stay recorded, so the record never outgrows it.
        recorded.retain(|digest, _| still_held.contains(digest));
        drop(recorded);
        report.kept = listed.saturating_sub(report.deleted);
        report.kept_bytes = listed_bytes.saturating_sub(report.freed_bytes);
        self.expire_tombstones().await?;
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        Ok(report)
    }

    /// Delete one blob, leave the tombstone other nodes' hot tiers learn of it from, and
    /// forget it in the index.
    async fn delete_blob(
        &self,
        digest: &Digest,
        size: u64,
        report: &mut EvictionReport,
    ) -> Result<(), StoreError> {
        self.store.delete(&ObjectKey::Blob(digest.clone())).await?;
        if let Err(e) = self
            .store
            .put_small(&ObjectKey::Evicted(digest.clone()), bytes::Bytes::new())
            .await
        {
            warn!(%digest, error = %e, "writing the eviction tombstone failed");
        }
        self.index.invalidate(digest).await;
        report.deleted += 1;
        report.freed_bytes = report.freed_bytes.saturating_add(size);
        self.metrics.evicted(1, size);
        Ok(())
    }

    /// Delete tombstones older than [`TOMBSTONE_TTL`].
    async fn expire_tombstones(&self) -> Result<(), StoreError> {
        let mut pages = self.store.list_pages(EVICTED_PREFIX);
        while let Some(page) = pages.next().await {
            for object in page? {
                let old = SystemTime::now()
                    .duration_since(object.modified)
                    .is_ok_and(|age| age > TOMBSTONE_TTL);
                if let (true, Some(digest)) = (old, ObjectKey::evicted_digest(&object.path)) {
                    self.store.delete(&ObjectKey::Evicted(digest)).await?;
                }
            }
        }
        Ok(())
    }

    async fn persist_access_log(&self, recorded: &HashMap<String, u64>) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            last_access: &'a HashMap<String, u64>,
        }
        let body = serde_json::to_vec(&Borrowed {
            last_access: recorded,
        })
        .unwrap_or_default();
        self.store
            .put_small(
                &ObjectKey::AccessLog {
                    node: self.node.clone(),
                },
                body.into(),
            )
            .await
    }

    /// Every node's access log, merged (latest wins) and bounded to the
    /// [`MAX_MERGED_ACCESSES`] most recent; stale logs are removed.
    async fn merged_access_logs(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut merged: HashMap<String, u64> = HashMap::new();
        let mut pages = self.store.list_pages(ACCESS_PREFIX);
        while let Some(page) = pages.next().await {
            for object in page? {
                let Some(node) = object.path.strip_prefix(ACCESS_PREFIX) else {
                    continue;
                };
                let key = ObjectKey::AccessLog {
                    node: node.to_string(),
                };
                if SystemTime::now()
                    .duration_since(object.modified)
                    .is_ok_and(|age| age > STALE_ACCESS_LOG)
                {
                    self.store.delete(&key).await?;
                    continue;
                }
                let Some(body) = self.store.read_small(&key).await? else {
                    continue;
                };
                let Ok(log) = serde_json::from_slice::<AccessLog>(&body) else {
                    continue;
                };
                for (digest, at) in log.last_access {
                    let entry = merged.entry(digest).or_default();
                    *entry = (*entry).max(at);
                }
                // Trim in batches (at twice the bound) so a trim's cost is paid rarely.
                if merged.len() > MAX_MERGED_ACCESSES.saturating_mul(2) {
                    keep_most_recent(&mut merged, MAX_MERGED_ACCESSES);
                }
            }
        }
        keep_most_recent(&mut merged, MAX_MERGED_ACCESSES);
        Ok(merged)
    }
}

/// Keep the `limit` most recent entries of an access map. What is dropped is the oldest use;
/// its blob then counts as used when it was written, which can only make it go sooner.
fn keep_most_recent(map: &mut HashMap<String, u64>, limit: usize) {
    if map.len() <= limit {
        return;
    }
    let mut entries: Vec<(String, u64)> = map.drain().collect();
    entries.select_nth_unstable_by_key(limit, |(_, at)| std::cmp::Reverse(*at));
    entries.truncate(limit);
    map.extend(entries);
}

#[cfg(test)]
mod tests {
    use wharf_storage::mem::MemStore;

    use super::*;

    #[tokio::test]
    async fn quota_evicts_least_recently_used_and_keeps_young_blobs() {
        let store: Arc<dyn BlobStore> = Arc::new(MemStore::default());
        let mut digests = Vec::new();
        for i in 0..3u8 {
            digests.push(put_blob(&store, i).await);
        }
        let config = EvictionConfig {
            max_size_mib: 2,
            min_age_secs: 0,
            ..EvictionConfig::default()
        };
        let evictor = Evictor::new(store.clone(), Cache::new(100), config.clone());
        // Blob 0 is the most recently used; 1 and 2 were never touched: 1 MiB must go.
        evictor
            .pending
            .lock()
            .unwrap()
            .insert(digests[0].clone(), now_secs() + 10);
        evictor
            .pending
            .lock()
            .unwrap()
            .insert(digests[2].clone(), now_secs() + 5);
        let report = evictor.run_once().await.unwrap();
        assert_eq!(report.deleted, 1);
        assert!(
            store
                .stat(&ObjectKey::Blob(digests[1].clone()))
                .await
                .unwrap()
                .is_none()
        );
        // Review #13: the eviction left a tombstone for the other nodes' hot tiers.
        assert!(
            store
                .stat(&ObjectKey::Evicted(digests[1].clone()))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .stat(&ObjectKey::Blob(digests[0].clone()))
                .await
                .unwrap()
                .is_some()
        );

        // Young blobs survive whatever the quota.
        let strict = EvictionConfig {
            max_size_mib: 0,
            max_idle_secs: 1,
            min_age_secs: 3600,
            ..config
        };
        let evictor = Evictor::new(store.clone(), Cache::new(100), strict);
        assert_eq!(evictor.run_once().await.unwrap().deleted, 0);
    }

    #[tokio::test]
    async fn access_records_stay_bounded_by_what_the_store_holds() {
        let store: Arc<dyn BlobStore> = Arc::new(MemStore::default());
        let body = bytes::Bytes::from_static(b"kept");
        let kept = Digest::sha256_of(&body);
        store
            .put_stream(
                &ObjectKey::Blob(kept.clone()),
                futures::StreamExt::boxed(futures::stream::iter(vec![Ok(body)])),
            )
            .await
            .unwrap();
        let config = EvictionConfig {
            max_idle_secs: 3600,
            ..EvictionConfig::default()
        };
        let evictor = Evictor::new(store.clone(), Cache::new(100), config);
        for i in 0..MAX_PENDING_ACCESSES + 1000 {
            evictor.touch(&Digest::sha256_of(&i.to_le_bytes()));
        }
        assert_eq!(evictor.pending_accesses(), MAX_PENDING_ACCESSES);
        evictor.touch(&kept);
        evictor.run_once().await.unwrap();
        assert_eq!(evictor.pending_accesses(), 0);
        // Only the blob the store holds is recorded and persisted.
        assert_eq!(
            evictor.recorded.lock().await.len(),
            0,
            "kept was touched past the bound"
        );
        evictor.touch(&kept);
        evictor.run_once().await.unwrap();
        let recorded = evictor.recorded.lock().await.clone();
        assert_eq!(recorded.keys().collect::<Vec<_>>(), vec![&kept.to_string()]);
    }

    async fn put_blob(store: &Arc<dyn BlobStore>, fill: u8) -> Digest {
        let body = bytes::Bytes::from(vec![fill; 1024 * 1024]);
        let digest = Digest::sha256_of(&body);
        store
            .put_stream(
                &ObjectKey::Blob(digest.clone()),
                futures::StreamExt::boxed(futures::stream::iter(vec![Ok(body)])),
            )
            .await
            .unwrap();
        digest
    }

    #[tokio::test]
    async fn a_pass_orders_at_most_its_candidate_bound_and_the_next_goes_on() {
        let store: Arc<dyn BlobStore> = Arc::new(MemStore::default());
        let mut digests = Vec::new();
        for i in 0..5u8 {
            digests.push(put_blob(&store, i).await);
        }
        let config = EvictionConfig {
            max_size_mib: 2,
            min_age_secs: 0,
            ..EvictionConfig::default()
        };
        let mut evictor = Evictor::new(store.clone(), Cache::new(100), config);
        evictor.quota_candidates = 2;
        // Blob i was last used at now + 10 * i: blob 0 is the least recently used.
        for (i, digest) in digests.iter().enumerate() {
            evictor
                .pending
                .lock()
                .unwrap()
                .insert(digest.clone(), now_secs() + 10 * i as u64);
        }
        let held = |store: Arc<dyn BlobStore>, digests: Vec<Digest>| async move {
            let mut held = Vec::new();
            for (i, d) in digests.into_iter().enumerate() {
                if store.stat(&ObjectKey::Blob(d)).await.unwrap().is_some() {
                    held.push(i);
                }
            }
            held
        };
        // 5 MiB held, 2 MiB allowed: 3 must go, but this pass orders only 2 candidates.
        let first = evictor.run_once().await.unwrap();
        assert_eq!(first.deleted, 2);
        assert_eq!(first.kept, 3);
        assert_eq!(held(store.clone(), digests.clone()).await, vec![2, 3, 4]);
        let second = evictor.run_once().await.unwrap();
        assert_eq!(second.deleted, 1);
        assert_eq!(held(store.clone(), digests.clone()).await, vec![3, 4]);
        assert_eq!(evictor.run_once().await.unwrap().deleted, 0);
    }

    #[test]
    fn access_maps_keep_their_most_recent_entries() {
        let mut map: HashMap<String, u64> = (0..10u64).map(|i| (format!("d{i}"), i)).collect();
        keep_most_recent(&mut map, 3);
        let mut kept: Vec<u64> = map.into_values().collect();
        kept.sort();
        assert_eq!(kept, vec![7, 8, 9]);
    }
}
