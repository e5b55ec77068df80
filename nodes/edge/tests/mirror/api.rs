//! The v2 API surface: endpoints, manifest types and negotiation, errors for bad input.

use reqwest::StatusCode;
use wharf_testkit::image::Manifest;

use crate::common::*;

#[tokio::test]
async fn base_endpoint_and_client_mistakes() {
    let (registry, _seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();

    let base = http.get(format!("{}/v2/", wharf.url)).send().await.unwrap();
    assert_eq!(base.status(), StatusCode::OK);
    assert_eq!(
        base.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let digest0 = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(reqwest::Method, String, StatusCode, &str)> = vec![
        (
            reqwest::Method::GET,
            "/v2/Bad/Name/manifests/v1".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/oci/manifests/sha256:abc".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/oci/blobs/md5:abc".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/oci/manifests/-bad".into(),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/oci/manifests/nope".into(),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            reqwest::Method::GET,
            format!("/v2/test/oci/manifests/{digest0}"),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            reqwest::Method::GET,
            format!("/v2/test/oci/blobs/{digest0}"),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/absent/tags/list".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            reqwest::Method::POST,
            "/v2/test/oci/blobs/uploads/".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            reqwest::Method::PATCH,
            "/v2/test/oci/blobs/uploads/abc".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            reqwest::Method::PUT,
            "/v2/test/oci/manifests/v2".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            reqwest::Method::DELETE,
            format!("/v2/test/oci/blobs/{digest0}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            reqwest::Method::GET,
            "/v2/_catalog".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/oci/something".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            reqwest::Method::GET,
            "/v2/test/oci/manifests/v1?ns=elsewhere.example".into(),
            StatusCode::FORBIDDEN,
            "DENIED",
        ),
        (
            reqwest::Method::GET,
            "/nope".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
    ];
    for (method, path, status, code) in cases {
        let response = http
            .request(method.clone(), format!("{}{path}", wharf.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(error_code(response).await, code, "{method} {path}");
    }
}

#[tokio::test]
async fn every_manifest_kind_is_served_byte_for_byte() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();
    let mut cases: Vec<(&str, &Manifest)> = vec![
        ("test/docker", &seeds.docker.manifest),
        ("test/oci", &seeds.oci.manifest),
        ("test/oci-index", &seeds.oci_index.manifest),
        ("test/docker-list", &seeds.docker_list.manifest),
    ];
    for (repo, manifest) in &cases {
        for round in 0..2 {
            let response = http
                .get(format!("{}/v2/{repo}/manifests/v1", wharf.url))
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{repo} round {round}");
            let h = response.headers().clone();
            assert_eq!(h["content-type"], manifest.media_type.as_str());
            assert_eq!(h["docker-content-digest"], manifest.digest.as_str());
            assert_eq!(h["etag"], format!("\"{}\"", manifest.digest).as_str());
            assert_eq!(
                h["content-length"],
                manifest.body.len().to_string().as_str()
            );
            assert_eq!(response.bytes().await.unwrap(), manifest.body);

            let head = http
                .head(format!("{}/v2/{repo}/manifests/v1", wharf.url))
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), StatusCode::OK);
            assert_eq!(
                head.headers()["docker-content-digest"],
                manifest.digest.as_str()
            );
            assert_eq!(
                head.headers()["content-length"],
                manifest.body.len().to_string().as_str()
            );
        }
    }
    // Child manifests of the indexes, by digest.
    let children: Vec<(&str, &Manifest)> = seeds
        .oci_index
        .images
        .iter()
        .map(|i| ("test/oci-index", &i.manifest))
        .chain(
            seeds
                .docker_list
                .images
                .iter()
                .map(|i| ("test/docker-list", &i.manifest)),
        )
        .collect();
    cases.extend(children.iter().copied());
    for (repo, manifest) in &cases {
        let response = http
            .get(format!(
                "{}/v2/{repo}/manifests/{}",
                wharf.url, manifest.digest
            ))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{repo}@{}",
            manifest.digest
        );
        assert_eq!(
            response.headers()["content-type"],
            manifest.media_type.as_str()
        );
        assert_eq!(response.bytes().await.unwrap(), manifest.body);
    }
}

#[tokio::test]
async fn accept_header_is_honoured() {
    let (registry, _seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();
    // A client that lists only single-image manifest types gets no index.
    let response = http
        .get(format!("{}/v2/test/oci-index/manifests/v1", wharf.url))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "MANIFEST_UNKNOWN");
    // No Accept at all, or */*, gets whatever the tag is.
    for accept in [None, Some("*/*")] {
        let mut request = http.get(format!("{}/v2/test/oci-index/manifests/v1", wharf.url));
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn blob_ranges_cold_and_warm() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();
    let layer = &seeds.oci.layers[0];
    let url = format!("{}/v2/test/oci/blobs/{}", wharf.url, layer.digest);
    let size = layer.data.len() as u64;
    for round in ["cold", "warm"] {
        let response = http
            .get(&url)
            .header("range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{round}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes 10-19/{size}").as_str()
        );
        assert_eq!(response.bytes().await.unwrap(), layer.data.slice(10..20));

        let response = http
            .get(&url)
            .header("range", "bytes=-5")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            response.bytes().await.unwrap(),
            layer.data.slice(size as usize - 5..)
        );

        let response = http
            .get(&url)
            .header("range", format!("bytes={size}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{round}"
        );
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes */{size}").as_str()
        );
        assert_eq!(error_code(response).await, "RANGE_INVALID");
    }
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], size.to_string().as_str());
    assert_eq!(
        head.headers()["docker-content-digest"],
        layer.digest.as_str()
    );
    let full = http.get(&url).send().await.unwrap();
    assert_eq!(full.bytes().await.unwrap(), layer.data);
    // The one cold range request fetched the blob once; everything else was served from cache.
    let stats = &wharf.mirror.stats;
    assert_eq!(
        registry.count_requests("GET", &format!("/v2/test/oci/blobs/{}", layer.digest)),
        1,
        "downloads {}, range resumes {}; upstream log: {:?}",
        wharf_mirror::stats::Stats::get(&stats.upstream_blob_fetches),
        wharf_mirror::stats::Stats::get(&stats.upstream_resumes),
        registry.access_log(),
    );
}

