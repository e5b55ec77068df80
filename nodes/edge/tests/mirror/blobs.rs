//! Blob caching: one upstream GET per blob whatever the concurrency, verification, streaming.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use wharf_testkit::proxy::MitmProxy;
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::wait_until;

use crate::common::*;

const BIG: usize = 100 * 1024 * 1024 + 12_345;

#[tokio::test]
async fn sixteen_concurrent_clients_cause_one_upstream_get() {
    let (registry, image) = big_image_registry(1, BIG).await;
    let wharf = Wharf::mirroring(&registry).await;
    let layer = &image.layers[0];
    let url = format!("{}/v2/test/big/blobs/{}", wharf.url, layer.digest);

    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (url, http) = (url.clone(), reqwest::Client::new());
            tokio::spawn(async move {
                // Half the clients ask for ranges at different offsets, as resuming clients do.
                let mut request = http.get(&url);
                let range = (i % 2 == 1).then(|| (i as u64) * 6 * 1024 * 1024);
                if let Some(start) = range {
                    request = request.header("range", format!("bytes={start}-"));
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                (range, status, hash_body(response).await.unwrap())
            })
        })
        .collect();
    for client in clients {
        let (range, status, (digest, len)) = client.await.unwrap();
        match range {
            None => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!((digest.as_str(), len), (layer.digest.as_str(), BIG as u64));
            }
            Some(start) => {
                assert_eq!(status, StatusCode::PARTIAL_CONTENT);
                let expected = wharf_testkit::sha256(&layer.data[start as usize..]);
                assert_eq!(digest, expected, "range from {start}");
            }
        }
    }
    let path = format!("/v2/test/big/blobs/{}", layer.digest);
    // One download, fetched as pieces side by side; a range GET resuming a piece after a
    // broken connection is the same download.
    let stats = &wharf.mirror.stats;
    let resumes = || wharf_mirror::stats::Stats::get(&stats.upstream_resumes) as usize;
    let pieces = metric(&wharf, "wharf_upstream_range_pieces_total").await as usize;
    // Readers far ahead of the fill get pieces of their own: seven 16 MiB pieces or more.
    assert!(pieces >= BIG.div_ceil(16 * 1024 * 1024), "{pieces} pieces");
    let sent = registry.bytes_sent("GET", &path);
    assert!(
        sent as f64 <= BIG as f64 * 1.1,
        "the upstream sent {sent} bytes for a blob of {BIG}"
    );
    assert_eq!(
        registry.count_requests("GET", &path),
        pieces + resumes(),
        "one upstream GET a piece (plus resumes: {}); upstream log: {:?}",
        resumes(),
        registry.access_log()
    );
    assert_eq!(
        wharf
            .mirror
            .stats
            .upstream_blob_fetches
            .load(Ordering::Relaxed),
        1
    );
    // The verified blob is in the store under its digest, and a later request is a hit.
    let again = reqwest::get(&url).await.unwrap();
    assert_eq!(hash_body(again).await.unwrap().0, layer.digest);
    assert_eq!(
        registry.count_requests("GET", &path),
        pieces + resumes(),
        "downloads {}, resumes {}; upstream log: {:?}",
        wharf_mirror::stats::Stats::get(&stats.upstream_blob_fetches),
        resumes(),
        registry.access_log()
    );
    assert_eq!(
        stored_files(wharf.data_dir.path(), ".spool"),
        0,
        "spool emptied"
    );
}

