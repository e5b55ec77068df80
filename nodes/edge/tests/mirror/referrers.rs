//! OCI 1.1 referrers through wharf: from an upstream without the referrers API (distribution
//! 2.8.2, the fallback tag) and from one with it; the `artifactType` filter; the referrer
//! manifests and their blobs pulled through by digest; cached referrers served while the
//! upstream is down.

use std::time::Duration;

use reqwest::StatusCode;
use wharf_testkit::image::Artifact;
use wharf_testkit::push::{PushAuth, Pusher};

use crate::common::*;

const SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

async fn referrers(wharf: &Wharf, path: &str) -> (StatusCode, Option<String>, serde_json::Value) {
    let r = reqwest::get(format!("{}{path}", wharf.url)).await.unwrap();
    let status = r.status();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json",
        "{path}"
    );
    let filters = r
        .headers()
        .get("oci-filters-applied")
        .map(|v| v.to_str().unwrap().to_string());
    (status, filters, r.json().await.unwrap())
}

fn digests(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn referrers_from_the_fallback_tag_filtered_pulled_through_and_served_in_an_outage() {
    let (mut registry, seeds) = seeded_registry().await;
    let subject = &seeds.oci.manifest;
    let signature = Artifact::new(
        subject,
        SIGNATURE,
        b"{\"critical\":{}}",
        "application/vnd.dev.cosign.simplesigning.v1+json",
    );
    let sbom = Artifact::new(subject, SBOM, b"{\"spdxVersion\":\"SPDX-2.3\"}", SBOM);
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    pusher
        .push_referrers("test/oci", subject, &[&signature, &sbom])
        .await
        .unwrap();
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.cache.tag_ttl_secs = 1;
    let wharf = Wharf::start(config).await;
    let path = format!("/v2/test/oci/referrers/{}", subject.digest);

    let (status, filters, index) = referrers(&wharf, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(filters, None);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        digests(&index),
        vec![
            signature.manifest.digest.clone(),
            sbom.manifest.digest.clone()
        ]
    );
    assert_eq!(index["manifests"][0]["artifactType"], SIGNATURE);
    assert_eq!(
        index["manifests"][1]["annotations"]["org.opencontainers.image.created"],
        "2026-12-03T00:00:00Z"
    );

    let (status, filters, index) = referrers(
        &wharf,
        &format!("{path}?artifactType={}", SBOM.replace('+', "%2B")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(digests(&index), vec![sbom.manifest.digest.clone()]);

    // The referrers themselves: manifests and blobs by digest, like any content.
    let http = reqwest::Client::new();
    for artifact in [&signature, &sbom] {
        let r = http
            .get(format!(
                "{}/v2/test/oci/manifests/{}",
                wharf.url, artifact.manifest.digest
            ))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), artifact.manifest.body);
        for blob in &artifact.blobs {
            let r = http
                .get(format!("{}/v2/test/oci/blobs/{}", wharf.url, blob.digest))
                .send()
                .await
                .unwrap();
            assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
        }
    }

    // A subject nobody refers to: an empty index, not a 404.
    let (status, _, index) = referrers(
        &wharf,
        &format!("/v2/test/docker/referrers/{}", seeds.docker.manifest.digest),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(digests(&index).is_empty());

    // The upstream goes down: the expired answer is served from the cache.
    registry.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, index) = referrers(&wharf, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(digests(&index).len(), 2);
    let r = reqwest::get(format!(
        "{}/v2/test/oci/referrers/sha256:{}",
        wharf.url,
        "0".repeat(64)
    ))
    .await
    .unwrap();
    assert!(
        r.status().is_server_error(),
        "uncached, upstream down: {}",
        r.status()
    );

    // A malformed digest is the client's mistake.
    let r = reqwest::get(format!("{}/v2/test/oci/referrers/sha256:12", wharf.url))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn referrers_from_an_upstream_with_the_referrers_api() {
    // An upstream that has the API: it answers an index for one subject, 404 elsewhere.
    let subject = format!("sha256:{}", "ab".repeat(32));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 10,
             "digest": format!("sha256:{}", "01".repeat(32)), "artifactType": SIGNATURE},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 11,
             "digest": format!("sha256:{}", "02".repeat(32)), "artifactType": SBOM},
        ],
    })
    .to_string();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (subject, asked) = (subject.clone(), asked.clone());
        axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (subject, index, asked) = (subject.clone(), index.clone(), asked.clone());
            async move {
                if uri.path() == format!("/v2/team/app/referrers/{subject}") {
                    asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (
                        StatusCode::OK,
                        [("content-type", "application/vnd.oci.image.index.v1+json")],
                        index,
                    )
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        [("content-type", "application/json")],
                        r#"{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}"#.to_string(),
                    )
                }
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let wharf = Wharf::start(test_config(vec![upstream("registry.example", &url, true)])).await;

    let path = format!("/v2/team/app/referrers/{subject}");
    let (status, _, all) = referrers(&wharf, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(digests(&all).len(), 2);
    let (_, filters, signatures) =
        referrers(&wharf, &format!("{path}?artifactType={SIGNATURE}")).await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(
        digests(&signatures),
        vec![format!("sha256:{}", "01".repeat(32))]
    );
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the filter is applied by wharf to the one cached answer"
    );
}
