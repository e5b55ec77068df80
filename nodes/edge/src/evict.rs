//! Eviction: keep the store within a size quota and drop blobs idle for too long, least
//! recently used first, for any backend.
//!
//! Access times are tracked in memory on each node and written once per interval as one small
//! record per node (`access/<node>`), never per request. An eviction pass lists the blobs, takes
//! each one's last use as the latest of its write time and every node's recorded access, and
//! deletes idle blobs, then the least recently used until under quota. Blobs written less than
//! `min_age_secs` ago are never deleted (they are being fetched or were just fetched); in-flight
//! downloads are not in the store at all. A deleted blob is fetched again on its next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wharf_core::Digest;
use wharf_core::config::EvictionConfig;
use wharf_storage::key::ACCESS_PREFIX;
use wharf_storage::{BlobStore, ObjectKey, StoreError};

/// Access logs of nodes silent for this long (gone, or restarted under a new id) are removed.
const STALE_ACCESS_LOG: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictionReport {
    pub deleted: usize,
    pub freed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
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
    /// Everything this node served since it started (digest → seconds), persisted each pass.
    accessed: Mutex<HashMap<Digest, u64>>,
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
            accessed: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.max_size_mib > 0 || self.config.max_idle_secs > 0
    }

    /// Note that a blob was served: one map insert, no I/O.
    pub fn touch(&self, digest: &Digest) {
        if !self.enabled() {
            return;
        }
        let mut accessed = self.accessed.lock().unwrap_or_else(|p| p.into_inner());
        accessed.insert(digest.clone(), now_secs());
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
    pub async fn run_once(&self) -> Result<EvictionReport, StoreError> {
        self.persist_access_log().await?;
        let last_access = self.merged_access_logs().await?;
        let now = now_secs();
        let mut blobs: Vec<(Digest, u64, u64, u64)> = Vec::new(); // digest, size, written, last used
        for object in self.store.list("blobs/").await? {
            let Some(digest) = ObjectKey::blob_digest(&object.path) else {
                continue;
            };
            let written = secs(object.modified);
            let used = last_access
                .get(&digest.to_string())
                .copied()
                .unwrap_or(0)
                .max(written);
            blobs.push((digest, object.size, written, used));
        }
        blobs.sort_by_key(|b| b.3);
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        let quota = self.config.max_size_mib.saturating_mul(1024 * 1024);
        let mut report = EvictionReport::default();
        for (digest, size, written, used) in blobs {
            let young = now.saturating_sub(written) < self.config.min_age_secs;
            let idle = self.config.max_idle_secs > 0
                && now.saturating_sub(used) > self.config.max_idle_secs;
            let over_quota = quota > 0 && total > quota;
            if young || !(idle || over_quota) {
                report.kept += 1;
                report.kept_bytes += size;
                continue;
            }
            self.store.delete(&ObjectKey::Blob(digest.clone())).await?;
            self.index.invalidate(&digest).await;
            total = total.saturating_sub(size);
            report.deleted += 1;
            report.freed_bytes += size;
        }
        Ok(report)
    }

    async fn persist_access_log(&self) -> Result<(), StoreError> {
        let log = {
            let accessed = self.accessed.lock().unwrap_or_else(|p| p.into_inner());
            AccessLog {
                last_access: accessed.iter().map(|(d, t)| (d.to_string(), *t)).collect(),
            }
        };
        let body = serde_json::to_vec(&log).unwrap_or_default();
        self.store
            .put_small(
                &ObjectKey::AccessLog {
                    node: self.node.clone(),
                },
                body.into(),
            )
            .await
    }

    /// Every node's access log, merged (latest wins); stale logs are removed.
    async fn merged_access_logs(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut merged: HashMap<String, u64> = HashMap::new();
        for object in self.store.list(ACCESS_PREFIX).await? {
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
        }
        Ok(merged)
    }
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
            let body = bytes::Bytes::from(vec![i; 1024 * 1024]);
            let digest = Digest::sha256_of(&body);
            store
                .put_stream(
                    &ObjectKey::Blob(digest.clone()),
                    futures::StreamExt::boxed(futures::stream::iter(vec![Ok(body)])),
                )
                .await
                .unwrap();
            digests.push(digest);
        }
        let config = EvictionConfig {
            max_size_mib: 2,
            min_age_secs: 0,
            ..EvictionConfig::default()
        };
        let evictor = Evictor::new(store.clone(), Cache::new(100), config.clone());
        // Blob 0 is the most recently used; 1 and 2 were never touched: 1 MiB must go.
        evictor
            .accessed
            .lock()
            .unwrap()
            .insert(digests[0].clone(), now_secs() + 10);
        evictor
            .accessed
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
}
