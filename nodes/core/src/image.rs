//! Images as people name them and as manifests describe them: what `wharf warm` and
//! `[[prefetch]]` both walk to pull an image (index → platform manifests → blobs).

use serde_json::Value;

use crate::Digest;

/// An image as `docker pull` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, when the name has one (`ghcr.io`, `localhost:5000`).
    pub registry: Option<String>,
    pub repository: String,
    /// A tag or a digest; `latest` when the name has neither.
    pub reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0:?} is no image name")]
    Name(String),
    #[error("a manifest names a malformed digest {0:?}")]
    Digest(String),
}

impl ImageRef {
    pub fn parse(name: &str) -> Result<ImageRef, ImageError> {
        let (rest, reference) = match name.split_once('@') {
            Some((rest, digest)) => (rest, digest.to_string()),
            None => match name.rsplit_once(':') {
                Some((rest, tag)) if !tag.contains('/') => (rest, tag.to_string()),
                _ => (name, "latest".to_string()),
            },
        };
        let (registry, repository) = match rest.split_once('/') {
            Some((host, repo))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (Some(host.to_string()), repo.to_string())
            }
            _ => (None, rest.to_string()),
        };
        if repository.is_empty() || reference.is_empty() {
            return Err(ImageError::Name(name.to_string()));
        }
        Ok(ImageRef {
            registry,
            repository,
            reference,
        })
    }
}

/// `os/arch[/variant]` of an index entry.
pub fn platform_of(descriptor: &Value) -> String {
    let p = &descriptor["platform"];
    let mut s = format!(
        "{}/{}",
        p["os"].as_str().unwrap_or("unknown"),
        p["architecture"].as_str().unwrap_or("unknown")
    );
    if let Some(variant) = p["variant"].as_str() {
        s.push('/');
        s.push_str(variant);
    }
    s
}

/// The manifests an index lists for `platforms` (all when empty); `None` when `manifest` is
/// no index.
pub fn index_children(
    manifest: &Value,
    platforms: &[String],
) -> Option<Result<Vec<Digest>, ImageError>> {
    let entries = manifest["manifests"].as_array()?;
    Some(
        entries
            .iter()
            .filter(|e| platforms.is_empty() || platforms.contains(&platform_of(e)))
            .map(descriptor_digest)
            .collect(),
    )
}

/// The blobs an image manifest names (config, then layers), each once, with their sizes.
pub fn image_blobs(manifest: &Value) -> Result<Vec<(Digest, u64)>, ImageError> {
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    let layers = manifest["layers"].as_array().into_iter().flatten();
    for d in std::iter::once(&manifest["config"])
        .chain(layers)
        .filter(|d| !d["digest"].is_null())
    {
        let digest = descriptor_digest(d)?;
        if !blobs.iter().any(|(b, _)| *b == digest) {
            blobs.push((digest, d["size"].as_u64().unwrap_or(0)));
        }
    }
    Ok(blobs)
}

fn descriptor_digest(descriptor: &Value) -> Result<Digest, ImageError> {
    let text = descriptor["digest"].as_str().unwrap_or_default();
    text.parse()
        .map_err(|_| ImageError::Digest(text.chars().take(100).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_as_docker_pull_names_them() {
        let p = |s: &str| ImageRef::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p("library/nginx:1.27"),
            ImageRef {
                registry: None,
                repository: "library/nginx".into(),
                reference: "1.27".into()
            }
        );
        assert_eq!(p("nginx").reference, "latest");
        let ghcr = p("ghcr.io/org/app:v2");
        assert_eq!(
            (ghcr.registry.as_deref(), ghcr.repository.as_str()),
            (Some("ghcr.io"), "org/app")
        );
        let local = p("localhost:5000/team/app");
        assert_eq!(
            (local.registry.as_deref(), local.reference.as_str()),
            (Some("localhost:5000"), "latest")
        );
        let pinned = p("quay.io/a/b@sha256:00");
        assert_eq!(pinned.reference, "sha256:00");
        assert!(ImageRef::parse(":tag").is_err());
    }

    #[test]
    fn walks_indexes_by_platform_and_manifests_to_their_blobs() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({"manifests": [
            {"digest": d('a'), "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": d('b'), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]});
        let all = index_children(&index, &[])
            .and_then(Result::ok)
            .unwrap_or_default();
        assert_eq!(all.len(), 2);
        let arm = index_children(&index, &["linux/arm64/v8".into()])
            .and_then(Result::ok)
            .unwrap_or_default();
        assert_eq!(
            arm,
            vec![d('b').parse::<Digest>().unwrap_or_else(|e| panic!("{e}"))]
        );
        let image = serde_json::json!({
            "config": {"digest": d('c'), "size": 1},
            "layers": [{"digest": d('e'), "size": 5}, {"digest": d('e'), "size": 5}],
        });
        assert!(index_children(&image, &[]).is_none());
        let blobs = image_blobs(&image).unwrap_or_default();
        assert_eq!(blobs.iter().map(|b| b.1).collect::<Vec<_>>(), vec![1, 5]);
        let bad = serde_json::json!({"layers": [{"digest": "sha256:zz"}]});
        assert!(image_blobs(&bad).is_err());
    }
}
