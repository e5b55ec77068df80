//! OCI 1.1 referrers (`/v2/<name>/referrers/<digest>`): the signatures, SBOMs and attestations
//! of a subject, as an image index. From the upstream's referrers API when it has one, else
//! from the fallback tag (`sha256-<hex>`, an index pushed beside the subject by cosign, oras
//! and the like), else an empty index. Kept for the tag TTL like a tag, coalesced like a tag,
//! served stale while the upstream is down. The referrer manifests and their blobs are ordinary
//! content by digest, pulled through like any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use serde_json::Value;
use tracing::warn;
use wharf_core::{Digest, OciCode, RepoName, media};
use wharf_upstream::{UpstreamClient, UpstreamError};

use crate::coalesce::Coalescer;
use crate::error::MirrorError;
use crate::manifests::is_outage;
use crate::stats::CacheResult;

/// How long a stale answer may still be used while the upstream cannot answer.
const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Memory for cached referrer lists, by the bytes of their descriptors.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

type Key = (String, RepoName, Digest);
/// The referrers' descriptors, as JSON values, and when they were fetched.
type Entry = Arc<(Vec<Value>, Instant)>;

pub struct ReferrersService {
    cache: Cache<Key, Entry>,
    flights: Coalescer<Key, Entry>,
    ttl: Duration,
}

/// An answer: the index to send and whether a filter was applied.
pub struct Referrers {
    pub index: Bytes,
    pub filtered: bool,
    pub cache: CacheResult,
}

impl ReferrersService {
    /// `fetches`: the node's slots for upstream metadata fetches.
    pub fn new(ttl: Duration, fetches: Arc<crate::slots::DownloadSlots>) -> ReferrersService {
        ReferrersService {
            cache: Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|key: &Key, entry: &Entry| {
                    let descriptors: usize = entry.0.iter().map(|d| d.to_string().len()).sum();
                    u32::try_from(key.0.len() + key.1.as_str().len() + descriptors + 192)
                        .unwrap_or(u32::MAX)
                })
                .time_to_live(STALE_LIMIT)
                .build(),
            flights: Coalescer::bounded(fetches),
            ttl,
        }
    }

    /// The referrers of `digest`, those of `artifact_type` only when it is given.
    pub async fn get(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, MirrorError> {
        let key = (upstream.name().to_string(), repo.clone(), digest.clone());
        let known = self.cache.get(&key).await;
        let (entry, cache) = match &known {
            Some(entry) if entry.1.elapsed() < self.ttl => (entry.clone(), CacheResult::Hit),
            _ => {
                let (cache, upstream, repo, digest) = (
                    self.cache.clone(),
                    upstream.clone(),
                    repo.clone(),
                    digest.clone(),
                );
                let (result, joined) = self
                    .flights
                    .run(key.clone(), move || async move {
                        let descriptors = fetch(&upstream, &repo, &digest).await?;
                        let entry = Arc::new((descriptors, Instant::now()));
                        cache.insert(key, entry.clone()).await;
                        Ok(entry)
                    })
                    .await;
                match (result, known) {
                    (Ok(entry), _) if joined => (entry, CacheResult::Coalesced),
                    (Ok(entry), _) => (entry, CacheResult::Miss),
                    (Err(e), Some(old)) if is_outage(&e) => {
                        warn!(error = %e, "upstream unavailable; serving cached referrers");
                        (old, CacheResult::Stale)
                    }
                    (Err(e), _) => return Err(e),
                }
            }
        };
        let manifests: Vec<&Value> = entry
            .0
            .iter()
            .filter(|d| artifact_type.is_none_or(|t| d["artifactType"].as_str() == Some(t)))
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        Ok(Referrers {
            index: Bytes::from(index.to_string()),
            filtered: artifact_type.is_some(),
            cache,
        })
    }
}

/// The descriptors of an index body (its `manifests`); anything else holds none.
fn descriptors(body: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.get("digest").and_then(Value::as_str).is_some())
        .collect()
}

/// The referrers API, else the fallback tag, else none.
async fn fetch(
    upstream: &UpstreamClient,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Vec<Value>, MirrorError> {
    let failed = |e: UpstreamError| MirrorError::upstream(upstream.name(), e, OciCode::NameUnknown);
    if let Some(index) = upstream.referrers(repo, digest).await.map_err(failed)? {
        return Ok(descriptors(&index));
    }
    let tag = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
    match upstream.get_manifest(repo, &tag).await {
        Ok(m) if m.media_type == media::OCI_INDEX => Ok(descriptors(&m.body)),
        Ok(_) | Err(UpstreamError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::descriptors;

    #[test]
    fn only_descriptors_with_a_digest_are_kept() {
        let body = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00","artifactType":"a"},{"size":3},"x"]}"#;
        assert_eq!(descriptors(body).len(), 1);
        assert!(descriptors(b"not json").is_empty());
        assert!(descriptors(br#"{"manifests":7}"#).is_empty());
    }
}
