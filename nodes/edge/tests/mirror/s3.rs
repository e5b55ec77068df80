//! The cache in S3, against a real S3-compatible server process (moto): the store contract,
//! streamed multipart uploads, nodes sharing one bucket, S3 failing, eviction, CDN redirects.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use wharf_storage::s3::{PART_SIZE, S3Location, S3Store};
use wharf_storage::{BlobStore, ByteSource, ObjectKey};
use wharf_testkit::image::big_image;
use wharf_testkit::proxy::MitmProxy;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::s3::S3Server;
use wharf_testkit::wait_until;

use crate::common::*;

async fn s3_with_bucket(bucket: &str) -> S3Server {
    let s3 = S3Server::start().await.expect("S3 server (moto) starts");
    s3.create_bucket(bucket).await.unwrap();
    s3
}

fn store(s3: &S3Server, url: &str) -> S3Store {
    S3Store::from_client(s3.client(), S3Location::parse(url).unwrap())
}

/// Wait until `bucket` holds an object under `key`.
async fn wait_for_object(s3: &S3Server, bucket: &str, key: &str) -> bool {
    wait_until(Duration::from_secs(20), || async {
        s3.keys(bucket)
            .await
            .is_ok_and(|keys| keys.iter().any(|k| k == key))
    })
    .await
}

#[tokio::test]
async fn s3_store_contract_and_multipart() {
    let s3 = s3_with_bucket("contract").await;
    let dir = tempfile::tempdir().unwrap();
    wharf_storage::contract::exercise_store(
        &store(&s3, "s3://contract/some/prefix"),
        &dir.path().join("f"),
    )
    .await;

    // A body of three parts, read back across part boundaries.
    let s3store = store(&s3, "s3://contract");
    let data = wharf_testkit::image::random_bytes(2 * PART_SIZE + 12_345, 3);
    let key = ObjectKey::Blob(wharf_core::Digest::sha256_of(&data));
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(1_000_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    s3store
        .put_stream(&key, futures::stream::iter(chunks).boxed())
        .await
        .unwrap();
    assert_eq!(s3store.stat(&key).await.unwrap(), Some(data.len() as u64));
    let range = wharf_core::ByteRange {
        start: PART_SIZE as u64 - 10,
        end: PART_SIZE as u64 + 9,
    };
    let reader = s3store.read(&key, Some(range)).await.unwrap().unwrap();
    assert_eq!(reader.size, data.len() as u64);
    let got: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(reader.stream)
        .await
        .unwrap();
    assert_eq!(got.concat(), &data[PART_SIZE - 10..PART_SIZE + 10]);

    // A body that fails after two parts: nothing visible, the multipart upload aborted.
    let failing = ObjectKey::Blob(wharf_core::Digest::sha256_of(b"failing"));
    let parts: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(data.slice(..PART_SIZE)),
        Ok(data.slice(PART_SIZE..2 * PART_SIZE)),
        Ok(data.slice(2 * PART_SIZE..)),
        Err(std::io::Error::other("digest mismatch")),
    ];
    let body: ByteSource = futures::stream::iter(parts).boxed();
    assert!(s3store.put_stream(&failing, body).await.is_err());
    assert_eq!(s3store.stat(&failing).await.unwrap(), None);
    assert_eq!(
        s3.pending_uploads("contract").await.unwrap(),
        0,
        "upload aborted"
    );
}

