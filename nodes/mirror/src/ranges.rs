//! How a cold blob is asked of its upstream: its first piece as a range, which tells whether
//! the upstream answers ranges and how large the blob is; the rest then comes side by side
//! (`download::fill`). An upstream that answers a range with the whole blob is asked for
//! whole blobs for an hour: one stream, as before `[fetch]` existed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::warn;
use wharf_core::config::FetchConfig;
use wharf_core::{Digest, OciCode, RepoName};
use wharf_metrics::Metrics;
use wharf_upstream::client::RangeAnswer;
use wharf_upstream::{BlobResponse, UpstreamClient, UpstreamError};

use crate::download::{RangeFetch, Ranged};
use crate::error::MirrorError;

/// How long an upstream that ignored a range is asked for whole blobs only.
const IGNORED_FOR: Duration = Duration::from_secs(3600);
/// Upstreams tracked by name; more than this (never from configuration alone) share one entry.
const MAX_TRACKED: usize = 1024;

/// One upstream's ranged requests: how many may be in flight, and whether it answers ranges.
struct UpstreamRanges {
    connections: Arc<Semaphore>,
    ignored_until: Mutex<Option<Instant>>,
}

impl UpstreamRanges {
    fn ignoring(&self) -> bool {
        let until = *self.ignored_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|until| Instant::now() < until)
    }

    fn ignored(&self) {
        let until = Instant::now().checked_add(IGNORED_FOR);
        *self.ignored_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

/// The node's ranged fetching: `[fetch]` and each upstream's state.
pub struct RangeSources {
    config: FetchConfig,
    upstreams: Mutex<HashMap<String, Arc<UpstreamRanges>>>,
    metrics: Arc<Metrics>,
}

impl RangeSources {
    pub fn new(config: FetchConfig, metrics: Arc<Metrics>) -> RangeSources {
        RangeSources {
            config,
            upstreams: Mutex::default(),
            metrics,
        }
    }

    fn of(&self, upstream: &str) -> Arc<UpstreamRanges> {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let key = if upstreams.len() < MAX_TRACKED || upstreams.contains_key(upstream) {
            upstream
        } else {
            ""
        };
        upstreams
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(UpstreamRanges {
                    connections: Arc::new(Semaphore::new(self.config.upstream_connections)),
                    ignored_until: Mutex::new(None),
                })
            })
            .clone()
    }

    /// The blob's first answer: its first piece and how to fetch the rest when the upstream
    /// answers ranges, else the whole blob as one stream.
    pub async fn first(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(BlobResponse, Option<Ranged>), MirrorError> {
        let failed = |e| MirrorError::upstream(upstream.name(), e, OciCode::BlobUnknown);
        let state = self.of(upstream.name());
        if self.config.parallel <= 1 || state.ignoring() {
            let whole = upstream.get_blob(repo, digest).await.map_err(failed)?;
            return Ok((whole, None));
        }
        let chunk = self.config.chunk_bytes();
        let answer = upstream
            .get_blob_range(repo, digest, 0, Some(chunk.saturating_sub(1)))
            .await;
        match answer {
            Ok(RangeAnswer::Partial {
                total: Some(total),
                response,
            }) => {
                let ranged = Ranged {
                    first_end: chunk.min(total),
                    chunk,
                    parallel: self.config.parallel,
                    fetch: span_fetch(upstream.clone(), repo.clone(), digest.clone()),
                    connections: state.connections.clone(),
                };
                let first = BlobResponse {
                    size: Some(total),
                    stream: response.stream,
                };
                Ok((first, Some(ranged)))
            }
            Ok(RangeAnswer::Whole(response)) => {
                warn!(
                    upstream = upstream.name(),
                    "upstream answers ranges with whole blobs; fetching them as one stream"
                );
                state.ignored();
                self.metrics.range_fallback();
                Ok((response, None))
            }
            // The size was not told (`bytes 0-N/*`), or there is no first byte to ask for (an
            // empty blob): ask for the whole.
            Ok(RangeAnswer::Partial { total: None, .. }) | Err(UpstreamError::Rejected { .. }) => {
                let whole = upstream.get_blob(repo, digest).await.map_err(failed)?;
                Ok((whole, None))
            }
            Err(e) => Err(failed(e)),
        }
    }
}

/// Bytes `first..=last` of `digest` from `upstream`: exactly those, or an error.
fn span_fetch(upstream: Arc<UpstreamClient>, repo: RepoName, digest: Digest) -> RangeFetch {
    Arc::new(move |first, last| {
        let (upstream, repo, digest) = (upstream.clone(), repo.clone(), digest.clone());
        Box::pin(async move {
            upstream
                .get_blob_span(&repo, &digest, first, Some(last))
                .await
                .map(|response| response.stream)
                .map_err(|e| MirrorError::upstream(upstream.name(), e, OciCode::BlobUnknown))
        })
    })
}
