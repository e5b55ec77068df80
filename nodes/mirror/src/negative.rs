//! A short memory of what an upstream said does not exist, per upstream and repository, so a
//! flood of requests for missing digests or tags reaches the upstream once per key and TTL.

use std::time::Duration;

use moka::future::Cache;
use wharf_core::RepoName;

use crate::error::MirrorError;

/// Memory for remembered refusals, by bytes.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

type Key = (String, RepoName, String);

pub struct NegativeCache {
    cache: Option<Cache<Key, MirrorError>>,
}

impl NegativeCache {
    /// Remembers 404s for `ttl`; a zero `ttl` remembers nothing.
    pub fn new(ttl: Duration) -> NegativeCache {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|k: &Key, e: &MirrorError| {
                    let bytes =
                        k.0.len() + k.1.as_str().len() + k.2.len() + e.to_string().len() + 96;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        });
        NegativeCache { cache }
    }

    /// The upstream's recent 404 for `what` in `repo`, if any. `what` names the kind too
    /// (`blob:<digest>`, `manifest:<digest>`, `tag:<tag>`): a digest unknown as a manifest may
    /// well be a blob.
    pub async fn get(&self, upstream: &str, repo: &RepoName, what: &str) -> Option<MirrorError> {
        let cache = self.cache.as_ref()?;
        cache
            .get(&(upstream.to_string(), repo.clone(), what.to_string()))
            .await
    }

    /// Remember `error` if it is the upstream saying "no such content".
    pub async fn remember(&self, upstream: &str, repo: &RepoName, what: &str, error: &MirrorError) {
        if let Some(cache) = &self.cache
            && error.is_not_found()
        {
            cache
                .insert(
                    (upstream.to_string(), repo.clone(), what.to_string()),
                    error.clone(),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use wharf_core::OciCode;

    use super::*;

    #[tokio::test]
    async fn remembers_404s_only_and_forgets_them() {
        let cache = NegativeCache::new(Duration::from_millis(100));
        let repo: RepoName = "library/x".parse().unwrap();
        let missing = MirrorError::not_found(OciCode::BlobUnknown, "no");
        let outage = MirrorError::busy("down", None);
        cache.remember("up", &repo, "a", &missing).await;
        cache.remember("up", &repo, "b", &outage).await;
        assert_eq!(
            cache.get("up", &repo, "a").await.unwrap().code(),
            OciCode::BlobUnknown
        );
        assert!(cache.get("up", &repo, "b").await.is_none());
        assert!(cache.get("other", &repo, "a").await.is_none());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get("up", &repo, "a").await.is_none());
    }
}
