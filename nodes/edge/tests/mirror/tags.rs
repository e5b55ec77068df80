//! Tags: served from cache within the TTL, revalidated with coalesced HEADs after it, and
//! moved when the upstream moves them.

use std::time::Duration;

use reqwest::StatusCode;
use wharf_testkit::image::{Format, image};
use wharf_testkit::push::{PushAuth, Pusher};

use crate::common::*;

async fn digest_of(http: &reqwest::Client, url: &str) -> String {
    let r = http
        .get(url)
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

/// `n` concurrent GETs of `url`; each must name `expected` as its digest.
async fn all_concurrently(http: &reqwest::Client, url: &str, n: usize, expected: &str) {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move { digest_of(&http, &url).await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), expected);
    }
}

#[tokio::test]
async fn tags_within_ttl_never_reach_the_upstream() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await; // default TTL: 60 s
    let http = reqwest::Client::new();
    let url = format!("{}/v2/test/oci/manifests/v1", wharf.url);
    assert_eq!(digest_of(&http, &url).await, seeds.oci.manifest.digest);
    let before = registry.count_matching("", "/v2/test/oci/manifests/");
    all_concurrently(&http, &url, 200, &seeds.oci.manifest.digest).await;
    assert_eq!(
        registry.count_matching("", "/v2/test/oci/manifests/"),
        before
    );
}

#[tokio::test]
async fn concurrent_revalidations_are_coalesced_and_follow_the_upstream() {
    let (registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.cache.tag_ttl_secs = 1;
    let wharf = Wharf::start(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v2/test/oci/manifests/v1", wharf.url);
    assert_eq!(digest_of(&http, &url).await, seeds.oci.manifest.digest);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // 32 concurrent requests after the TTL: one revalidation (a HEAD) reaches the upstream.
    let heads_before = registry.count_matching("HEAD", "/v2/test/oci/manifests/v1");
    let gets_before = registry.count_matching("GET", "/v2/test/oci/manifests/v1");
    all_concurrently(&http, &url, 32, &seeds.oci.manifest.digest).await;
    let heads = registry.count_matching("HEAD", "/v2/test/oci/manifests/v1") - heads_before;
    let gets = registry.count_matching("GET", "/v2/test/oci/manifests/v1") - gets_before;
    assert_eq!((heads, gets), (1, 0), "one coalesced HEAD, no GET");

    // The upstream moves the tag: after the TTL wharf serves the new manifest.
    let moved = image(Format::Oci, "moved", "amd64", 1);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_image("test/oci", "v1", &moved)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(digest_of(&http, &url).await, moved.manifest.digest);
}
