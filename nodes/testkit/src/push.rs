//! Seeding a registry through the v2 push API, as `docker push` would.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use reqwest::StatusCode;

use crate::image::{Artifact, Blob, Image, Index, Manifest, referrers_index};
use crate::token::TokenIssuer;

#[derive(Clone)]
pub enum PushAuth {
    None,
    Basic { username: String, password: String },
    Token(Arc<TokenIssuer>),
}

pub struct Pusher {
    http: reqwest::Client,
    base: String,
    auth: PushAuth,
}

impl Pusher {
    pub fn new(base: &str, auth: PushAuth) -> Pusher {
        Pusher {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            auth,
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match &self.auth {
            PushAuth::None => request,
            PushAuth::Basic { username, password } => request.basic_auth(username, Some(password)),
            PushAuth::Token(issuer) => request.bearer_auth(issuer.mint(repo, &["pull", "push"])),
        }
    }

    pub async fn push_blob(&self, repo: &str, data: Bytes, digest: &str) -> anyhow::Result<()> {
        let start = self
            .authorize(
                self.http
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
                repo,
            )
            .send()
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("starting upload to {repo}: {}", start.status());
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("upload without Location")?;
        let location = if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .authorize(
                self.http
                    .put(format!("{location}{sep}digest={digest}"))
                    .header("content-type", "application/octet-stream")
                    .body(data),
                repo,
            )
            .send()
            .await?;
        if put.status() != StatusCode::CREATED {
            bail!(
                "finishing upload of {digest} to {repo}: {} {}",
                put.status(),
                put.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> anyhow::Result<()> {
        let response = self
            .authorize(
                self.http
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
                    .header("content-type", &manifest.media_type)
                    .body(manifest.body.clone()),
                repo,
            )
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "pushing manifest {repo}:{reference}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn push_blobs(&self, repo: &str, blobs: &[&Blob]) -> anyhow::Result<()> {
        for blob in blobs {
            self.push_blob(repo, blob.data.clone(), &blob.digest)
                .await?;
        }
        Ok(())
    }

    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) -> anyhow::Result<()> {
        self.push_blobs(repo, &image.blobs()).await?;
        self.push_manifest(repo, tag, &image.manifest).await
    }

    /// Push `artifacts` (signatures, SBOMs) referring to `subject`, and the referrers index
    /// under the fallback tag `sha256-<hex>`, as cosign and oras do for a registry without
    /// the referrers API.
    pub async fn push_referrers(
        &self,
        repo: &str,
        subject: &Manifest,
        artifacts: &[&Artifact],
    ) -> anyhow::Result<()> {
        for artifact in artifacts {
            self.push_blobs(repo, &artifact.blobs.iter().collect::<Vec<_>>())
                .await?;
            self.push_manifest(repo, &artifact.manifest.digest, &artifact.manifest)
                .await?;
        }
        let fallback = format!("sha256-{}", subject.digest.trim_start_matches("sha256:"));
        self.push_manifest(repo, &fallback, &referrers_index(artifacts))
            .await
    }

    pub async fn push_index(&self, repo: &str, tag: &str, index: &Index) -> anyhow::Result<()> {
        for image in &index.images {
            self.push_blobs(repo, &image.blobs()).await?;
            self.push_manifest(repo, &image.manifest.digest, &image.manifest)
                .await?;
        }
        self.push_manifest(repo, tag, &index.manifest).await
    }
}
