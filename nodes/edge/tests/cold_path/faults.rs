//! Upstreams that ignore ranges, cut connections mid-piece or corrupt bytes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use wharf_testkit::proxy::MitmProxy;
use wharf_testkit::wan::LinkShape;

use crate::common::*;
use crate::*;

#[tokio::test]
async fn an_upstream_that_ignores_ranges_is_fetched_as_one_stream_and_remembered() {
    let _one = ONE_AT_A_TIME.lock().await;
    let first = ColdBlob::push(40 * MIB, 4).await;
    let second = wharf_testkit::image::random_bytes(40 * MIB, 5);
    let second_digest = wharf_testkit::sha256(&second);
    Pusher::new(&first.registry.url(), PushAuth::None)
        .push_blob(REPO, second.clone(), &second_digest)
        .await
        .unwrap();
    let proxy = MitmProxy::start(&first.registry.url()).await.unwrap();
    proxy.set_corrupt(false);
    proxy.set_ignore_ranges(true);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &proxy_url, true)])).await;
    for digest in [&first.digest, &second_digest] {
        let response = reqwest::get(format!("{}/v2/{REPO}/blobs/{digest}", wharf.url))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(hash_body(response).await.unwrap().0, *digest);
    }
    assert_eq!(metric(&wharf, "wharf_upstream_ranged_fills_total").await, 0);
    assert_eq!(
        metric(&wharf, "wharf_upstream_range_fallbacks_total").await,
        1,
        "asked for a range once, then for whole blobs"
    );
    for digest in [&first.digest, &second_digest] {
        assert_eq!(first.registry.count_matching("GET", digest), 1);
    }
}

#[tokio::test]
async fn a_piece_cut_midway_is_resumed_and_the_blob_verifies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let blob = ColdBlob::push(48 * MIB, 6).await;
    // The link cuts whichever connection carries each 20th MiB: two pieces break mid-way.
    let link = blob
        .link(LinkShape {
            bytes_per_sec: 1_000_000_000,
            rtt: Duration::from_millis(2),
            cut_every: Some(20 * MIB as u64),
            per_connection: None,
        })
        .await;
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &link.url(), true)])).await;
    blob.pull_from(&wharf.url).await;
    wharf.settled().await;
    assert_eq!(metric(&wharf, "wharf_upstream_ranged_fills_total").await, 1);
    let resumes = wharf.mirror.stats.upstream_resumes.load(Ordering::Relaxed);
    assert!(resumes >= 1, "a cut piece was resumed ({resumes})");
    let gets = blob.registry.count_matching("GET", &blob.digest);
    let again = reqwest::get(format!("{}{}", wharf.url, blob.path()))
        .await
        .unwrap();
    assert_eq!(hash_body(again).await.unwrap().0, blob.digest);
    assert_eq!(
        blob.registry.count_matching("GET", &blob.digest),
        gets,
        "stored"
    );
}

#[tokio::test]
async fn a_corrupted_piece_fails_the_digest_and_nothing_is_cached() {
    let _one = ONE_AT_A_TIME.lock().await;
    let blob = ColdBlob::push(40 * MIB, 7).await;
    // The proxy flips a byte in the middle of every blob body: each piece is corrupt.
    let proxy = MitmProxy::start(&blob.registry.url()).await.unwrap();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let wharf = Wharf::start(test_config(vec![upstream("docker.io", &proxy_url, true)])).await;
    let url = format!("{}{}", wharf.url, blob.path());
    match reqwest::get(&url).await {
        Ok(response) if response.status() == StatusCode::OK => {
            assert!(
                hash_body(response).await.is_err(),
                "the body never completes"
            );
        }
        Ok(response) => assert!(response.status().is_server_error()),
        Err(_) => {}
    }
    wharf.settled().await;
    assert_eq!(metric(&wharf, "wharf_upstream_ranged_fills_total").await, 1);
    assert!(wharf.mirror.stats.digest_mismatches.load(Ordering::Relaxed) >= 1);
    // Nothing was kept: with the upstream honest again, the blob is fetched anew.
    proxy.set_corrupt(false);
    let gets = blob.registry.count_matching("GET", &blob.digest);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(hash_body(response).await.unwrap().0, blob.digest);
    assert!(blob.registry.count_matching("GET", &blob.digest) > gets);
}