#[tokio::test]
async fn cold_pull_fetches_each_blob_once() {
    let (registry, seeds) = seeded_registry().await;
    let wharf = Wharf::mirroring(&registry).await;
    let http = reqwest::Client::new();
    // Pull as a client does, twice: manifest, then config and layers.
    for _ in 0..2 {
        let m = http
            .get(format!("{}/v2/test/docker/manifests/v1", wharf.url))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(m.status(), StatusCode::OK);
        for blob in seeds.docker.blobs() {
            let r = http
                .get(format!(
                    "{}/v2/test/docker/blobs/{}",
                    wharf.url, blob.digest
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(hash_body(r).await.unwrap().0, blob.digest);
        }
    }
    for blob in seeds.docker.blobs() {
        assert_eq!(
            registry.count_requests("GET", &format!("/v2/test/docker/blobs/{}", blob.digest)),
            1,
            "amplification 1.00 for {}",
            blob.digest
        );
    }
}

#[tokio::test]
async fn corrupted_upstream_bytes_are_never_cached() {
    let (registry, seeds) = seeded_registry().await;
    let proxy = MitmProxy::start(&registry.url()).await.unwrap();
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &proxy.url(), true)])).await;
    let http = reqwest::Client::new();
    let layer = &seeds.oci.layers[0];
    let url = format!("{}/v2/test/oci/blobs/{}", wharf.url, layer.digest);

    // Corrupt: the client's response breaks off; nothing reaches the store.
    for _ in 0..2 {
        let response = http.get(&url).send().await.unwrap();
        if response.status() != StatusCode::OK {
            // Refused before any byte was sent (the failed download was still registered).
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            continue;
        }
        match hash_body(response).await {
            Err(_) => {}
            Ok((digest, _)) => panic!("a corrupt blob was delivered whole: {digest}"),
        }
    }
    assert!(proxy.corrupted.load(Ordering::SeqCst) >= 2);
    assert!(wharf.mirror.stats.digest_mismatches.load(Ordering::Relaxed) >= 2);
    assert_eq!(stored_files(wharf.data_dir.path(), "blobs"), 0);

    // Clean again: fetched anew, verified, served and cached.
    proxy.set_corrupt(false);
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(hash_body(response).await.unwrap().0, layer.digest);
    let dir = wharf.data_dir.path().to_path_buf();
    let stored = wait_until(Duration::from_secs(5), || {
        let dir = dir.clone();
        async move { stored_files(&dir, "blobs") == 1 }
    })
    .await;
    assert!(stored, "the clean blob is stored");
    let path = format!("/v2/test/oci/blobs/{}", layer.digest);
    let upstream_gets = registry.count_requests("GET", &path);
    assert_eq!(upstream_gets, 3, "two corrupt attempts, one clean");
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(hash_body(response).await.unwrap().0, layer.digest);
    assert_eq!(
        registry.count_requests("GET", &path),
        upstream_gets,
        "served from cache"
    );
}

#[tokio::test]
async fn joining_a_download_refused_for_another_repository_still_succeeds() {
    let (registry, seeds) = seeded_registry().await;
    // A slow link keeps the first download in flight long enough for the second to join it.
    let shape = wharf_testkit::wan::LinkShape {
        bytes_per_sec: 1_000_000_000,
        rtt: Duration::from_millis(400),
        cut_every: None,
        per_connection: None,
    };
    let link = wharf_testkit::wan::WanLink::start(registry.host(), shape)
        .await
        .unwrap();
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &link.url(), true)])).await;
    let layer = seeds.oci.layers[0].clone();
    // test/docker does not have test/oci's layer: the upstream answers 404 there.
    let wrong = {
        let url = format!("{}/v2/test/docker/blobs/{}", wharf.url, layer.digest);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let right = reqwest::get(format!("{}/v2/test/oci/blobs/{}", wharf.url, layer.digest))
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(hash_body(right).await.unwrap().0, layer.digest);
    assert_eq!(wrong.await.unwrap(), StatusCode::NOT_FOUND);
    assert_eq!(
        wharf
            .mirror
            .stats
            .coalesced_blob_requests
            .load(Ordering::Relaxed),
        1,
        "the second request joined the first download"
    );
}

#[tokio::test]
async fn a_download_cut_mid_body_resumes_with_a_range_request() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let data = wharf_testkit::image::random_bytes(20 * 1024 * 1024, 77);
    let digest = wharf_testkit::sha256(&data);
    Pusher::new(&registry.url(), PushAuth::None)
        .push_blob("test/cut", data.clone(), &digest)
        .await
        .unwrap();
    // The link cuts the connection every 8 MiB it carries: twice during this blob.
    let shape = wharf_testkit::wan::LinkShape {
        bytes_per_sec: 1_000_000_000,
        rtt: Duration::from_millis(1),
        cut_every: Some(8 * 1024 * 1024),
        per_connection: None,
    };
    let link = wharf_testkit::wan::WanLink::start(registry.host(), shape)
        .await
        .unwrap();
    // One stream (the ranged fill's pieces resume alike: see tests/cold_path).
    let mut config = test_config(vec![upstream("docker.io", &link.url(), true)]);
    config.fetch.parallel = 1;
    let wharf = Wharf::start(config).await;
    let url = format!("{}/v2/test/cut/blobs/{digest}", wharf.url);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        hash_body(response).await.unwrap(),
        (digest.clone(), 20 * 1024 * 1024)
    );
    let resumes = wharf.mirror.stats.upstream_resumes.load(Ordering::Relaxed);
    assert_eq!(resumes, 2, "resumed after each cut");
    let path = format!("/v2/test/cut/blobs/{digest}");
    assert_eq!(
        registry.count_requests("GET", &path),
        3,
        "one GET and two range GETs"
    );
    // Stored whole and verified: served from the cache now.
    let again = reqwest::get(&url).await.unwrap();
    assert_eq!(hash_body(again).await.unwrap().0, digest);
    assert_eq!(registry.count_requests("GET", &path), 3);
}

