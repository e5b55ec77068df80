//! Object naming: the layout of the store, shared by every backend.

use std::fmt;

use wharf_core::{Digest, RepoName, Tag};

/// The kinds of object wharf stores, each with its place in the layout:
///
/// ```text
/// blobs/<alg>/<hex[0..2]>/<hex>              layer and config blobs
/// manifests/<alg>/<hex[0..2]>/<hex>          "<media type>\n<exact manifest bytes>"
/// tags/<upstream>/<repository>/_tag/<tag>    JSON tag record (digest, type, fetched-at)
/// tags/<upstream>/<repository>/_manifests/<alg>/<hex>
///                                            empty: the manifest belongs to the repository
/// evicted/<alg>/<hex[0..2]>/<hex>            empty: the blob was evicted at this time
/// ```
/// The two-character fan-out keeps directories small on disk and spreads S3 key prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    Blob(Digest),
    Manifest(Digest),
    Tag {
        upstream: String,
        repo: RepoName,
        tag: Tag,
    },
    /// A manifest known to belong to a repository (repository isolation, kept across
    /// restarts so pulls by digest work while the upstream is down).
    ManifestLink {
        upstream: String,
        repo: RepoName,
        digest: Digest,
    },
    /// One node's batched record of when it last served each blob (for eviction).
    AccessLog {
        node: String,
    },
    /// The blobs `[[prefetch]]` rules pin: eviction on every node skips them.
    Pins,
    /// A tombstone: the blob was evicted when this object was written, so every node's hot
    /// tier drops its older copy by listing these few objects, not the whole bucket.
    Evicted(Digest),
}

impl ObjectKey {
    /// The relative path or object key; only ever built from validated parts.
    pub fn path(&self) -> String {
        match self {
            ObjectKey::Blob(d) => content_path("blobs", d),
            ObjectKey::Manifest(d) => content_path("manifests", d),
            ObjectKey::Tag {
                upstream,
                repo,
                tag,
            } => format!("tags/{}/{}/_tag/{}", safe_segment(upstream), repo, tag),
            ObjectKey::ManifestLink {
                upstream,
                repo,
                digest,
            } => format!(
                "tags/{}/{}/_manifests/{}/{}",
                safe_segment(upstream),
                repo,
                digest.algorithm().as_str(),
                digest.hex()
            ),
            ObjectKey::AccessLog { node } => format!("{ACCESS_PREFIX}{}", safe_segment(node)),
            ObjectKey::Pins => "prefetch/pins".to_string(),
            ObjectKey::Evicted(d) => content_path("evicted", d),
        }
    }

    /// The digest of a tombstone from its path (`evicted/<alg>/<xx>/<hex>`).
    pub fn evicted_digest(path: &str) -> Option<Digest> {
        ObjectKey::blob_digest(&format!("blobs/{}", path.strip_prefix(EVICTED_PREFIX)?))
    }

    /// The digest of a blob from its stored path (`blobs/<alg>/<xx>/<hex>`), as `list` gives it.
    pub fn blob_digest(path: &str) -> Option<Digest> {
        let mut parts = path.strip_prefix("blobs/")?.split('/');
        let (alg, _fan, hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        format!("{alg}:{hex}").parse().ok()
    }
}

/// Where blobs live.
pub const BLOB_PREFIX: &str = "blobs/";
/// Where access logs live.
pub const ACCESS_PREFIX: &str = "access/";
/// Where eviction tombstones live.
pub const EVICTED_PREFIX: &str = "evicted/";

fn content_path(kind: &str, d: &Digest) -> String {
    let hex = d.hex();
    format!("{kind}/{}/{}/{hex}", d.algorithm().as_str(), &hex[..2])
}

/// Upstream names are hosts (`ghcr.io`, `127.0.0.1:5000`); keep them one harmless segment.
/// Where the tag records of `upstream`'s repositories live: `tags/<upstream>/`.
pub fn tags_prefix(upstream: &str) -> String {
    format!("tags/{}/", safe_segment(upstream))
}

/// The repository of a tag record's path under `prefix` (see [`tags_prefix`]).
pub fn repository_of_tag(path: &str, prefix: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    let (repo, _) = rest.rsplit_once("/_tag/")?;
    (!repo.is_empty()).then(|| repo.to_string())
}

fn safe_segment(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.chars().all(|c| c == '.') {
        cleaned.replace('.', "_")
    } else {
        cleaned
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let d = Digest::sha256_of(b"x");
        let hex = d.hex().to_string();
        assert_eq!(
            ObjectKey::Blob(d.clone()).path(),
            format!("blobs/sha256/{}/{hex}", &hex[..2])
        );
        let key = ObjectKey::Tag {
            upstream: "127.0.0.1:5000".into(),
            repo: "a/b".parse().unwrap(),
            tag: "v1".parse().unwrap(),
        };
        assert_eq!(key.path(), "tags/127.0.0.1_5000/a/b/_tag/v1");
        assert_eq!(safe_segment(".."), "__");
        let blob = ObjectKey::Blob(d.clone()).path();
        assert_eq!(ObjectKey::blob_digest(&blob), Some(d));
        assert_eq!(ObjectKey::blob_digest("blobs/sha256/ab"), None);
        assert_eq!(ObjectKey::blob_digest("manifests/sha256/ab/cd"), None);
    }
}
