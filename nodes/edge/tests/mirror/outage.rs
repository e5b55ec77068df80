//! The upstream goes away: cached content keeps being served, uncached content gets a clear
//! 502/503/504 with an OCI error body (distribution answers 404 and 500 here).

use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn cached_content_survives_an_upstream_outage() {
    let (mut registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.cache.tag_ttl_secs = 0; // every tag request wants revalidation
    config.cache.tags_list_ttl_secs = 0;
    let wharf = Wharf::start(config).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http
            .get(format!("{}{path}", wharf.url))
            .header("accept", ACCEPT_ALL)
            .send();
        async move { request.await.unwrap() }
    };
    // Warm the cache with one image: tag, manifest, blobs, tag list.
    assert_eq!(
        get("/v2/test/docker/manifests/v1".into()).await.status(),
        StatusCode::OK
    );
    for blob in seeds.docker.blobs() {
        let r = get(format!("/v2/test/docker/blobs/{}", blob.digest)).await;
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
    assert_eq!(
        get("/v2/test/docker/tags/list".into()).await.status(),
        StatusCode::OK
    );

    registry.stop();

    let by_tag = get("/v2/test/docker/manifests/v1".into()).await;
    assert_eq!(by_tag.status(), StatusCode::OK, "stale tag served");
    assert_eq!(by_tag.bytes().await.unwrap(), seeds.docker.manifest.body);
    let by_digest = get(format!(
        "/v2/test/docker/manifests/{}",
        seeds.docker.manifest.digest
    ))
    .await;
    assert_eq!(by_digest.status(), StatusCode::OK);
    for blob in seeds.docker.blobs() {
        let r = get(format!("/v2/test/docker/blobs/{}", blob.digest)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
    let tags = get("/v2/test/docker/tags/list".into()).await;
    assert_eq!(tags.status(), StatusCode::OK, "stale tag list served");

    // Uncached content: a gateway error that says the upstream is unreachable.
    for path in [
        "/v2/test/oci/manifests/v1".to_string(),
        format!("/v2/test/oci/blobs/{}", seeds.oci.layers[0].digest),
        format!("/v2/test/oci/manifests/{}", seeds.oci.manifest.digest),
    ] {
        let r = get(path.clone()).await;
        assert!(
            [
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT
            ]
            .contains(&r.status()),
            "{path}: {}",
            r.status()
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{path}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("unreachable"),
            "{body}"
        );
    }
    assert!(
        wharf
            .mirror
            .stats
            .stale_tags_served
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // The upstream is back: revalidation resumes and uncached content flows again.
    registry.restart().await.unwrap();
    assert_eq!(
        get("/v2/test/oci/manifests/v1".into()).await.status(),
        StatusCode::OK
    );
}
