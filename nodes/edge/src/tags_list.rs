//! `tags/list`: fetched from the upstream, kept briefly, served stale when the upstream is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use tracing::warn;
use wharf_core::{OciCode, RepoName};
use wharf_upstream::{TagsListResponse, UpstreamClient};

use crate::access_log::CacheResult;
use crate::coalesce::Coalescer;
use crate::error::ApiError;
use crate::manifests::is_outage;

/// How long a stale answer may still be used while the upstream cannot answer.
const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Memory for cached tag lists, by the bytes of their bodies and keys.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

type Key = (String, RepoName, String);
type Entry = Arc<(TagsListResponse, Instant)>;

pub struct TagsListService {
    cache: Cache<Key, Entry>,
    flights: Coalescer<Key, Entry>,
    ttl: Duration,
}

impl TagsListService {
    pub fn new(ttl: Duration) -> TagsListService {
        TagsListService {
            cache: Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|key: &Key, entry: &Entry| {
                    let r = &entry.0;
                    let bytes = key.0.len()
                        + key.1.as_str().len()
                        + key.2.len()
                        + r.body.len()
                        + r.link.as_ref().map_or(0, String::len)
                        + r.content_type.as_ref().map_or(0, String::len)
                        + 128;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(STALE_LIMIT)
                .build(),
            flights: Coalescer::default(),
            ttl,
        }
    }

    /// `query` is the client's `n`/`last` pagination, passed upstream in a canonical form
    /// (which is also the cache key, so spellings of one question share one entry).
    pub async fn get(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        query: &str,
    ) -> Result<(TagsListResponse, CacheResult), ApiError> {
        let query = canonical_query(query);
        let key = (upstream.name().to_string(), repo.clone(), query.clone());
        let known = self.cache.get(&key).await;
        if let Some(entry) = &known
            && entry.1.elapsed() < self.ttl
        {
            return Ok((entry.0.clone(), CacheResult::Hit));
        }
        let (cache, upstream, repo) = (self.cache.clone(), upstream.clone(), repo.clone());
        let (result, joined) = self
            .flights
            .run(key.clone(), move || async move {
                let query = (!query.is_empty()).then_some(query.as_str());
                let response = upstream.tags_list(&repo, query).await.map_err(|e| {
                    ApiError::from_upstream(upstream.name(), e, OciCode::NameUnknown)
                })?;
                let entry = Arc::new((response, Instant::now()));
                cache.insert(key, entry.clone()).await;
                Ok(entry)
            })
            .await;
        match result {
            Ok(entry) if joined => Ok((entry.0.clone(), CacheResult::Coalesced)),
            Ok(entry) => Ok((entry.0.clone(), CacheResult::Miss)),
            Err(e) if is_outage(&e) => match known {
                Some(entry) => {
                    warn!(error = %e, "upstream unavailable; serving cached tag list");
                    Ok((entry.0.clone(), CacheResult::Stale))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// `n` and `last` from a query string, once each, `n` as a number, in one order:
/// `last=b&n=010&n=5&x=1` and `n=5&last=b` are the same question.
fn canonical_query(query: &str) -> String {
    let (mut n, mut last) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse::<u64>().ok().or(n),
            Some(("last", v)) if !v.is_empty() => last = Some(v),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(n) = n {
        out.push(format!("n={n}"));
    }
    if let Some(last) = last {
        out.push(format!("last={last}"));
    }
    out.join("&")
}

#[cfg(test)]
mod tests {
    use super::canonical_query;

    #[test]
    fn spellings_of_one_query_share_a_key() {
        assert_eq!(canonical_query("last=b&n=010&n=5&x=1"), "n=5&last=b");
        assert_eq!(canonical_query("n=5&last=b"), "n=5&last=b");
        assert_eq!(canonical_query("n=abc&last="), "");
        assert_eq!(canonical_query(""), "");
    }
}
