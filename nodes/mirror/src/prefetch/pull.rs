//! Pulling one image into the cache inside the node: the same services a client's pull goes
//! through (tag revalidation, verified manifests, the one download per blob shared with
//! clients and, in a cluster, with the other nodes), with no HTTP in between.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use wharf_core::image::{ImageError, image_blobs, index_children};
use wharf_core::{Digest, RepoName, Tag};
use wharf_upstream::UpstreamClient;

use crate::Mirror;
use crate::blobs::BlobReply;
use crate::error::MirrorError;
use crate::manifests::CachedManifest;

/// Blobs of one pass downloaded at once: prefetching shares download slots with clients.
const PARALLEL_BLOBS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    /// The mirror or the upstream refused or failed; `MirrorError` says which and whether to
    /// retry. The next interval tries again. Shown on the status page: the public message
    /// only, never an internal URL or address.
    #[error("{what}: {}", source.public_message())]
    Pull { what: String, source: MirrorError },
    /// The upstream's pull allowance is down to the reserve kept for clients.
    #[error("paused: the upstream allows {remaining} more pulls, under the reserve of {reserve}")]
    Reserve { remaining: i64, reserve: u64 },
    #[error("a manifest of the image: {0}")]
    Image(#[from] ImageError),
    #[error("manifest {0} is not JSON")]
    NotJson(Digest),
}

impl PrefetchError {
    pub(super) fn pull(what: impl Into<String>) -> impl FnOnce(MirrorError) -> PrefetchError {
        let what = what.into();
        move |source| PrefetchError::Pull { what, source }
    }
}

/// One pass of one rule over one repository.
pub struct Pull<'a> {
    pub mirror: &'a Mirror,
    pub upstream: &'a Arc<UpstreamClient>,
    pub repo: RepoName,
    /// Pulls of the upstream's allowance left to clients.
    pub reserve: u64,
    /// Every blob the pulled images name (for pins).
    pub blobs: BTreeSet<Digest>,
    /// Blobs fetched (not already cached) and their bytes.
    pub fetched: u64,
    pub bytes: u64,
    /// Whether this pass asked the upstream for its allowance already.
    probed: bool,
}

