//! What a CDN or proxy cache in front of wharf sees: validators and lifetimes on every answer,
//! `304` for conditional requests, errors not stored.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName};

use crate::common::*;

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(HeaderName::from_bytes(name.as_bytes()).unwrap())
        .map_or("", |v| v.to_str().unwrap())
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// GET a manifest with every type accepted and the given extra headers.
async fn get_manifest(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
) -> reqwest::Response {
    let mut request = http.get(url).header("accept", ACCEPT_ALL);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn digests_are_immutable_tags_expire_with_their_ttl_and_validators_answer_304() {
    let (registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.cache.tag_ttl_secs = 30;
    let wharf = Wharf::start(config).await;
    let http = reqwest::Client::new();
    let layer = &seeds.oci.layers[0];
    let etag = format!("\"{}\"", layer.digest);

    // A blob: cold and warm answers carry the same validators.
    let blob = format!("{}/v2/test/oci/blobs/{}", wharf.url, layer.digest);
    for _ in 0..2 {
        let r = http.get(&blob).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        assert_eq!(header(&h, "etag"), etag);
        assert_eq!(header(&h, "cache-control"), IMMUTABLE);
        assert_eq!(header(&h, "accept-ranges"), "bytes");
        assert!(httpdate::parse_http_date(header(&h, "last-modified")).is_ok());
        assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
    }
    let upstream_gets = || registry.count_matching("GET", &layer.digest);
    let before = upstream_gets();
    let conditional = [
        ("if-none-match", etag.clone()),
        (
            "if-none-match",
            format!("\"sha256:{}\", W/{etag}", "0".repeat(64)),
        ),
        (
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT".to_string(),
        ),
    ];
    for (name, value) in &conditional {
        let r = http.get(&blob).header(*name, value).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{name}: {value}");
        assert_eq!(header(r.headers(), "etag"), etag);
        assert_eq!(header(r.headers(), "cache-control"), IMMUTABLE);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let other = format!("\"sha256:{}\"", "0".repeat(64));
    let r = http
        .get(&blob)
        .header("if-none-match", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
    // A 304 for a cold blob costs the upstream nothing either.
    let cold = &seeds.docker.layers[1];
    let r = http
        .get(format!(
            "{}/v2/test/docker/blobs/{}",
            wharf.url, cold.digest
        ))
        .header("if-none-match", format!("\"{}\"", cold.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(registry.count_matching("GET", &cold.digest), 0);
    assert_eq!(upstream_gets(), before);

    // A manifest by digest: immutable too, and varies with Accept.
    let manifest = &seeds.oci.manifest;
    let by_digest = format!("{}/v2/test/oci/manifests/{}", wharf.url, manifest.digest);
    let r = get_manifest(&http, &by_digest, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "cache-control"), IMMUTABLE);
    assert_eq!(header(r.headers(), "vary"), "Accept");
    assert_eq!(
        header(r.headers(), "etag"),
        format!("\"{}\"", manifest.digest)
    );
    let r = get_manifest(
        &http,
        &by_digest,
        &[("if-none-match", format!("\"{}\"", manifest.digest))],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(r.headers(), "docker-content-digest"),
        manifest.digest
    );

    // A tag: fresh for what is left of its TTL, revalidated by its digest.
    let by_tag = format!("{}/v2/test/oci/manifests/v1", wharf.url);
    let r = get_manifest(&http, &by_tag, &[]).await;
    let control = header(r.headers(), "cache-control").to_string();
    let max_age: u64 = control
        .strip_prefix("public, max-age=")
        .and_then(|rest| rest.strip_suffix(", stale-if-error=86400"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("tag cache-control: {control}"));
    assert!((25..=30).contains(&max_age), "{control}");
    assert_eq!(
        header(r.headers(), "etag"),
        format!("\"{}\"", manifest.digest)
    );
    let r = get_manifest(
        &http,
        &by_tag,
        &[("if-none-match", format!("\"{}\"", manifest.digest))],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // If-Modified-Since alone says nothing of a tag, which may have moved.
    let r = get_manifest(
        &http,
        &by_tag,
        &[(
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT".to_string(),
        )],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Errors are not stored.
    let r = http
        .get(format!("{}/v2/test/oci/manifests/nope", wharf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(r.headers(), "cache-control"), "no-store");
    let r = http
        .get(format!("{}/v2/test/oci/blobs/sha256:zz", wharf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(r.headers(), "cache-control"), "no-store");
}

#[tokio::test]
async fn not_found_answers_may_be_cached_briefly_when_configured() {
    let (registry, _seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.cache.not_found_max_age_secs = 7;
    let wharf = Wharf::start(config).await;
    let r = reqwest::get(format!("{}/v2/test/oci/manifests/nope", wharf.url))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(r.headers(), "cache-control"), "public, max-age=7");
}

/// Content requests wharf answered, by route and status, from its own metrics (route `other`,
/// which holds the scrapes themselves, left out).
async fn wharf_requests(wharf: &Wharf) -> std::collections::BTreeMap<(String, String), u64> {
    let text = reqwest::get(format!("{}/metrics", wharf.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("wharf_http_requests_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if label("route") == "other" {
            continue;
        }
        *out.entry((label("route"), label("code"))).or_default() += count as u64;
    }
    out
}

/// Pull `test/oci:v1` as a client does: the tag's manifest, then the config and layers.
async fn pull_through(http: &reqwest::Client, base: &str, seeds: &Seeds) {
    let r = http
        .get(format!("{base}/v2/test/oci/manifests/v1"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), seeds.oci.manifest.body);
    for blob in seeds.oci.blobs() {
        let r = http
            .get(format!("{base}/v2/test/oci/blobs/{}", blob.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
}

#[tokio::test]
async fn behind_nginx_proxy_cache_a_second_pull_costs_wharf_only_tag_revalidations() {
    let (registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.cache.tag_ttl_secs = 2;
    let wharf = Wharf::start(config).await;
    let nginx = wharf_testkit::nginx::NginxCache::start(&wharf.host())
        .await
        .unwrap();
    let http = reqwest::Client::new();

    pull_through(&http, &nginx.url(), &seeds).await;
    let first = wharf_requests(&wharf).await;
    let blob_gets = first.get(&("blob".to_string(), "200".to_string())).copied();
    assert_eq!(blob_gets, Some(3), "{first:?}");

    // Past the tag's max-age: nginx revalidates the tag, and serves the blobs itself. (Pulls
    // while nginx still holds the tag as fresh cost wharf nothing at all; on a loaded machine
    // it may take longer to expire, so pull until it has revalidated once.)
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let revalidated = |log: &[String]| {
        log.iter()
            .any(|l| l.contains("/manifests/v1 200 REVALIDATED"))
    };
    for attempt in 0..20 {
        pull_through(&http, &nginx.url(), &seeds).await;
        if revalidated(&nginx.access_log()) {
            eprintln!("nginx revalidated the tag on pull {}", attempt + 2);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let second = wharf_requests(&wharf).await;
    let added: Vec<_> = second
        .iter()
        .filter(|(k, v)| first.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v - first.get(k).copied().unwrap_or(0)))
        .collect();
    assert_eq!(
        added,
        vec![(("manifest".to_string(), "304".to_string()), 1)],
        "what the later pulls cost wharf; nginx: {:?}",
        nginx.access_log()
    );
    let log = nginx.access_log();
    assert!(
        log.iter()
            .any(|l| l.contains("/manifests/v1 200 REVALIDATED")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.contains("/blobs/"))
            .skip(3)
            .all(|l| l.ends_with("HIT")),
        "{log:?}"
    );

    // A client's own conditional request is answered by nginx from its cache.
    let layer = &seeds.oci.layers[0];
    let r = http
        .get(format!(
            "{}/v2/test/oci/blobs/{}",
            nginx.url(),
            layer.digest
        ))
        .header("if-none-match", format!("\"{}\"", layer.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(wharf_requests(&wharf).await, second);
}
