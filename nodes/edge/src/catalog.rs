//! `GET /v2/_catalog`: the repositories this mirror holds a cached tag of, for one upstream,
//! from the tag records in the store (so every node sharing a bucket answers the same), sorted
//! and paginated like tag lists. Off unless `[catalog] enabled`; the listing is kept for a few
//! seconds per upstream so a client paging through it does not list the store per page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_storage::BlobStore;
use wharf_storage::key::{repository_of_tag, tags_prefix};

use crate::error::ApiError;
use crate::tags_list::{paginate, pagination};

/// How long one listing of the store serves catalog pages.
const LISTING_TTL: Duration = Duration::from_secs(30);

/// One upstream's repositories, sorted, and when the store was listed for them.
type Listing = (Instant, Arc<Vec<String>>);

pub struct CatalogService {
    pub enabled: bool,
    /// upstream → its listing; one entry per configured upstream at most.
    listings: Mutex<HashMap<String, Listing>>,
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
            listings: Mutex::default(),
        }
    }

    pub async fn page(
        &self,
        store: &Arc<dyn BlobStore>,
        upstream: &str,
        query: &str,
    ) -> Result<CatalogPage, ApiError> {
        let cached = self
            .listings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(upstream)
            .filter(|(at, _)| at.elapsed() < LISTING_TTL)
            .map(|(_, repos)| repos.clone());
        let repos = match cached {
            Some(repos) => repos,
            None => {
                let prefix = tags_prefix(upstream);
                let objects = store.list(&prefix).await.map_err(ApiError::from)?;
                let mut repos: Vec<String> = objects
                    .iter()
                    .filter_map(|o| repository_of_tag(&o.path, &prefix))
                    .collect();
                repos.sort_unstable();
                repos.dedup();
                let repos = Arc::new(repos);
                self.listings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(upstream.to_string(), (Instant::now(), repos.clone()));
                repos
            }
        };
        let (n, last) = pagination(query);
        let (page, next) = paginate(&repos, n, last.as_deref());
        Ok(CatalogPage {
            body: Bytes::from(serde_json::json!({ "repositories": page }).to_string()),
            next,
        })
    }
}
