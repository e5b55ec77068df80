//! The OCI distribution-spec conformance suite's pull, content-discovery and referrers checks
//! (v1.1.x: `02_pull_test.go`, `03_discovery_test.go`), reproduced request by request against
//! wharf whose upstream is distribution 2.8.2, which has no referrers API and ignores `n` and
//! `last` on tag lists: wharf must answer as a conformant registry regardless.

use reqwest::StatusCode;
use wharf_testkit::image::Artifact;
use wharf_testkit::push::{PushAuth, Pusher};

use crate::common::*;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test]
async fn pull_discovery_and_referrers_checks_of_the_conformance_suite() {
    let (registry, seeds) = seeded_registry().await;
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    let manifest = &seeds.oci.manifest;
    // Five tags, pushed out of order.
    for tag in ["t3", "t1", "t5", "t2", "t4"] {
        pusher
            .push_manifest("test/oci", tag, manifest)
            .await
            .unwrap();
    }
    let a = Artifact::new(
        manifest,
        "application/vnd.test.a",
        b"a",
        "application/vnd.test.a",
    );
    let b = Artifact::new(
        manifest,
        "application/vnd.test.b",
        b"b",
        "application/vnd.test.b",
    );
    pusher
        .push_referrers("test/oci", manifest, &[&a, &b])
        .await
        .unwrap();
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}/v2/test/oci{path}", wharf.url);
    let missing_digest = format!("sha256:{}", "1".repeat(64));
    let layer = &seeds.oci.layers[0];

    // -- Pull --
    let r = http.get(format!("{}/v2/", wharf.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET /v2/");
    let r = http
        .head(url(&format!("/blobs/{missing_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD nonexistent blob");
    let r = http
        .head(url(&format!("/blobs/{}", layer.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "HEAD existing blob");
    assert_eq!(r.headers()["docker-content-digest"], layer.digest.as_str());
    assert_eq!(
        r.headers()["content-length"],
        layer.data.len().to_string().as_str()
    );
    let r = http
        .get(url(&format!("/blobs/{missing_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET nonexistent blob");
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = http
        .get(url(&format!("/blobs/{}", layer.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET existing blob");
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);

    let manifest_request = |method: reqwest::Method, reference: &str| {
        http.request(method, url(&format!("/manifests/{reference}")))
            .header("accept", ACCEPT_ALL)
    };
    let r = manifest_request(reqwest::Method::HEAD, &missing_digest)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "HEAD nonexistent manifest"
    );
    for reference in [manifest.digest.as_str(), "t1"] {
        let r = manifest_request(reqwest::Method::HEAD, reference)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "HEAD manifest {reference}");
        assert_eq!(
            r.headers()["docker-content-digest"],
            manifest.digest.as_str()
        );
        let r = manifest_request(reqwest::Method::GET, reference)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET manifest {reference}");
        assert_eq!(r.headers()["content-type"], manifest.media_type.as_str());
        assert_eq!(r.bytes().await.unwrap(), manifest.body);
    }
    let r = manifest_request(reqwest::Method::GET, &missing_digest)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "GET nonexistent manifest"
    );
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = manifest_request(reqwest::Method::GET, "nonexistent-tag")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET nonexistent tag");
    // An invalid tag: no manifest can have it (v1.1.1 expects 404 MANIFEST_UNKNOWN).
    let r = manifest_request(reqwest::Method::GET, ".invalid-tag")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET invalid tag");
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // -- Content discovery: tags, whatever the upstream does with n and last --
    let tags = |query: &str| {
        let request = http.get(url(&format!("/tags/list{query}")));
        let query = query.to_string();
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "tags/list{query}");
            let link = r
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["name"], "test/oci");
            let tags: Vec<String> = body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (tags, link)
        }
    };
    let (all, link) = tags("").await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "tags sorted lexically");
    assert!(link.is_none());
    let n = 3;
    let (first, link) = tags(&format!("?n={n}")).await;
    assert_eq!(first, all[..n].to_vec(), "limited by n");
    assert!(link.is_some_and(|l| l.contains("rel=\"next\"")));
    let (rest, _) = tags(&format!("?n={n}&last={}", first[n - 1])).await;
    assert_eq!(
        rest,
        all[n..(2 * n).min(all.len())].to_vec(),
        "started after last"
    );
    let (none, _) = tags("?n=0").await;
    assert!(none.is_empty(), "n=0");
    let (beyond, link) = tags("?last=zzzz").await;
    assert!(beyond.is_empty() && link.is_none(), "last beyond the end");
    let (everything, link) = tags("?n=10000").await;
    assert_eq!(everything, all, "n larger than the list");
    assert!(link.is_none());

    // -- Referrers --
    let referrers = |query: &str, subject: &str| {
        let request = http.get(url(&format!("/referrers/{subject}{query}")));
        let query = query.to_string();
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "referrers{query}");
            assert_eq!(r.headers()["content-type"], INDEX);
            let filtered = r.headers().get("oci-filters-applied").cloned();
            let body: serde_json::Value = r.json().await.unwrap();
            let artifact_types: Vec<String> = body["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["artifactType"].as_str().unwrap_or_default().to_string())
                .collect();
            (artifact_types, filtered)
        }
    };
    let (found, filtered) = referrers("", &manifest.digest).await;
    assert_eq!(
        found,
        vec!["application/vnd.test.a", "application/vnd.test.b"]
    );
    assert!(filtered.is_none());
    let (found, filtered) =
        referrers("?artifactType=application/vnd.test.b", &manifest.digest).await;
    assert_eq!(found, vec!["application/vnd.test.b"]);
    assert_eq!(filtered.unwrap(), "artifactType");
    let (found, _) = referrers("", &missing_digest).await;
    assert!(found.is_empty(), "no referrers: an empty index, not a 404");
}
