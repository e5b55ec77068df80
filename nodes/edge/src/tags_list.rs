//! `tags/list`: fetched from the upstream, kept briefly, served stale when the upstream is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use tracing::warn;
use wharf_core::{OciCode, RepoName};
use wharf_upstream::{TagsListResponse, UpstreamClient};

use crate::coalesce::Coalescer;
use crate::error::ApiError;
use crate::manifests::is_outage;

/// How long a stale answer may still be used while the upstream cannot answer.
const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);

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
                .max_capacity(10_000)
                .time_to_live(STALE_LIMIT)
                .build(),
            flights: Coalescer::default(),
            ttl,
        }
    }

    /// `query` is the client's `n`/`last` pagination, passed upstream as is.
    pub async fn get(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        query: String,
    ) -> Result<TagsListResponse, ApiError> {
        let key = (upstream.name().to_string(), repo.clone(), query.clone());
        let known = self.cache.get(&key).await;
        if let Some(entry) = &known
            && entry.1.elapsed() < self.ttl
        {
            return Ok(entry.0.clone());
        }
        let (cache, upstream, repo) = (self.cache.clone(), upstream.clone(), repo.clone());
        let (result, _) = self
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
            Ok(entry) => Ok(entry.0.clone()),
            Err(e) if is_outage(&e) => match known {
                Some(entry) => {
                    warn!(error = %e, "upstream unavailable; serving cached tag list");
                    Ok(entry.0.clone())
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}