#[tokio::test]
async fn two_nodes_share_one_bucket_and_survive_the_upstream() {
    let (mut registry, seeds) = seeded_registry().await;
    let s3 = s3_with_bucket("shared").await;
    let config = || test_config(vec![upstream("docker.io", &registry.url(), true)]);
    let a = Wharf::on_s3(config(), &s3, "shared").await;
    let b = Wharf::on_s3(config(), &s3, "shared").await;
    let http = reqwest::Client::new();
    let pull = |wharf: &Wharf| {
        let (http, url, seeds) = (http.clone(), wharf.url.clone(), &seeds);
        async move {
            let m = http
                .get(format!("{url}/v2/test/docker/manifests/v1"))
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(m.status(), StatusCode::OK);
            assert_eq!(m.bytes().await.unwrap(), seeds.docker.manifest.body);
            for blob in seeds.docker.blobs() {
                let r = http
                    .get(format!("{url}/v2/test/docker/blobs/{}", blob.digest))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
            }
        }
    };
    pull(&a).await;
    for blob in seeds.docker.blobs() {
        let key = ObjectKey::Blob(blob.digest.parse().unwrap()).path();
        assert!(
            wait_for_object(&s3, "shared", &key).await,
            "{key} in the bucket"
        );
    }
    registry.stop();
    // Node B never saw this image and the upstream is gone: all of it comes from the bucket.
    pull(&b).await;
    // Ranged reads come from S3 too.
    let layer = &seeds.docker.layers[0];
    let r = http
        .get(format!("{}/v2/test/docker/blobs/{}", b.url, layer.digest))
        .header("range", "bytes=5-14")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 5-14/{}", layer.data.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), layer.data.slice(5..15));
    let fetched = b
        .mirror
        .stats
        .upstream_blob_fetches
        .load(std::sync::atomic::Ordering::Relaxed)
        + b.mirror
            .stats
            .upstream_manifest_fetches
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fetched, 0, "node B asked the upstream for nothing");
}

#[tokio::test]
async fn digest_mismatch_aborts_the_streamed_upload() {
    let (registry, image) = big_image_registry(11, 3 * PART_SIZE + 1000).await;
    let proxy = MitmProxy::start(&registry.url()).await.unwrap();
    let s3 = s3_with_bucket("verify").await;
    let wharf = Wharf::on_s3(
        test_config(vec![upstream("docker.io", &proxy.url(), true)]),
        &s3,
        "verify",
    )
    .await;
    let layer = &image.layers[0];
    let url = format!("{}/v2/test/big/blobs/{}", wharf.url, layer.digest);
    let response = reqwest::get(&url).await.unwrap();
    assert!(
        hash_body(response).await.is_err(),
        "the corrupt body breaks off"
    );
    // Parts were uploaded while it streamed; the upload must be aborted, nothing visible.
    let aborted = wait_until(Duration::from_secs(20), || async {
        s3.pending_uploads("verify").await.is_ok_and(|n| n == 0)
    })
    .await;
    assert!(aborted, "multipart upload aborted");
    assert!(
        s3.keys("verify")
            .await
            .unwrap()
            .iter()
            .all(|k| !k.starts_with("blobs/"))
    );

    proxy.set_corrupt(false);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(hash_body(response).await.unwrap().0, layer.digest);
    let key = ObjectKey::Blob(layer.digest.parse().unwrap()).path();
    assert!(
        wait_for_object(&s3, "verify", &key).await,
        "clean blob stored by multipart upload"
    );
}