/// Warm blobs on HTTP/1.1 go from the page cache to the socket with sendfile; every byte must
/// be right across full and range GETs, interleaved with manifests and HEADs on one keep-alive
/// connection (the spans of one response must never leak into the next).
#[tokio::test]
async fn warm_blobs_are_sent_with_sendfile_and_every_byte_is_right() {
    const LAYER: usize = 5 * 1024 * 1024 + 4321;
    let (registry, image) = big_image_registry(7, LAYER).await;
    let wharf = Wharf::mirroring(&registry).await;
    let layer = &image.layers[0];
    let blob = format!("{}/v2/test/big/blobs/{}", wharf.url, layer.digest);
    let config = format!("{}/v2/test/big/blobs/{}", wharf.url, image.config.digest);
    let manifest = format!("{}/v2/test/big/manifests/v1", wharf.url);
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    // Cold: through the download, not sendfile.
    for url in [&blob, &config] {
        let response = http.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }
    // A client has its last byte before the download is in the store; until then later
    // requests still read the download's spool.
    let dir = wharf.data_dir.path().to_path_buf();
    let stored = wait_until(Duration::from_secs(5), || {
        let dir = dir.clone();
        async move { stored_files(&dir, "blobs") == 2 }
    })
    .await;
    assert!(stored, "both blobs are stored");
    let sent_before = wharf_mirror::stats::Stats::get(&wharf.mirror.stats.sendfile_bytes);

    let data = &layer.data;
    let mut warm_bytes = 0u64;
    for round in 0..3 {
        let full = http.get(&blob).send().await.unwrap();
        assert_eq!(full.status(), StatusCode::OK);
        let (digest, len) = hash_body(full).await.unwrap();
        assert_eq!(
            (digest.as_str(), len),
            (layer.digest.as_str(), LAYER as u64)
        );
        warm_bytes += LAYER as u64;

        let (start, end) = (1_000_000 + round * 77, 3_500_000 + round);
        let part = http
            .get(&blob)
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.bytes().await.unwrap(), data.slice(start..=end));
        warm_bytes += (end - start + 1) as u64;

        let m = http.get(&manifest).send().await.unwrap();
        assert_eq!(m.status(), StatusCode::OK);
        assert_eq!(m.bytes().await.unwrap(), image.manifest.body);

        let head = http.head(&blob).send().await.unwrap();
        assert_eq!(head.headers()["content-length"], LAYER.to_string().as_str());

        let tail = http
            .get(&blob)
            .header("range", "bytes=-5")
            .send()
            .await
            .unwrap();
        assert_eq!(tail.bytes().await.unwrap(), data.slice(LAYER - 5..));
        warm_bytes += 5;

        let c = http.get(&config).send().await.unwrap();
        assert_eq!(c.bytes().await.unwrap(), image.config.data);
        warm_bytes += image.config.data.len() as u64;
    }
    // Just written, so in the page cache: every warm byte went by sendfile.
    let sent = wharf_mirror::stats::Stats::get(&wharf.mirror.stats.sendfile_bytes) - sent_before;
    assert_eq!(sent, warm_bytes);

    // HTTP/2 clients get the same bytes through the ordinary path.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(&blob).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let (digest, _) = hash_body(response).await.unwrap();
    assert_eq!(digest, layer.digest);
    let after_h2 = wharf_mirror::stats::Stats::get(&wharf.mirror.stats.sendfile_bytes);
    assert_eq!(after_h2 - sent_before, warm_bytes);
}