#[tokio::test]
async fn containerd_ns_routes_to_configured_upstreams_only() {
    let (a, seeds_a) = seeded_registry().await;
    let b = wharf_testkit::registry::Registry::start(Default::default())
        .await
        .unwrap();
    let only_b =
        wharf_testkit::image::image(wharf_testkit::image::Format::Oci, "only-b", "amd64", 1);
    wharf_testkit::push::Pusher::new(&b.url(), wharf_testkit::push::PushAuth::None)
        .push_image("test/oci", "v1", &only_b)
        .await
        .unwrap();
    let wharf = Wharf::start(test_config(vec![
        upstream("registry-a.example", &a.url(), true),
        upstream("registry-b.example", &b.url(), false),
    ]))
    .await;
    let http = reqwest::Client::new();
    let digest_of = |ns: Option<&str>| {
        let mut url = format!("{}/v2/test/oci/manifests/v1", wharf.url);
        if let Some(ns) = ns {
            url.push_str(&format!("?ns={ns}"));
        }
        let request = http.get(url).header("accept", ACCEPT_ALL).send();
        async move {
            let r = request.await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(digest_of(None).await, seeds_a.oci.manifest.digest);
    assert_eq!(
        digest_of(Some("registry-a.example")).await,
        seeds_a.oci.manifest.digest
    );
    assert_eq!(
        digest_of(Some("registry-b.example")).await,
        only_b.manifest.digest
    );

    let before = a.access_log().len() + b.access_log().len();
    let refused = http
        .get(format!(
            "{}/v2/test/oci/manifests/v1?ns=evil.example",
            wharf.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(refused).await, "DENIED");
    assert_eq!(
        a.access_log().len() + b.access_log().len(),
        before,
        "no upstream contacted"
    );
}

#[tokio::test]
async fn docker_hub_library_prefix_for_single_segment_names() {
    let (registry, seeds) = seeded_registry().await;
    // Named docker.io: single-segment names mean library/<name>.
    let wharf = Wharf::mirroring(&registry).await;
    let response = reqwest::Client::new()
        .get(format!("{}/v2/hello/manifests/latest", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["docker-content-digest"],
        seeds.docker.manifest.digest.as_str()
    );
    assert_eq!(
        registry.count_matching("GET", "/v2/library/hello/manifests/latest"),
        1
    );
}
