//! Repository isolation of cached content. Bytes are stored once per digest and shared, but
//! with client authentication on, a digest is served for a repository only once it is known
//! to belong to that repository on that upstream: a manifest of the repository listed it, or
//! the upstream answered for it in that repository. Otherwise a user allowed `library/*`
//! could read a private layer of `acme/secret` by naming its digest under `library/alpine`.
//! distribution's repository-scoped links are the model; here they live in memory (bounded)
//! and are rebuilt from manifests and upstream answers after a restart.

use std::sync::Arc;

use serde::Deserialize;
use wharf_core::{Digest, OciCode, RepoName};
use wharf_upstream::UpstreamClient;

use crate::coalesce::Coalescer;
use crate::error::ApiError;

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

/// Which (upstream, repository, digest) triples are known to belong together.
pub struct RepoLinks {
    links: moka::sync::Cache<String, ()>,
    verifying: Coalescer<String, ()>,
}

impl Default for RepoLinks {
    fn default() -> Self {
        RepoLinks {
            links: moka::sync::Cache::builder()
                .weigher(|k: &String, _| u32::try_from(k.len() + 64).unwrap_or(u32::MAX))
                .max_capacity(MAX_LINK_BYTES)
                .build(),
            verifying: Coalescer::default(),
        }
    }
}

fn key(kind: Kind, upstream: &str, repo: &RepoName, digest: &str) -> String {
    let tag = match kind {
        Kind::Member => 'm',
        Kind::Expanded => 'x',
    };
    format!("{tag}\0{upstream}\0{repo}\0{digest}")
}

impl RepoLinks {
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
    ) -> Result<(), ApiError> {
        if self.contains(upstream.name(), repo, digest) {
            return Ok(());
        }
        let flight = key(Kind::Member, upstream.name(), repo, &digest.to_string());
        let (client, repo_owned, digest_owned) =
            (Arc::clone(upstream), repo.clone(), digest.clone());
        let (confirmed, _) = self
            .verifying
            .run(flight, move || async move {
                let name = client.name().to_string();
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
                    let mut err = ApiError::from_upstream(&name, e, missing);
                    if err.code == OciCode::Denied || err.status == http::StatusCode::NOT_FOUND {
                        // Not in this repository (or not visible to wharf there).
                        err = ApiError::new(
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

    #[test]
    fn a_manifest_links_what_it_references_in_its_repository_only() {
        let links = RepoLinks::default();
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
}
