//! Counters of what the node did; read by tests and benchmarks now, exported as metrics later.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
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

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