#[tokio::test]
async fn s3_outage_passes_content_through_and_recovers() {
    let (registry, seeds) = seeded_registry().await;
    let mut s3 = s3_with_bucket("flaky").await;
    let wharf = Wharf::on_s3(
        test_config(vec![upstream("docker.io", &registry.url(), true)]),
        &s3,
        "flaky",
    )
    .await;
    let http = reqwest::Client::new();
    let health = |url: String| async move {
        let r: serde_json::Value = reqwest::get(format!("{url}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["status"].as_str().unwrap().to_string()
    };

    s3.stop();
    // Uncached, S3 down: every client still gets its content, straight from the upstream.
    let m = http
        .get(format!("{}/v2/test/oci/manifests/v1", wharf.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), StatusCode::OK);
    for blob in seeds.oci.blobs() {
        let r = http
            .get(format!("{}/v2/test/oci/blobs/{}", wharf.url, blob.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "no 5xx for content the upstream has"
        );
        assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
    }
    assert_eq!(health(wharf.url.clone()).await, "degraded");

    // S3 is back (empty: moto keeps nothing): caching resumes, health recovers.
    s3.restart().await.unwrap();
    s3.create_bucket("flaky").await.unwrap();
    let layer = &seeds.docker.layers[0];
    let r = http
        .get(format!(
            "{}/v2/test/docker/blobs/{}",
            wharf.url, layer.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
    let key = ObjectKey::Blob(layer.digest.parse().unwrap()).path();
    assert!(
        wait_for_object(&s3, "flaky", &key).await,
        "cached again once S3 is back"
    );
    assert_eq!(health(wharf.url.clone()).await, "ok");
}

#[tokio::test]
async fn s3_stopped_mid_upload_leaves_no_object_and_the_client_its_bytes() {
    let (registry, image) = big_image_registry(12, 60 * 1024 * 1024).await;
    let mut s3 = s3_with_bucket("midway").await;
    let wharf = Wharf::on_s3(
        test_config(vec![upstream("docker.io", &registry.url(), true)]),
        &s3,
        "midway",
    )
    .await;
    let layer = &image.layers[0];
    let url = format!("{}/v2/test/big/blobs/{}", wharf.url, layer.digest);
    let client = tokio::spawn(async move {
        let response = reqwest::get(&url).await.unwrap();
        hash_body(response).await
    });
    // Kill S3 once the upload is under way.
    let started = wait_until(Duration::from_secs(20), || async {
        s3.pending_uploads("midway").await.is_ok_and(|n| n > 0)
    })
    .await;
    assert!(started, "a multipart upload began");
    s3.stop();
    let (digest, _) = client
        .await
        .unwrap()
        .expect("the client still gets the whole blob");
    assert_eq!(digest, layer.digest);
    s3.restart().await.unwrap();
    s3.create_bucket("midway").await.unwrap();
    let store = store(&s3, "s3://midway");
    assert_eq!(
        store
            .stat(&ObjectKey::Blob(layer.digest.parse().unwrap()))
            .await
            .unwrap(),
        None
    );
}

fn eviction_config(registry: &Registry) -> wharf_core::config::Config {
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.eviction.min_age_secs = 0;
    config.eviction.interval_secs = 3600; // passes are run by hand here
    config
}

/// GET a blob through wharf and check it; the upstream GETs of it so far.
async fn fetch(wharf: &Wharf, registry: &Registry, repo: &str, digest: &str) -> usize {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let r = reqwest::get(format!("{}{path}", wharf.url)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, digest);
    registry.count_requests("GET", &path)
}

async fn wait_stored(wharf: &Wharf, digest: &str) {
    let key = ObjectKey::Blob(digest.parse().unwrap());
    let stored = wait_until(Duration::from_secs(20), || {
        let (store, key) = (wharf.mirror.store.clone(), key.clone());
        async move { store.stat(&key).await.ok().flatten().is_some() }
    })
    .await;
    assert!(stored, "{digest} stored");
}

/// Serve three blobs, let them go idle, evict, and fetch them again transparently.
async fn idle_blobs_are_evicted_then_refetched(wharf: Wharf, registry: &Registry, seeds: &Seeds) {
    let digests: Vec<String> = seeds.docker_list.images[0]
        .blobs()
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    for d in &digests {
        assert_eq!(fetch(&wharf, registry, "test/docker-list", d).await, 1);
        wait_stored(&wharf, d).await;
    }
    // Timestamps are in whole seconds: idle for max_idle_secs = 1 means 2 s here.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = wharf.mirror.blobs.evictor().run_once().await.unwrap();
    assert_eq!(report.deleted, digests.len(), "{report:?}");
    for d in &digests {
        assert_eq!(
            fetch(&wharf, registry, "test/docker-list", d).await,
            2,
            "refetched"
        );
    }
}

#[tokio::test]
async fn eviction_by_idle_age_on_local_disk() {
    let (registry, seeds) = seeded_registry().await;
    let mut config = eviction_config(&registry);
    config.eviction.max_idle_secs = 1;
    idle_blobs_are_evicted_then_refetched(Wharf::start(config).await, &registry, &seeds).await;
}

#[tokio::test]
async fn eviction_by_idle_age_on_s3() {
    let (registry, seeds) = seeded_registry().await;
    let s3 = s3_with_bucket("idle").await;
    let mut config = eviction_config(&registry);
    config.eviction.max_idle_secs = 1;
    let wharf = Wharf::on_s3(config, &s3, "idle").await;
    idle_blobs_are_evicted_then_refetched(wharf, &registry, &seeds).await;
}

#[tokio::test]
async fn eviction_by_quota_drops_the_least_recently_used_blob() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let (old, new) = (big_image(21, 1536 * 1024), big_image(22, 1536 * 1024));
    let pusher = Pusher::new(&registry.url(), PushAuth::None);
    pusher.push_image("test/quota", "old", &old).await.unwrap();
    pusher.push_image("test/quota", "new", &new).await.unwrap();
    let s3 = s3_with_bucket("quota").await;
    let mut config = eviction_config(&registry);
    config.eviction.max_size_mib = 2; // room for one of the two 1.5 MiB layers
    let wharf = Wharf::on_s3(config, &s3, "quota").await;
    let (old, new) = (&old.layers[0].digest, &new.layers[0].digest);
    fetch(&wharf, &registry, "test/quota", old).await;
    wait_stored(&wharf, old).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fetch(&wharf, &registry, "test/quota", new).await;
    wait_stored(&wharf, new).await;

    let report = wharf.mirror.blobs.evictor().run_once().await.unwrap();
    assert_eq!(report.deleted, 1, "{report:?}");
    let gone = wharf
        .mirror
        .store
        .stat(&ObjectKey::Blob(old.parse().unwrap()))
        .await
        .unwrap();
    let kept = wharf
        .mirror
        .store
        .stat(&ObjectKey::Blob(new.parse().unwrap()))
        .await
        .unwrap();
    assert!(
        gone.is_none() && kept.is_some(),
        "least recently used goes first"
    );
    assert_eq!(
        fetch(&wharf, &registry, "test/quota", old).await,
        2,
        "refetched"
    );
}

/// The `Location` of the `307` a GET of `url` answers.
async fn redirect_location(url: &str) -> String {
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    r.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn cdn_origin_mode_redirects_cached_blobs_to_presigned_urls() {
    let (registry, seeds) = seeded_registry().await;
    let s3 = s3_with_bucket("cdn").await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.s3.redirect_blobs = true;
    let wharf = Wharf::on_s3(config, &s3, "cdn").await;
    let layer = &seeds.oci.layers[0];
    // Cold: streamed through wharf as usual.
    assert_eq!(fetch(&wharf, &registry, "test/oci", &layer.digest).await, 1);
    wait_stored(&wharf, &layer.digest).await;
    // Warm: a 307 to S3, which serves the bytes.
    let url = format!("{}/v2/test/oci/blobs/{}", wharf.url, layer.digest);
    let location = redirect_location(&url).await;
    assert!(
        location.starts_with(&s3.url()) && location.contains("X-Amz-Signature"),
        "{location}"
    );
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
    assert_eq!(
        registry.count_requests("GET", &format!("/v2/test/oci/blobs/{}", layer.digest)),
        1
    );
}

/// An HTTP server answering `GET /<key>` with the object of `bucket`; its base URL.
async fn bucket_cdn(s3: &S3Server, bucket: &str) -> String {
    let (client, bucket) = (s3.client(), bucket.to_string());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            let key = uri.path().trim_start_matches('/').to_string();
            match client.get_object().bucket(bucket).key(key).send().await {
                Ok(object) => match object.body.collect().await {
                    Ok(bytes) => (axum::http::StatusCode::OK, bytes.into_bytes().to_vec()),
                    Err(_) => (axum::http::StatusCode::BAD_GATEWAY, Vec::new()),
                },
                Err(_) => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn cdn_origin_mode_redirects_to_a_cdn_base_url_instead_of_presigning() {
    let (registry, seeds) = seeded_registry().await;
    let s3 = s3_with_bucket("cdnbase").await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.s3.redirect_blobs = true;
    // A "CDN" over the bucket that signs its own requests to it (CloudFront with origin
    // access control): serves /<key> from the bucket.
    let cdn = bucket_cdn(&s3, "cdnbase").await;
    config.s3.redirect_base_url = format!("{cdn}/");
    let wharf = Wharf::on_s3(config, &s3, "cdnbase").await;
    let layer = &seeds.oci.layers[0];
    assert_eq!(fetch(&wharf, &registry, "test/oci", &layer.digest).await, 1);
    wait_stored(&wharf, &layer.digest).await;
    let url = format!("{}/v2/test/oci/blobs/{}", wharf.url, layer.digest);
    let location = redirect_location(&url).await;
    let hex = layer.digest.trim_start_matches("sha256:");
    assert_eq!(location, format!("{cdn}/blobs/sha256/{}/{hex}", &hex[..2]));
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hash_body(r).await.unwrap().0, layer.digest);
}

#[tokio::test]
async fn a_hung_s3_endpoint_costs_a_timeout_not_a_wedged_node() {
    // An "S3" that accepts connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hung.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            open.push(socket);
        }
    });
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "k", "s", None, None, "t",
            ))
            .build(),
    );
    let store: std::sync::Arc<dyn BlobStore> = std::sync::Arc::new(S3Store::from_client(
        client,
        S3Location::parse("s3://hung").unwrap(),
    ));
    let (registry, seeds) = seeded_registry().await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.limits.storage_timeout_secs = 1;
    let wharf = Wharf::start_with(config, Some(store)).await;
    let layer = &seeds.docker.layers[0];
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        reqwest::get(format!(
            "{}/v2/test/docker/blobs/{}",
            wharf.url, layer.digest
        )),
    )
    .await
    .expect("answered despite the hung store")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(hash_body(response).await.unwrap().0, layer.digest);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The download ends (its upload timed out) instead of holding its slot forever.
    let ended = wait_until(Duration::from_secs(10), || async {
        wharf.mirror.blobs.downloads_in_flight() == 0
    })
    .await;
    assert!(ended, "the download is still held by the hung upload");
    let health: serde_json::Value = reqwest::get(format!("{}/health", wharf.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    held.abort();
}

#[tokio::test]
async fn the_hot_tier_serves_warm_s3_blobs_from_local_files_and_forgets_blobs_evicted_elsewhere() {
    let (registry, seeds) = seeded_registry().await;
    let s3 = s3_with_bucket("hot").await;
    let mut config = test_config(vec![upstream("docker.io", &registry.url(), true)]);
    config.hot_cache.max_size_mib = 64;
    config.hot_cache.check_interval_secs = 1;
    let hot = Wharf::on_s3(config, &s3, "hot").await;
    let plain = Wharf::on_s3(
        test_config(vec![upstream("docker.io", &registry.url(), true)]),
        &s3,
        "hot",
    )
    .await;
    let layer = &seeds.oci.layers[0];
    let tier = hot.mirror.hot_cache.clone().expect("hot tier on");

    // Cold: fetched, stored in S3, then copied to local disk (read back, verified).
    assert_eq!(fetch(&hot, &registry, "test/oci", &layer.digest).await, 1);
    let copied = wait_until(Duration::from_secs(10), || async { tier.held().0 == 1 }).await;
    assert!(copied, "{:?}", tier.held());
    // Warm: from the local copy, with sendfile, not from S3.
    let sent = hot
        .mirror
        .stats
        .sendfile_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fetch(&hot, &registry, "test/oci", &layer.digest).await, 1);
    assert_eq!(
        tier.stats.hits.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let sent_after = hot
        .mirror
        .stats
        .sendfile_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent_after - sent, layer.data.len() as u64);
    let status: serde_json::Value = reqwest::get(format!("{}/status.json", hot.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["store"]["hot_cache"]["copies"], 1, "{status}");
    let page = status_page(&hot).await;
    assert!(
        page.contains("id=\"hot-tier\">hot tier: 1 copies"),
        "{page}"
    );

    // Another node evicts the blob from S3 (its evictor deletes it and leaves a tombstone):
    // within the check interval this node drops its copy, and the next request fetches the
    // blob again instead of serving it forever.
    let digest: wharf_core::Digest = layer.digest.parse().unwrap();
    plain
        .mirror
        .store
        .delete(&ObjectKey::Blob(digest.clone()))
        .await
        .unwrap();
    plain
        .mirror
        .store
        .put_small(&ObjectKey::Evicted(digest), bytes::Bytes::new())
        .await
        .unwrap();
    let dropped = wait_until(Duration::from_secs(5), || async { tier.held().0 == 0 }).await;
    assert!(dropped, "copy of an evicted blob kept: {:?}", tier.held());
    assert_eq!(fetch(&hot, &registry, "test/oci", &layer.digest).await, 2);
}
