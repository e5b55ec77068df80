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
use wharf_core::image::{ImageRef, image_blobs, index_children};
use wharf_core::{Digest, DigestHasher, media};

/// Manifests larger than this are refused (as the node refuses them).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Blobs of one image downloaded at once.
const PARALLEL_BLOBS: usize = 4;

/// `?ns=` selecting the node's upstream of the image's registry.
trait RegistryQuery {
    fn query(&self) -> String;
}

impl RegistryQuery for ImageRef {
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
        let platforms: Vec<String> = platform.map(str::to_string).into_iter().collect();
        let manifests = match index_children(&top, &platforms) {
            Some(children) => {
                let mut chosen = Vec::new();
                for digest in children? {
                    chosen.push(self.manifest(&image, &digest.to_string()).await?);
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
            for blob in image_blobs(m)? {
                if !blobs.iter().any(|(b, _)| *b == blob.0) {
                    blobs.push(blob);
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
