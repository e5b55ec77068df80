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

async fn tag_page(wharf: &Wharf, path: &str) -> (Vec<String>, Option<String>) {
    let r = reqwest::get(format!("{}{path}", wharf.url)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let link = r
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    let body: serde_json::Value = r.json().await.unwrap();
    let tags = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    (tags, link)
}

/// The `/v2/...` target of a `Link: <...>; rel="next"` header.
fn link_target(link: &str) -> String {
    link.split_once('<')
        .unwrap()
        .1
        .split_once('>')
        .unwrap()
        .0
        .to_string()
}

#[tokio::test]
async fn tag_lists_are_sorted_and_paginated_by_wharf() {
    let (registry, seeds) = seeded_registry().await;
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    for tag in ["v3", "v10", "latest", "v2"] {
        pusher
            .push_manifest("test/oci", tag, &seeds.oci.manifest)
            .await
            .unwrap();
    }
    let wharf = Wharf::start(test_config(vec![upstream(
        "docker.io",
        &registry.url(),
        true,
    )]))
    .await;
    let all = ["latest", "v1", "v10", "v2", "v3"];
    let (tags, link) = tag_page(&wharf, "/v2/test/oci/tags/list").await;
    assert_eq!(tags, all, "sorted lexically");
    assert_eq!(link, None);

    // Page by page through the Link header, as clients do.
    let (tags, link) = tag_page(&wharf, "/v2/test/oci/tags/list?n=2").await;
    assert_eq!(tags, ["latest", "v1"]);
    let link = link.expect("more remain");
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    assert_eq!(link_target(&link), "/v2/test/oci/tags/list?n=2&last=v1");
    let (tags, link) = tag_page(&wharf, &link_target(&link.clone())).await;
    assert_eq!(tags, ["v10", "v2"]);
    let (tags, link) = tag_page(&wharf, &link_target(&link.unwrap())).await;
    assert_eq!(tags, ["v3"]);
    assert_eq!(link, None, "the last page has no next");

    // Edge cases.
    assert_eq!(
        tag_page(&wharf, "/v2/test/oci/tags/list?n=0").await,
        (vec![], None)
    );
    assert_eq!(
        tag_page(&wharf, "/v2/test/oci/tags/list?last=zzz").await,
        (vec![], None)
    );
    assert_eq!(
        tag_page(&wharf, "/v2/test/oci/tags/list?n=100").await.0,
        all
    );
    assert_eq!(
        tag_page(&wharf, "/v2/test/oci/tags/list?n=2&last=v10")
            .await
            .0,
        ["v2", "v3"]
    );
    // containerd's ns= is kept in the next link.
    let (_, link) = tag_page(&wharf, "/v2/test/oci/tags/list?n=1&ns=docker.io").await;
    assert_eq!(
        link_target(&link.unwrap()),
        "/v2/test/oci/tags/list?n=1&last=latest&ns=docker.io"
    );
    // One upstream request served all of it (the list is cached whole).
    assert_eq!(registry.count_matching("GET", "/v2/test/oci/tags/list"), 1);
}

#[tokio::test]
async fn an_upstream_that_paginates_is_followed_to_the_end() {
    // Two tags a page, with Link headers, like registries with a page size.
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let all = ["e", "d", "c", "b", "a"];
        let last = uri
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("last=")))
            .unwrap_or("");
        let rest: Vec<&str> = {
            let mut sorted = all.to_vec();
            sorted.sort_unstable();
            sorted.into_iter().filter(|t| *t > last).collect()
        };
        let page: Vec<&str> = rest.iter().take(2).copied().collect();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        if rest.len() > 2 {
            let link = format!(
                "</v2/team/app/tags/list?n=2&last={}>; rel=\"next\"",
                page[1]
            );
            headers.insert("link", link.parse().unwrap());
        }
        (
            headers,
            serde_json::json!({"name": "team/app", "tags": page}).to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let wharf = Wharf::start(test_config(vec![upstream("paged", &url, true)])).await;
    let (tags, link) = tag_page(&wharf, "/v2/team/app/tags/list").await;
    assert_eq!(tags, ["a", "b", "c", "d", "e"]);
    assert_eq!(link, None);
}

#[tokio::test]
async fn the_catalog_lists_repositories_with_a_cached_tag_when_enabled() {
    let (registry, _seeds) = seeded_registry().await;
    let off = Wharf::mirroring(&registry).await;
    let r = reqwest::get(format!("{}/v2/_catalog", off.url))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "off by default");
    assert_eq!(error_code(r).await, "UNSUPPORTED");

    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.catalog.enabled = true;
    let wharf = Wharf::start(config).await;
    let catalog = |query: &str| {
        let url = format!("{}/v2/_catalog{query}", wharf.url);
        async move {
            let r = reqwest::get(url).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let link = r
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = r.json().await.unwrap();
            (body["repositories"].clone(), link)
        }
    };
    assert_eq!(
        catalog("").await.0,
        serde_json::json!([]),
        "nothing cached yet"
    );
    let http = reqwest::Client::new();
    for repo in ["test/oci", "test/docker", "library/hello"] {
        let r = http
            .get(format!(
                "{}/v2/{repo}/manifests/{}",
                wharf.url,
                if repo == "library/hello" {
                    "latest"
                } else {
                    "v1"
                }
            ))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // The tag records are in the store once written (they may trail the responses).
    let records = [
        "test/oci/_tag/v1",
        "test/docker/_tag/v1",
        "library/hello/_tag/latest",
    ]
    .map(|r| wharf.data_dir.path().join("tags/docker.io").join(r));
    assert!(
        wharf_testkit::wait_until(Duration::from_secs(10), || {
            let all = records.iter().all(|p| p.exists());
            async move { all }
        })
        .await,
        "tag records under {}",
        wharf.data_dir.path().display()
    );
    // A fresh listing (the first one is kept for 30 s): another node on the same store.
    let again = Wharf::start_with(
        {
            let mut c = test_config(vec![upstream("docker.io", &registry.url(), true)]);
            c.catalog.enabled = true;
            c
        },
        Some(std::sync::Arc::new(
            wharf_storage::fs::FsStore::open(wharf.data_dir.path())
                .await
                .unwrap(),
        )),
    )
    .await;
    let r = reqwest::get(format!("{}/v2/_catalog?n=2", again.url))
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["repositories"],
        serde_json::json!(["library/hello", "test/docker"])
    );
    assert_eq!(link, "</v2/_catalog?n=2&last=test%2Fdocker>; rel=\"next\"");
    let r = reqwest::get(format!("{}/v2/_catalog?n=2&last=test%2Fdocker", again.url))
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["test/oci"]));
    let r = reqwest::get(format!("{}/v2/_catalog?ns=quay.io", again.url))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "an upstream not configured"
    );
}