impl<'a> Pull<'a> {
    pub fn new(
        mirror: &'a Mirror,
        upstream: &'a Arc<UpstreamClient>,
        repo: RepoName,
        reserve: u64,
    ) -> Pull<'a> {
        Pull {
            mirror,
            upstream,
            repo,
            reserve,
            blobs: BTreeSet::new(),
            fetched: 0,
            bytes: 0,
            probed: false,
        }
    }

    /// Refuse to spend the allowance kept for clients. Docker Hub counts manifest GETs, and
    /// answers `HEAD`s for free with the current count: an unknown count (once a pass) or a
    /// low one is refreshed with one before deciding.
    pub async fn check_allowance(&mut self, tag: &str) -> Result<(), PrefetchError> {
        let low = |remaining: Option<i64>| {
            remaining.filter(|r| u64::try_from(*r).map_or(true, |r| r < self.reserve))
        };
        let known = self.upstream.status().ratelimit_remaining;
        let probe = match known {
            None => !std::mem::replace(&mut self.probed, true),
            Some(_) => low(known).is_some(),
        };
        if !probe {
            return Ok(());
        }
        let _ = self.upstream.head_manifest(&self.repo, tag).await;
        match low(self.upstream.status().ratelimit_remaining) {
            Some(remaining) => Err(PrefetchError::Reserve {
                remaining,
                reserve: self.reserve,
            }),
            None => Ok(()),
        }
    }

    /// Pull `tag`: its manifest, the manifests of `platforms` (all when empty) if it is an
    /// index, their blobs, and its referrers when asked.
    pub async fn tag(
        &mut self,
        tag: &Tag,
        platforms: &[String],
        referrers: bool,
    ) -> Result<(), PrefetchError> {
        self.check_allowance(tag.as_str()).await?;
        let top = self
            .mirror
            .manifests
            .by_tag(self.upstream, self.repo.clone(), tag.clone())
            .await
            .map_err(PrefetchError::pull(format!("tag {tag}")))?
            .manifest;
        self.tree(&top, platforms).await?;
        if referrers {
            self.referrers(&top.digest).await?;
        }
        Ok(())
    }

    /// A manifest and what it names: children of an index, blobs of an image.
    async fn tree(
        &mut self,
        top: &CachedManifest,
        platforms: &[String],
    ) -> Result<(), PrefetchError> {
        let parsed = self.noted(top)?;
        let Some(children) = index_children(&parsed, platforms) else {
            return self.image(&parsed).await;
        };
        for digest in children? {
            let child = self.manifest(&digest).await?;
            let parsed = self.noted(&child)?;
            self.image(&parsed).await?;
        }
        Ok(())
    }

    async fn manifest(&self, digest: &Digest) -> Result<Arc<CachedManifest>, PrefetchError> {
        self.mirror
            .manifests
            .by_digest(self.upstream, &self.repo, digest)
            .await
            .map(|(m, _)| m)
            .map_err(PrefetchError::pull(format!("manifest {digest}")))
    }

    /// The manifest as JSON, its content linked to the repository (so clients allowed only
    /// this repository may pull it by digest).
    fn noted(&self, manifest: &CachedManifest) -> Result<Value, PrefetchError> {
        if self.mirror.restricted {
            self.mirror.links.note_manifest(
                self.upstream.name(),
                &self.repo,
                &manifest.digest,
                &manifest.body,
            );
        }
        serde_json::from_slice(&manifest.body)
            .map_err(|_| PrefetchError::NotJson(manifest.digest.clone()))
    }

    /// Signatures, SBOMs and attestations of `subject`: their manifests and blobs.
    async fn referrers(&mut self, subject: &Digest) -> Result<(), PrefetchError> {
        let answer = self
            .mirror
            .referrers
            .get(self.upstream, &self.repo, subject, None)
            .await
            .map_err(PrefetchError::pull(format!("referrers of {subject}")))?;
        let index: Value = serde_json::from_slice(&answer.index)
            .map_err(|_| PrefetchError::NotJson(subject.clone()))?;
        for digest in index_children(&index, &[]).unwrap_or(Ok(Vec::new()))? {
            let referrer = self.manifest(&digest).await?;
            let parsed = self.noted(&referrer)?;
            self.image(&parsed).await?;
        }
        Ok(())
    }

    /// The blobs of an image (or artifact) manifest, fetched when not cached.
    async fn image(&mut self, manifest: &Value) -> Result<(), PrefetchError> {
        let mut missing = Vec::new();
        for (digest, _) in image_blobs(manifest)? {
            if !self.blobs.insert(digest.clone()) {
                continue;
            }
            let cached = self
                .mirror
                .blobs
                .contains(&digest)
                .await
                .map_err(PrefetchError::pull(format!("blob {digest}")))?;
            if !cached {
                missing.push(digest);
            }
        }
        let mut fetches = futures::stream::iter(missing.into_iter().map(|d| self.blob(d)))
            .buffer_unordered(PARALLEL_BLOBS);
        let mut fetched = Vec::new();
        while let Some(result) = fetches.next().await {
            fetched.push(result?);
        }
        drop(fetches);
        for bytes in fetched {
            self.fetched = self.fetched.saturating_add(1);
            self.bytes = self.bytes.saturating_add(bytes);
        }
        Ok(())
    }

    /// Fetch one blob through the download path and read it to the end (which is when it is
    /// verified and stored); its length.
    async fn blob(&self, digest: Digest) -> Result<u64, PrefetchError> {
        let what = format!("blob {digest}");
        let reply = self
            .mirror
            .blobs
            .get(self.upstream, &self.repo, &digest, None, false, None)
            .await
            .map_err(PrefetchError::pull(what.clone()))?;
        let BlobReply::Found {
            body: Some(mut body),
            ..
        } = reply
        else {
            return Ok(0);
        };
        let mut len = 0u64;
        while let Some(chunk) = body.stream.next().await {
            let chunk = chunk.map_err(|e| PrefetchError::Pull {
                what: what.clone(),
                source: MirrorError::BadAnswer {
                    message: format!("the download broke off: {e}"),
                },
            })?;
            len = len.saturating_add(chunk.len() as u64);
        }
        Ok(len)
    }
}
