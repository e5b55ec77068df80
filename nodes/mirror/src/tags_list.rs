//! `tags/list`: the upstream's whole list (its own pages followed, within bounds), kept
//! briefly, served stale when the upstream is down, and paginated by wharf: sorted lexically,
//! `n` and `last` applied whatever the upstream does, `Link: <...>; rel="next"` while more remain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use tracing::warn;
use wharf_core::{OciCode, RepoName};
use wharf_upstream::UpstreamClient;

use crate::coalesce::Coalescer;
use crate::error::MirrorError;
use crate::manifests::is_outage;
use crate::stats::CacheResult;

/// How long a stale answer may still be used while the upstream cannot answer.
const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Memory for cached tag lists, by the bytes of their tags.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Upstream pages followed for one list at most, and tags kept at most.
const MAX_PAGES: usize = 100;
const MAX_TAGS: usize = 100_000;

type Key = (String, RepoName);
/// The repository's name as the upstream gives it, its tags sorted, and when they were fetched.
type Entry = Arc<(String, Vec<String>, Instant)>;

pub struct TagsListService {
    cache: Cache<Key, Entry>,
    flights: Coalescer<Key, Entry>,
    ttl: Duration,
}

/// One page of a tag list.
pub struct TagsPage {
    /// `{"name": ..., "tags": [...]}`.
    pub body: Bytes,
    /// The `last` of the next page, when more tags remain.
    pub next: Option<(u64, String)>,
    pub cache: CacheResult,
}

impl TagsListService {
    /// `fetches`: the node's slots for upstream metadata fetches.
    pub fn new(ttl: Duration, fetches: Arc<crate::slots::DownloadSlots>) -> TagsListService {
        TagsListService {
            cache: Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|key: &Key, entry: &Entry| {
                    let tags: usize = entry.1.iter().map(|t| t.len() + 24).sum();
                    u32::try_from(key.0.len() + key.1.as_str().len() + entry.0.len() + tags + 128)
                        .unwrap_or(u32::MAX)
                })
                .time_to_live(STALE_LIMIT)
                .build(),
            flights: Coalescer::bounded(fetches),
            ttl,
        }
    }

    /// The page the client's `query` (`n`, `last`) asks for.
    pub async fn get(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        query: &str,
    ) -> Result<TagsPage, MirrorError> {
        let key = (upstream.name().to_string(), repo.clone());
        let known = self.cache.get(&key).await;
        let (entry, cache) = match &known {
            Some(entry) if entry.2.elapsed() < self.ttl => (entry.clone(), CacheResult::Hit),
            _ => {
                let (result, joined) = self.refresh(upstream, repo).await;
                match (result, known) {
                    (Ok(entry), _) if joined => (entry, CacheResult::Coalesced),
                    (Ok(entry), _) => (entry, CacheResult::Miss),
                    (Err(e), Some(old)) if is_outage(&e) => {
                        warn!(error = %e, "upstream unavailable; serving cached tag list");
                        (old, CacheResult::Stale)
                    }
                    (Err(e), _) => return Err(e),
                }
            }
        };
        let (n, last) = pagination(query);
        let (page, next) = paginate(&entry.1, n, last.as_deref());
        let body = serde_json::json!({ "name": entry.0, "tags": page });
        Ok(TagsPage {
            body: Bytes::from(body.to_string()),
            next,
            cache,
        })
    }
}

impl TagsListService {
    /// The whole list as the upstream has it now (cached for clients too); true when joined
    /// to a fetch already under way.
    async fn refresh(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
    ) -> (Result<Entry, MirrorError>, bool) {
        let key = (upstream.name().to_string(), repo.clone());
        let (cache, upstream, repo) = (self.cache.clone(), upstream.clone(), repo.clone());
        self.flights
            .run(key.clone(), move || async move {
                let (name, tags) = fetch_all(&upstream, &repo).await?;
                let entry = Arc::new((name, tags, Instant::now()));
                cache.insert(key, entry.clone()).await;
                Ok(entry)
            })
            .await
    }

    /// Every tag of `repo`, fetched from the upstream now: prefetching must see new tags.
    pub async fn current(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
    ) -> Result<Vec<String>, MirrorError> {
        self.refresh(upstream, repo).await.0.map(|e| e.1.clone())
    }
}

