//! `GET /v2/_catalog`: the repositories this mirror holds a cached tag of, for one upstream,
//! from the tag records in the store (so every node sharing a bucket answers the same), sorted
//! and paginated like tag lists. Off unless `[catalog] enabled`; the listing is kept for a few
//! seconds per upstream so a client paging through it does not list the store per page.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wharf_storage::BlobStore;
use wharf_storage::key::{repository_of_tag, tags_prefix};

use crate::error::MirrorError;
use crate::tags_list::{paginate, pagination};

/// How long one listing of the store serves catalog pages.
const LISTING_TTL: Duration = Duration::from_secs(30);
/// Upstreams whose listings are kept at once.
const MAX_LISTINGS: u64 = 64;

pub struct CatalogService {
    pub enabled: bool,
    /// upstream → its sorted repositories; concurrent misses share one listing of the store.
    listings: moka::future::Cache<String, Arc<Vec<String>>>,
}

/// One page of the catalog.
pub struct CatalogPage {
    pub body: Bytes,
    /// `n` and `last` of the next page, when more remain.
    pub next: Option<(u64, String)>,
}

impl CatalogService {
    pub fn new(enabled: bool) -> CatalogService {
        CatalogService {
            enabled,
            listings: moka::future::Cache::builder()
                .max_capacity(MAX_LISTINGS)
                .time_to_live(LISTING_TTL)
                .build(),
        }
    }

    /// A page of `upstream`'s repositories that `visible` lets the caller see (the policy:
    /// a repository the caller may not pull is not named to it either).
    pub async fn page(
        &self,
        store: &Arc<dyn BlobStore>,
        upstream: &str,
        query: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<CatalogPage, MirrorError> {
        let repos = self
            .listings
            .try_get_with(upstream.to_string(), async {
                let prefix = tags_prefix(upstream);
                let objects = store.list(&prefix).await.map_err(MirrorError::from)?;
                let mut repos: Vec<String> = objects
                    .iter()
                    .filter_map(|o| repository_of_tag(&o.path, &prefix))
                    .collect();
                repos.sort_unstable();
                repos.dedup();
                Ok::<_, MirrorError>(Arc::new(repos))
            })
            .await
            .map_err(|e| (*e).clone())?;
        let shown: Vec<String> = repos.iter().filter(|r| visible(r)).cloned().collect();
        let (n, last) = pagination(query);
        let (page, next) = paginate(&shown, n, last.as_deref());
        Ok(CatalogPage {
            body: Bytes::from(serde_json::json!({ "repositories": page }).to_string()),
            next,
        })
    }
}
