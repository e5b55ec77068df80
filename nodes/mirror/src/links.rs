//! Repository isolation of cached content. Bytes are stored once per digest and shared, but
//! with client authentication on, a digest is served for a repository only once it is known
//! to belong to that repository on that upstream: a manifest of the repository listed it, or
//! the upstream answered for it in that repository. Otherwise a user allowed `library/*`
//! could read a private layer of `acme/secret` by naming its digest under `library/alpine`.
//! distribution's repository-scoped links are the model. Links live in memory (bounded); a
//! manifest's link is also kept in the store (an empty object under the repository's tags
//! folder), so that after a restart a pull by digest still works while the upstream is down.
//! Blob links are rebuilt from the manifests served.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::Semaphore;
use wharf_core::{Digest, OciCode, RepoName};
use wharf_storage::{BlobStore, ObjectKey};
use wharf_upstream::UpstreamClient;

use crate::coalesce::Coalescer;
use crate::error::MirrorError;

/// Bytes of link keys kept at most (about 300k links).
const MAX_LINK_BYTES: u64 = 48 * 1024 * 1024;

/// What is being linked: the kinds share digests' namespace but not their meaning.
#[derive(Clone, Copy)]
enum Kind {
    /// The digest belongs to the repository.
    Member,
    /// The manifest's own references were linked too.
    Expanded,
}

/// The descriptors of a manifest or index that name content of the same repository.
#[derive(Deserialize)]
struct References {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

/// Manifest links being written to the store at once, at most; beyond it a link is kept in
/// memory only (and written the next time the manifest is served after a restart).
const MAX_LINK_WRITES: usize = 64;
/// Upstream confirmations (HEADs) under way at once, at most; a request waits up to
/// [`CONFIRM_WAIT`] for a turn, then gets `503` with `Retry-After`.
const MAX_CONFIRMATIONS: usize = 256;
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which (upstream, repository, digest) triples are known to belong together.
pub struct RepoLinks {
    links: moka::sync::Cache<String, ()>,
    verifying: Coalescer<String, ()>,
    store: Arc<dyn BlobStore>,
    writes: Arc<Semaphore>,
    confirmations: Arc<Semaphore>,
    confirm_wait: std::time::Duration,
}

fn key(kind: Kind, upstream: &str, repo: &RepoName, digest: &str) -> String {
    let tag = match kind {
        Kind::Member => 'm',
        Kind::Expanded => 'x',
    };
    format!("{tag}\0{upstream}\0{repo}\0{digest}")
}

impl RepoLinks {
    pub fn new(store: Arc<dyn BlobStore>) -> RepoLinks {
        RepoLinks::with_bounds(store, MAX_CONFIRMATIONS, CONFIRM_WAIT)
    }

    /// With other bounds on upstream confirmations (tests).
    pub fn with_bounds(
        store: Arc<dyn BlobStore>,
        confirmations: usize,
        confirm_wait: std::time::Duration,
    ) -> RepoLinks {
        RepoLinks {
            links: moka::sync::Cache::builder()
                .weigher(|k: &String, _| u32::try_from(k.len() + 64).unwrap_or(u32::MAX))
                .max_capacity(MAX_LINK_BYTES)
                .build(),
            verifying: Coalescer::default(),
            store,
            writes: Arc::new(Semaphore::new(MAX_LINK_WRITES)),
            confirmations: Arc::new(Semaphore::new(confirmations)),
            confirm_wait,
        }
    }

    /// Whether `digest` is known to belong to `repo` on `upstream`.
    pub fn contains(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> bool {
        self.links
            .contains_key(&key(Kind::Member, upstream, repo, &digest.to_string()))
    }

    pub fn link(&self, upstream: &str, repo: &RepoName, digest: &str) {
        self.links
            .insert(key(Kind::Member, upstream, repo, digest), ());
    }

    /// A manifest of `repo` was served: it and everything it references belong to `repo`.
    /// Parsed once per (repository, manifest); later calls are one lookup.
    pub fn note_manifest(&self, upstream: &str, repo: &RepoName, digest: &Digest, body: &[u8]) {
        let digest = digest.to_string();
        let expanded = key(Kind::Expanded, upstream, repo, &digest);
        if self.links.contains_key(&expanded) {
            return;
        }
        self.link(upstream, repo, &digest);
        if let Ok(refs) = serde_json::from_slice::<References>(body) {
            for d in refs
                .config
                .iter()
                .chain(&refs.layers)
                .chain(&refs.manifests)
                .chain(&refs.blobs)
            {
                self.link(upstream, repo, &d.digest);
            }
        }
        self.links.insert(expanded, ());
        self.persist(upstream, repo, &digest);
    }

    /// Write the manifest's link to the store in the background, within the write bound.
    fn persist(&self, upstream: &str, repo: &RepoName, digest: &str) {
        let (Ok(permit), Ok(digest)) = (
            Arc::clone(&self.writes).try_acquire_owned(),
            digest.parse::<Digest>(),
        ) else {
            return;
        };
        let key = ObjectKey::ManifestLink {
            upstream: upstream.to_string(),
            repo: repo.clone(),
            digest,
        };
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            if let Err(e) = store.put_small(&key, Bytes::new()).await {
                tracing::debug!(error = %e, "could not store a manifest link");
            }
            drop(permit);
        });
    }