/// The whole list: the upstream's pages, followed through their `Link` headers.
async fn fetch_all(
    upstream: &UpstreamClient,
    repo: &RepoName,
) -> Result<(String, Vec<String>), MirrorError> {
    let mut tags = Vec::new();
    let mut name = repo.to_string();
    let mut query: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let response = upstream
            .tags_list(repo, query.as_deref())
            .await
            .map_err(|e| MirrorError::upstream(upstream.name(), e, OciCode::NameUnknown))?;
        let page: serde_json::Value =
            serde_json::from_slice(&response.body).map_err(|_| MirrorError::BadAnswer {
                message: "the upstream's tag list is not JSON".to_string(),
            })?;
        if let Some(n) = page["name"].as_str() {
            name = n.to_string();
        }
        let before = tags.len();
        tags.extend(
            page["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .take(MAX_TAGS.saturating_sub(before)),
        );
        query = response.link.as_deref().and_then(next_query);
        if query.is_none() || tags.len() >= MAX_TAGS || tags.len() == before {
            break;
        }
    }
    tags.sort_unstable();
    tags.dedup();
    Ok((name, tags))
}

/// The query of a `Link: </v2/x/tags/list?n=100&last=b>; rel="next"` header.
fn next_query(link: &str) -> Option<String> {
    if !link.contains("rel=\"next\"") {
        return None;
    }
    let target = link.split_once('<')?.1.split_once('>')?.0;
    let (_, query) = target.split_once('?')?;
    Some(
        query
            .split('&')
            .filter(|p| p.starts_with("n=") || p.starts_with("last="))
            .collect::<Vec<_>>()
            .join("&"),
    )
    .filter(|q| !q.is_empty())
}

/// `n` and `last` from a query string (the last valid `n`, the last non-empty `last`).
pub(crate) fn pagination(query: &str) -> (Option<u64>, Option<String>) {
    let (mut n, mut last) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse::<u64>().ok().or(n),
            Some(("last", v)) if !v.is_empty() => {
                last = Some(wharf_core::query::percent_decode(v));
            }
            _ => {}
        }
    }
    (n, last)
}

/// The tags after `last`, at most `n` of them, and where the next page starts.
pub(crate) fn paginate<'a>(
    tags: &'a [String],
    n: Option<u64>,
    last: Option<&str>,
) -> (&'a [String], Option<(u64, String)>) {
    let start = last.map_or(0, |last| tags.partition_point(|t| t.as_str() <= last));
    let rest = tags.get(start..).unwrap_or_default();
    match n {
        None => (rest, None),
        Some(n) => {
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
            let page = &rest[..take];
            let next = (take < rest.len() && take > 0)
                .then(|| page.last().map(|l| (n, l.clone())))
                .flatten();
            (page, next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn pages_follow_n_and_last() {
        let all = tags(&["a", "b", "c", "d"]);
        assert_eq!(paginate(&all, None, None).0, &all[..]);
        assert_eq!(
            paginate(&all, Some(2), None),
            (&all[..2], Some((2, "b".into())))
        );
        assert_eq!(paginate(&all, Some(2), Some("b")), (&all[2..], None));
        assert_eq!(
            paginate(&all, Some(0), None),
            (&all[..0], None),
            "n=0: empty"
        );
        assert_eq!(
            paginate(&all, Some(10), None),
            (&all[..], None),
            "n past the end"
        );
        assert_eq!(
            paginate(&all, None, Some("zz")).0.len(),
            0,
            "last past the end"
        );
        assert_eq!(
            paginate(&all, Some(1), Some("bb")),
            (&all[2..3], Some((1, "c".into())))
        );
    }

    #[test]
    fn queries_and_links_parse() {
        assert_eq!(
            pagination("last=b&n=010&n=5&x=1"),
            (Some(5), Some("b".into()))
        );
        assert_eq!(pagination("n=abc&last="), (None, None));
        assert_eq!(
            next_query("</v2/x/tags/list?n=100&last=v1.2>; rel=\"next\""),
            Some("n=100&last=v1.2".into())
        );
        assert_eq!(next_query("</v2/x/tags/list?n=1>; rel=\"prev\""), None);
        assert_eq!(next_query("garbage"), None);
    }
}
