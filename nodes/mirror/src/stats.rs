//! Counters of what the node did, read by tests and benchmarks, and the node's Prometheus
//! metrics, which travel with them to every layer that records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wharf_metrics::Metrics;

#[derive(Debug)]
pub struct Stats {
    /// The node's metrics (a detached set for services built without a node).
    pub metrics: Arc<Metrics>,
    pub upstream_blob_fetches: AtomicU64,
    pub coalesced_blob_requests: AtomicU64,
    /// Cold blobs streamed from the cluster peer that fetched them.
    pub peer_blob_fetches: AtomicU64,
    /// Blob downloads continued with a range request after the upstream's body broke off.
    pub upstream_resumes: AtomicU64,
    pub blob_cache_hits: AtomicU64,
    /// Cached blob bytes sent with `sendfile`, page cache to socket without a copy.
    pub sendfile_bytes: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub upstream_manifest_fetches: AtomicU64,
    pub tag_revalidations: AtomicU64,
    pub stale_tags_served: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new(Metrics::detached())
    }
}

impl Stats {
    pub fn new(metrics: Arc<Metrics>) -> Stats {
        Stats {
            metrics,
            upstream_blob_fetches: AtomicU64::new(0),
            coalesced_blob_requests: AtomicU64::new(0),
            peer_blob_fetches: AtomicU64::new(0),
            upstream_resumes: AtomicU64::new(0),
            blob_cache_hits: AtomicU64::new(0),
            sendfile_bytes: AtomicU64::new(0),
            digest_mismatches: AtomicU64::new(0),
            upstream_manifest_fetches: AtomicU64::new(0),
            tag_revalidations: AtomicU64::new(0),
            stale_tags_served: AtomicU64::new(0),
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache (a tag revalidated unchanged counts as a hit).
    Hit,
    /// Fetched from the upstream for this request.
    Miss,
    /// Joined a fetch another request had started.
    Coalesced,
    /// The upstream could not answer; an expired tag was served.
    Stale,
    /// Streamed from the cluster peer that fetches it.
    Peer,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Coalesced => "coalesced",
            CacheResult::Stale => "stale",
            CacheResult::Peer => "peer",
        }
    }

    pub fn outcome(self) -> wharf_metrics::CacheOutcome {
        use wharf_metrics::CacheOutcome;
        match self {
            CacheResult::Hit => CacheOutcome::Hit,
            CacheResult::Miss => CacheOutcome::Miss,
            CacheResult::Coalesced => CacheOutcome::Coalesced,
            CacheResult::Stale => CacheOutcome::Stale,
            CacheResult::Peer => CacheOutcome::Peer,
        }
    }
}