    /// Make sure `digest` belongs to `repo`: known already, or the upstream confirms it for
    /// that repository (one HEAD, shared by concurrent callers), after which it is linked.
    /// A `manifest` is asked for as a manifest, anything else as a blob.
    pub async fn ensure(
        &self,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
        manifest: bool,
    ) -> Result<(), MirrorError> {
        if self.contains(upstream.name(), repo, digest) {
            return Ok(());
        }
        let flight = key(Kind::Member, upstream.name(), repo, &digest.to_string());
        let (client, repo_owned, digest_owned) =
            (Arc::clone(upstream), repo.clone(), digest.clone());
        let store = Arc::clone(&self.store);
        let confirmations = Arc::clone(&self.confirmations);
        let confirm_wait = self.confirm_wait;
        let (confirmed, _) = self
            .verifying
            .run(flight, move || async move {
                let name = client.name().to_string();
                if manifest {
                    let stored = ObjectKey::ManifestLink {
                        upstream: name.clone(),
                        repo: repo_owned.clone(),
                        digest: digest_owned.clone(),
                    };
                    // A link kept from before a restart: no need to ask the upstream.
                    if matches!(store.stat(&stored).await, Ok(Some(_))) {
                        return Ok(());
                    }
                }
                let _turn =
                    match tokio::time::timeout(confirm_wait, confirmations.acquire_owned()).await {
                        Ok(Ok(turn)) => turn,
                        _ => {
                            return Err(MirrorError::busy(
                                "too many repository checks under way; retry shortly",
                                Some(std::time::Duration::from_secs(5)),
                            ));
                        }
                    };
                let missing = if manifest {
                    OciCode::ManifestUnknown
                } else {
                    OciCode::BlobUnknown
                };
                let answer = if manifest {
                    client
                        .head_manifest(&repo_owned, &digest_owned.to_string())
                        .await
                        .map(|_| ())
                } else {
                    client
                        .head_blob(&repo_owned, &digest_owned)
                        .await
                        .map(|_| ())
                };
                answer.map_err(|e| {
                    let mut err = MirrorError::upstream(&name, e, missing);
                    if err.code() == OciCode::Denied || err.is_not_found() {
                        // Not in this repository (or not visible to wharf there).
                        err = MirrorError::not_found(
                            missing,
                            format!("{digest_owned} is not known in repository {repo_owned}"),
                        );
                    }
                    err
                })
            })
            .await;
        confirmed?;
        self.link(upstream.name(), repo, &digest.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_manifest_links_what_it_references_in_its_repository_only() {
        let links = RepoLinks::new(Arc::new(wharf_storage::mem::MemStore::default()));
        let repo: RepoName = "library/alpine".parse().unwrap();
        let other: RepoName = "acme/secret".parse().unwrap();
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let manifest: Digest = d('a').parse().unwrap();
        let body = format!(
            r#"{{"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}]}}"#,
            d('b'),
            d('c')
        );
        links.note_manifest("docker.io", &repo, &manifest, body.as_bytes());
        for c in ['a', 'b', 'c'] {
            assert!(links.contains("docker.io", &repo, &d(c).parse().unwrap()));
            assert!(!links.contains("docker.io", &other, &d(c).parse().unwrap()));
            assert!(!links.contains("ghcr.io", &repo, &d(c).parse().unwrap()));
        }
        assert!(!links.contains("docker.io", &repo, &d('e').parse().unwrap()));
    }

    /// Confirmations are bounded: with the one turn taken by a HEAD the upstream never
    /// answers, the next request for another digest is turned away quickly with 503.
    #[tokio::test]
    async fn upstream_confirmations_are_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket); // never answered
            }
        });
        let config = wharf_core::config::UpstreamConfig::new("slow", &url, true);
        let settings = wharf_core::config::UpstreamClientConfig {
            retries: 0,
            ..Default::default()
        };
        let upstream =
            Arc::new(UpstreamClient::new(&config, Default::default(), &settings).unwrap());
        let links = Arc::new(RepoLinks::with_bounds(
            Arc::new(wharf_storage::mem::MemStore::default()),
            1,
            std::time::Duration::from_millis(200),
        ));
        let repo: RepoName = "a/b".parse().unwrap();
        let d = |c: char| -> Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .unwrap()
        };
        let first = {
            let (links, upstream, repo) = (links.clone(), upstream.clone(), repo.clone());
            tokio::spawn(async move { links.ensure(&upstream, &repo, &d('a'), false).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let second = links.ensure(&upstream, &repo, &d('b'), false).await;
        let err = second.expect_err("no turn left");
        assert!(matches!(err, MirrorError::Busy { .. }), "{err:?}");
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(5)));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        first.abort();
    }
}
