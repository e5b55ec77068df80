//! What the cache did: content requests by outcome, served bytes, the store's size, eviction.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::labels::{CacheOutcome, Content, slot2};
use crate::slots::Slots;
use crate::{Metrics, counters, reg};

/// The cache's families.
#[derive(Debug)]
pub struct CacheMetrics {
    requests: Slots<Counter>,
    bytes: Slots<Counter>,
    /// Set from the latest eviction pass when `/metrics` is scraped.
    pub store_bytes: Gauge,
    pub store_blobs: Gauge,
    evicted_blobs: Counter,
    evicted_bytes: Counter,
}

impl CacheMetrics {
    /// `up`: the configured upstreams and `other`.
    pub(crate) fn register(registry: &mut Registry, up: usize) -> CacheMetrics {
        CacheMetrics {
            requests: Slots::new(
                reg(
                    registry,
                    "wharf_cache_requests",
                    "Content requests by what the cache did for them",
                    counters(),
                ),
                up * Content::ALL * CacheOutcome::ALL,
            ),
            bytes: Slots::new(
                reg(
                    registry,
                    "wharf_cache_served_bytes",
                    "Bytes served, by where they came from (hit: the cache; miss: fetched upstream)",
                    counters(),
                ),
                up * CacheOutcome::ALL,
            ),
            store_bytes: reg(
                registry,
                "wharf_store_bytes",
                "Bytes of blobs in the store (last eviction pass, else the blobs this node knows)",
                Gauge::default(),
            ),
            store_blobs: reg(
                registry,
                "wharf_store_blobs",
                "Blobs in the store (last eviction pass, else the blobs this node knows)",
                Gauge::default(),
            ),
            evicted_blobs: reg(
                registry,
                "wharf_evicted_blobs",
                "Blobs deleted by eviction passes of this node",
                Counter::default(),
            ),
            evicted_bytes: reg(
                registry,
                "wharf_evicted_bytes",
                "Bytes deleted by eviction passes of this node",
                Counter::default(),
            ),
        }
    }
}

impl Metrics {
    /// What the cache did for one content request, and the bytes it answered with.
    pub fn cache_result(
        &self,
        upstream: &str,
        content: Content,
        outcome: CacheOutcome,
        bytes: u64,
    ) {
        if !self.enabled {
            return;
        }
        let up = self.upstream_slot(upstream);
        let slot = slot2(
            slot2(up, content as usize, Content::ALL),
            outcome as usize,
            CacheOutcome::ALL,
        );
        self.cache.requests.with(
            slot,
            || {
                vec![
                    ("upstream", self.upstream_label(up)),
                    ("type", content.as_str().to_string()),
                    ("result", outcome.as_str().to_string()),
                ]
            },
            |c| {
                c.inc();
            },
        );
        if bytes > 0 {
            self.cache.bytes.with(
                slot2(up, outcome as usize, CacheOutcome::ALL),
                || {
                    vec![
                        ("upstream", self.upstream_label(up)),
                        ("result", outcome.as_str().to_string()),
                    ]
                },
                |c| {
                    c.inc_by(bytes);
                },
            );
        }
    }

    /// An eviction pass deleted `blobs` blobs of `bytes` bytes.
    pub fn evicted(&self, blobs: u64, bytes: u64) {
        if self.enabled {
            self.cache.evicted_blobs.inc_by(blobs);
            self.cache.evicted_bytes.inc_by(bytes);
        }
    }

    pub fn cache_totals(&self) -> CacheTotals {
        let mut totals = CacheTotals::default();
        self.cache.requests.for_each(|slot, c| {
            if let Some(t) = totals.requests.get_mut(slot % CacheOutcome::ALL) {
                *t += c.get();
            }
        });
        self.cache.bytes.for_each(|slot, c| {
            if let Some(t) = totals.bytes.get_mut(slot % CacheOutcome::ALL) {
                *t += c.get();
            }
        });
        totals
    }
}

/// Cache requests and served bytes by outcome (indexed by `CacheOutcome as usize`), summed
/// over upstreams and content types.
#[derive(Debug, Default, Clone)]
pub struct CacheTotals {
    pub requests: [u64; CacheOutcome::ALL],
    pub bytes: [u64; CacheOutcome::ALL],
}
