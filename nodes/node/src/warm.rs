//! `wharf warm --node URL IMAGE...`: fill a running node's cache before a rollout or in CI.
//! It pulls each image through the node like a client would (manifests, then every blob of
//! every platform, or of `--platform`), discarding the bytes after checking their digests: the
//! node fetches each blob from its upstream once (shared with clients asking at the same
//! time) and stores it. Images are named as `docker pull` names them; a registry host selects
//! the node's upstream of that name through `?ns=`, no host means the node's default upstream.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;
use wharf_core::{Digest, DigestHasher, media};

/// Manifests larger than this are refused (as the node refuses them).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Blobs of one image downloaded at once.
const PARALLEL_BLOBS: usize = 4;

/// An image as `docker pull` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, when the name has one (`ghcr.io`, `localhost:5000`).
    pub registry: Option<String>,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl ImageRef {
    pub fn parse(name: &str) -> anyhow::Result<ImageRef> {
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
            bail!("{name:?} is no image name");
        }
        Ok(ImageRef {
            registry,
            repository,
            reference,
        })
    }

    fn query(&self) -> String {
        self.registry
            .as_ref()
            .map(|r| format!("?ns={r}"))
            .unwrap_or_default()
    }
}

struct Warmer {
    http: reqwest::Client,
    node: String,
    authorization: Option<String>,
}

/// Warm every image; true when all of them are cached.
pub async fn warm(
    node: &str,
    images: &[String],
    platform: Option<&str>,
    user: Option<&str>,
) -> anyhow::Result<bool> {
    let authorization = match user {
        Some(user) => {
            use base64::Engine;
            let password = std::env::var("WHARF_WARM_PASSWORD")
                .context("--user needs the password in WHARF_WARM_PASSWORD")?;
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ))
        }
        None => None,
    };
    let warmer = Warmer {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .context("building the HTTP client")?,
        node: node.trim_end_matches('/').to_string(),
        authorization,
    };
    let mut all = true;
    for name in images {
        match warmer.image(name, platform).await {
            Ok(bytes) => println!("{name}: cached ({})", human(bytes)),
            Err(e) => {
                println!("{name}: FAILED: {e:#}");
                all = false;
            }
        }
    }
    Ok(all)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `os/arch[/variant]` of an index entry.
fn platform_of(descriptor: &Value) -> String {
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

impl Warmer {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.node));
        match &self.authorization {
            Some(auth) => request.header(reqwest::header::AUTHORIZATION, auth),
            None => request,
        }
    }

    async fn manifest(&self, image: &ImageRef, reference: &str) -> anyhow::Result<Value> {
        let path = format!(
            "/v2/{}/manifests/{reference}{}",
            image.repository,
            image.query()
        );
        let mut response = self
            .get(&path)
            .header(reqwest::header::ACCEPT, media::upstream_accept_header())
            .send()
            .await
            .with_context(|| format!("{} did not answer", self.node))?;
        if !response.status().is_success() {
            bail!(
                "manifest {reference}: the node answered {}",
                response.status()
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_MANIFEST {
                bail!("manifest {reference} is larger than {MAX_MANIFEST} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).with_context(|| format!("manifest {reference} is not JSON"))
    }

    /// Pull `name` through the node; the bytes of the blobs fetched.
    async fn image(&self, name: &str, platform: Option<&str>) -> anyhow::Result<u64> {
        let image = ImageRef::parse(name)?;
        let top = self.manifest(&image, &image.reference).await?;
        let manifests = match top["manifests"].as_array() {
            Some(entries) => {
                let mut chosen = Vec::new();
                for entry in entries {
                    if platform.is_some_and(|p| platform_of(entry) != p) {
                        continue;
                    }
                    let digest = entry["digest"]
                        .as_str()
                        .context("an index entry without digest")?;
                    chosen.push(self.manifest(&image, digest).await?);
                }
                if chosen.is_empty() {
                    bail!("no manifest for platform {}", platform.unwrap_or("any"));
                }
                chosen
            }
            None => vec![top],
        };
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for m in &manifests {
            for d in
                std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten())
            {
                let Some(digest) = d["digest"].as_str() else {
                    continue;
                };
                let digest: Digest = digest
                    .parse()
                    .with_context(|| format!("blob digest {digest:?}"))?;
                if !blobs.iter().any(|(b, _)| *b == digest) {
                    blobs.push((digest, d["size"].as_u64().unwrap_or(0)));
                }
            }
        }
        let total: u64 = blobs.iter().map(|b| b.1).sum();
        println!(
            "{name}: {} manifest(s), {} blobs, {}",
            manifests.len(),
            blobs.len(),
            human(total)
        );
        let mut done = 0u64;
        let mut results =
            futures::stream::iter(blobs.iter().map(|(digest, _)| self.blob(&image, digest)))
                .buffer_unordered(PARALLEL_BLOBS);
        while let Some(result) = results.next().await {
            done = done.saturating_add(result?);
            println!("{name}: {} of {}", human(done), human(total));
        }
        Ok(done)
    }

    /// Stream one blob through the node and check its digest; its length.
    async fn blob(&self, image: &ImageRef, digest: &Digest) -> anyhow::Result<u64> {
        let path = format!("/v2/{}/blobs/{digest}{}", image.repository, image.query());
        let mut response = self
            .get(&path)
            .send()
            .await
            .with_context(|| format!("{} did not answer", self.node))?;
        if !response.status().is_success() {
            bail!("blob {digest}: the node answered {}", response.status());
        }
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut len = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("blob {digest}"))?
        {
            hasher.update(&chunk);
            len = len.saturating_add(chunk.len() as u64);
        }
        if hasher.finish() != *digest {
            bail!("blob {digest}: the bytes do not match their digest");
        }
        Ok(len)
    }
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
}
